"""The dense matrix or the exact diagonal of an objective's curvature, by the fastest exact path.

* ``"ggn"``: from square-root factors of the per-sample output Hessians (:func:`.per_sample.ggn`: ``O``
  backward passes per sample) when the objective is a sum of per-sample losses, else from
  :class:`~hessian_core.operators.GGNOperator` (``P`` products);
* ``"hessian"``: :class:`~hessian_core.operators.HessianOperator` (structured for Linear chains, chunked
  products otherwise);
* ``"ef"``: :class:`~hessian_core.operators.EmpiricalFisherOperator` (per-sample gradients).

All of the globally normalized objective; the memory budget is checked before anything of size ``P^2``.
"""

from __future__ import annotations

import torch

from ..arguments import check_choice
from ..operators import EmpiricalFisherOperator, GGNOperator, HessianOperator
from .factor import check_dense_fits
from .per_sample import ggn, is_separable

OPERATORS = {"ggn": GGNOperator, "hessian": HessianOperator, "ef": EmpiricalFisherOperator}


def dense_curvature(objective, curvature: str, instead: str = "the diagonal or the matrix-free operators"):
    """``(P, P)`` curvature of ``objective`` (``"ggn"``, ``"hessian"`` or ``"ef"``)."""
    curvature = check_choice(curvature, "curvature", tuple(OPERATORS))
    P = objective.params.numel
    check_dense_fits(P, objective.params.dtype, objective.budget, 1, f"the dense {curvature.upper()}", instead)
    if curvature == "ggn" and is_separable(objective):
        return ggn(objective)
    return OPERATORS[curvature](objective).to_dense().detach()


def diagonal_curvature(objective, curvature: str) -> torch.Tensor:
    """Exact diagonal ``(P,)`` of the curvature of ``objective``."""
    curvature = check_choice(curvature, "curvature", tuple(OPERATORS))
    if curvature == "ggn":
        from ..structured.strategies import structured_ggn_diagonal

        backpropagated = structured_ggn_diagonal(objective)  # Sequentials: one pass of square-root factors
        if backpropagated.value is not None:
            return backpropagated.value
        if is_separable(objective):
            return ggn(objective, diagonal=True)
    return OPERATORS[curvature](objective).diagonal()
