"""The Gram matrix of the tangent columns of :mod:`.graph_engine`, stored where it is needed.

A pair of columns that involves a Kronecker-factored column is expanded with each sample's coefficients
(:mod:`.graph_assembly`), so it is kept per sample; a pair of direct columns only needs the sum over
samples. Rows of Kronecker-factored columns are therefore stored per sample against every column
(``per_sample``: ``(n, K_kron, K)``), and pairs of direct columns summed (``summed``: ``(K_direct, K_direct)``);
the Gram is symmetric, so a direct row against a Kronecker-factored column is read from the transposed
entry. Memory ``n K_kron K + K_direct^2`` instead of ``n K^2``: a CNN with thousands of direct columns and a
Linear head keeps one ``P x P``-sized matrix, not one per sample. In diagonal mode only the diagonal is kept,
per sample, ``(n, K)``. When the batch is one unit (``per_sample=False``), every column is direct.
"""

from __future__ import annotations

import torch


class Gram:
    def __init__(self, groups, K: int, n: int, *, diagonal: bool, like: torch.Tensor):
        kron = torch.zeros(K, dtype=torch.bool)
        for g in groups:
            if g.kind == "kron":
                kron[g.cols] = True
        self.diagonal = diagonal
        self.kron = kron
        self.kpos = torch.cumsum(kron, 0) - 1  # row of column k in per_sample (kron columns)
        self.dpos = torch.cumsum(~kron, 0) - 1  # index of column k in summed (direct columns)
        nk, nd = int(kron.sum()), K - int(kron.sum())
        opts = dict(dtype=like.dtype, device=like.device)
        if diagonal:
            self.per_sample = torch.zeros(n, K, **opts)
            self.summed = None
        else:
            self.per_sample = torch.zeros(n, nk, K, **opts)
            self.summed = torch.zeros(nd, nd, **opts)
        self._device = like.device

    def _split(self, lo: int, hi: int):
        """Positions (relative to ``lo``) of the kron and direct columns in ``lo .. hi`` (a slice where they
        are consecutive, as they are within a group, else an index tensor); ``None`` if none."""
        mask = self.kron[lo:hi]
        k = torch.nonzero(mask).flatten()
        d = torch.nonzero(~mask).flatten()
        return self._positions(k), self._positions(d)

    def _positions(self, idx: torch.Tensor):
        if not idx.numel():
            return None
        first, last = int(idx[0]), int(idx[-1])
        if last - first + 1 == idx.numel():  # consecutive: a view, and in-place adds without index_put
            return slice(first, last + 1)
        return idx.to(self._device)

    def _rows(self, pos: torch.Tensor, lo: int, where):
        """Rows in ``per_sample`` (``pos=kpos``) or ``summed`` (``pos=dpos``) of the columns ``lo + where``."""
        if isinstance(where, slice):
            start = int(pos[lo + where.start])
            return slice(start, start + where.stop - where.start)
        return pos[lo:][where.cpu()].to(self._device)

    @staticmethod
    def _cross(r, c):
        """Index for ``summed[r, c]`` (both slices: a plain view)."""
        if isinstance(r, slice) and isinstance(c, slice):
            return r, c
        r = torch.arange(r.start, r.stop, device=c.device) if isinstance(r, slice) else r
        c = torch.arange(c.start, c.stop, device=r.device) if isinstance(c, slice) else c
        return r[:, None], c[None, :]

    def add(self, rlo: int, A: torch.Tensor, clo: int, B: torch.Tensor) -> None:
        """Gram entries ``(rlo + a, clo + b) += sum over units of A[a, n] . B[b, n]`` (per sample where a kron
        column is involved, else summed over samples). ``A`` ``(Ka, n, ...)``, ``B`` ``(Kb, n, ...)``."""
        Ka, n = A.shape[0], A.shape[1]
        a, b = A.reshape(Ka, n, -1).transpose(0, 1), B.reshape(B.shape[0], n, -1).transpose(0, 1)
        self.add_per_sample(rlo, a, clo, b)

    def add_per_sample(self, rlo: int, a: torch.Tensor, clo: int, b: torch.Tensor) -> None:
        """As :meth:`add` with ``a`` ``(n, Ka, U)`` and ``b`` ``(n, Kb, U)``."""
        Ka, Kb = a.shape[1], b.shape[1]
        if self.diagonal:  # rlo == clo: the pairing of each column with itself
            self.per_sample[:, rlo:rlo + Ka] += (a * b).sum(-1)
            return
        rk, rd = self._split(rlo, rlo + Ka)
        ck, cd = self._split(clo, clo + Kb)
        # direct rows against kron columns are the transposes of kron rows against direct columns: the
        # callers always add both (a symmetric block, or every variable's rows), so they are not stored
        if rk is not None:
            rows = self._rows(self.kpos, rlo, rk)
            self.per_sample[:, rows, clo:clo + Kb] += torch.bmm(a[:, rk], b.transpose(1, 2))
        if rd is not None and cd is not None:
            ad = a[:, rd].transpose(0, 1)
            bd = b[:, cd].transpose(0, 1)
            ad, bd = ad.reshape(ad.shape[0], -1), bd.reshape(bd.shape[0], -1)
            r, c = self._rows(self.dpos, rlo, rd), self._rows(self.dpos, clo, cd)
            self.summed[self._cross(r, c)] += ad @ bd.T

    def add_pairs(self, rlo: int, clo: int, C: torch.Tensor) -> None:
        """``(rlo + a, clo + b) += C[n, a, b]`` and the transposed entries (a symmetric pair of off-diagonal
        blocks, e.g. a layer's weight against its input's columns). ``C`` ``(n, Ka, Kb)``."""
        if self.diagonal:
            return
        for lo1, lo2, M in ((rlo, clo, C), (clo, rlo, C.transpose(1, 2))):
            k1, d1 = self._split(lo1, lo1 + M.shape[1])
            k2, d2 = self._split(lo2, lo2 + M.shape[2])
            if k1 is not None:
                rows = self._rows(self.kpos, lo1, k1)
                self.per_sample[:, rows, lo2:lo2 + M.shape[2]] += M[:, k1]
            if d1 is not None and d2 is not None:
                r, c = self._rows(self.dpos, lo1, d1), self._rows(self.dpos, lo2, d2)
                self.summed[self._cross(r, c)] += M[:, d1][:, :, d2].sum(0)

    def block(self, A, B) -> torch.Tensor:
        """The Gram block of groups ``A`` and ``B``: ``(KA, KB)`` summed for two direct groups, else per sample
        ``(n, KA, KB)``."""
        if A.kind == "direct" and B.kind == "direct":
            ra, rb = int(self.dpos[A.lo]), int(self.dpos[B.lo])
            return self.summed[ra:ra + A.size, rb:rb + B.size]
        if A.kind == "kron":
            r = int(self.kpos[A.lo])
            return self.per_sample[:, r:r + A.size, B.cols]
        r = int(self.kpos[B.lo])
        return self.per_sample[:, r:r + B.size, A.cols].transpose(1, 2)

    def diagonal_of(self, A) -> torch.Tensor:
        """``(n, KA)`` diagonal entries of group ``A`` (diagonal mode)."""
        return self.per_sample[:, A.cols]
