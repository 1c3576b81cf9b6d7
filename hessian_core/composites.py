"""Equivalent composites for the operations whose PyTorch derivatives are wrong or missing.

While hessian_core evaluates a model (:func:`hessian_core.forward.functional_forward`), the calls below are
answered by a composite of ordinary operations that computes the same forward value and has correct first
and second derivatives in both reverse and forward mode. Nothing of the user's is changed: the composites
never write into their arguments (``max_norm`` renormalizes a copy).

============================  ===================================================================
``F.embedding``               ``padding_idx``: PyTorch zeroes the padding row's gradient; the row is
                              held constant (zero rows and columns), consistently in every product.
                              ``max_norm``: PyTorch renormalizes the weight in place and ignores the
                              renormalization in the gradient; here the lookup of the renormalized
                              rows is differentiated as the function it is, and the weight is not
                              written. ``scale_grad_by_freq``: PyTorch's rescaled "gradient" is not a
                              gradient; the Hessian is that of the loss. ``sparse``: dense.
``F.embedding_bag``           no double backward, no forward mode: lookup, weights, sum/mean/max.
``F.hardsigmoid``             no double backward: ``clamp(x + 3, 0, 6) / 6``, the same arithmetic.
``torch._weight_norm``        wrong double backward, no forward mode (``weight_norm``):
                              ``v * (g / norm_except_dim(v))`` written out.
``F.rrelu`` (eval)            no forward mode: ``leaky_relu`` with slope ``(lower + upper) / 2``.
``F.multi_margin_loss``       no double backward: the margins written out.
``F.multilabel_margin_loss``  no double backward: the pairwise margins written out.
``F.ctc_loss``                no double backward: the forward (alpha) recursion in log space.
``nn.CrossMapLRN2d``          an old-style autograd Function: its channel window written out.
random draws in forward       dropout (all kinds, train mode), ``rrelu`` (train mode), ``rand_like``,
                              ``randn_like``: PyTorch draws these differently in eager calls and
                              under each ``torch.func`` transform (``bernoulli_`` or ``bernoulli.p``,
                              consuming the generator differently), so one forward would see other
                              masks than the next. Here every mask is drawn from factory calls, the
                              same in every pass: ``torch.rand(shape) < 1 - p`` with ``shape`` the
                              input's (``(N, C, 1, ...)`` for channel dropout), alpha dropout as
                              PyTorch scales it, rrelu slopes ``lower + (upper - lower) *
                              torch.rand(shape)`` where the input is negative.
============================  ===================================================================

:class:`Composites` (a ``TorchFunctionMode``) records which substitutions a forward used, for
:meth:`~hessian_core.operators.CurvatureOperator.plan`; the objective activates it only for models whose
first batch needed one (:mod:`hessian_core.validation`), so other models pay nothing.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


class Composites(TorchFunctionMode):
    """Answer the calls of :data:`RULES` with their composites; ``used`` collects ``{op: what was done}``."""

    def __init__(self, used: dict | None = None):
        super().__init__()
        self.used = {} if used is None else used

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = RULES.get(func)
        if rule is not None:
            out = rule(self.used, *args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


@contextlib.contextmanager
def composites(model: nn.Module, used: dict | None = None):
    """Inside, the model's forward uses the composites (calls and modules); ``used`` receives what was
    substituted. Module forwards are overridden on the instance and put back on exit, errors included."""
    patched = []
    try:
        for m in model.modules():
            rule = MODULE_RULES.get(type(m))
            if rule is not None and "forward" not in vars(m):
                m.forward = types.MethodType(_recording(rule, used), m)
                patched.append(m)
        with Composites(used):
            yield
    finally:
        for m in patched:
            del m.forward


def _recording(rule, used):
    def forward(module, *args, **kwargs):
        if used is not None:
            used[type(module).__name__] = rule.__doc__.splitlines()[0]
        return rule(module, *args, **kwargs)
    return forward


# -- embeddings -----------------------------------------------------------------------------------------
def _renormed(weight, max_norm, norm_type):
    """The rows ``embedding_renorm_`` would rescale (norm above ``max_norm``), rescaled as it does, on a copy."""
    norms = torch.linalg.vector_norm(weight, ord=norm_type, dim=1, keepdim=True)
    return torch.where(norms > max_norm, weight * (max_norm / (norms + 1e-7)), weight)


def _held_row(weight, padding_idx):
    """``weight`` with row ``padding_idx`` a constant (what PyTorch's zeroed gradient for that row means)."""
    if padding_idx < 0:
        padding_idx += weight.shape[0]
    row = torch.arange(weight.shape[0], device=weight.device)[:, None] == padding_idx
    return torch.where(row, weight.detach(), weight)


def _embedding(used, input, weight, padding_idx=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
               sparse=False):
    if padding_idx is None and max_norm is None and not scale_grad_by_freq and not sparse:
        return NotImplemented
    if max_norm is not None:
        weight = _renormed(weight, max_norm, norm_type)
        used["Embedding(max_norm)"] = ("the renormalized lookup is differentiated on a copy; the weight is not "
                                       "renormalized in place")
    if padding_idx is not None:
        weight = _held_row(weight, padding_idx)
        used["Embedding(padding_idx)"] = "the padding row is held constant, as PyTorch's zeroed gradient says"
    if scale_grad_by_freq:
        used["Embedding(scale_grad_by_freq)"] = ("the Hessian of the loss; PyTorch's gradient rescaled by "
                                                 "frequency is not a gradient")
    if sparse:
        used["Embedding(sparse)"] = "dense derivatives"
    return F.embedding(input, weight)


def _embedding_bag(used, input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                   mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):
    if input.is_nested or mode not in ("sum", "mean", "max") or input.dim() not in (1, 2) or (
            per_sample_weights is not None and mode != "sum"):
        return NotImplemented  # PyTorch's own call raises the argument error
    used["EmbeddingBag"] = "lookup and reduction written out (PyTorch's embedding_bag has no second derivative)"
    if input.dim() == 2:
        bags, length = input.shape
        flat = input.reshape(-1)
        bag = torch.arange(bags, device=input.device).repeat_interleave(length)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.reshape(-1)
    else:
        flat = input
        starts = offsets[:-1] if include_last_offset else offsets
        bags = starts.numel()
        positions = torch.arange(flat.numel(), device=input.device)
        bag = torch.searchsorted(starts, positions, right=True) - 1  # the last bag runs to the end, as in torch
    if max_norm is not None:
        weight = _renormed(weight, max_norm, norm_type)
    keep = bag >= 0
    if padding_idx is not None:
        keep = keep & (flat != (padding_idx if padding_idx >= 0 else padding_idx + weight.shape[0]))
    rows = F.embedding(flat, weight)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights[:, None]
    index = torch.where(keep, bag, 0)
    counts = torch.zeros(bags, dtype=rows.dtype, device=rows.device).index_add(0, index, keep.to(rows.dtype))
    if mode == "max":  # kept entries grouped by bag, padded with -inf to (bags, longest, dim)
        kept = torch.argsort(torch.where(keep, bag, bags), stable=True)[: int(keep.sum())]
        starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]]).long()
        position = torch.arange(kept.numel(), device=input.device) - starts[bag[kept]]
        padded = torch.full((bags, max(int(counts.max()) if bags else 0, 1), weight.shape[1]), float("-inf"),
                            dtype=rows.dtype, device=rows.device)
        padded = padded.index_put((bag[kept], position), rows[kept])
        out = padded.max(dim=1).values
        return torch.where(counts[:, None] > 0, out, torch.zeros_like(out))
    out = torch.zeros(bags, weight.shape[1], dtype=rows.dtype, device=rows.device).index_add(
        0, index, rows * keep[:, None].to(rows.dtype))
    if mode == "mean":
        out = out / counts.clamp_min(1)[:, None]
    return out


