"""Running the model with kernels that have second derivatives, without the user changing the model.

Some PyTorch ops are fused kernels whose derivative is itself not differentiable (no double backward) or
that have no forward mode (no ``jvp``). Curvature needs both, so while hessian_core evaluates a model
(:func:`second_order_kernels`, entered by :func:`hessian_core.forward.functional_forward` and around a
user's closure) it reroutes the ones it can to mathematically identical compositions of ordinary ops:

* ``F.scaled_dot_product_attention`` (what ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
  Hugging Face models call): the fused flash / memory-efficient / cuDNN kernels have neither
  (pytorch issue 116350); the *math* backend (``sdpa_kernel(SDPBackend.MATH)``) computes
  ``softmax(q k^T * scale + mask) v`` with ordinary ops, so every derivative exists.
* the fused eval-mode fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
  (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``: no forward mode) is switched off
  (``torch.backends.mha.set_fastpath_enabled(False)``); the regular path computes the same function.
* ``F.hardsigmoid`` (no double backward) as ``relu6(x + 3) / 6``, and ``F.embedding_bag`` with mode
  ``'sum'``/``'mean'`` (no double backward, no forward mode) as ``embedding`` + ``index_add``: only for
  models that contain an ``nn.Hardsigmoid`` or ``nn.EmbeddingBag`` module, because this takes a
  ``TorchFunctionMode`` that costs Python work on every op of the forward.

Every setting is restored on exit; the rerouting is skipped when no derivative can be taken (under
``torch.no_grad()`` outside any ``torch.func`` transform), where the fused kernels are exact and faster.
The flags are process-wide: another thread running attention at the same time also gets the math kernel.

Ops that are not rerouted raise PyTorch's ``RuntimeError``/``NotImplementedError``;
:func:`missing_derivatives_explained` turns those into an :class:`~hessian_core.errors.InvalidInputError`
that names the op, what is missing, and what to do (:data:`FIXES`).
"""

from __future__ import annotations

import contextlib
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import InvalidInputError

#: ops known to lack a double backward or a forward mode in torch 2.13, with what to do instead
FIXES = {
    "hardsigmoid_backward": "use the nn.Hardsigmoid module (rerouted automatically) or write F.relu6(x + 3) / 6",
    "multi_margin_loss": "write the margin loss with clamp/relu, e.g. (margin - x[range(n), y, None] + x).clamp(min=0)",
    "multilabel_margin_loss": "write the loss with clamp/relu from its formula",
    "_embedding_bag": "use nn.EmbeddingBag with mode='sum' or 'mean' and without max_norm/scale_grad_by_freq "
                      "(rerouted automatically), or F.embedding followed by a sum over each bag",
    "_pdist": "write the distances out: ((x[:, None] - x[None]) ** 2).sum(-1).sqrt() (not differentiable twice "
              "where two points coincide)",
    "_cdist": "write the distances out: ((a[:, None] - b[None]) ** 2).sum(-1).sqrt() (not differentiable twice "
              "where two points coincide)",
    "ctc_loss": "no second derivative is available for CTC in PyTorch; use the GGN of the outputs before it, or a "
                "different loss",
    "_weight_norm_interface": "write the weight norm out (g * v / v.norm(dim=..., keepdim=True)); its fused double "
                              "backward is also wrong, see docs/transformers.md",
    "_transformer_encoder_layer_fwd": "call the layer inside hessian_core (the fused path is switched off there)",
    "_native_multi_head_attention": "call the layer inside hessian_core (the fused path is switched off there)",
    "scaled_dot_product": "call the model inside hessian_core (the math backend is selected there), or wrap your "
                          "own code in torch.nn.attention.sdpa_kernel(SDPBackend.MATH)",
    "rrelu_with_noise": "use nn.RReLU in eval mode (a fixed slope) or nn.LeakyReLU",
    "huber_loss_backward": "use reverse-over-reverse products (HessianOperator falls back to them by itself)",
}

_PATTERNS = (
    (re.compile(r"derivative for (?:aten::)?'?([\w.]+)'? is not implemented"), "a second derivative (double "
     "backward) of"),
    (re.compile(r"Trying to use forward AD with (?:aten::)?([\w.]+) that does not support it"), "a forward-mode "
     "derivative (jvp) of"),
)


