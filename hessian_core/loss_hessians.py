"""The Hessian of a standard loss with respect to the model output, in closed form, as a product.

The generalized Gauss-Newton ``J^T H J`` needs ``H``, the Hessian of the batch loss with respect to the
model output. For the standard losses it is known in closed form, and applying it costs a few passes over
the output (no autograd graph through the loss, nothing of size ``C x C`` per position):

* ``nn.CrossEntropyLoss`` (class indices or class probabilities; ``weight``, ``ignore_index``,
  ``label_smoothing``, ``reduction``; class dimension 1 as torch has it) and :class:`~hessian_core.losses.
  CausalLMLoss`: per position ``a_i (diag(p_i) - p_i p_i^T)`` with ``p_i`` the softmax of the logits and
  ``a_i`` the weight torch's reduction gives that position (0 where ignored);
* ``nn.MSELoss``: ``2 / D`` times the identity (``D`` the number of elements for ``'mean'``, else 1);
* ``nn.BCEWithLogitsLoss`` (``weight``, ``pos_weight``): diagonal, ``w ((pw - 1) t + 1) s (1 - s) / D``
  with ``s`` the sigmoid of the logit;
* ``nn.BCELoss`` (probabilities ``x``): diagonal, ``w (t / x^2 + (1 - t) / (1 - x)^2) / D``, where torch
  does not clamp (``x (1 - x) >= 1e-12``; otherwise the generic path is taken for that batch).

A loss is recognized by its exact type (not a subclass, no hooks); anything else returns ``None`` and the
caller differentiates the loss with autograd instead. The product overwrites its input, and the softmax is
recomputed per chunk of positions from the output passed with each product, so nothing output-sized is
allocated or kept by ``H``, whatever the vocabulary.

Monte-Carlo Fisher: with ``mc_samples=k`` the Hessian is replaced by the unbiased estimate from ``k``
targets drawn from the model's predictive distribution (categorical for cross-entropy, Bernoulli for BCE
with logits, Gaussian for MSE), ``a_i / k sum_j g_ij g_ij^T`` with ``g_ij = p_i - e_{y_ij}`` (and the
analogues), drawn once per batch from a seeded generator so that the operator is one fixed matrix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .errors import InvalidInputError

#: positions (rows of the output) whose softmax is formed at once: bounds a product's temporaries
_CHUNK_BYTES = 64 * 2**20


class OutputHessian:
    """``H`` of one batch in closed form, a function of the model output (the tensor the loss reads).

    :meth:`apply_` overwrites ``U`` (shaped like the output; a ``vmap``-batched tangent is fine) with
    ``H U``; ``output`` is the model output at which ``H`` is taken, passed again with every product so that
    no copy of it (vocabulary-sized for a language model) is kept between products."""

    def apply_(self, U: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def apply(self, U: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """``H U`` into a new tensor."""
        return self.apply_(U.clone(), output)


class SoftmaxHessian(OutputHessian):
    """``a_i (diag(p_i) - p_i p_i^T)`` per position ``i`` of the logits (class dimension ``class_dim``),
    ``p_i`` their softmax, ``a`` of the logits' shape without the class dimension. With ``samples``
    (``(k, *a.shape)`` class indices drawn from ``p``) the rank-``k`` estimate
    ``a_i / k sum_j (p_i - e_{y_j})(p_i - e_{y_j})^T`` instead."""

    def __init__(self, class_dim: int, a: torch.Tensor, samples: torch.Tensor | None = None):
        self.class_dim = class_dim
        self.a = a
        self.samples = samples

    def apply_(self, U, output):
        cd = self.class_dim % output.dim()
        C = output.shape[cd]
        logits = output.detach().movedim(cd, -1).reshape(-1, C)
        moved = U.movedim(cd, -1)
        u = moved.reshape(-1, C)  # a view when the class dimension is last (language models)
        a = self.a.to(logits.dtype).reshape(-1, 1)
        samples = None if self.samples is None else self.samples.reshape(self.samples.shape[0], -1)
        rows = max(1, _CHUNK_BYTES // (4 * C * logits.element_size()))
        for r in range(0, logits.shape[0], rows):
            p = torch.softmax(logits[r:r + rows], dim=-1)
            x = u[r:r + rows]
            if samples is None:
                x = a[r:r + rows] * p * (x - (p * x).sum(-1, keepdim=True))
            else:
                y = samples[:, r:r + rows].T  # (rows, k) classes drawn; g_j = p - e_{y_j}, g_j g_j^T x = g_j s_j
                s = (p * x).sum(-1, keepdim=True) - x.gather(-1, y)
                x = a[r:r + rows] * (p * s.sum(-1, keepdim=True) - torch.zeros_like(x).scatter_add(-1, y, s))
                x = x / y.shape[1]
            u[r:r + rows] = x
        return u.reshape(moved.shape).movedim(-1, cd)


class DiagonalHessian(OutputHessian):
    """``H = diag(h)`` (``h`` broadcastable to the output); with ``noise`` (``(k, *output shape)``, of unit
    variance) the Monte-Carlo estimate ``diag(h * mean_j noise_j^2)`` instead."""

    def __init__(self, h: torch.Tensor, noise: torch.Tensor | None = None):
        self.h = h if noise is None else h * noise.square().mean(0)

    def apply_(self, U, output):
        return U.mul_(self.h)


# -- recognition ------------------------------------------------------------------------------------

def select_output(loss_fn, outputs):
    """The tensor of ``outputs`` that ``loss_fn`` reads: ``loss_fn.select(outputs)`` when the loss says,
    else ``outputs`` itself."""
    select = getattr(loss_fn, "select", None)
    return select(outputs) if callable(select) else outputs


def recognized(loss_fn) -> bool:
    """Whether :func:`output_hessian` knows ``loss_fn`` (exact type, no hooks)."""
    from .losses import CausalLMLoss

    if type(loss_fn) not in (nn.CrossEntropyLoss, nn.MSELoss, nn.BCEWithLogitsLoss, nn.BCELoss, CausalLMLoss):
        return False
    hooks = (loss_fn._forward_hooks, loss_fn._forward_pre_hooks, nn.modules.module._global_forward_hooks,
             nn.modules.module._global_forward_pre_hooks)
    return not any(hooks)


def output_hessian(loss_fn, output: torch.Tensor, targets, *, mc_samples: int | None = None,
                   generator: torch.Generator | None = None) -> OutputHessian | None:
    """Closed-form ``H`` of ``loss_fn(output, targets)`` (``output``: the tensor :func:`select_output`
    gives), or ``None`` when ``loss_fn`` is not one of the losses listed in the module docstring, or when
    the closed form would not be exact for this batch (BCE where torch clamps)."""
    from .losses import CausalLMLoss

    if not recognized(loss_fn):
        return None
    if isinstance(loss_fn, CausalLMLoss):
        a = loss_fn.position_weights(output, targets)
        return _softmax(output, -1, a, mc_samples, generator)
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return _cross_entropy(loss_fn, output, targets, mc_samples, generator)
    denominator = output.numel() if loss_fn.reduction == "mean" else 1
    if isinstance(loss_fn, nn.MSELoss):
        h = torch.full((), 2.0 / denominator, dtype=output.dtype, device=output.device)
        return DiagonalHessian(h.expand_as(output), _gaussian(mc_samples, output, generator))
    t = targets.to(output.dtype)
    w = 1.0 if loss_fn.weight is None else loss_fn.weight.to(output.dtype)
    if isinstance(loss_fn, nn.BCEWithLogitsLoss):
        s = torch.sigmoid(output.detach())
        pw = 1.0 if loss_fn.pos_weight is None else loss_fn.pos_weight.to(output.dtype)
        coef = w * ((pw - 1) * t + 1) / denominator
        if mc_samples is None:
            return DiagonalHessian(coef * s * (1 - s))
        draws = torch.bernoulli(s.expand(mc_samples, *s.shape), generator=generator)
        # g = s - y has E[g^2] = s (1 - s): the noise is g / sqrt(s (1 - s)), of unit variance
        return DiagonalHessian(coef * s * (1 - s),
                               (s - draws) / (s * (1 - s)).sqrt().clamp_min(torch.finfo(s.dtype).tiny))
    x = output.detach()  # nn.BCELoss on probabilities
    if mc_samples is not None:
        raise InvalidInputError("mc_samples: the Monte-Carlo Fisher of nn.BCELoss on probabilities is not the GGN "
                                "(its link is not canonical); use nn.BCEWithLogitsLoss on logits, or mc_samples=None")
    if bool((x * (1 - x) < 1e-12).any()):
        return None
    return DiagonalHessian(w * (t / x.square() + (1 - t) / (1 - x).square()) / denominator)


def _cross_entropy(loss_fn, output, targets, mc_samples, generator):
    """``nn.CrossEntropyLoss`` as torch computes it (``aten/src/ATen/native/LossNLL.cpp``): the weight of
    each position in the reduced loss, then :class:`SoftmaxHessian`."""
    unbatched = output.dim() == 1
    if unbatched:
        output, targets = output[None], targets[None]
    C = output.shape[1]
    eps = float(loss_fn.label_smoothing)
    w = loss_fn.weight
    if targets.dtype.is_floating_point:  # class probabilities, same shape as the output
        q = targets.to(output.dtype)
        if eps > 0:
            q = (1 - eps) * q + eps / C
        wq = q if w is None else q * w.to(output.dtype).reshape(1, C, *([1] * (q.dim() - 2)))
        a = wq.sum(1)
        if loss_fn.reduction == "mean":
            a = a / a.numel()
    else:
        valid = (targets != loss_fn.ignore_index).to(output.dtype)  # (a Python float times a bool tensor is float32)
        safe = torch.where(valid > 0, targets, torch.zeros_like(targets))
        wt = torch.ones_like(targets, dtype=output.dtype) if w is None else w.to(output.dtype)[safe]
        wt = wt * valid
        total = C if w is None else w.to(output.dtype).sum()
        a = (1 - eps) * wt + (eps / C) * total * valid
        if loss_fn.reduction == "mean":
            a = a / wt.sum()
    out = _softmax(output, 1, a, mc_samples, generator)
    if unbatched:
        return _Unbatched(out)
    return out


class _Unbatched(OutputHessian):
    """A batched Hessian applied to an unbatched output ``(C,)``."""

    def __init__(self, inner: OutputHessian):
        self.inner = inner

    def apply_(self, U, output):
        return self.inner.apply_(U[None], output[None])[0]


def _softmax(logits, class_dim, a, mc_samples, generator):
    samples = None
    if mc_samples is not None:
        p = torch.softmax(logits.detach().movedim(class_dim, -1), dim=-1).reshape(-1, logits.shape[class_dim])
        samples = torch.multinomial(p, mc_samples, replacement=True, generator=generator).T
        samples = samples.reshape(mc_samples, *a.shape)
    return SoftmaxHessian(class_dim, a.to(logits.dtype), samples)


def _gaussian(mc_samples, output, generator):
    if mc_samples is None:
        return None
    return torch.randn((mc_samples, *output.shape), dtype=output.dtype, device=output.device, generator=generator)


def normalizer(loss_fn, targets) -> float:
    """What ``loss_fn`` (one of :func:`recognized`'s losses) divides its sum by on a batch with these
    targets: 1 for ``reduction='sum'``; for ``'mean'`` the number of elements (MSE, BCE), of positions
    (cross-entropy on probabilities), the summed class weights of the counted positions (cross-entropy on
    indices, 0 when every label is ignored), the counted tokens (:class:`CausalLMLoss`). A batch's loss is
    then the sum of its slices' losses, each times ``normalizer(slice) / normalizer(batch)``."""
    from .losses import CausalLMLoss

    if loss_fn.reduction == "sum":
        return 1.0
    if isinstance(loss_fn, CausalLMLoss):
        return float(loss_fn.count_fn(None, targets))
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        if targets.dtype.is_floating_point:
            return float(targets.numel() // targets.shape[1]) if targets.dim() > 1 else 1.0
        valid = targets != loss_fn.ignore_index
        if loss_fn.weight is None:
            return float(valid.sum())
        return float(loss_fn.weight[targets[valid]].sum())
    return float(targets.numel())


def output_of(outputs, key: str = "logits"):
    """``outputs[key]`` of a dict or ``ModelOutput``, ``outputs.key``, the first of a tuple, or the tensor."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and key in outputs:
        return outputs[key]
    if hasattr(outputs, key):
        return getattr(outputs, key)
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise InvalidInputError(f"the model returned a {type(outputs).__name__} without an entry {key!r}; the loss "
                            "needs the logits tensor")