# -- activations, weight norm --------------------------------------------------------------------------
def _hardsigmoid(used, input, inplace=False):
    used["hardsigmoid"] = "clamp(x + 3, 0, 6) / 6 (PyTorch's hardsigmoid has no second derivative)"
    out = (input + 3).clamp(0, 6) / 6
    return input.copy_(out) if inplace else out


def _weight_norm(used, v, g, dim=0):
    used["weight_norm"] = ("g * v / ||v|| written out (PyTorch's fused weight norm has a wrong second derivative "
                           "and no forward mode)")
    return v * (g / torch.norm_except_dim(v, 2, dim))


def _rrelu(used, input, lower=1.0 / 8, upper=1.0 / 3, training=False, inplace=False):
    x = input.clone() if inplace else input  # the backward needs the input as it was
    if training:
        used["rrelu (train)"] = "slopes drawn as lower + (upper - lower) * torch.rand(shape), the same in every pass"
        slopes = lower + (upper - lower) * _uniform(x.shape, x)
        out = torch.where(x >= 0, x, x * slopes)
    else:
        used["rrelu"] = "leaky_relu with slope (lower + upper) / 2, as RReLU in eval mode (forward mode)"
        out = F.leaky_relu(x, (lower + upper) / 2)
    return input.copy_(out) if inplace else out


# -- random draws -----------------------------------------------------------------------------------------
def _uniform(shape, like):
    return torch.rand(shape, dtype=like.dtype, device=like.device)


