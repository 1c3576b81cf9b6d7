"""Exact dense Hessian (and its diagonal blocks) of a Linear chain from Kronecker-structured Jacobians.

For layers ``l >= m`` the block of the batch Hessian with rows ``theta_l = [W_l | b_l]`` and columns
``theta_m`` is (per sample ``n``, summed; ``z~ = [z, 1]``; see :mod:`.chain_batch` for the notation)::

    H_lm[(i,a),(j,b)] = sum_n T_n[i,a,j] * z~_{m-1,n}[b]
    T_n[i,a,j] = (Ha_l A_{l<-m})[i,j] * z~_{l-1}[a]  +  [l > m] delta_l[i] * K_{l,m}[a,j]

with ``A_{l<-m} = d a_l / d a_m`` (``A_{m<-m} = I``) and ``K_{l,m} = d z_{l-1} / d a_m`` (zero in the bias
slot). The first term is the Gauss-Newton-like part through ``a_l``, the second the residual of the
bilinear ``W_l z_{l-1}``. Each block is then one GEMM with inner dimension ``N`` (about ``N P^2`` flops
for the whole lower block triangle), the upper triangle is copied by symmetry, and rows are processed in
chunks so the temporaries stay within the memory budget.
"""

from __future__ import annotations

import torch

from .chain import Chain
from .chain_batch import SampleSlice


def _layer_slots(spec, layer):
    """[(param_index, part)] for the differentiated parameters of a layer, part 'w' or 'b'."""
    out = []
    if layer.weight_index is not None:
        out.append((layer.weight_index, "w"))
    if layer.bias_index is not None:
        out.append((layer.bias_index, "b"))
    return out


def _write(H, spec, R, rows, cols, i0, w):
    """Add ``w * R`` (``(ci, d_l+1, h_m, d_m+1)``: rows ``i0:i0+ci`` of layer ``l`` against layer ``m``)
    into ``H``, split into the weight (first ``d`` slots) and bias (last slot) parts of rows and columns."""
    ci, dl1, hm, dm1 = R.shape
    for r_index, r_part in rows:
        r_lo = spec.offsets[r_index] + i0 * ((dl1 - 1) if r_part == "w" else 1)
        r_len = ci * ((dl1 - 1) if r_part == "w" else 1)
        rs = slice(0, dl1 - 1) if r_part == "w" else dl1 - 1
        for c_index, c_part in cols:
            c_lo = spec.offsets[c_index]
            c_len = hm * ((dm1 - 1) if c_part == "w" else 1)
            cs = slice(0, dm1 - 1) if c_part == "w" else dm1 - 1
            block = R[:, rs, :, cs]
            H[r_lo:r_lo + r_len, c_lo:c_lo + c_len].view(block.shape).add_(block, alpha=w)


