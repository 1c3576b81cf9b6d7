"""Per-batch quantities of a Linear chain: forward activations, the loss's derivatives with respect to
the network output, and Hessian backpropagation to every layer's pre-activation.

Notation for layer ``l`` (0-based) of a chain with ``L`` layers, per sample ``n``:
``z_{l-1}`` its input (``z_{-1}`` is the network input after the prefix), ``a_l = W_l z_{l-1} + b_l`` its
pre-activation, ``z_l = s_l(a_l)`` with ``s_l`` the elementwise modules after it. ``ell(a_{L-1})`` is the
batch loss (the last layer's elementwise modules folded in). Backpropagated per sample:
``delta_l = d ell / d a_l`` and ``Ha_l = d^2 ell / d a_l^2`` (exact, with every later layer's parameters
fixed): ``Ha_{l-1} = diag(s') W_l^T Ha_l W_l diag(s') + diag(s'' * W_l^T delta_l)``. This needs the loss to be
a sum of per-sample terms (its Hessian w.r.t. the outputs block diagonal over samples), checked with
random probes; otherwise :class:`NotApplicable`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vjp, vmap

from .chain import Chain, NotApplicable


def _compose(modules):
    inplace = any(getattr(m, "inplace", False) for m in modules)  # nn.ReLU(inplace=True): work on a copy

    def s(a):
        if inplace:
            a = a.clone()
        for m in modules:
            a = m(a)
        return a
    return s


def elementwise_derivatives(modules, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and second derivatives of the elementwise map ``modules`` at ``a`` (same shape as ``a``)."""
    if not modules:
        return torch.ones_like(a), torch.zeros_like(a)
    s = _compose(modules)

    def d1(x):
        return grad(lambda t: s(t).sum())(x)

    return d1(a), grad(lambda t: d1(t).sum())(a)