def _dropped(used, name, input, p, keep_shape, alpha, inplace):
    """``input`` with a dropout mask of shape ``keep_shape`` (broadcast) drawn by ``torch.rand``."""
    used[name] = "masks drawn as torch.rand(shape) < 1 - p, the same in every pass and transform"
    keep = (_uniform(keep_shape, input) < 1 - p).to(input.dtype)
    if alpha:  # as aten's _dropout_impl: x * a * keep + alpha * a * (keep - 1 + p)
        scale = 1.7580993408473766
        a = 1.0 / ((scale * scale * p + 1) * (1 - p)) ** 0.5
        out = input * (keep * a) + (keep - 1 + p) * (scale * a)
    else:
        out = input * keep / (1 - p) if p < 1 else input * keep
    return input.copy_(out) if inplace else out


def _channels(shape, batched: bool):
    """Mask shape of channel dropout: one draw per (sample,) channel."""
    lead = 2 if batched else 1
    return tuple(shape[:lead]) + (1,) * (len(shape) - lead)


def _dropout_rule(name: str, alpha: bool, mask):
    """Rule for ``F.<name>(input, p, training, inplace)``; ``mask(shape) -> mask shape or None`` (None:
    an input PyTorch itself refuses)."""
    def rule(used, input, p=0.5, training=True, inplace=False):
        shape = mask(tuple(input.shape))
        if not training or p == 0 or not 0 <= p <= 1 or shape is None:
            return NotImplemented
        return _dropped(used, name, input, p, shape, alpha, inplace)
    return rule


def _aten_dropout_rule(name: str, feature: bool, alpha: bool, inplace: bool):
    """Rule for ``torch.<name>(input, p, train)`` called directly (what ``F.dropout`` & co call)."""
    def rule(used, input, p, train):
        if not train or p == 0 or not 0 <= p <= 1:
            return NotImplemented
        shape = _channels(input.shape, True) if feature else tuple(input.shape)
        return _dropped(used, name, input, p, shape, alpha, inplace)
    return rule


def _rand_like(used, input, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
               memory_format=None):
    used["rand_like"] = "drawn as torch.rand(shape), the same in every pass and transform"
    return torch.rand(input.shape, dtype=dtype or input.dtype, device=device or input.device)


def _randn_like(used, input, *, dtype=None, layout=None, device=None, pin_memory=False, requires_grad=False,
                memory_format=None):
    used["randn_like"] = "drawn as torch.randn(shape), the same in every pass and transform"
    return torch.randn(input.shape, dtype=dtype or input.dtype, device=device or input.device)


# -- losses ---------------------------------------------------------------------------------------------
def _reduce(loss, reduction, size_average=None, reduce=None):
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _multi_margin_loss(used, input, target, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                       reduction="mean"):
    if p not in (1, 2) or input.dim() not in (1, 2):
        return NotImplemented
    used["multi_margin_loss"] = "the margins written out (PyTorch's has no second derivative)"
    x = input if input.dim() == 2 else input[None]
    y = target.reshape(-1)
    z = (margin - x.gather(1, y[:, None]) + x).clamp_min(0)
    z = z if p == 1 else z * z
    z = z.masked_fill(torch.arange(x.shape[1], device=x.device)[None] == y[:, None], 0)
    if weight is not None:
        z = z * weight[y][:, None]
    loss = z.sum(1) / x.shape[1]
    return _reduce(loss if input.dim() == 2 else loss[0], reduction, size_average, reduce)


def _multilabel_margin_loss(used, input, target, size_average=None, reduce=None, reduction="mean"):
    if input.dim() not in (1, 2):
        return NotImplemented
    used["multilabel_margin_loss"] = "the pairwise margins written out (PyTorch's has no second derivative)"
    x = input if input.dim() == 2 else input[None]
    y = target if target.dim() == 2 else target[None]
    listed = (y < 0).long().cumsum(1) == 0  # the targets before the first -1
    counts = torch.zeros_like(x).scatter_add(1, y.clamp_min(0), listed.to(x.dtype))
    others = (counts == 0).to(x.dtype)
    pairs = (1 - x[:, :, None] + x[:, None, :]).clamp_min(0)  # [n, j, k]: 1 - x_j + x_k
    loss = (counts[:, :, None] * others[:, None, :] * pairs).sum((1, 2)) / x.shape[1]
    return _reduce(loss if input.dim() == 2 else loss[0], reduction, size_average, reduce)


