"""Blocks without Kronecker structure, with the same exact ``inverse(damping)``, ``logdet(damping)`` and
``trace()`` as the Kronecker blocks: a symmetric matrix kept as its eigendecomposition
(:class:`EigenOperator`) and a diagonal (:class:`DiagonalOperator`). KFAC uses them for parameters outside
the layers it covers (``uncovered='exact'`` / ``'diagonal'``)."""

from __future__ import annotations

import torch

from ..arguments import check_choice, check_real
from ..operators.base import LinearOperator
from .kronecker import SPLITS, inverse_values, logdet_values


class EigenOperator(LinearOperator):
    """``Q diag(values) Q^T`` for orthogonal ``Q`` ``(n, n)`` and ``values`` ``(n,)``."""

    kind = "eigendecomposed block"

    def __init__(self, Q: torch.Tensor, values: torch.Tensor, *, budget=None, name: str | None = None):
        super().__init__(values.numel(), values.dtype, values.device, budget=budget, progress=False)
        self.Q, self.values, self.name = Q, values, name

    @classmethod
    def from_matrix(cls, M: torch.Tensor, **kw) -> EigenOperator:
        values, Q = torch.linalg.eigh((M + M.T) / 2)
        return cls(Q, values, **kw)

    def __repr__(self) -> str:
        return f"EigenOperator({self.name or ''} n={self.size}, dtype={self.dtype})"

    def _matmat(self, V):
        return self.Q @ (self.values[:, None] * (self.Q.T @ V))

    def to_dense(self):
        out = (self.Q * self.values) @ self.Q.T
        return (out + out.T) / 2

    def diagonal(self):
        return (self.Q ** 2) @ self.values

    def trace(self) -> float:
        return float(self.values.sum())

    def eigenvalues(self):
        return self.values.sort().values

    def damped(self, damping: float, split: str = "exact") -> EigenOperator:
        return EigenOperator(self.Q, self.values + _damping(damping, split), budget=self.budget, name=self.name)

    def inverse(self, damping: float = 0.0, split: str = "exact") -> EigenOperator:
        d = _damping(damping, split)
        return EigenOperator(self.Q, inverse_values(self.values + d, self._what(d)), budget=self.budget,
                             name=self.name)

    def logdet(self, damping: float = 0.0, split: str = "exact") -> float:
        d = _damping(damping, split)
        return logdet_values(self.values + d, self._what(d))

    def _what(self, d) -> str:
        return f"the exact block{f' of {self.name}' if self.name else ''} with damping {d:g}"


class DiagonalOperator(LinearOperator):
    """``diag(values)``."""

    kind = "diagonal block"

    def __init__(self, values: torch.Tensor, *, budget=None, name: str | None = None):
        super().__init__(values.numel(), values.dtype, values.device, budget=budget, progress=False)
        self.values, self.name = values, name

    def __repr__(self) -> str:
        return f"DiagonalOperator({self.name or ''} n={self.size}, dtype={self.dtype})"

    def _matmat(self, V):
        return self.values[:, None] * V

    def to_dense(self):
        return torch.diag(self.values)

    def diagonal(self):
        return self.values.clone()

    def trace(self) -> float:
        return float(self.values.sum())

    def eigenvalues(self):
        return self.values.sort().values

    def damped(self, damping: float, split: str = "exact") -> DiagonalOperator:
        return DiagonalOperator(self.values + _damping(damping, split), budget=self.budget, name=self.name)

    def inverse(self, damping: float = 0.0, split: str = "exact") -> DiagonalOperator:
        d = _damping(damping, split)
        return DiagonalOperator(inverse_values(self.values + d, self._what(d)), budget=self.budget, name=self.name)

    def logdet(self, damping: float = 0.0, split: str = "exact") -> float:
        d = _damping(damping, split)
        return logdet_values(self.values + d, self._what(d))

    def _what(self, d) -> str:
        return f"the diagonal block{f' of {self.name}' if self.name else ''} with damping {d:g}"


def _damping(damping, split) -> float:
    """A block without factors damps exactly; ``split='pi'`` (KFAC's factored damping) means the same here."""
    check_choice(split, "split", SPLITS)
    return check_real(damping, "damping", nonnegative=True)
