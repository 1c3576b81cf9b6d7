"""Checks of ``loss_fn`` on the first batch that PyTorch does not make: a loss that does not depend on the
model outputs (a constant, or detached: its Hessian would be zero without any error), and a custom loss
that silently broadcasts the outputs against the targets (``(N, 1) - (N,)`` is ``(N, N)``).

:func:`check_loss_fn` runs ``loss_fn`` once more on the first batch's outputs (made to require grad) while
watching the elementwise operations it performs; :func:`hessian_core.validation.probe` calls it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .data import shape_str
from .errors import InvalidInputError

_ELEMENTWISE = {
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide, torch.true_divide,
    torch.pow, torch.rsub, torch.maximum, torch.minimum, torch.atan2, torch.hypot, torch.xlogy,
    torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul, torch.Tensor.div, torch.Tensor.pow,
    torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__, torch.Tensor.__rsub__,
    torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__, torch.Tensor.__rtruediv__,
    torch.Tensor.__pow__, torch.Tensor.__rpow__,
    F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
    F.binary_cross_entropy_with_logits, F.soft_margin_loss, F.poisson_nll_loss, F.gaussian_nll_loss,
}


class _BroadcastWatch(TorchFunctionMode):
    """Records the first elementwise op on a tensor that requires grad (derived from the outputs) whose
    operands have different numbers of dimensions and broadcast to more elements than either has."""

    def __init__(self):
        super().__init__()
        self.found: tuple | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.found is None and func in _ELEMENTWISE:
            tensors = [a for a in list(args[:2]) + [kwargs.get("target")] if isinstance(a, torch.Tensor)]
            if len(tensors) == 2 and any(t.requires_grad for t in tensors):
                a, b = tensors
                if a.dim() != b.dim() and a.numel() > 1 and b.numel() > 1:
                    try:
                        shape = torch.broadcast_shapes(a.shape, b.shape)
                    except RuntimeError:
                        shape = None
                    if shape is not None and _numel(shape) > max(a.numel(), b.numel()):
                        self.found = (getattr(func, "__name__", str(func)), tuple(a.shape), tuple(b.shape),
                                      tuple(shape))
        return func(*args, **kwargs)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _requiring_grad(x):
    """Floating tensors of ``x`` as non-leaf tensors that require grad (a loss may write into its input)."""
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_().clone() if x.is_floating_point() or x.is_complex() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_requiring_grad(t) for t in x)
    if isinstance(x, dict):
        return {k: _requiring_grad(v) for k, v in x.items()}
    return x


def check_loss_fn(ctx, outputs) -> None:
    """Raise :class:`InvalidInputError` when ``loss_fn`` on batch ``ctx``'s ``outputs`` (the first batch's,
    computed without graph) does not depend on them, or broadcasts them against the targets."""
    watch = _BroadcastWatch()
    try:
        with torch.enable_grad(), watch:
            loss = ctx.loss_of_outputs(_requiring_grad(outputs))
    except RuntimeError:  # ran without graph in the probe; with one it may trip on something else: no verdict
        return
    if watch.found is not None:
        name, a, b, shape = watch.found
        raise InvalidInputError(
            f"loss_fn broadcasts a {a} tensor against a {b} one into {shape} in {name} (outputs "
            f"{shape_str(outputs)}, targets {shape_str(ctx.targets)}): that silently gives a wrong loss and "
            "Hessian; reshape the targets (or the outputs) so that their shapes match")
    if isinstance(loss, torch.Tensor) and not loss.requires_grad:
        raise InvalidInputError(
            "loss_fn returned a value that does not depend on the model outputs (a constant, or a tensor cut "
            "from the graph by .detach(), .item(), torch.tensor(...) or torch.no_grad()): its Hessian would be "
            "zero. Compute the loss from the outputs with torch operations")
