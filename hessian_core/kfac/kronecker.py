"""One layer's Kronecker-factored block, and the same in its eigenbasis, as operators with exact inverse,
log-determinant and trace.

Vectors hold a ``(d_G, d_A)`` matrix ``V`` row-major (a weight ``(out, in)`` flattened as torch stores it).

* :class:`KroneckerOperator`: ``G ⊗ A`` (``torch.kron(G, A)``), ``(G ⊗ A) vec(V) = vec(G V A)`` for symmetric
  ``A`` (``d_A x d_A``) and ``G`` (``d_G x d_G``); never forms the ``(d_G d_A)^2`` matrix for products.
* :class:`KroneckerEigenOperator`: ``(Q_G ⊗ Q_A) diag(vec S) (Q_G ⊗ Q_A)^T`` for orthogonal ``Q_G``, ``Q_A``
  and eigenvalues ``S`` of shape ``(d_G, d_A)``: EKFAC's blocks and the inverses of both.

Damping convention (``inverse(damping)``, ``logdet(damping)``): ``split="exact"`` (default) damps the
product, ``(G ⊗ A + damping I)^{-1}``, exactly, through the eigendecompositions ``A = Q_A diag(a) Q_A^T``,
``G = Q_G diag(g) Q_G^T``: ``(Q_G ⊗ Q_A) diag(1 / (g a^T + damping)) (Q_G ⊗ Q_A)^T``. ``split="pi"`` is Martens &
Grosse's factored Tikhonov heuristic (2015, section 6.3): ``(G + damping^(1/2) / pi I) ⊗ (A + pi damping^(1/2) I)``
with ``pi = sqrt((tr A / d_A) / (tr G / d_G))`` (1 when either trace is 0), which is *not* ``G ⊗ A + damping
I`` (it adds the cross terms ``damping^(1/2) (pi G ⊗ I + I ⊗ A / pi)``) but keeps the inverse a Kronecker
product; :meth:`KroneckerOperator.damped` returns the matrix whose inverse that is. A block whose input
factor is ``1 x 1`` (a bias alone) is damped exactly under either choice.
"""

from __future__ import annotations

import math

import torch

from ..arguments import check_choice, check_real
from ..errors import InvalidInputError
from ..operators.base import LinearOperator

SPLITS = ("exact", "pi")


