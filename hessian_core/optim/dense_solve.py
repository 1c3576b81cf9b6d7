"""Dense Newton directions: damped solve by Cholesky, the shifted solve for indefinite Hessians, and the
saddle-free solve with ``|H|``. Every direction returned is a descent direction (``g . d < 0``) or zero.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..errors import NonFiniteError
from ..memory import check_fits

#: Up to this size the indefinite case uses the full eigendecomposition (exact smallest eigenvalue, cheap);
#: above it, Lanczos on the dense matrix estimates the smallest eigenvalue and Cholesky certifies the shift.
EIGH_UP_TO = 1024


@dataclass
class DenseDirection:
    """A Newton direction ``d`` (``(P,)``) and how it was obtained.

    ``method`` is ``"cholesky"`` (``H + damping I`` positive definite), ``"shifted"`` (indefinite: solved
    with ``H + shift I``, positive definite by its Cholesky factorization), or ``"saddle-free"``
    (``|H| + damping I``). ``min_eigenvalue`` is the smallest eigenvalue of ``H`` when it was computed
    (indefinite or saddle-free; above ``P = 1024`` in the indefinite case a Lanczos estimate), else ``None``.
    """

    direction: torch.Tensor
    method: str
    shift: float
    min_eigenvalue: float | None


def check_dense_solve_fits(P: int, dtype: torch.dtype, budget: int, instead: str) -> None:
    """Refuse (``MemoryBudgetError``) a dense Newton solve that does not fit: :func:`newton_direction` holds
    3 x P^2 numbers (the Hessian, its shifted copy and the factor or eigenvectors)."""
    item = torch.empty((), dtype=dtype).element_size()
    check_fits(3 * P * P * item, budget,
               f"the dense {P} x {P} Hessian with its factorization ({dtype}, 3 x P^2 numbers)", instead)


def newton_direction(H: torch.Tensor, g: torch.Tensor, damping: float = 0.0,
                     saddle_free: bool = False) -> DenseDirection:
    """Solve for the Newton direction ``d`` of the quadratic model ``g.d + d.H d / 2``.

    Args:
        H: ``(P, P)`` symmetric Hessian. The factorizations read its lower triangle only (so round-off
            asymmetry does not matter, and no symmetrized copy is made); products use it as given.
        g: ``(P,)`` gradient.
        damping: ``lambda >= 0`` added to the diagonal.
        saddle_free: use ``|H| = V |Lambda| V^T`` (eigendecomposition) instead of ``H``: negative curvature
            directions are followed downhill, scaled by ``1/|lambda_i|`` (Dauphin et al. 2014).

    Order of attempts (without ``saddle_free``): Cholesky of ``H + damping I``; if that matrix is not
    positive definite, the smallest eigenvalue ``lambda_min`` of ``H`` (``eigh`` up to ``P = 1024``, above
    that a Lanczos estimate on the dense matrix, stopped once its residual is a tenth of ``|lambda_min|``:
    ``O(P^2)`` per product instead of the ``O(P^3)`` of a full eigendecomposition) and the Cholesky solve with
    ``H + shift I``,
    ``shift = max(damping, 2 |lambda_min|) + sqrt(eps) |lambda|_max``, doubled until Cholesky succeeds: the
    shifted matrix is then certified positive definite, so ``d`` is a descent direction.
    Zero curvature in ``|H| + damping I`` (saddle-free) is pseudo-inverted: that component of ``d`` is 0.
    """
    eps = torch.finfo(H.dtype).eps
    if not saddle_free:
        work = torch.empty_like(H)  # H + shift I, rewritten in place for each shift (no identity matrix)
        d = _cholesky_direction(_shifted(work, H, damping), g)
        if d is not None:
            return DenseDirection(d, "cholesky", float(damping), None)
        lam_min, top = _smallest_eigenvalue(H)
        shift = max(float(damping), 2 * max(-lam_min, 0.0)) + eps ** 0.5 * max(top, eps)
        for _ in range(60):
            d = _cholesky_direction(_shifted(work, H, shift), g)
            if d is not None:
                return DenseDirection(d, "shifted", shift, lam_min)
            shift *= 2
        raise NonFiniteError("the Newton direction could not be computed: H + shift I stayed indefinite; "
                             "the Hessian is too ill-conditioned, use damping > 0")
    lam, V = torch.linalg.eigh(H)  # lower triangle
    coef = V.T @ g
    top = float(lam.abs().max()) if lam.numel() else 0.0
    curv = lam.abs() + damping
    usable = curv > eps * lam.numel() * max(top, float(damping), eps)
    d = -(V[:, usable] @ (coef[usable] / curv[usable]))
    if not bool(torch.isfinite(d).all()):
        raise NonFiniteError(
            "the Newton direction is not finite; the Hessian is too ill-conditioned: use damping > 0")
    return DenseDirection(d, "saddle-free", float(damping), float(lam.min()))


def _shifted(work: torch.Tensor, H: torch.Tensor, shift: float) -> torch.Tensor:
    """``work <- H + shift I`` in place."""
    work.copy_(H)
    work.diagonal().add_(shift)
    return work


def _cholesky_direction(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor | None:
    """``-A^{-1} g`` when ``A`` is positive definite (Cholesky succeeds) and the result is a finite descent
    direction, else ``None``."""
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) != 0:
        return None
    d = -torch.cholesky_solve(g[:, None], L)[:, 0]
    return d if _is_descent(d, g) else None


def _smallest_eigenvalue(H: torch.Tensor) -> tuple[float, float]:
    """``(lambda_min, max |lambda|)`` of a symmetric ``H``: exact for small ``P`` (``eigvalsh``), else
    Lanczos estimates. The shift needs ``lambda_min`` only roughly (it takes twice its size, and the caller's
    Cholesky certifies it), so Lanczos stops at the first negative Ritz value whose residual is at most a tenth
    of its size (an eigenvalue lies within 10% of it; the Ritz value bounds ``lambda_min`` from above), else
    at a residual of 1e-3 ``||H||``."""
    P = H.shape[0]
    if P <= EIGH_UP_TO:
        lam = torch.linalg.eigvalsh(H)
        return float(lam[0]), float(lam.abs().max())
    from ..operators import FunctionOperator
    from ..operators.base import counting_view
    from ..spectral.lanczos import lanczos

    def rough(theta, resid, norm):
        lo = float(theta[0])
        return "estimated" if lo < 0 and float(resid[0]) <= 0.1 * -lo else None

    # contiguous columns: a product with a strided column of the Lanczos basis is ~1.5x slower at this size
    op = counting_view(FunctionOperator(lambda V: H @ V.contiguous(), P, H.dtype, H.device,
                                        budget=4 * P * P * H.element_size(), name="dense Hessian"))
    with warnings.catch_warnings(), op.reuse():  # a loose estimate is enough: Cholesky decides
        warnings.simplefilter("ignore", RuntimeWarning)
        res = lanczos(op, 1, "SA", tol=1e-3, block_size=1, seed=0, stop=rough)
    top = max(res.norm_estimate, float(H.abs().max()))
    lam = float(res.values[0])
    return (lam if math.isfinite(lam) else -top), top


def _is_descent(d: torch.Tensor, g: torch.Tensor) -> bool:
    if not bool(torch.isfinite(d).all()):
        return False
    return float(g @ d) < 0 or float(g.abs().max()) == 0.0


def quadratic_change(g: torch.Tensor, Hs: torch.Tensor, s: torch.Tensor) -> float:
    """Predicted change of the loss by the quadratic model for a step ``s``: ``g.s + s.(H s) / 2``."""
    return float(g @ s + 0.5 * (s @ Hs))
