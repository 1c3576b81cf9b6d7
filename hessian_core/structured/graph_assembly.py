"""From the Gram matrices of tangent columns (:mod:`.graph_engine`) to Hessian blocks, the dense Hessian and its
diagonal.

For groups ``A`` (later) and ``B`` (earlier or the same) with per-sample Gram ``X_n[A, B]``:

* direct, direct: ``H[A, B] = sum_n X_n[A, B]``;
* kron ``A`` (columns ``e_i``, coefficients ``c_A[n, b]``): ``H[(i, b), k] = sum_n T_n[i, b, k] c_B[n, k']``
  with ``T_n[i, b, k] = X_n[i, k] c_A[n, b] + g_A[n, i] Tx_A[k, n, b]`` -- the second term is the curvature of
  the bilinear ``W x`` itself, between the weight and the input's tangent columns ``Tx_A`` (``b < d``);
  ``c_B = 1`` for a direct ``B``. One GEMM with inner dimension ``n`` per pair of groups.

Blocks above the diagonal are written as transposes of those below, through strided views of ``H``.
"""

from __future__ import annotations

import torch

from .graph_engine import BatchGraph, Group, SliceResult


def _block(A: Group, B: Group, res: SliceResult, work_bytes: int) -> torch.Tensor:
    """``H[A, B]`` over the expanded axes ``A.expanded + B.expanded`` for this slice (before weighting); the
    GEMMs produce whatever layout suits them and a permuted view is returned."""
    X = res.X.block(A, B)
    if A.kind == "direct" and B.kind == "direct":
        return X  # summed over samples already
    n = X.shape[0]
    if A.kind == "direct":  # B kron: R[k, j, c] = sum_n X[n, k, j] c_B[n, c]
        cB = res.coef[B.lo]
        return (cB.T @ X.reshape(n, -1)).view(cB.shape[1], A.size, B.size).permute(1, 2, 0)
    cA = res.coef[A.lo]
    wA = cA.shape[1]
    Tx = _cross_tangent(A, B, res)
    if B.kind == "direct":  # R[i, b, k] = sum_n X[n, i, k] c_A[n, b] (+ g[n, i] Tx[k, n, b])
        R = (cA.T @ X.reshape(n, -1)).view(wA, A.size, B.size).permute(1, 0, 2)
        if Tx is not None:
            g = res.cross[A.lo][0]
            C = (g.T @ Tx.permute(1, 0, 2).reshape(n, -1)).view(A.size, B.size, A.d)
            R[:, :A.d] += C.permute(0, 2, 1)
        return R
    cB = res.coef[B.lo]
    if A is B:
        return _kron_diagonal_block(X, cA, work_bytes)
    hA, hB, wB = A.size, B.size, cB.shape[1]
    R = X.new_empty(wA, hA, hB, wB)  # (b, i, j, c)
    step = max(1, min(hA, work_bytes // max(1, X.element_size() * n * hB * wB)))
    for i0 in range(0, hA, step):
        i1 = min(i0 + step, hA)
        V = X[:, i0:i1, :, None] * cB[:, None, None, :]  # (n, ci, hB, wB)
        R[:, i0:i1] = (cA.T @ V.reshape(n, -1)).view(wA, i1 - i0, hB, wB)
    R = R.permute(1, 0, 2, 3)
    if Tx is not None:  # R[i, b, j, c] += sum_n g[n, i] c_B[n, c] Tx[j, n, b]
        g = res.cross[A.lo][0]
        U = (g[:, :, None] * cB[:, None, :]).reshape(n, hA * wB)
        C = (U.T @ Tx.permute(1, 0, 2).reshape(n, hB * A.d)).view(hA, wB, hB, A.d)
        R[:, :A.d] += C.permute(0, 3, 2, 1)
    return R


def _cross_tangent(A: Group, B: Group, res: SliceResult):
    """The columns of ``B`` in the tangent of kron layer ``A``'s input (``(K_B, n, d)``), or ``None``."""
    cross = res.cross.get(A.lo)
    if cross is None or A.d == 0:
        return None
    tx = cross[1]
    if tx.lo <= B.lo and B.lo + B.size <= tx.hi:
        return tx.T[B.lo - tx.lo:B.lo - tx.lo + B.size]
    return None


def _kron_diagonal_block(X: torch.Tensor, c: torch.Tensor, work_bytes: int) -> torch.Tensor:
    """``R[i, b, j, c'] = sum_n X[n, i, j] c[n, b] c[n, c']`` for a symmetric ``X``: computed for ``i <= j``
    (one GEMM with inner dimension ``n``) and written to both halves."""
    n, h, _ = X.shape
    w = c.shape[1]
    iu, ju = torch.triu_indices(h, h, device=X.device)
    C2 = (c[:, :, None] * c[:, None, :]).reshape(n, w * w)
    R = X.new_empty(h, h, w, w)  # (i, j, b, c')
    step = max(1, min(iu.numel(), work_bytes // max(1, X.element_size() * (w * w + n))))
    for p0 in range(0, iu.numel(), step):
        i, j = iu[p0:p0 + step], ju[p0:p0 + step]
        Rp = (X[:, i, j].T @ C2).view(-1, w, w)
        R[i, j] = Rp
        R[j, i] = Rp.transpose(1, 2)
    return R.permute(0, 2, 1, 3)


def _write(H: torch.Tensor, A: Group, B: Group, R: torch.Tensor, weight: float) -> None:
    P = H.shape[0]
    for sel_a, off_a, size_a, stride_a in A.slots:
        for sel_b, off_b, size_b, stride_b in B.slots:
            part = R[sel_a + sel_b]
            view = H.as_strided(size_a + size_b, tuple(s * P for s in stride_a) + stride_b, off_a * P + off_b)
            view.add_(part, alpha=weight)


def add_slice_hessian(H: torch.Tensor, bg: BatchGraph, res: SliceResult, weight: float, work_bytes: int) -> None:
    """``H += weight * (this slice's Hessian)`` in the blocks ``(A, B)`` with ``B`` not after ``A``; the
    others are copied once at the end (:func:`mirror_blocks`)."""
    groups = bg.groups
    for ia, A in enumerate(groups):
        for B in groups[:ia + 1]:
            _write(H, A, B, _block(A, B, res, work_bytes), weight)


def mirror_blocks(H: torch.Tensor, groups) -> None:
    """Copy every block ``(A, B)``, ``B`` before ``A``, to its transposed position ``(B, A)``."""
    P = H.shape[0]
    for ia, A in enumerate(groups):
        for B in groups[:ia]:
            for _, off_a, size_a, stride_a in A.slots:
                for _, off_b, size_b, stride_b in B.slots:
                    src = H.as_strided(size_a + size_b, tuple(s * P for s in stride_a) + stride_b, off_a * P + off_b)
                    dst = H.as_strided(size_b + size_a, tuple(s * P for s in stride_b) + stride_a, off_b * P + off_a)
                    na = len(size_a)
                    dst.copy_(src.permute(*range(na, src.dim()), *range(na)))


def add_slice_diagonal(out: torch.Tensor, bg: BatchGraph, res: SliceResult, weight: float) -> None:
    """``out += weight * diag(this slice's Hessian)`` (``res.X`` holds the Gram's diagonal ``(m, K)``)."""
    for A in bg.groups:
        x = res.X.diagonal_of(A)
        if A.kind == "direct":
            d = x.sum(0)
        else:
            c = res.coef[A.lo]
            d = x.T @ (c * c)  # (h, d~)
        for sel, off, size, stride in A.slots:
            out.as_strided(size, stride, off).add_(d[sel], alpha=weight)