def _ctc_loss(used, log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean",
              zero_infinity=False):
    """Connectionist temporal classification by its alpha recursion (Graves et al. 2006) in log space."""
    used["ctc_loss"] = "the alpha recursion in log space (PyTorch's ctc_loss has no second derivative)"
    unbatched = log_probs.dim() == 2
    lp = log_probs[:, None] if unbatched else log_probs
    T, N, _ = lp.shape
    device = lp.device
    il = torch.as_tensor(input_lengths, device=device).reshape(N).long()
    tl = torch.as_tensor(target_lengths, device=device).reshape(N).long()
    S = int(tl.max()) if N else 0
    if targets.dim() == 1 and not unbatched:  # concatenated targets
        ends = tl.cumsum(0)
        padded = torch.full((N, S), blank, dtype=torch.long, device=device)
        for n in range(N):
            padded[n, :tl[n]] = targets[ends[n] - tl[n]:ends[n]]
        targets = padded
    targets = targets.reshape(N, -1)[:, :S].long()
    L = 2 * S + 1
    ext = torch.full((N, L), blank, dtype=torch.long, device=device)
    ext[:, 1::2] = targets
    skip = torch.zeros(N, L, dtype=torch.bool, device=device)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    valid = torch.arange(L, device=device)[None] < (2 * tl + 1)[:, None]
    emit = lp.gather(2, ext[None].expand(T, N, L))  # (T, N, L)
    neg = torch.finfo(lp.dtype).min / 8  # finite "log 0": keeps every derivative finite
    alpha = torch.where(valid & (torch.arange(L, device=device)[None] < 2), emit[0], neg)
    pad1 = torch.full((N, 1), neg, dtype=lp.dtype, device=device)
    pad2 = torch.full((N, 2), neg, dtype=lp.dtype, device=device)
    for t in range(1, T):
        stay, step = alpha, torch.cat([pad1, alpha[:, :-1]], 1)
        jump = torch.where(skip, torch.cat([pad2, alpha[:, :-2]], 1), neg)
        new = torch.where(valid, torch.logsumexp(torch.stack([stay, step, jump]), 0) + emit[t], neg)
        alpha = torch.where((t < il)[:, None], new, alpha)
    last = alpha.gather(1, (2 * tl)[:, None])[:, 0]
    before = torch.where(tl > 0, alpha.gather(1, (2 * tl - 1).clamp_min(0)[:, None])[:, 0], neg)
    ll = torch.logsumexp(torch.stack([last, before]), 0)
    impossible = ll < neg / 2
    loss = torch.where(impossible, 0.0 if zero_infinity else float("inf"), -ll)
    if unbatched:
        loss = loss[0]
    if reduction == "mean":
        return (loss / tl.clamp_min(1).to(loss.dtype)).mean()
    return loss.sum() if reduction == "sum" else loss


def _cross_map_lrn2d(module, input):
    """the channel window of CrossMapLRN2d written out (its autograd Function has no second derivative)"""
    sq = input * input
    channels = input.shape[1]
    pre_pad = int((module.size - 1) / 2 + 1)
    scales = [sq[:, :min(pre_pad, channels)].sum(1)]
    for c in range(1, channels):  # the window CrossMapLRN2d slides, as it slides it
        s = scales[-1]
        if c < channels - pre_pad + 1:
            s = s + sq[:, c + pre_pad - 1]
        if c > pre_pad:
            s = s - sq[:, c - pre_pad]
        scales.append(s)
    scale = torch.stack(scales, 1) * (module.alpha / module.size) + module.k
    return input * scale.pow(-module.beta)


RULES = {
    F.embedding: _embedding, F.embedding_bag: _embedding_bag, F.hardsigmoid: _hardsigmoid,
    torch._weight_norm: _weight_norm, F.rrelu: _rrelu, F.multi_margin_loss: _multi_margin_loss,
    F.multilabel_margin_loss: _multilabel_margin_loss, F.ctc_loss: _ctc_loss,
    torch.rand_like: _rand_like, torch.randn_like: _randn_like,
}
RULES.update({
    F.dropout: _dropout_rule("dropout", False, lambda s: s),
    F.alpha_dropout: _dropout_rule("alpha_dropout", True, lambda s: s),
    F.feature_alpha_dropout: _dropout_rule("feature_alpha_dropout", True,
                                           lambda s: _channels(s, True) if len(s) >= 2 else None),
    F.dropout1d: _dropout_rule("dropout1d", False, lambda s: _channels(s, len(s) == 3) if len(s) in (2, 3) else None),
    F.dropout2d: _dropout_rule("dropout2d", False, lambda s: _channels(s, True) if len(s) in (3, 4) else None),
    F.dropout3d: _dropout_rule("dropout3d", False, lambda s: _channels(s, len(s) == 5) if len(s) in (4, 5) else None),
})
for _feature in (False, True):
    for _alpha in (False, True):
        _name = ("feature_" if _feature else "") + ("alpha_" if _alpha else "") + "dropout"
        RULES[getattr(torch, _name)] = _aten_dropout_rule(_name, _feature, _alpha, inplace=False)
        RULES[getattr(torch, _name + "_")] = _aten_dropout_rule(_name, _feature, _alpha, inplace=True)
MODULE_RULES = {nn.CrossMapLRN2d: _cross_map_lrn2d}