class KroneckerOperator(LinearOperator):
    """``G ⊗ A`` for symmetric factors ``A`` (input side) and ``G`` (output side); see the module docstring.

    Args:
        A: ``(d_A, d_A)`` symmetric.
        G: ``(d_G, d_G)`` symmetric, same dtype and device.
        budget: bytes for dense results (``to_dense``).
        name: a label for messages (the layer).
    """

    kind = "Kronecker product"

    def __init__(self, A: torch.Tensor, G: torch.Tensor, *, budget=None, name: str | None = None,
                 check: bool = True):
        if check:  # factors computed here are symmetric by construction
            for what, M in (("A", A), ("G", G)):
                _check_symmetric(M, what, name)
        if A.dtype != G.dtype or A.device != G.device:
            raise InvalidInputError(f"Kronecker factors on {A.dtype}/{A.device} and {G.dtype}/{G.device}; give one "
                                    "dtype and device")
        super().__init__(A.shape[0] * G.shape[0], A.dtype, A.device, budget=budget, progress=False)
        self.A, self.G = A, G
        self.name = name
        self._eig = None

    def __repr__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"KroneckerOperator({label}G {tuple(self.G.shape)} ⊗ A {tuple(self.A.shape)}, dtype={self.dtype})"

    def plan(self) -> dict:
        return {**super().plan(), "layer": self.name, "d_G": self.G.shape[0], "d_A": self.A.shape[0]}

    def _matmat(self, V):
        return _unstack(_sandwich(_stack(V, self.G.shape[0], self.A.shape[0]), self.G, self.A))

    def to_dense(self) -> torch.Tensor:
        P = self.size
        self.check_fits(P * P * self.itemsize, f"the dense {P} x {P} Kronecker block", "products or the factors")
        return torch.kron(self.G, self.A)

    def diagonal(self) -> torch.Tensor:
        return torch.outer(self.G.diagonal(), self.A.diagonal()).reshape(-1)

    def trace(self) -> float:
        """``tr(G) tr(A)``."""
        return float(self.G.trace() * self.A.trace())

    def eigh(self):
        """``(a, Q_A, g, Q_G)``: eigenvalues (ascending) and eigenvectors of ``A`` and ``G`` (computed once)."""
        if self._eig is None:
            a, QA = torch.linalg.eigh(self.A)
            g, QG = torch.linalg.eigh(self.G)
            self._eig = (a, QA, g, QG)
        return self._eig

    def eigenvalues(self) -> torch.Tensor:
        """All ``d_G d_A`` eigenvalues ``g_i a_j`` (ascending)."""
        a, _, g, _ = self.eigh()
        return torch.outer(g, a).reshape(-1).sort().values

    def pi(self) -> float:
        """Martens & Grosse's ``pi = sqrt((tr A / d_A) / (tr G / d_G))`` (1 when either trace is not positive)."""
        ta = float(self.A.trace()) / self.A.shape[0]
        tg = float(self.G.trace()) / self.G.shape[0]
        return math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0

    def _split(self, damping, split):
        damping = check_real(damping, "damping", nonnegative=True)
        split = check_choice(split, "split", SPLITS)
        if split == "exact" or self.A.shape[0] == 1:  # a bias alone (A = [[1]]) has nothing to split with
            return damping, None
        pi = self.pi()
        return damping, (math.sqrt(damping) * pi, math.sqrt(damping) / pi)  # (added to A, added to G)

    def damped(self, damping: float, split: str = "exact") -> LinearOperator:
        """The damped block whose inverse :meth:`inverse` returns: ``G ⊗ A + damping I`` (``"exact"``) or
        ``(G + damping^(1/2)/pi I) ⊗ (A + pi damping^(1/2) I)`` (``"pi"``)."""
        damping, pair = self._split(damping, split)
        if pair is None:
            from ..operators.base import IdentityOperator

            return self + damping * IdentityOperator(self) if damping else self
        cA, cG = pair
        eyeA = torch.eye(self.A.shape[0], dtype=self.dtype, device=self.device)
        eyeG = torch.eye(self.G.shape[0], dtype=self.dtype, device=self.device)
        return KroneckerOperator(self.A + cA * eyeA, self.G + cG * eyeG, budget=self.budget, name=self.name,
                                 check=False)

    def _damped_values(self, damping, split):
        a, QA, g, QG = self.eigh()
        damping, pair = self._split(damping, split)
        if pair is None:
            return torch.outer(g, a) + damping, QA, QG, None
        cA, cG = pair
        return torch.outer(g + cG, a + cA), QA, QG, (g + cG, a + cA)

    def inverse(self, damping: float = 0.0, split: str = "exact") -> KroneckerEigenOperator:
        """The exact inverse of the damped block (see the module docstring), as an operator."""
        values, QA, QG, _ = self._damped_values(damping, split)
        return KroneckerEigenOperator(QG, QA, inverse_values(values, self._what(damping)), budget=self.budget,
                                      name=self.name)

    def logdet(self, damping: float = 0.0, split: str = "exact") -> float:
        """``log det`` of the damped block (``-inf`` if it is singular; an error if it is indefinite)."""
        values, _, _, factors = self._damped_values(damping, split)
        if factors is not None:  # log det(X ⊗ Y) = d_Y log det X + d_X log det Y
            gd, ad = factors
            return (ad.numel() * logdet_values(gd, self._what(damping))
                    + gd.numel() * logdet_values(ad, self._what(damping)))
        return logdet_values(values, self._what(damping))

    def _what(self, damping) -> str:
        return f"the Kronecker block{f' of {self.name}' if self.name else ''} with damping {damping:g}"


