"""Generalized Gauss-Newton ``G = J^T H_L J``."""

from __future__ import annotations

from torch.func import grad, jvp, vjp

from .curvature import CurvatureOperator, Products


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix ``G = sum_b w_b J_b^T H_b J_b / W``.

    ``J_b`` is the Jacobian of the model outputs with respect to the parameters on batch ``b`` and
    ``H_b`` the Hessian of ``loss_fn(outputs, targets)`` with respect to the outputs; same normalization
    as the Hessian. Positive semi-definite when the loss is convex in the outputs (MSE, cross-entropy);
    equals the Hessian for models linear in the parameters. ``J v`` is forward mode through the model,
    ``H_b`` reverse-over-reverse through the loss, ``J^T`` reverse mode.
    """

    kind = "GGN"

    def _prepare(self, ctx):
        primals = self.params.primals()
        outputs, model_vjp = vjp(ctx.outputs, primals)
        _, loss_hvp = vjp(grad(ctx.loss_of_outputs), outputs.detach())

        def ggnvp(tangents):
            _, jv = jvp(ctx.outputs, (primals,), (tangents,))
            return model_vjp(loss_hvp(jv)[0])[0]

        def one(v):  # one vector without vmap's overhead
            return self.params.flatten(ggnvp(tuple(self.params.unflatten(v))))

        def block(V):
            return self._batched(ggnvp, V)

        return Products(block=block, one=one, batched=block)
