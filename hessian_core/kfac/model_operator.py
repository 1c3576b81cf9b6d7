"""What KFAC and EKFAC share: the objective and options, the covered layers, the blocks for parameters
outside them, and the refusal of stale factors.

The factors are a snapshot of the curvature at the parameters (and buffers) of construction. Every result
(products, dense matrix, inverse, log-determinant...) first checks that no parameter or buffer of the
model was replaced or changed in place since; if one was, it raises instead of answering for the old
parameters: call :meth:`KroneckerFactoredCurvature.refresh` (or build a new operator). An inverse taken
with :meth:`inverse` is a fixed matrix of its own (a preconditioner may deliberately be kept for several
steps) and is not checked.
"""

from __future__ import annotations

import torch
from torch import nn

from ..arguments import check_bool, check_choice, check_int
from ..errors import InvalidInputError
from ..forward import model_versions
from ..objective import Objective
from .dense_blocks import DiagonalOperator, EigenOperator
from .factored import FactoredBlockOperator
from .factors import APPROXES
from .layers import describe_uncovered, find_layers
from .output_curvature import TYPES, output_curvature

UNCOVERED = ("error", "exact", "diagonal")


class KroneckerFactoredCurvature(FactoredBlockOperator):
    """Base of :class:`~hessian_core.kfac.KFACOperator` and :class:`~hessian_core.kfac.EKFACOperator`
    (``Op(model, loss_fn, data, ...)`` or ``Op(objective, ...)``); subclasses implement
    :meth:`_layer_blocks`."""

    kind = "Kronecker-factored curvature"

    def __init__(self, model, loss_fn=None, data=None, *, type: str = "exact", mc_samples: int = 1,
                 approx: str = "expand", separate_bias: bool = True, uncovered: str = "error",
                 **objective_options):
        if isinstance(model, Objective):
            if loss_fn is not None or data is not None or objective_options:
                raise InvalidInputError(f"{self.__class__.__name__}(objective) takes no loss_fn, data or objective "
                                        "options; they are the objective's")
            objective = model
        else:
            objective = Objective(model, loss_fn, data, **objective_options)
        self.objective = objective
        #: ``"exact"`` (GGN: loss Hessian w.r.t. the outputs), ``"mc"`` (Monte Carlo Fisher) or ``"empirical"``
        self.type = check_choice(type, "type", TYPES)
        self.mc_samples = check_int(mc_samples, "mc_samples")
        if self.type != "mc" and self.mc_samples != 1:
            raise InvalidInputError(f"mc_samples={mc_samples} applies to type='mc' only (type={type!r})")
        #: ``"expand"`` or ``"reduce"`` (Eschenhagen et al. 2023) for layers that share weights over positions
        self.approx = check_choice(approx, "approx", APPROXES)
        self.separate_bias = check_bool(separate_bias, "separate_bias")
        self.uncovered_mode = check_choice(uncovered, "uncovered", UNCOVERED)
        self._build()

    # -- construction ------------------------------------------------------------------------------
    def _build(self) -> None:
        objective = self.objective
        spec = objective.params
        model = objective.model
        layers, uncovered = find_layers(model, spec, self.separate_bias)
        if uncovered and self.uncovered_mode == "error":
            raise InvalidInputError(
                f"{type(self).__name__} covers nn.Linear and nn.Conv2d layers; these parameters are outside them: "
                f"{describe_uncovered(model, uncovered)}. Pass uncovered='exact' (their exact curvature block, "
                "dense) or uncovered='diagonal' (its exact diagonal), or leave them out with params=...")
        batchnorm = nn.modules.batchnorm._BatchNorm
        if objective.train_mode and any(isinstance(m, batchnorm) for m in model.modules()):
            raise InvalidInputError(
                f"{type(self).__name__} needs per-sample terms, which BatchNorm in train mode does not have (it "
                "mixes the samples of a batch); use train_mode=False")
        curvature = output_curvature(objective, self.type, self.mc_samples)
        #: the covered layers (:class:`~hessian_core.kfac.layers.Layer`) and the parameters outside them
        self.layers, self.uncovered = layers, uncovered
        self.factors = {}
        blocks = self._layer_blocks(layers, curvature) if layers else []
        if uncovered:
            blocks.append(self._uncovered_block(uncovered))
        FactoredBlockOperator.__init__(self, [(pos, op) for _, pos, op in blocks], spec.numel, params=spec,
                                       keys=[k for k, _, _ in blocks])
        self._stamp = model_versions(model)

    def _layer_blocks(self, layers, curvature) -> list:
        """``[(key, positions, operator)]`` for the covered layers."""
        raise NotImplementedError

    def _uncovered_block(self, names):
        from ..operators import EmpiricalFisherOperator, GGNOperator

        sub = self.objective.with_params(names)
        cls = EmpiricalFisherOperator if self.type == "empirical" else GGNOperator
        op = cls(sub)
        positions = self.objective.params.positions_of(sub.params)
        if self.uncovered_mode == "exact":
            block = EigenOperator.from_matrix(op.to_dense(), budget=self.objective.budget, name="uncovered")
        else:
            block = DiagonalOperator(op.diagonal(), budget=self.objective.budget, name="uncovered")
        return ("uncovered", positions, block)

    # -- freshness ---------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        """Whether a parameter or buffer of the model changed since the factors were computed."""
        return model_versions(self.objective.model) != self._stamp

    def refresh(self):
        """Recompute the factors at the model's current parameters (same options); returns ``self``."""
        self._build()
        return self

    def _check(self) -> None:
        if self.stale:
            raise InvalidInputError(
                f"{type(self).__name__}: the model's parameters or buffers changed since its factors were "
                "computed, so they describe other parameters; call .refresh() (or build a new operator). An "
                "inverse taken before (op.inverse(damping)) stays usable as a fixed preconditioner")

    # -- description -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        return (f"{type(self).__name__}(P={self.size}, type={self.type!r}, approx={self.approx!r}, "
                f"layers={len(self.layers)}, uncovered={len(self.uncovered)}, dtype={self.dtype})")

    def plan(self) -> dict:
        return {**super().plan(), "curvature": self.kind, "type": self.type, "approx": self.approx,
                "mc_samples": self.mc_samples, "separate_bias": self.separate_bias,
                "layers": [f"{layer.name} ({layer.kind})" for layer in self.layers],
                "uncovered": (self.uncovered_mode, self.uncovered)}


def input_factor_of(block, A: torch.Tensor | None, G: torch.Tensor) -> torch.Tensor:
    """The block's ``A``: the layer's (possibly augmented) input factor, or ``[[1]]`` for a bias alone."""
    if block.input_factor == "one":
        return torch.ones(1, 1, dtype=G.dtype, device=G.device)
    return A