class KroneckerEigenOperator(LinearOperator):
    """``(Q_G ⊗ Q_A) diag(vec S) (Q_G ⊗ Q_A)^T`` with orthogonal ``Q_G`` (``d_G x d_G``), ``Q_A``
    (``d_A x d_A``) and eigenvalues ``S`` (``(d_G, d_A)``, row-major like the vectors)."""

    kind = "Kronecker eigenbasis operator"

    def __init__(self, QG: torch.Tensor, QA: torch.Tensor, values: torch.Tensor, *, budget=None,
                 name: str | None = None):
        if tuple(values.shape) != (QG.shape[0], QA.shape[0]):
            raise InvalidInputError(f"eigenvalues of shape {tuple(values.shape)} for bases {tuple(QG.shape)} and "
                                    f"{tuple(QA.shape)}; expected ({QG.shape[0]}, {QA.shape[0]})")
        super().__init__(values.numel(), values.dtype, values.device, budget=budget, progress=False)
        self.QG, self.QA, self.values = QG, QA, values
        self.name = name

    def __repr__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"KroneckerEigenOperator({label}{self.QG.shape[0]} x {self.QA.shape[0]}, dtype={self.dtype})"

    def _matmat(self, V):
        Y = _sandwich(_stack(V, self.QG.shape[0], self.QA.shape[0]), self.QG.T, self.QA) * self.values[:, None, :]
        return _unstack(_sandwich(Y, self.QG, self.QA.T))

    def to_dense(self) -> torch.Tensor:
        P = self.size
        self.check_fits(3 * P * P * self.itemsize, f"the dense {P} x {P} Kronecker eigenbasis block",
                        "products or the factors")
        Q = torch.kron(self.QG, self.QA)
        out = (Q * self.values.reshape(-1)) @ Q.T
        return (out + out.T) / 2

    def diagonal(self) -> torch.Tensor:
        return ((self.QG ** 2) @ self.values @ (self.QA ** 2).T).reshape(-1)

    def trace(self) -> float:
        return float(self.values.sum())

    def eigenvalues(self) -> torch.Tensor:
        return self.values.reshape(-1).sort().values

    def damped(self, damping: float, split: str = "exact") -> KroneckerEigenOperator:
        """``self + damping I`` (the same eigenbasis)."""
        _no_pi(split, self.kind)
        damping = check_real(damping, "damping", nonnegative=True)
        return KroneckerEigenOperator(self.QG, self.QA, self.values + damping, budget=self.budget, name=self.name)

    def inverse(self, damping: float = 0.0, split: str = "exact") -> KroneckerEigenOperator:
        """``(self + damping I)^{-1}`` (the same eigenbasis)."""
        _no_pi(split, self.kind)
        damping = check_real(damping, "damping", nonnegative=True)
        what = f"the block{f' of {self.name}' if self.name else ''} with damping {damping:g}"
        return KroneckerEigenOperator(self.QG, self.QA, inverse_values(self.values + damping, what),
                                      budget=self.budget, name=self.name)

    def logdet(self, damping: float = 0.0, split: str = "exact") -> float:
        _no_pi(split, self.kind)
        damping = check_real(damping, "damping", nonnegative=True)
        return logdet_values(self.values + damping, f"the block{f' of {self.name}' if self.name else ''}")


def _stack(V: torch.Tensor, dG: int, dA: int) -> torch.Tensor:
    """``(dG dA, k)`` columns (row-major ``(dG, dA)`` matrices) -> ``(dG, k, dA)``."""
    return V.reshape(dG, dA, V.shape[1]).transpose(1, 2)


def _unstack(X: torch.Tensor) -> torch.Tensor:
    """``(dG, k, dA)`` -> ``(dG dA, k)``."""
    dG, k, dA = X.shape
    return X.transpose(1, 2).reshape(dG * dA, k)


def _sandwich(X: torch.Tensor, L: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``L X_j R`` for every ``X_j = X[:, j, :]``, as two large matrix products (not ``k`` small ones)."""
    dG, k, dA = X.shape
    Y = (L @ X.reshape(dG, k * dA)).reshape(dG * k, dA) @ R
    return Y.reshape(L.shape[0], k, R.shape[1])


def _no_pi(split, kind: str) -> None:
    if check_choice(split, "split", SPLITS) == "pi":
        raise InvalidInputError(f"split='pi' damps the two Kronecker factors of KFAC; a {kind} (EKFAC, or an "
                                "inverse) has no factors to split the damping between: use split='exact'")


def _check_symmetric(M: torch.Tensor, what: str, name) -> None:
    if M.dim() != 2 or M.shape[0] != M.shape[1] or M.shape[0] < 1:
        raise InvalidInputError(f"Kronecker factor {what} must be square, got shape {tuple(M.shape)}")
    scale = float(M.abs().max()) if M.numel() else 0.0
    if float((M - M.T).abs().max()) > 100 * torch.finfo(M.dtype).eps * max(scale, 1e-300) * M.shape[0] ** 0.5:
        raise InvalidInputError(f"Kronecker factor {what}{f' of {name}' if name else ''} is not symmetric")


def _tolerance(values: torch.Tensor) -> float:
    return values.numel() * torch.finfo(values.dtype).eps * float(values.abs().max()) if values.numel() else 0.0


def inverse_values(values: torch.Tensor, what: str) -> torch.Tensor:
    """``1 / values``, refusing (near-)zero eigenvalues: the matrix would be singular."""
    tol = _tolerance(values)
    small = values.abs() <= tol
    if bool(small.any()):
        raise InvalidInputError(
            f"{what} is singular ({int(small.sum())} eigenvalues are 0 to working precision, the largest is "
            f"{float(values.abs().max()):.3g}); pass damping > 0")
    return 1.0 / values


def logdet_values(values: torch.Tensor, what: str) -> float:
    """``sum log(values)``: ``-inf`` when some are 0 (to working precision), an error when some are negative
    (the log-determinant of an indefinite matrix is not real)."""
    tol = _tolerance(values)
    low = float(values.min())
    if low < -tol:
        raise InvalidInputError(f"{what} has a negative eigenvalue {low:.3g}: its log-determinant is not real; "
                                f"raise the damping above {-low:.3g}")
    if low <= tol:
        return -math.inf
    return float(values.log().sum())
