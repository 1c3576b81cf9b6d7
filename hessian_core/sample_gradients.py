"""Per-sample losses and gradients through the objective's forward (``torch.func``, vmapped over samples).

The loss of sample ``n`` is ``loss_fn`` on that sample alone (a batch of one); everything goes through
:meth:`~hessian_core.objective.Objective.forward`, so the model policy holds (parameters and buffers
untouched, eval mode unless asked, random draws fixed per batch). Used by the empirical Fisher
(:mod:`hessian_core.operators.fisher`) and the inverse-curvature tools (:mod:`hessian_core.inverse.per_sample`).

* :func:`losses_and_gradients`: ``l_n`` ``(m,)`` and ``grad l_n`` as columns ``(P, m)`` of samples ``a..b-1``.
* :func:`unsqueeze`, :func:`take`, :func:`index`, :func:`num_samples`: samples of a batch whose inputs are a
  tensor or a tuple of tensors.
"""

from __future__ import annotations

import warnings

import torch
from torch.func import grad_and_value, vmap


def unsqueeze(x):
    """A sample as a batch of one."""
    return x.unsqueeze(0) if isinstance(x, torch.Tensor) else type(x)(unsqueeze(t) for t in x)


def take(x, a: int, b: int):
    """Samples ``a..b-1``."""
    return x[a:b] if isinstance(x, torch.Tensor) else type(x)(take(t, a, b) for t in x)


def index(x, i: int, keep: bool = False):
    """Sample ``i`` (``keep=True``: as a batch of one)."""
    return take(x, i, i + 1) if keep else (x[i] if isinstance(x, torch.Tensor) else type(x)(index(t, i) for t in x))


def num_samples(ctx) -> int:
    """Samples in batch ``ctx`` (leading dimension of the targets)."""
    return int(ctx.targets.shape[0])


def vmapped(objective, fn, fallback):
    """``fn()`` (vmapped over samples), or the per-sample loop ``fallback()`` for a model vmap cannot batch:
    any error of the batched call whose loop succeeds (vmap's own messages do not always say "vmap"; an
    error of the loop itself is the model's and is raised). The failure is remembered on the objective
    (``objective.notes["per-sample vmap"]``), so later calls loop at once, and warned about once."""
    if "per-sample vmap" in objective.notes:
        return fallback()
    try:
        return fn()
    except (RuntimeError, NotImplementedError) as e:
        if isinstance(e, torch.OutOfMemoryError):
            raise
        out = fallback()
        why = f"vmap failed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); looping over samples"
        objective.notes["per-sample vmap"] = why
        warnings.warn(f"per-sample derivatives: {why}", RuntimeWarning, stacklevel=3)
        return out


def losses_and_gradients(objective, ctx, a: int = 0, b: int | None = None):
    """Per-sample losses ``(m,)`` and gradients ``(P, m)`` of samples ``a..b-1`` of batch ``ctx``."""
    spec = objective.params
    primals = spec.primals()
    seed = objective.seed_of(ctx.index)
    b = num_samples(ctx) if b is None else b
    x, y = take(ctx.inputs, a, b), ctx.targets[a:b]

    def sample_loss(params, xi, yi):
        return objective.loss_fn(objective.forward(params, unsqueeze(xi), seed=seed), unsqueeze(yi))

    def batched():
        g, v = vmap(grad_and_value(sample_loss), in_dims=(None, 0, 0), randomness="same")(primals, x, y)
        return v.detach(), torch.cat([t.reshape(t.shape[0], -1) for t in g], dim=1).T

    def loop():
        out = [grad_and_value(sample_loss)(primals, index(x, i), y[i]) for i in range(b - a)]
        return (torch.stack([v.detach() for _, v in out]),
                torch.stack([spec.flatten(g) for g, _ in out], dim=1))

    return vmapped(objective, batched, loop)
