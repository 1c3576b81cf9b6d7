"""Products over one batch computed slice of samples by slice, so that they need the memory of a slice.

For a loss that sums over samples and divides by a normalizer known from the targets (the losses of
:mod:`hessian_core.loss_hessians`), the loss of a batch is ``sum_s loss(slice s) * D_s / D`` (``D`` the
batch's normalizer, ``D_s`` the slice's, see :func:`~hessian_core.loss_hessians.normalizer`), and so are its
Hessian and GGN: a product with the batch's curvature is the weighted sum of the slices' products, exactly.
That holds when the model treats the samples independently and its forward draws no random numbers (the
draws would depend on the slice). The first is checked once per operator: the output of the first slice
must equal the matching rows of the whole batch's output (a model with BatchNorm in train mode, or one
that mixes samples, fails and is never sliced); the second is the objective's probe.

Slices are used only when a product over the whole batch would exceed its memory target (the budget; for
the GGN also about a gradient's peak, see :class:`~hessian_core.operators.ggn.GGNOperator`). Each slice's
graph is built, used for a block of vectors and dropped; a product over slices therefore keeps no graph
between products, even inside :meth:`~hessian_core.operators.base.LinearOperator.reuse`.
"""

from __future__ import annotations

import math

import torch

from .loss_hessians import normalizer, recognized, select_output


def take(x, rows: slice):
    """The samples ``rows`` (dim 0) of a tensor or of every tensor in a tuple/list."""
    if isinstance(x, torch.Tensor):
        return x[rows]
    return type(x)(take(t, rows) for t in x)


def output_numel(objective) -> int:
    """Elements of the output tensor the loss reads (from the objective's first-batch probe)."""
    shape = objective.validate().output_shape
    if isinstance(shape, dict):
        shape = shape.get(getattr(objective.loss_fn, "key", "logits"))
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        shape = shape[0]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) for n in shape):
        return 0
    return math.prod(shape)


def plan(op, ctx, product_bytes: int, target_bytes: int) -> list[tuple[slice, float]] | None:
    """``[(rows, weight), ...]`` to compute batch ``ctx``'s product in slices of samples, or ``None`` when
    it fits ``target_bytes`` whole (``product_bytes``: the estimate for the whole batch) or when slicing
    would not be exact (see the module docstring)."""
    if product_bytes <= target_bytes:
        return None
    obj = op.objective
    n = _rows(ctx)
    if n is None or n < 2 or not recognized(obj.loss_fn):
        return None
    if obj.validate().random:
        return None
    pieces = min(n, math.ceil(product_bytes / max(target_bytes, 1)))
    size = math.ceil(n / pieces)
    slices = [slice(a, min(a + size, n)) for a in range(0, n, size)]
    if not _independent(op, ctx, slices[0]):
        return None
    total = normalizer(obj.loss_fn, ctx.targets)
    out = []
    for rows in slices:
        part = normalizer(obj.loss_fn, take(ctx.targets, rows))
        if part > 0:  # a slice whose every label is ignored adds nothing (its own loss is 0/0)
            out.append((rows, part / total))
    return out


def sliced_apply(op, ctx, prepare, slices):
    """``apply(V)``: the sum over ``slices`` of ``weight * prepare(slice context)(V)``; for one vector also
    ``apply.add_into(acc, V, w)``: ``acc += w * apply(V)`` with each slice's product added as it comes."""
    from .objective import BatchContext

    def parts():
        for rows, weight in slices:
            sub = BatchContext(op.objective, take(ctx.inputs, rows), take(ctx.targets, rows), ctx.index, ctx.count)
            sub.first_row = rows.start
            yield weight, prepare(sub)

    def apply(V):
        out = None
        for weight, part in parts():
            if V.shape[1] == 1 and getattr(part, "per_parameter", None) is not None:
                # one vector: sum per parameter in place (two copies of the parameters at most, not three)
                new = part.per_parameter(V)
                if out is None:
                    out = [t.mul_(weight) for t in new]
                else:
                    for i, t in enumerate(new):
                        out[i].add_(t, alpha=weight)
                        new[i] = None
                continue
            part = part(V)
            out = part.mul_(weight) if out is None else out.add_(part, alpha=weight)
        return op.params.flatten_list(out)[:, None] if isinstance(out, list) else out

    def add_into(acc, V, w):
        # no running sum beside the accumulator: on large models the parameter-sized buffers dominate the peak
        for weight, part in parts():
            if getattr(part, "add_into", None) is not None:  # the slice's backward pass adds into acc itself
                part.add_into(acc, V, w * weight)
            elif getattr(part, "per_parameter", None) is not None:
                new = part.per_parameter(V)
                for i, where in enumerate(op.params.slices):
                    acc[where].add_(new[i].reshape(-1), alpha=w * weight)
                    new[i] = None
            else:
                acc.add_(part(V)[:, 0], alpha=w * weight)

    apply.add_into = add_into
    return apply


def _rows(ctx) -> int | None:
    """The common leading dimension of every input and target tensor, or ``None``."""
    tensors = [t for t in _flat(ctx.inputs) + _flat(ctx.targets)]
    if not tensors or any(t.dim() == 0 for t in tensors):
        return None
    n = tensors[0].shape[0]
    return n if all(t.shape[0] == n for t in tensors) else None


def _flat(x) -> list:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _flat(item)]
    return [None]  # something that cannot be sliced: makes _rows fail


def _independent(op, ctx, rows: slice) -> bool:
    """Whether the model's output on the samples ``rows`` alone equals those rows of the whole batch's
    output (once per operator; float rounding of different GEMM shapes allowed)."""
    known = getattr(op, "_slices_exact", None)
    if known is not None:
        return known
    obj = op.objective
    primals = obj.params.primals()
    try:
        with torch.no_grad():
            whole = select_output(obj.loss_fn, ctx.outputs(primals))
            part = select_output(obj.loss_fn, obj.forward(primals, take(ctx.inputs, rows),
                                                          seed=obj.seed_of(ctx.index)))
        eps = torch.finfo(whole.dtype).eps
        ok = (isinstance(whole, torch.Tensor) and whole.shape[1:] == part.shape[1:]
              and bool(torch.allclose(whole[rows], part, rtol=100 * eps, atol=100 * eps * float(whole.abs().max()))))
    except Exception:  # noqa: BLE001 - a model that cannot run on a slice is simply not sliced
        ok = False
    op._slices_exact = ok
    return ok
