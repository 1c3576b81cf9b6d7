"""A block-diagonal operator whose blocks know their exact inverse, log-determinant, trace and eigenvalues
(Kronecker, Kronecker-eigenbasis, eigendecomposed or diagonal blocks): the same for the whole, block by
block, without ever forming the ``(P, P)`` matrix."""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from ..operators.base import BlockDiagonalOperator


class FactoredBlockOperator(BlockDiagonalOperator):
    """Blocks ``(positions, op)`` over disjoint entries of a ``(P,)`` vector, each ``op`` with
    ``inverse(damping, split)``, ``logdet(damping, split)``, ``trace()``, ``eigenvalues()`` and
    ``damped(damping, split)``; ``keys`` names the blocks (``op.block(key)``).

    ``inverse(damping)`` is ``(self + damping I)^{-1}`` exactly (each block inverted in its eigenbasis) and
    ``logdet(damping)`` is ``log det(self + damping I)``; ``split="pi"`` damps each Kronecker block by
    Martens & Grosse's factored heuristic instead (see :mod:`hessian_core.kfac.kronecker`). Every entry
    must belong to a block (an entry in none would make the inverse undefined)."""

    kind = "block-diagonal Kronecker-factored operator"

    def __init__(self, blocks, size: int, *, params=None, keys=None):
        super().__init__(blocks, size, params=params)
        covered = sum(op.size for _, op in self.blocks)
        if covered != size:
            raise InvalidInputError(f"the blocks cover {covered} of {size} entries; every entry needs a block")
        self.keys = list(keys) if keys is not None else [str(i) for i in range(len(self.blocks))]
        # contiguous positions (a weight, a bias) are sliced rather than gathered and scattered
        self._where = [_as_slice(idx) for idx, _ in self.blocks]

    def _check(self) -> None:
        """Called before every result; operators built from a model refuse stale factors here."""

    def block(self, key: str):
        """The operator of block ``key``."""
        if key not in self.keys:
            raise InvalidInputError(f"no block {key!r}; the blocks are {self.keys}")
        return self.blocks[self.keys.index(key)][1]

    def _matmat(self, V):
        self._check()
        out = torch.empty_like(V)  # the blocks partition the entries (checked at construction)
        for where, (_, op) in zip(self._where, self.blocks):
            out[where] = op.matmat(V[where])
        return out

    def to_dense(self):
        self._check()
        return super().to_dense()

    def diagonal(self):
        self._check()
        return super().diagonal()

    def trace(self) -> float:
        """The exact trace (sum of the blocks' traces)."""
        self._check()
        return float(sum(op.trace() for _, op in self.blocks))

    def eigenvalues(self) -> torch.Tensor:
        """All ``P`` eigenvalues, ascending (those of the blocks, from their factors)."""
        self._check()
        return torch.cat([op.eigenvalues() for _, op in self.blocks]).sort().values

    def _map(self, fn) -> FactoredBlockOperator:
        return FactoredBlockOperator([(idx, fn(op)) for idx, op in self.blocks], self.size, params=self.params,
                                     keys=self.keys)

    def damped(self, damping: float, split: str = "exact") -> FactoredBlockOperator:
        """The damped operator whose inverse :meth:`inverse` returns (``self + damping I`` for
        ``split="exact"``)."""
        self._check()
        return self._map(lambda op: op.damped(damping, split))

    def inverse(self, damping: float = 0.0, split: str = "exact") -> FactoredBlockOperator:
        """``(self + damping I)^{-1}`` as an operator (``split="pi"``: the factored heuristic's inverse)."""
        self._check()
        return self._map(lambda op: op.inverse(damping, split))

    def logdet(self, damping: float = 0.0, split: str = "exact") -> float:
        """``log det(self + damping I)`` (``-inf`` if singular; an error if indefinite)."""
        self._check()
        return float(sum(op.logdet(damping, split) for _, op in self.blocks))

    def plan(self) -> dict:
        return {**super().plan(), "keys": self.keys}


def _as_slice(idx: torch.Tensor):
    """``slice(a, b)`` when ``idx`` is ``a, a+1, ..., b-1``, else ``idx``."""
    n = idx.numel()
    if n and int(idx[-1]) - int(idx[0]) == n - 1 and bool((idx.diff() == 1).all()):
        return slice(int(idx[0]), int(idx[0]) + n)
    return idx
