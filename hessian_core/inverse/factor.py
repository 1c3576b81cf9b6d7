"""Dense factorization of a symmetric ``(P, P)`` matrix, for solves, inverses and log-determinants.

:class:`SymmetricFactor` tries Cholesky first (positive definite: the common, damped case) and falls back
to the Bunch-Kaufman LDL^T factorization (symmetric indefinite, nonsingular). A singular matrix is refused
with its smallest eigenvalue in the message, not answered with Inf or NaN.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from ..memory import check_fits


def check_dense_fits(P: int, dtype: torch.dtype, budget: int, copies: int, what: str, instead: str) -> None:
    """Refuse (:class:`~hessian_core.errors.MemoryBudgetError`) ``copies`` dense ``P x P`` matrices over budget,
    before any of them is allocated."""
    item = torch.empty((), dtype=dtype).element_size()
    check_fits(copies * P * P * item, budget, f"{what} ({copies} x {P} x {P} numbers, {dtype})", instead)


class SymmetricFactor:
    """Cholesky (``method == "cholesky"``) or LDL^T (``"ldl"``) factor of a symmetric matrix ``A`` (``(P, P)``,
    symmetrized against round-off). ``positive_definite`` says which one applied.

    Args:
        A: the matrix; it is not kept (only its factor is).
        allow_indefinite: fall back to LDL^T when Cholesky fails; otherwise raise
            :class:`~hessian_core.errors.InvalidInputError` saying the matrix is not positive definite.
        what: how to name the matrix in errors (e.g. ``"H + 0.1 I"``).
    """

    def __init__(self, A: torch.Tensor, *, allow_indefinite: bool = True, what: str = "the matrix"):
        A = (A + A.T) / 2
        self.size = A.shape[0]
        self.what = what
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            self.method = "cholesky"
            self.positive_definite = True
            self._L = L
            return
        lam_min = float(torch.linalg.eigvalsh(A)[0])
        if not allow_indefinite:
            raise InvalidInputError(
                f"{what} is not positive definite (smallest eigenvalue {lam_min:.6g}); add damping larger "
                f"than {max(-lam_min, 0.0):.3g}, or use a positive semi-definite curvature (the GGN) with damping > 0")
        LD, pivots, info = torch.linalg.ldl_factor_ex(A)
        scale = float(A.abs().max()) if A.numel() else 0.0
        if int(info) != 0 or abs(lam_min) <= torch.finfo(A.dtype).eps * max(scale, 1e-300) * self.size:
            raise InvalidInputError(
                f"{what} is singular (smallest |eigenvalue| ~ {abs(lam_min):.3g} relative to max |entry| "
                f"{scale:.3g}); add damping, e.g. damping={max(1e-8 * scale, 1e-12):.1g} or more")
        self.method = "ldl"
        self.positive_definite = False
        self._LD, self._pivots = LD, pivots

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """``A^{-1} B`` for ``B`` of shape ``(P,)`` or ``(P, k)``."""
        col = B.dim() == 1
        B2 = B[:, None] if col else B
        if self.method == "cholesky":
            X = torch.cholesky_solve(B2, self._L)
        else:
            X = torch.linalg.ldl_solve(self._LD, self._pivots, B2)
        return X[:, 0] if col else X

    def inverse(self) -> torch.Tensor:
        """``A^{-1}`` (``(P, P)``, symmetric)."""
        if self.method == "cholesky":
            Ainv = torch.cholesky_inverse(self._L)
        else:
            Ainv = self.solve(torch.eye(self.size, dtype=self._LD.dtype, device=self._LD.device))
        return (Ainv + Ainv.T) / 2

    def logdet(self) -> float:
        """``log det A`` of a positive definite ``A``; refused for an indefinite one (it has no real log)."""
        if self.method != "cholesky":
            raise InvalidInputError(f"{self.what} is indefinite: its log-determinant is not real")
        return float(2 * self._L.diagonal().log().sum())

    def sample_scale(self, Z: torch.Tensor) -> torch.Tensor:
        """``L^{-T} Z`` for ``A = L L^T`` (positive definite): columns of ``Z ~ N(0, I)`` become draws of
        ``N(0, A^{-1})``."""
        if self.method != "cholesky":
            raise InvalidInputError(f"{self.what} is indefinite: it is not the precision of a Gaussian")
        return torch.linalg.solve_triangular(self._L.T, Z, upper=True)