def _separability_tol(dtype: torch.dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


def known_loss_derivatives(loss_fn, out: torch.Tensor, targets) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Closed forms of the gradient and per-sample Hessians for ``nn.CrossEntropyLoss`` on class indices
    (``(diag(p) - p p^T) / N``) and ``nn.MSELoss`` (``2 I / (N C)``), when ``loss_fn`` is exactly one of them
    with default options and ``out`` is ``(N, C)``; else ``None`` (then :func:`output_derivatives`)."""
    t = type(loss_fn)
    if t not in (nn.CrossEntropyLoss, nn.MSELoss) or out.dim() != 2 or not isinstance(targets, torch.Tensor):
        return None
    if loss_fn.reduction not in ("mean", "sum"):
        return None
    N, C = out.shape
    if t is nn.CrossEntropyLoss:
        if (loss_fn.weight is not None or loss_fn.label_smoothing != 0 or targets.dim() != 1
                or targets.dtype not in (torch.int32, torch.int64) or bool((targets == loss_fn.ignore_index).any())):
            return None
        scale = 1.0 / N if loss_fn.reduction == "mean" else 1.0
        p = torch.softmax(out, dim=1)
        g = (p - F.one_hot(targets.long(), C).to(p.dtype)) * scale
        D = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]) * scale
        return g, D
    if targets.shape != out.shape:
        return None
    scale = 2.0 / out.numel() if loss_fn.reduction == "mean" else 2.0
    eye = torch.eye(C, dtype=out.dtype, device=out.device).expand(N, C, C)
    return (out - targets) * scale, eye * scale


def output_derivatives(loss_of_output, out: torch.Tensor, known=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ``(N, C)`` and per-sample Hessian blocks ``(N, C, C)`` of ``loss_of_output`` at ``out``.

    ``known = (loss_fn, targets)``: closed forms for the torch losses that have them
    (:func:`known_loss_derivatives`). Otherwise computed generically (any loss callable) with ``C``
    reverse-over-reverse products whose tangent is the unit vector ``e_c`` in every sample at once; two
    random probes then check that the Hessian is block diagonal over samples, else :class:`NotApplicable`.
    """
    if known is not None:
        closed = known_loss_derivatives(known[0], out.detach(), known[1])
        if closed is not None:
            return closed
    N, C = out.shape
    basis = torch.eye(C, dtype=out.dtype, device=out.device)[:, None, :].expand(C, N, C)
    gen = torch.Generator(device=out.device).manual_seed(1234)
    probes = torch.randn(2, N, C, dtype=out.dtype, device=out.device, generator=gen)
    try:
        g, hvp = vjp(grad(loss_of_output), out)
        cols = vmap(lambda t: hvp(t)[0])(torch.cat([basis, probes]))
    except (RuntimeError, NotImplementedError) as e:  # e.g. a loss vmap cannot batch: the generic path
        raise NotApplicable(f"loss derivatives: {e}") from e
    D = cols[:C].permute(1, 2, 0).contiguous()  # D[n, :, c] = H_nn e_c
    want = cols[C:]
    got = torch.einsum("nij,knj->kni", D, probes)
    scale = want.abs().max().clamp_min(torch.finfo(out.dtype).tiny)
    if ((got - want).abs().max() / scale) > _separability_tol(out.dtype):
        raise NotApplicable("the loss is not a sum of per-sample terms")
    return g.detach(), D


class ChainBatch:
    """Forward pass and output derivatives of one batch through ``chain``; Hessian backpropagation per
    slice of samples (:meth:`samples`), so that memory is bounded however large the batch.

    Attributes (lists indexed by layer ``l``): ``inputs[l]`` = ``z_{l-1}`` ``(N, d_l)``; ``d1[l]``, ``d2[l]``
    = ``s_l'``, ``s_l''`` at ``a_l`` ``(N, h_l)`` (hidden layers only); ``g`` ``(N, C)`` and ``D``
    ``(N, C, C)``: gradient and per-sample Hessian of the loss w.r.t. the last pre-activation.
    """

    def __init__(self, chain: Chain, ctx, primals, lowest: int):
        self.chain = chain
        self.lowest = lowest
        layers = chain.layers
        x = ctx.inputs
        if not isinstance(x, torch.Tensor):
            raise NotApplicable("inputs are not one tensor")
        with torch.no_grad():
            for m in chain.prefix:
                x = m(x)
        if x.dim() != 2:
            raise NotApplicable("input to the first Linear is not (N, features)")
        self.weights = [self._param(layer, "weight", primals) for layer in layers]
        self.biases = [self._param(layer, "bias", primals) for layer in layers]
        self.inputs, self.d1, self.d2 = [], [], []
        z = x
        with torch.no_grad():
            for li, layer in enumerate(layers):
                self.inputs.append(z)
                a = F.linear(z, self.weights[li], self.biases[li])
                if li < len(layers) - 1:
                    d1, d2 = elementwise_derivatives(layer.after, a)
                    self.d1.append(d1)
                    self.d2.append(d2)
                    z = _compose(layer.after)(a)
            out = a
            # The chain must reproduce the model's own output (guards against anything missed above).
            expected = ctx.outputs(primals)
            tail = _compose(layers[-1].after)
            if not isinstance(expected, torch.Tensor) or expected.shape != tail(out).shape or not torch.allclose(
                    tail(out), expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max().clamp_min(1))):
                raise NotApplicable("the chain does not reproduce the model output")
        known = (ctx.objective.loss_fn, ctx.targets) if not layers[-1].after else None
        self.g, self.D = output_derivatives(lambda o: ctx.loss_of_outputs(tail(o)), out, known)

    @property
    def n(self) -> int:
        return self.g.shape[0]

    def bytes_per_sample(self) -> int:
        """Working memory per sample of :meth:`samples` and of the block products (estimate)."""
        hs = [layer.module.out_features for layer in self.chain.layers]
        ds = [z.shape[1] + 1 for z in self.inputs]
        pair = max(h * k for h in hs for k in hs)
        row = max(d * k for d in ds for k in hs)
        return self.g.element_size() * (3 * sum(h * h for h in hs) + 3 * pair + row + max(ds) ** 2 + sum(ds))

    def samples(self, max_samples: int):
        """Yield :class:`SampleSlice` objects covering the batch, at most ``max_samples`` samples each."""
        step = max(1, int(max_samples))
        for a in range(0, self.n, step):
            yield SampleSlice(self, slice(a, a + step))

    @staticmethod
    def _param(layer, attr, primals):
        index = getattr(layer, f"{attr}_index")
        t = getattr(layer.module, attr)
        if t is None:
            return None
        return primals[index] if index is not None else t.detach()


class SampleSlice:
    """Per-sample quantities of some samples of a :class:`ChainBatch`: ``inputs``, ``d1`` sliced, and
    ``delta[l]`` ``(n, h_l)``, ``Ha[l]`` ``(n, h_l, h_l)`` backpropagated down to layer ``lowest``."""

    def __init__(self, batch: ChainBatch, sl: slice):
        self.weights = batch.weights
        self.inputs = [z[sl] for z in batch.inputs]
        self.d1 = [d[sl] for d in batch.d1]
        L = len(batch.weights)
        self.delta: list[torch.Tensor | None] = [None] * L
        self.Ha: list[torch.Tensor | None] = [None] * L
        self.delta[L - 1], self.Ha[L - 1] = batch.g[sl], batch.D[sl]
        for li in range(L - 1, batch.lowest, -1):
            W = self.weights[li]
            dz = self.delta[li] @ W
            s = self.d1[li - 1]
            self.delta[li - 1] = dz * s
            Hz = torch.matmul(W.T, torch.matmul(self.Ha[li], W))
            Hz.mul_(s[:, :, None]).mul_(s[:, None, :])
            Hz.diagonal(dim1=1, dim2=2).add_(batch.d2[li - 1][sl] * dz)
            self.Ha[li - 1] = Hz

    def inputs_with_one(self, li: int) -> torch.Tensor:
        """``[z_{l-1}, 1]`` ``(n, d_l + 1)``: the extra column carries the bias."""
        z = self.inputs[li]
        return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)], dim=1)
