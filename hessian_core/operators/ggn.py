"""Generalized Gauss-Newton ``G = J^T H_L J`` and empirical Fisher ``F = sum_i g_i g_i^T``."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import grad, jvp, vjp, vmap

from ..errors import InvalidInputError
from .base import CurvatureOperator


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

        return lambda V: self._batched(ggnvp, V)


class EmpiricalFisherOperator(CurvatureOperator):
    """Empirical Fisher ``F = sum_i g_i g_i^T / W`` with ``g_i`` the gradient of the loss of sample ``i``.

    The loss of a sample is ``loss_fn`` on that sample alone (a batch of one); ``W`` is the total count
    for ``"mean"`` losses and 1 for ``"sum"``, as for the Hessian. Samples are sliced along dim 0 of the
    inputs and targets. Not defined in train mode with BatchNorm (samples are not independent there).
    """

    kind = "empirical Fisher"
    _per_sample = True

    def _init(self, objective, chunk):
        batchnorm = nn.modules.batchnorm._BatchNorm
        if objective.train_mode and any(isinstance(m, batchnorm) for m in objective.model.modules()):
            raise InvalidInputError(
                "the empirical Fisher needs per-sample gradients, which BatchNorm in train mode does not have "
                "(it mixes the samples of a batch); use train_mode=False, or the Hessian/GGN operators"
            )
        super()._init(objective, chunk)

    def sample_gradients(self, ctx) -> torch.Tensor:
        """Per-sample gradients of batch ``ctx`` as columns, ``(P, n)``."""
        primals = self.params.primals()
        obj = self.objective

        def sample_loss(params, x, y):
            return obj.loss_fn(obj.forward(params, _unsqueeze(x)), _unsqueeze(y))

        if self._vmap_ok:
            try:
                per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0), randomness="same")
                grads = per_sample(primals, ctx.inputs, ctx.targets)
                return self._flat_columns(grads)
            except (RuntimeError, NotImplementedError):
                self._vmap_ok = False
        n = ctx.targets.shape[0]
        cols = [self.params.flatten(grad(sample_loss)(primals, _index(ctx.inputs, i), ctx.targets[i]))
                for i in range(n)]
        return torch.stack(cols, dim=1)

    def _prepare(self, ctx):
        G = self.sample_gradients(ctx)
        return lambda V: G @ (G.T @ V)

    def to_dense(self) -> torch.Tensor:
        P = self.params.numel
        item = torch.empty((), dtype=self.dtype).element_size()
        self._dense_check(P * P * item, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        out = torch.zeros(P, P, dtype=self.dtype, device=self.device)

        def contribution(ctx, acc, w):
            G = self.sample_gradients(ctx)
            acc.addmm_(G, G.T, alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=True, desc="dense empirical Fisher")

    def diagonal(self) -> torch.Tensor:
        out = torch.zeros(self.params.numel, dtype=self.dtype, device=self.device)

        def contribution(ctx, acc, w):
            acc.add_(self.sample_gradients(ctx).square().sum(1), alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=True, desc="empirical Fisher diagonal")


def _unsqueeze(x):
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return type(x)(t.unsqueeze(0) for t in x)


def _index(x, i):
    if isinstance(x, torch.Tensor):
        return x[i]
    return type(x)(t[i] for t in x)
