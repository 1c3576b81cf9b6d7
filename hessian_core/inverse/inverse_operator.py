"""``(A + damping I)^{-1}`` as a :class:`~hessian_core.operators.LinearOperator`: usable wherever an operator is
(``eigsh`` of the inverse Hessian, ``trace`` of it, products in your own code, ``to_scipy()``)."""

from __future__ import annotations

import contextlib

import torch

from ..arguments import check_choice, check_optional_int, check_optional_real, check_real
from ..operators.base import LinearOperator, as_operator
from .factor import SymmetricFactor, check_dense_fits
from .solve import METHODS, choose_method, solve


class InverseOperator(LinearOperator):
    """``(op + damping I)^{-1}``, symmetric ``(P, P)``, each product a :func:`~hessian_core.inverse.solve`.

    Args:
        op: the operator to invert (anything :func:`~hessian_core.operators.as_operator` accepts).
        damping: added to the diagonal before inverting.
        method: ``"auto"``, ``"dense"``, ``"cg"`` or ``"minres"``, as in :func:`solve`. ``"auto"`` is decided
            once here: dense when the matrix and its factor fit the budget and ``P <= AUTO_DENSE_MAX``.
        tol, maxiter, preconditioner: passed to :func:`solve` (iterative methods).

    Dense method: the matrix ``op + damping I`` is formed and factored (Cholesky, LDL^T if indefinite) for a
    product. Like a curvature operator's graph, the factor is kept between products only inside
    :meth:`reuse` (nothing changes the model or data there), so a product outside is never stale; open
    ``with inv.reuse():`` around a loop of products to factor once. ``last_result`` is the
    :class:`~hessian_core.inverse.SolveResult` of the last iterative product.
    """

    kind = "inverse operator"

    def __init__(self, op, damping: float = 0.0, *, method: str = "auto", tol: float | None = None,
                 maxiter: int | None = None, preconditioner=None):
        op = as_operator(op)
        super().__init__(op.size, op.dtype, op.device, params=op.params, budget=op.budget, progress=op.progress)
        self.op = op
        self.damping = check_real(damping, "damping")
        method = check_choice(method, "method", METHODS)
        self.method = "dense" if method == "auto" and choose_method(op)[0] == "dense" else method
        self.tol = check_optional_real(tol, "tol", positive=True)
        self.maxiter = check_optional_int(maxiter, "maxiter")
        self.preconditioner = preconditioner
        self.last_result = None
        self._depth = 0
        self._factor: SymmetricFactor | None = None

    def __repr__(self) -> str:
        return f"InverseOperator({self.op!r}, damping={self.damping:g}, method={self.method!r})"

    def plan(self) -> dict:
        return {**super().plan(), "method": self.method, "damping": self.damping,
                "factor kept": "inside reuse()" if self.method == "dense" else "no factor", "of": self.op.plan()}

    @contextlib.contextmanager
    def reuse(self):
        self._depth += 1
        try:
            with self.op.reuse():
                yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._factor = None

    def factor(self) -> SymmetricFactor:
        """The dense factor of ``op + damping I`` (kept inside :meth:`reuse`, built afresh outside)."""
        if self._factor is not None:
            return self._factor
        check_dense_fits(self.size, self.dtype, self.budget, 2, f"the dense inverse of the {self.op.kind}",
                         "InverseOperator(..., method='cg') (matrix-free)")
        M = self.op.to_dense()
        if self.damping != 0:
            M.diagonal().add_(self.damping)
        f = SymmetricFactor(M, what=f"the {self.op.kind}" + (f" + {self.damping:g} I" if self.damping else ""))
        if self._depth > 0:
            self._factor = f
        return f

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.method == "dense":
            return self.factor().solve(V)
        res = solve(self.op, V, self.damping, method=self.method, tol=self.tol, maxiter=self.maxiter,
                    preconditioner=self.preconditioner, progress=self.progress)
        self.last_result = res
        return res.x

    def to_dense(self) -> torch.Tensor:
        """The dense inverse: from the factor (dense method, 3 ``P x P`` matrices within the budget), else from
        ``P`` solves with unit vectors."""
        if self.method == "dense":
            check_dense_fits(self.size, self.dtype, self.budget, 3, f"the dense inverse of the {self.op.kind}",
                             "the matrix-free products of InverseOperator")
            self.num_matvecs += self.size
            return self.factor().inverse()
        return super().to_dense()

    def diagonal(self) -> torch.Tensor:
        """The exact diagonal of the inverse (dense method: from the dense inverse; else ``P`` solves)."""
        if self.method == "dense":
            return self.to_dense().diagonal().clone()
        return super().diagonal()
