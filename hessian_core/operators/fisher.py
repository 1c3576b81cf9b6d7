"""Empirical Fisher ``F = sum_i g_i g_i^T``."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError
from ..objective import default_count
from ..sample_gradients import index, losses_and_gradients
from .curvature import CurvatureOperator


class EmpiricalFisherOperator(CurvatureOperator):
    """Empirical Fisher ``F = sum_i c_i g_i g_i^T / W`` with ``g_i`` the gradient of the loss of sample ``i``.

    The loss of a sample is ``loss_fn`` on that sample alone (a batch of one); ``c_i`` its count (1, or
    what ``count_fn`` gives for it alone: a cross-entropy target's class weight, 0 when it is ignored), and
    ``W`` the total count for ``"mean"`` losses and 1 for ``"sum"``, as for the Hessian. Samples are sliced
    along dim 0 of the inputs and targets. Not defined in train mode with BatchNorm (samples are not independent there).
    """

    kind = "empirical Fisher"
    per_sample = True

    def __init__(self, model, loss_fn=None, data=None, *, chunk_size: int | None = None, **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        batchnorm = nn.modules.batchnorm._BatchNorm
        if self.objective.train_mode and any(isinstance(m, batchnorm) for m in self.objective.model.modules()):
            raise InvalidInputError(
                "the empirical Fisher needs per-sample gradients, which BatchNorm in train mode does not have "
                "(it mixes the samples of a batch); use train_mode=False, or the Hessian/GGN operators"
            )

    def sample_gradients(self, ctx) -> torch.Tensor:
        """Per-sample gradients of batch ``ctx`` as columns, ``(P, n)``."""
        return losses_and_gradients(self.objective, ctx)[1]

    def weighted_gradients(self, ctx) -> torch.Tensor:
        """Per-sample gradients times the square root of each sample's count, ``(P, n)``: a sample's count is
        what ``count_fn`` gives for it alone (1 by default; for cross-entropy the class weight of its target,
        0 when the target is ignored, whose gradient of 0/0 is then left out)."""
        G = self.sample_gradients(ctx)
        obj = self.objective
        if obj.count_fn is default_count:
            return G
        n = G.shape[1]
        per_sample = getattr(obj.count_fn, "per_sample", None)  # vectorized for the torch losses' counts
        if per_sample is not None:
            counts = per_sample(ctx.inputs, ctx.targets).to(dtype=G.dtype, device=G.device)
        else:
            counts = torch.tensor([float(obj.count_fn(index(ctx.inputs, i, keep=True),
                                                      index(ctx.targets, i, keep=True))) for i in range(n)],
                                  dtype=G.dtype, device=G.device)
        return torch.where(counts > 0, G * counts.clamp_min(0).sqrt(), 0)

    def _prepare(self, ctx):
        G = self.weighted_gradients(ctx)
        return lambda V: G @ (G.T @ V)

    def to_dense(self) -> torch.Tensor:
        P = self.size
        self._dense_check(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        out = torch.zeros(P, P, dtype=self.dtype, device=self.device)

        def contribution(ctx, acc, w):
            G = self.weighted_gradients(ctx)
            acc.addmm_(G, G.T, alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=True, desc="dense empirical Fisher")

    def diagonal(self) -> torch.Tensor:
        out = torch.zeros(self.size, dtype=self.dtype, device=self.device)

        def contribution(ctx, acc, w):
            acc.add_(self.weighted_gradients(ctx).square().sum(1), alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=True, desc="empirical Fisher diagonal")

