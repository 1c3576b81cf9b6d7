"""Damped linear solves with a symmetric operator: :func:`solve` ``(A + damping I) x = b``.

Methods:

* ``"cg"``: preconditioned conjugate gradients (:func:`.krylov.block_cg`), all right-hand sides at once
  (one block product per iteration). ``A + damping I`` must be positive definite: a direction of
  non-positive curvature met on the way raises :class:`~hessian_core.errors.InvalidInputError` saying so
  (use ``"minres"`` or more damping), never a silent non-solution.
* ``"minres"``: ``scipy.sparse.linalg.minres`` per right-hand side; symmetric indefinite (nonsingular) is
  fine.
* ``"dense"``: the ``(P, P)`` matrix from products (memory budget checked first: the matrix and its
  factor), Cholesky, or Bunch-Kaufman LDL^T when indefinite (:class:`.factor.SymmetricFactor`).
* ``"auto"`` (default): ``"dense"`` when the matrix and its factor fit the budget and either the operator is
  a dense matrix already or there are many right-hand sides (``k >= P / 16``, with ``P <= AUTO_DENSE_MAX``:
  forming the matrix costs ``P`` products, CG about ``k`` per iteration); else ``"cg"``, switching to
  ``"minres"`` (and saying so in ``SolveResult.note``) if CG meets negative curvature.

Preconditioning (CG and MINRES): ``preconditioner="diagonal"`` uses the exact diagonal of ``A`` plus the
damping (Jacobi; ``P`` products, or the structured diagonal of a Hessian of a Linear chain); a ``(P,)``
tensor gives that diagonal; an operator or a function ``(P, k) -> (P, k)`` applies an approximation of
the *inverse* directly, e.g. ``hc.KFACOperator(...).inverse(damping)`` (an operator over other parameters,
or the same ones in another order, is refused). Preconditioners must be symmetric positive definite.

The residuals in the result are recomputed with one more block product, not taken from the recurrence.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..arguments import check_choice, check_optional_bool, check_optional_int, check_optional_real, check_real
from ..errors import InvalidInputError
from ..operators.base import DenseOperator, LinearOperator, counting_view
from .factor import SymmetricFactor, check_dense_fits
from .krylov import REFINEMENTS, NegativeCurvature, block_cg, minres, relative

METHODS = ("auto", "cg", "minres", "dense")
#: ``"auto"`` forms the dense matrix (``P`` products) only up to this size
AUTO_DENSE_MAX = 2000


@dataclass
class SolveResult:
    """Outcome of :func:`solve`.

    Attributes:
        x: the solution, shaped like ``b`` (``(P,)``, ``(P, k)``, or a list of parameter-shaped tensors).
        method: ``"cg"``, ``"minres"``, ``"cholesky"`` or ``"ldl"`` (the dense ones).
        iterations: Krylov iterations of the slowest column (0 for dense).
        residuals: ``(k,)`` ``||b - (A + damping I) x||`` per column, recomputed.
        relative_residuals: ``(k,)`` the same over ``||b||``.
        converged: every relative residual ``<= tol``.
        num_matvecs: operator products used (columns of every block product), the residual check included.
        tol, damping: as used.
        history: CG only: largest relative residual of the unconverged columns after each iteration.
        note: why ``"auto"`` chose what it chose, when it is worth knowing.
    """

    x: object
    method: str
    iterations: int
    residuals: torch.Tensor
    relative_residuals: torch.Tensor
    converged: bool
    num_matvecs: int
    tol: float
    damping: float
    history: list = field(default_factory=list)
    note: str | None = None

    def __repr__(self) -> str:
        return (f"SolveResult(method={self.method!r}, iterations={self.iterations}, max relative residual="
                f"{float(self.relative_residuals.max()):.3g}, converged={self.converged}, "
                f"num_matvecs={self.num_matvecs})")


def default_tol(dtype: torch.dtype) -> float:
    """``1e-10`` in float64, ``1e-5`` in float32, ``1e-3`` below (relative residual)."""
    return {torch.float64: 1e-10, torch.float32: 1e-5}.get(dtype, 1e-3)


def solve(op, b, damping: float = 0.0, *, method: str = "auto", tol: float | None = None,
          maxiter: int | None = None, preconditioner=None, x0=None, progress: bool | None = None) -> SolveResult:
    """Solve ``(op + damping I) x = b``.

    Args:
        op: a :class:`~hessian_core.operators.LinearOperator` (Hessian, GGN, ... over any data) or anything
            :func:`~hessian_core.operators.as_operator` accepts (a symmetric tensor, a scipy operator).
        b: ``(P,)``, ``(P, k)`` (``k`` right-hand sides), or a list of parameter-shaped tensors.
        damping: a real number added to the diagonal (``>= 0`` for a regularized, positive definite system).
        method: ``"auto"``, ``"cg"``, ``"minres"`` or ``"dense"`` (see the module docstring).
        tol: relative residual target per column (default: :func:`default_tol` of the operator's dtype).
        maxiter: Krylov iterations at most (default ``10 * P``).
        preconditioner: ``None``, ``"diagonal"``, a ``(P,)`` tensor (the diagonal to precondition with), or
            an operator/function applying an approximate inverse.
        x0: starting guess shaped like ``b`` (Krylov methods).
        progress: a tqdm bar over CG iterations (``None``: the operator's setting).

    Returns:
        :class:`SolveResult`. A run that ends above ``tol`` warns (``RuntimeWarning``) and has
        ``converged=False``; the answer is still the best iterate.

    Raises:
        InvalidInputError: ``method="cg"`` on an operator that is not positive definite (a direction of
            non-positive curvature was met), naming ``"minres"`` and damping as the ways out; a dense
            solve of a singular matrix.
        MemoryBudgetError: ``"dense"`` when the matrix and its factor do not fit.
    """
    A = counting_view(op)
    damping = check_real(damping, "damping")
    method = check_choice(method, "method", METHODS)
    tol = check_optional_real(tol, "tol", positive=True)
    tol = default_tol(A.dtype) if tol is None else tol
    maxiter = check_optional_int(maxiter, "maxiter")
    maxiter = 10 * A.size if maxiter is None else maxiter
    progress = check_optional_bool(progress, "progress")
    progress = A.progress if progress is None else progress
    as_list = isinstance(b, (list, tuple))
    B = A.as_block(b, "b")
    vector = B.dim() == 1
    B = B[:, None] if vector else B
    X0 = None
    if x0 is not None:
        X0 = A.as_block(x0, "x0")
        X0 = X0[:, None] if X0.dim() == 1 else X0
        if X0.shape != B.shape:
            raise InvalidInputError(f"x0 has shape {tuple(X0.shape)}, b has {tuple(B.shape)}; they must match")

    def apply_A(V):
        out = A.matmat(V)
        return out + damping * V if damping != 0 else out

    if method == "dense" and (preconditioner is not None or x0 is not None):
        raise InvalidInputError("method='dense' solves exactly and uses no preconditioner or x0; drop them, or use "
                                "method='cg' or 'minres'")
    note = None
    fallback = method == "auto"  # only "auto" may hand CG's negative curvature over to MINRES
    with A.reuse():
        if method == "auto":
            method, note = choose_method(A, B.shape[1])
        if method == "dense":
            X, used, Mdense = _dense(A, B, damping)
            R = B - Mdense @ X
            iterations, history = 0, []
        else:
            apply_M = _preconditioner(preconditioner, A, damping)
            X, used, iterations, history, note = _iterate(method, apply_A, B, X0, apply_M, tol, maxiter, progress,
                                                          note, fallback)
            R = B - apply_A(X)
            for _ in range(REFINEMENTS):  # round-off left the true residual above tol: restart from X
                if bool((R.norm(dim=0) <= tol * B.norm(dim=0)).all()):
                    break
                X2, _, more, hist2, note = _iterate(used, apply_A, B, X, apply_M, tol, maxiter, progress, note,
                                                 fallback)
                R2 = B - apply_A(X2)
                iterations += more
                history += hist2
                if float(R2.norm()) >= float(R.norm()):
                    break
                X, R = X2, R2
    residuals = R.norm(dim=0)
    rel = relative(residuals, B.norm(dim=0))
    converged = bool((rel <= tol).all())
    if not converged:
        warnings.warn(f"solve ({used}) did not reach tol={tol:g}: largest relative residual {float(rel.max()):.3g} "
                      f"after {iterations} iterations; raise maxiter, add damping or a preconditioner",
                      RuntimeWarning, stacklevel=2)
    x = X[:, 0] if vector else X
    if as_list and A.params is not None and vector:
        x = A.params.unflatten(x)
    return SolveResult(x=x, method=used, iterations=int(iterations), residuals=residuals, relative_residuals=rel,
                       converged=converged, num_matvecs=A.num_matvecs, tol=tol, damping=damping, history=history,
                       note=note)


def choose_method(A: LinearOperator, k: int | None = None) -> tuple[str, str]:
    """What ``method="auto"`` picks for ``A`` and ``k`` right-hand sides (``None``: many, as for an operator
    whose products are repeated): ``("dense" or "cg", why)``."""
    inner = getattr(A, "op", A)
    fits = 3 * A.size * A.size * A.itemsize <= A.budget
    if fits and isinstance(inner, DenseOperator):
        return "dense", "auto: dense (a dense matrix)"
    many = k is None or 16 * k >= A.size
    if fits and many and A.size <= AUTO_DENSE_MAX:
        return "dense", f"auto: dense (P={A.size} fits the budget and the {k or 'many'} right-hand sides share it)"
    why = ("does not fit the budget densely" if not fits else "is large" if A.size > AUTO_DENSE_MAX
           else f"and {k} right-hand side(s): fewer products than forming the matrix")
    return "cg", f"auto: CG (P={A.size} {why})"


def _dense(A: LinearOperator, B: torch.Tensor, damping: float):
    check_dense_fits(A.size, A.dtype, A.budget, 2, f"a dense solve with the {A.kind}",
                     "method='cg' (matrix-free) or 'minres'")
    M = A.to_dense()
    if damping != 0:
        M.diagonal().add_(damping)
    factor = SymmetricFactor(M, what=f"the {A.kind}" + (f" + {damping:g} I" if damping else ""))
    return factor.solve(B), factor.method, M


def _iterate(method, apply_A, B, X0, apply_M, tol, maxiter, progress, note, fallback):
    """One Krylov run: ``(X, method used, iterations, history, note)``; ``"auto"``'s CG hands over to MINRES
    at negative curvature, an explicit ``"cg"`` refuses."""
    if method == "minres":
        out = minres(apply_A, B, X0, apply_M, tol, maxiter)
        return out.X, "minres", int(out.iterations.max()), out.history, note
    try:
        out = block_cg(apply_A, B, X0, apply_M, tol, maxiter, progress)
        return out.X, "cg", int(out.iterations.max()), out.history, note
    except NegativeCurvature as e:
        if not fallback:
            raise InvalidInputError(
                f"CG needs a positive definite operator, but this one (with damping) is not: it met a direction of "
                f"non-positive curvature ({e}, an upper bound on the smallest eigenvalue). Use method='minres' for a "
                f"symmetric indefinite system, or add damping larger than the most negative eigenvalue's magnitude "
                f"(at least {max(-e.rayleigh, 0.0):.3g})") from None
        out = minres(apply_A, B, X0, apply_M, tol, maxiter)
        return (out.X, "minres", int(out.iterations.max()), out.history,
                f"auto: CG met negative curvature ({e}); solved with MINRES")


def _preconditioner(spec, A: LinearOperator, damping: float):
    """``None`` or a function applying an approximate inverse of ``A + damping I`` to ``(P, k)`` blocks."""
    if spec is None:
        return None
    if isinstance(spec, str):
        check_choice(spec, "preconditioner", ("diagonal", "jacobi"))
        d = A.diagonal() + damping
        return _jacobi(d, "the exact diagonal of the operator (+ damping)")
    if isinstance(spec, torch.Tensor) and spec.dim() == 1:
        if spec.shape[0] != A.size:
            raise InvalidInputError(f"a diagonal preconditioner needs {A.size} entries, got {spec.shape[0]}")
        return _jacobi(spec.to(dtype=A.dtype, device=A.device), "the preconditioner's diagonal")
    if isinstance(spec, LinearOperator):
        if spec.size != A.size:
            raise InvalidInputError(f"the preconditioner has size {spec.size}, the operator {A.size}")
        if spec.params is not None and A.params is not None and (
                spec.params.names != A.params.names or spec.params.shapes != A.params.shapes):
            raise InvalidInputError(
                f"the preconditioner is over the parameters {spec.params.names}, the operator over "
                f"{A.params.names}: build both over the same parameters in the same order (params=...)")
        return spec.matmat
    if callable(spec):
        return spec
    raise InvalidInputError(f"preconditioner must be None, 'diagonal', a (P,) tensor, an operator or a function "
                            f"(P, k) -> (P, k), got {type(spec).__name__}")


def _jacobi(d: torch.Tensor, what: str):
    if not bool((d > 0).all()):
        i = int(d.argmin())
        raise InvalidInputError(
            f"{what} has a non-positive entry ({float(d[i]):.3g} at index {i}), so Jacobi preconditioning is not "
            "positive definite (and a positive definite operator has a positive diagonal): add damping, or use "
            "method='minres' without a preconditioner")
    inv = 1.0 / d
    return lambda V: inv[:, None] * V
