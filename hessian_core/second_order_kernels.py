"""Running the model with kernels that have second derivatives, without the user changing the model.

Some PyTorch attention kernels are fused kernels whose derivative is itself not differentiable (no double
backward) or that have no forward mode (no ``jvp``). Curvature needs both, so while hessian_core evaluates
a model (:func:`second_order_kernels`, entered by :func:`hessian_core.forward.functional_forward` and
around a user's closure) it selects the implementations that have them:

* ``F.scaled_dot_product_attention`` (what ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
  Hugging Face models call): the fused flash / memory-efficient / cuDNN kernels have neither
  (pytorch issue 116350); the *math* backend (``sdpa_kernel(SDPBackend.MATH)``) computes
  ``softmax(q k^T * scale + mask) v`` with ordinary ops, so every derivative exists.
* the fused eval-mode fast path of ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``
  (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``: no forward mode) is switched off
  (``torch.backends.mha.set_fastpath_enabled(False)``); the regular path computes the same function.

Other ops without the derivatives curvature needs (``hardsigmoid``, ``embedding_bag``, weight norm, margin
losses, CTC, ...) are replaced by equivalent compositions in :mod:`hessian_core.composites`; the ones left
are named, with what to do, by :mod:`hessian_core.diagnosis`.

Every setting is restored on exit; nothing is changed when no derivative can be taken (under
``torch.no_grad()`` outside any ``torch.func`` transform), where the fused kernels are exact and faster.
The flags are process-wide: another thread running attention at the same time also gets the math kernel.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def second_order_kernels(model: nn.Module | None = None):
    """Inside, attention runs as ops with every derivative (see the module docstring). ``model`` is the
    module about to run (accepted for symmetry with the other scopes; the attention settings apply to
    every model). Entered on every forward of a product, so it sets the flags directly (what
    ``torch.nn.attention.sdpa_kernel`` does, in a tenth of its time)."""
    if not _derivatives_possible():
        return contextlib.nullcontext()
    return _MathAttention() if _SDP_FLAGS is not None else _math_attention_by_sdpa_kernel()


def _sdp_flags():
    """``(getter, setter, wanted)`` per scaled-dot-product backend, from the same ``torch._C`` functions
    ``torch.nn.attention.sdpa_kernel`` uses (torch 2.13), math on and every fused kernel off; ``None`` where
    they are not there (another torch version: :func:`sdpa_kernel` itself is used)."""
    try:
        from torch.nn.attention import _backend_names

        return tuple((getattr(torch._C, f"_get_{name}_sdp_enabled"), getattr(torch._C, f"_set_sdp_use_{name}"),
                      backend == "MATH") for name, backend in _backend_names.items())
    except (ImportError, AttributeError):
        return None


_SDP_FLAGS = _sdp_flags()


class _MathAttention:
    """Math attention only and the fused MHA fast path off; the previous settings back on exit."""

    __slots__ = ("saved", "fastpath")

    def __enter__(self):
        self.saved = [get() for get, _, _ in _SDP_FLAGS]
        for _, set_, wanted in _SDP_FLAGS:
            set_(wanted)
        self.fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        return self

    def __exit__(self, *exc):
        for (_, set_, _), value in zip(_SDP_FLAGS, self.saved):
            set_(value)
        torch.backends.mha.set_fastpath_enabled(self.fastpath)
        return False


@contextlib.contextmanager
def _math_attention_by_sdpa_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        torch.backends.mha.set_fastpath_enabled(False)
        stack.callback(torch.backends.mha.set_fastpath_enabled, fastpath)
        yield


def _derivatives_possible() -> bool:
    """False only where no derivative can be taken: grad mode off, no torch.func transform, no dual level."""
    if torch.is_grad_enabled():
        return True
    level = getattr(torch._C._functorch, "maybe_current_level", None)
    if level is None or level() is not None:
        return True
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
