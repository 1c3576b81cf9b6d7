"""Dense Newton directions: damped solve by Cholesky, the shifted solve for indefinite Hessians, and the
saddle-free solve with ``|H|``. Every direction returned is a descent direction (``g . d < 0``) or zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import NonFiniteError
from ..memory import check_fits


@dataclass
class DenseDirection:
    """A Newton direction ``d`` (``(P,)``) and how it was obtained.

    ``method`` is ``"cholesky"`` (``H + damping I`` positive definite), ``"shifted"`` (indefinite: solved
    with ``H + shift I``), or ``"saddle-free"`` (``|H| + damping I``). ``min_eigenvalue`` is the smallest
    eigenvalue of ``H`` when an eigendecomposition was computed, else ``None``.
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
        H: ``(P, P)`` symmetric Hessian (symmetrized here against round-off).
        g: ``(P,)`` gradient.
        damping: ``lambda >= 0`` added to the diagonal.
        saddle_free: use ``|H| = V |Lambda| V^T`` (eigendecomposition) instead of ``H``: negative curvature
            directions are followed downhill, scaled by ``1/|lambda_i|`` (Dauphin et al. 2014).

    Order of attempts (without ``saddle_free``): Cholesky of ``H + damping I``; if that matrix is not
    positive definite, the eigendecomposition ``H = V Lambda V^T`` and the solve with
    ``H + shift I``, ``shift = max(damping, 2 |lambda_min|) + sqrt(eps) |lambda|_max``, whose smallest
    eigenvalue is then at least ``|lambda_min|`` (a descent direction, never an ascent one).
    Zero curvature in ``|H| + damping I`` (saddle-free) is pseudo-inverted: that component of ``d`` is 0.
    """
    H = (H + H.T) / 2
    eps = torch.finfo(H.dtype).eps
    if not saddle_free:
        A = H + damping * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) == 0:
            d = -torch.cholesky_solve(g[:, None], L)[:, 0]
            if _is_descent(d, g):
                return DenseDirection(d, "cholesky", float(damping), None)
    lam, V = torch.linalg.eigh(H)
    top = float(lam.abs().max()) if lam.numel() else 0.0
    coef = V.T @ g
    if saddle_free:
        curv = lam.abs() + damping
        shift = float(damping)
        method = "saddle-free"
    else:
        shift = max(float(damping), 2 * max(-float(lam.min()), 0.0)) + eps ** 0.5 * max(top, eps)
        curv = lam + shift
        method = "shifted"
    usable = curv > eps * lam.numel() * max(top, float(damping), eps)
    d = -(V[:, usable] @ (coef[usable] / curv[usable]))
    if not bool(torch.isfinite(d).all()):
        raise NonFiniteError(
            "the Newton direction is not finite; the Hessian is too ill-conditioned: use damping > 0")
    return DenseDirection(d, method, shift, float(lam.min()))


def _is_descent(d: torch.Tensor, g: torch.Tensor) -> bool:
    if not bool(torch.isfinite(d).all()):
        return False
    return float(g @ d) < 0 or float(g.abs().max()) == 0.0


def quadratic_change(g: torch.Tensor, Hs: torch.Tensor, s: torch.Tensor) -> float:
    """Predicted change of the loss by the quadratic model for a step ``s``: ``g.s + s.(H s) / 2``."""
    return float(g @ s + 0.5 * (s @ Hs))
