"""Functional entry points: dense Hessian, Hessian-vector product, exact diagonal and diagonal blocks.

All take ``(model, loss_fn, data)`` and the options of :class:`~hessian_core.objective.Objective`
(``reduction``, ``count_fn``, ``params``, ``train_mode``, ``seed``, ``memory_budget``, ``progress``)
plus ``chunk_size``. Results follow the parameter order of :class:`~hessian_core.params.ParamSpec`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InvalidInputError
from .memory import check_fits
from .operators import HessianOperator


def hessian(model, loss_fn, data, **options) -> torch.Tensor:
    """Exact Hessian ``(P, P)`` of the loss over ``data`` w.r.t. the parameters that require grad.

    Parameters in ``model.parameters()`` order, each flattened row-major. Raises
    :class:`~hessian_core.errors.MemoryBudgetError` (with the size) when ``P x P`` does not fit.
    """
    return HessianOperator(model, loss_fn, data, **options).to_dense()


def hvp(model, loss_fn, data, v, **options) -> torch.Tensor:
    """Hessian-vector product ``(P,)``; ``v`` flat ``(P,)`` or a list shaped like the parameters."""
    op = HessianOperator(model, loss_fn, data, **options)
    v = op.params.as_flat(v)
    if v.dim() != 1:
        raise InvalidInputError(f"v must be one vector of shape ({op.params.numel},), got {tuple(v.shape)}; "
                                "use HessianOperator(...).matmat for several")
    return op.matvec(v)


def _groups(op: HessianOperator, groups) -> list[list[str]]:
    if groups is None:
        return [[n] for n in op.params.names]
    if groups == "module":
        by_module: dict[str, list[str]] = {}
        for n in op.params.names:
            by_module.setdefault(n.rsplit(".", 1)[0] if "." in n else "", []).append(n)
        return list(by_module.values())
    out = []
    for g in groups:
        if isinstance(g, (str, torch.Tensor)):
            g = [g]
        out.append(list(g))
    return out


def hessian_blocks(model, loss_fn, data, groups: Sequence | str | None = None, **options) -> list[torch.Tensor]:
    """Exact diagonal blocks of the Hessian.

    Args:
        groups: ``None`` (one block per parameter tensor, in parameter order), ``"module"`` (one block per
            module: weight and bias together), or a list of groups, each a list of parameter names or
            tensors. A block's rows follow the parameter order inside its group.

    Returns:
        list of ``(p_g, p_g)`` tensors. Memory is the sum of the block sizes, checked against the budget.
    """
    op = HessianOperator(model, loss_fn, data, **options)
    gs = _groups(op, groups)
    subs = [op.with_params(g) for g in gs]
    item = torch.empty((), dtype=op.dtype).element_size()
    check_fits(sum(s.params.numel ** 2 for s in subs) * item, op.objective.budget,
               f"the diagonal blocks ({', '.join(str(s.params.numel) for s in subs)} rows)",
               "hessian_diagonal or the matrix-free HessianOperator")
    return [s.to_dense() for s in subs]


def hessian_diagonal(model, loss_fn, data, **options) -> list[torch.Tensor]:
    """Exact diagonal of the Hessian (not an estimate), as tensors shaped like the parameters."""
    op = HessianOperator(model, loss_fn, data, **options)
    return op.params.unflatten(op.diagonal())
