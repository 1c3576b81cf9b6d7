"""Exact Hessian of the loss with respect to the parameters, as a matrix-free operator."""

from __future__ import annotations

from torch.func import grad, vjp

from .base import CurvatureOperator


class HessianOperator(CurvatureOperator):
    """Exact Hessian ``H = d^2 L / d theta^2`` of the globally normalized loss (see :mod:`..objective`).

    Products are reverse-over-reverse: one forward and backward per batch builds ``grad`` with its graph
    (``vjp(grad(loss))``), and every chunk of vectors is one vmapped double-backward through it. Since
    ``H`` is symmetric, ``vjp`` of the gradient is ``H v``. Reverse-over-reverse needs only double
    backward, which every op has (forward-over-reverse trips on some torch losses, e.g. ``MSELoss``).
    """

    kind = "Hessian"

    def _prepare(self, ctx):
        _, vjp_fn = vjp(grad(ctx.loss), self.params.primals())
        return lambda V: self._batched(lambda t: vjp_fn(t)[0], V)
