"""Per-sample derivatives through the objective's forward (``torch.func``, vmapped over samples).

The loss of sample ``n`` is ``loss_fn`` on that sample alone (a batch of one), ``l_n``; the objective is
then ``L = sum_n l_n / W`` (``W`` the sample count for ``"mean"``, 1 for ``"sum"``), which
:func:`check_separable` verifies on a batch. Everything goes through :meth:`Objective.forward`, so the model
policy holds (parameters and buffers untouched, eval mode unless asked, random draws fixed per batch).

* :func:`losses_and_gradients` (from :mod:`hessian_core.sample_gradients`): ``l_n`` ``(n,)`` and ``grad l_n`` as
  columns ``(P, n)``.
* :func:`jacobians`: model outputs ``f_n`` flattened ``(n, O)`` and their Jacobians ``(n, O, P)``.
* :func:`ggn_factors`: ``S_n^T J_n`` with ``S_n S_n^T`` the output Hessian ``d^2 l_n / d f_n^2`` (signed).
* :func:`ggn`: the generalized Gauss-Newton ``sum_n J_n^T H_n J_n / W``, dense or its diagonal, from those.

Samples are processed in chunks sized by the memory budget.
"""

from __future__ import annotations

import contextlib

import torch
from torch.func import jacrev, vjp, vmap

from ..errors import InvalidInputError
from ..memory import format_bytes
from ..sample_gradients import index as _index
from ..sample_gradients import losses_and_gradients, num_samples
from ..sample_gradients import take as _take
from ..sample_gradients import unsqueeze as _unsqueeze
from ..sample_gradients import vmapped as _vmapped


def refuse_train_mode(objective, what: str) -> None:
    """Per-sample quantities need samples that do not interact: refuse ``train_mode=True``."""
    if objective.train_mode:
        raise InvalidInputError(
            f"{what} needs per-sample losses, which a model in train mode does not have in general (BatchNorm "
            "mixes the samples of a batch, dropout draws per batch); use train_mode=False (the default)")