@contextlib.contextmanager
def second_order_kernels(model: nn.Module | None = None):
    """Inside, attention and the other ops listed in the module docstring run as ops with every derivative.

    ``model``: the module about to run; the function-level rerouting (``hardsigmoid``, ``embedding_bag``) is
    applied only when it contains an ``nn.Hardsigmoid`` or ``nn.EmbeddingBag`` (never for ``None``).
    """
    if not _derivatives_possible():
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        torch.backends.mha.set_fastpath_enabled(False)
        stack.callback(torch.backends.mha.set_fastpath_enabled, fastpath)
        if model is not None and any(isinstance(m, (nn.Hardsigmoid, nn.EmbeddingBag)) for m in model.modules()):
            stack.enter_context(_Reroute())
        yield


@contextlib.contextmanager
def missing_derivatives_explained():
    """Turn PyTorch's "derivative ... is not implemented" / "forward AD ... not supported" errors raised
    inside into an :class:`InvalidInputError` that names the op and the fix."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as e:
        explained = explain_missing_derivative(e)
        if explained is None:
            raise
        raise explained from e


def explain_missing_derivative(error: BaseException) -> InvalidInputError | None:
    """The error to raise instead of ``error`` when it says an op lacks a derivative, else ``None``."""
    text = str(error)
    for pattern, what in _PATTERNS:
        m = pattern.search(text)
        if m is None:
            continue
        op = m.group(1)
        fix = next((f for key, f in FIXES.items() if key in op), None)
        if fix is None:
            fix = ("replace the module that calls it by one written with ordinary ops (see docs/transformers.md, "
                   "'Ops without second derivatives')")
        hint = ""
        if "forward-mode" in what:
            hint = (" The GGN needs forward mode through the model (J v); the HessianOperator does not (it uses "
                    "reverse-over-reverse products).")
        return InvalidInputError(f"the model uses {op}, and PyTorch has no {what} it, which this curvature needs: "
                                 f"{fix}.{hint}")
    return None


# -- internals ----------------------------------------------------------------------------------------

def _derivatives_possible() -> bool:
    """False only where no derivative can be taken: grad mode off, no torch.func transform, no dual level."""
    if torch.is_grad_enabled():
        return True
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    if level is None or level() is not None:
        return True
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


class _Reroute(TorchFunctionMode):
    """``F.hardsigmoid`` and ``F.embedding_bag`` as compositions of ops with every derivative."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return _hardsigmoid(*args, **kwargs)
        if func is F.embedding_bag:
            out = _embedding_bag(*args, **kwargs)
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


def _hardsigmoid(input, inplace: bool = False):
    out = F.relu6(input + 3) / 6
    return input.copy_(out) if inplace else out


def _embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2.0, scale_grad_by_freq=False,
                   mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False, padding_idx=None):
    """``F.embedding_bag`` for modes 'sum'/'mean' as ``embedding`` then a sum per bag (``index_add``);
    ``NotImplemented`` for what it does not cover (mode 'max', ``max_norm``, ``scale_grad_by_freq``: the
    last two change the weight or the gradient, not only the function)."""
    if mode not in ("sum", "mean") or max_norm is not None or scale_grad_by_freq:
        return NotImplemented
    if input.dim() == 2:
        bags, length = input.shape
        bag = torch.arange(bags, device=input.device).repeat_interleave(length)
    elif input.dim() == 1 and offsets is not None:
        ends = torch.cat([offsets[1:], offsets.new_tensor([input.numel()])]) if not include_last_offset \
            else offsets[1:]
        starts = offsets if not include_last_offset else offsets[:-1]
        bags = starts.numel()
        bag = torch.arange(bags, device=input.device).repeat_interleave(ends - starts)
    else:
        return NotImplemented
    index = input.reshape(-1)[:bag.numel()]  # entries past the last offset belong to no bag
    rows = F.embedding(index, weight)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.reshape(-1, 1)[:bag.numel()]
    if padding_idx is not None:
        pad = padding_idx if padding_idx >= 0 else padding_idx + weight.shape[0]
        keep = index != pad
        rows, bag = rows[keep], bag[keep]
    out = rows.new_zeros(bags, weight.shape[1]).index_add(0, bag, rows)
    if mode == "mean":
        counts = torch.bincount(bag, minlength=bags).clamp(min=1).to(out.dtype)
        out = out / counts[:, None]
    return out