def _row_chunk(N, h_l, d_l1, h_m, d_m1, item, work_bytes) -> int:
    per_row = item * (N * d_l1 * h_m + 2 * d_l1 * h_m * d_m1)
    return int(max(1, min(h_l, work_bytes // max(per_row, 1))))


def _diagonal_targets(H, spec, layer, h, d):
    """Views of the diagonal block of ``layer`` in ``H`` indexed ``[i, j, ...]`` by output units, with the
    slot of the packed ``(a, b)`` result each one takes: weight slots ``:d``, bias slot ``d``."""
    w = spec.offsets[layer.weight_index] if layer.weight_index is not None else None
    b = spec.offsets[layer.bias_index] if layer.bias_index is not None else None
    out = []
    if w is not None:
        out.append((H[w:w + h * d, w:w + h * d].view(h, d, h, d).permute(0, 2, 1, 3), slice(0, d), slice(0, d)))
    if w is not None and b is not None:
        out.append((H[w:w + h * d, b:b + h].view(h, d, h).permute(0, 2, 1), slice(0, d), d))
        out.append((H[b:b + h, w:w + h * d].view(h, h, d), d, slice(0, d)))
    if b is not None:
        out.append((H[b:b + h, b:b + h], d, d))
    return out


def _add_diagonal_block(H, spec, layer, Ha, zt, weight, work_bytes) -> None:
    """Diagonal block of a layer, using both symmetries: ``M_ij[a, b] = sum_n Ha[n, i, j] z~[n, a] z~[n, b]``
    is computed for ``i <= j`` only (half the flops of the full block, one GEMM with inner dimension
    ``N``) and written to the positions ``(i, j)`` and ``(j, i)``."""
    N, h, _ = Ha.shape
    d1 = zt.shape[1]
    iu, ju = torch.triu_indices(h, h, device=Ha.device)
    Z2 = (zt[:, :, None] * zt[:, None, :]).reshape(N, d1 * d1)
    targets = _diagonal_targets(H, spec, layer, h, d1 - 1)
    # per pair: the GEMM row, and up to two copies of it made by index_put_ (contiguous and masked source)
    step = int(max(1, min(iu.numel(), work_bytes // (Ha.element_size() * (3 * d1 * d1 + N)))))
    for p0 in range(0, iu.numel(), step):
        i, j = iu[p0:p0 + step], ju[p0:p0 + step]
        R = torch.matmul(Ha[:, i, j].T, Z2).view(-1, d1, d1).mul_(weight)  # (pairs, a, b)
        off = i != j
        for target, rs, cs in targets:
            src = R[:, rs, cs]
            target.index_put_((i, j), src, accumulate=True)
            target.index_put_((j[off], i[off]), src[off], accumulate=True)


def add_batch_hessian(H: torch.Tensor, spec, chain: Chain, batch: SampleSlice, weight: float,
                      work_bytes: int) -> None:
    """``H += weight * (lower block triangle of this batch's Hessian)``: blocks ``(l, m)`` with ``l >= m``
    between the layers that have differentiated parameters, temporaries within ``work_bytes``."""
    layers = chain.layers
    sel = [li for li, layer in enumerate(layers) if layer.selected]
    item = H.element_size()
    for m in sel:
        zm = batch.inputs_with_one(m)
        N, dm1 = zm.shape
        h_m = layers[m].module.out_features
        A = K = None  # A = d a_l / d a_m (N, h_l, h_m); K = d z_{l-1} / d a_m (N, h_{l-1}, h_m)
        for li in range(m, len(layers)):
            if li > m:
                K = torch.diag_embed(batch.d1[m]) if li == m + 1 else batch.d1[li - 1][:, :, None] * A
                A = torch.matmul(batch.weights[li], K)
            if not layers[li].selected:
                continue
            if li == m:
                _add_diagonal_block(H, spec, layers[li], batch.Ha[li], zm, weight, work_bytes)
                continue
            X = torch.matmul(batch.Ha[li], A)
            zl = batch.inputs_with_one(li)
            h_l, dl1 = X.shape[1], zl.shape[1]
            step = _row_chunk(N, h_l, dl1, h_m, dm1, item, work_bytes)
            rows, cols = _layer_slots(spec, layers[li]), _layer_slots(spec, layers[m])
            for i0 in range(0, h_l, step):
                i1 = min(i0 + step, h_l)
                T = X[:, i0:i1, None, :] * zl[:, None, :, None]  # (N, ci, d_l+1, h_m)
                T[:, :, :dl1 - 1, :].addcmul_(batch.delta[li][:, i0:i1, None, None], K[:, None, :, :])
                R = torch.matmul(T.reshape(N, -1).T, zm).view(i1 - i0, dl1, h_m, dm1)
                _write(H, spec, R, rows, cols, i0, weight)


def mirror_lower_blocks(H: torch.Tensor, spec, chain: Chain) -> None:
    """Copy each block below the diagonal (layer ``l > m``) to its transpose position above it."""
    ranges = []
    for layer in chain.layers:
        idx = [i for i in (layer.weight_index, layer.bias_index) if i is not None]
        if idx:
            ranges.append((spec.offsets[min(idx)], spec.offsets[max(idx) + 1]))
    for li, (r0, r1) in enumerate(ranges):
        for c0, c1 in ranges[:li]:
            H[c0:c1, r0:r1].copy_(H[r0:r1, c0:c1].T)