def sample_chunk(objective, per_sample_numbers: int, reserved: int = 0) -> int:
    """Samples per vmapped call so that ``per_sample_numbers`` numbers per sample (plus activations) fit."""
    item = torch.empty((), dtype=objective.params.dtype).element_size()
    per = item * (3 * per_sample_numbers + objective.bytes_per_column())
    left = objective.budget - reserved
    if left < per:
        raise InvalidInputError(
            f"one sample's derivatives need about {format_bytes(per)}, more than the memory budget left "
            f"({format_bytes(max(left, 0))}); raise memory_budget=")
    return int(max(1, min(left // per, 4096)))


def jacobians(objective, inputs, seed=None):
    """Outputs ``(m, O)`` (flattened per sample) and Jacobians ``(m, O, P)`` for the samples of ``inputs``."""
    spec = objective.params
    primals = spec.primals()

    def f(params, xi):
        out = objective.forward(params, _unsqueeze(xi), seed=seed)
        if not isinstance(out, torch.Tensor):
            raise InvalidInputError("per-sample Jacobians need a model that returns one tensor")
        out = out.reshape(-1)
        return out, out

    def flat(J):  # tuple of (m, O, *shape) -> (m, O, P)
        return torch.cat([t.reshape(t.shape[0], t.shape[1], -1) for t in J], dim=2)

    def batched():
        J, out = vmap(jacrev(f, has_aux=True), in_dims=(None, 0), randomness="same")(primals, inputs)
        return out.detach(), flat(J).detach()

    def loop():
        rows = [jacrev(f, has_aux=True)(primals, _index(inputs, i)) for i in range(_length(inputs))]
        return (torch.stack([o.detach() for _, o in rows]),
                flat(tuple(torch.stack([J[k] for J, _ in rows]) for k in range(len(primals)))).detach())

    return _vmapped(objective, batched, loop)


def ggn_factors(objective, inputs, targets, out_shape, seed=None):
    """Square-root factors of the per-sample GGN terms for the samples of ``inputs``: with the output Hessian
    ``H_n = d^2 l_n / d f_n^2 = V diag(lam) V^T`` and ``S_n = V diag(sqrt|lam|)``, the rows ``S_n^T J_n``
    (per parameter tensor, ``(m, O, *shape)``) and the signs of ``lam`` ``(m, O)``, so that
    ``J_n^T H_n J_n = sum_c sign_c (S_n^T J_n)_c^T (S_n^T J_n)_c``. One backward pass per output (``vjp`` with
    the columns of ``S_n``), no Jacobian formed; ``H_n`` by reverse over reverse (some torch losses lack
    forward-mode derivatives)."""
    spec = objective.params
    primals = spec.primals()

    def per_sample(params, xi, yi):
        def f(p):
            out = objective.forward(p, _unsqueeze(xi), seed=seed)
            if not isinstance(out, torch.Tensor):
                raise InvalidInputError("the GGN from per-sample derivatives needs a model that returns one tensor")
            return out.reshape(-1)

        out, pullback = vjp(f, params)
        H = jacrev(jacrev(lambda o: objective.loss_fn(o.reshape(1, *out_shape), _unsqueeze(yi))))(out.detach())
        lam, V = torch.linalg.eigh((H + H.T) / 2)
        return vmap(pullback)((V * lam.abs().sqrt()).T)[0], torch.sign(lam)

    def batched():
        return vmap(per_sample, in_dims=(None, 0, 0), randomness="same")(primals, inputs, targets)

    def loop():
        rows = [per_sample(primals, _index(inputs, i), targets[i]) for i in range(targets.shape[0])]
        return (tuple(torch.stack([r[0][k] for r in rows]) for k in range(len(primals))),
                torch.stack([r[1] for r in rows]))

    factors, signs = _vmapped(objective, batched, loop)
    return [t.detach() for t in factors], signs.detach()


def _length(x) -> int:
    return int(x.shape[0]) if isinstance(x, torch.Tensor) else _length(x[0])


def separability(objective, ctx, rtol: float | None = None, samples: int = 64) -> str | None:
    """``None`` when the objective's loss on (the first ``samples`` samples of) batch ``ctx``, weighted as the
    objective weights a batch, is the sum of the per-sample losses; else why not. It is not for a loss that
    averages over something else than samples (``count_fn``, ``ignore_index``, class weights) or a model
    whose output for a sample depends on the other samples."""
    m = min(num_samples(ctx), samples)
    x, y = _take(ctx.inputs, 0, m), ctx.targets[:m]
    primals = objective.params.primals()
    with torch.no_grad():
        batch = float(objective.loss_fn(objective.forward(primals, x, seed=objective.seed_of(ctx.index)), y))
        count = objective.count_fn(x, y)
        weight = float(count.item() if isinstance(count, torch.Tensor) else count)
        weight = weight if objective.reduction == "mean" else 1.0
        losses, _ = losses_and_gradients(objective, ctx, 0, m)
    total = float(losses.sum())
    rtol = 1e3 * torch.finfo(objective.params.dtype).eps if rtol is None else rtol  # round-off of the two sums
    if abs(total - weight * batch) <= rtol * max(abs(total), abs(weight * batch), 1e-30):
        return None
    return (f"the loss of the first {m} samples of batch {ctx.index} ({weight * batch:.10g} with the objective's "
            f"weight {weight:g}) is not the sum of their per-sample losses ({total:.10g})")


def check_separable(objective, ctx) -> None:
    """Refuse (:class:`~hessian_core.errors.InvalidInputError`) an objective that is not a sum of per-sample
    losses on batch ``ctx`` (:func:`separability`)."""
    why = separability(objective, ctx)
    if why is not None:
        raise InvalidInputError(
            f"{why}: influence functions and Laplace need a loss that is a mean or sum over samples (no count_fn, "
            "ignore_index or class weights) and a model that treats samples independently (eval mode)")


def is_separable(objective) -> bool:
    """Whether the objective is a sum of per-sample losses, judged on its first batch (see :func:`separability`)."""
    if objective.train_mode:
        return False
    with contextlib.closing(objective.contexts()) as batches:
        return separability(objective, next(batches)) is None


def ggn(objective, diagonal: bool = False, desc: str = "GGN") -> torch.Tensor:
    """``G = sum_n J_n^T H_n J_n / W`` (``(P, P)``, or its diagonal ``(P,)``) over the objective's data:
    ``J_n`` the Jacobian of sample ``n``'s outputs, ``H_n`` its loss's Hessian in the outputs. Equal to
    :class:`~hessian_core.operators.GGNOperator` for losses that are sums over samples (checked on the first
    batch), and much faster when the outputs are few: ``O`` backward passes per sample (:func:`ggn_factors`)
    instead of ``P`` products."""
    spec = objective.params
    P = spec.numel
    out = torch.zeros((P,) if diagonal else (P, P), dtype=spec.dtype, device=spec.device)
    item = out.element_size()
    shape = objective.validate().output_shape
    if not (isinstance(shape, tuple) and len(shape) >= 1 and all(isinstance(s, int) for s in shape)):
        raise InvalidInputError("the GGN from per-sample derivatives needs a model that returns one tensor")
    out_shape = tuple(shape[1:])
    n_out = max(1, int(torch.Size(out_shape).numel()))
    step = sample_chunk(objective, 2 * n_out * P + n_out * n_out, reserved=out.numel() * item)
    checked = []

    def contribution(ctx, acc, w):
        if not checked:
            check_separable(objective, ctx)
            checked.append(True)
        seed = objective.seed_of(ctx.index)
        n = num_samples(ctx)
        for a in range(0, n, step):
            b = min(a + step, n)
            factors, signs = ggn_factors(objective, _take(ctx.inputs, a, b), ctx.targets[a:b], out_shape, seed)
            m = b - a
            if diagonal:
                weights = signs.reshape(1, -1)  # +1 everywhere for a loss convex in the outputs
                acc.add_(torch.cat([(weights @ (t * t).reshape(weights.shape[1], -1))[0] for t in factors]),
                         alpha=w)
            else:
                F = torch.cat([t.reshape(m * n_out, -1) for t in factors], dim=1)
                acc.addmm_(F.T, signs.reshape(-1, 1) * F, alpha=w)

    return objective.accumulate(contribution, out, per_sample=True, desc=desc)
