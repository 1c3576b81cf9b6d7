"""Exact Hessian diagonal of a Linear chain in one backward pass (as BackPACK's DiagHessian does, but for
any per-sample loss and with global normalization over many batches).

The diagonal of block ``l`` involves only ``Ha_l`` (the residual of the bilinear term vanishes there)::

    diag H[W_l[i, a]] = sum_n Ha_l[n, i, i] * z_{l-1}[n, a]^2        diag H[b_l[i]] = sum_n Ha_l[n, i, i]
"""

from __future__ import annotations

import torch

from .chain import Chain
from .chain_batch import SampleSlice


def add_batch_diagonal(out: torch.Tensor, spec, chain: Chain, batch: SampleSlice, weight: float) -> None:
    """``out += weight * diag(this batch's Hessian)``, ``out`` flat ``(P,)`` in ParamSpec order."""
    for li, layer in enumerate(chain.layers):
        if not layer.selected:
            continue
        dH = batch.Ha[li].diagonal(dim1=1, dim2=2)  # (N, h_l)
        if layer.weight_index is not None:
            z = batch.inputs[li]
            o = spec.offsets[layer.weight_index]
            out[o:o + dH.shape[1] * z.shape[1]].view(dH.shape[1], z.shape[1]).addmm_(dH.T, z * z, alpha=weight)
        if layer.bias_index is not None:
            o = spec.offsets[layer.bias_index]
            out[o:o + dH.shape[1]].add_(dH.sum(0), alpha=weight)
