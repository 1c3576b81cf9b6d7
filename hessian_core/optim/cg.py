"""Conjugate gradient for Newton systems ``(B + damping I) s = -g`` with only products ``B v``.

* :func:`steihaug_cg`: truncated CG inside a trust region (Steihaug 1983; Nocedal & Wright, Alg. 7.2),
  stopping at negative curvature. Without a radius it is the truncated CG of line-search Newton-CG.
* :func:`martens_cg`: CG from a warm start with Martens' relative-progress stopping rule, keeping the
  iterates at geometrically spaced iterations for CG backtracking (Martens 2010, sections 4.4-4.6).

Both track the quadratic model ``phi(s) = g.s + s.(B + damping I) s / 2`` without extra products:
with the residual ``r = (B + damping I) s + g``, ``phi(s) = (g.s + r.s) / 2``.
Vectors are flat ``(P,)``; ``matvec`` maps ``(P,)`` to ``(P,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class CGResult:
    """Outcome of a CG solve.

    ``step``: ``(P,)``; ``model_change``: ``phi(step)``; ``iterations``: products used; ``reason``:
    ``"converged"``, ``"max_iter"``, ``"boundary"`` (trust radius hit), ``"negative_curvature"``,
    ``"zero_gradient"`` or ``"progress"`` (Martens' rule); ``negative_curvature``: whether a direction with
    ``d.(B + damping I) d <= 0`` was met; ``iterates``: Martens CG only, ``[(iteration, step, phi)]`` at the
    backtracking checkpoints, last one included.
    """

    step: torch.Tensor
    model_change: float
    iterations: int
    reason: str
    negative_curvature: bool = False
    iterates: list = field(default_factory=list)


def _damped(matvec: Callable, damping: float) -> Callable:
    return matvec if damping == 0 else (lambda v: matvec(v) + damping * v)


def steihaug_cg(matvec: Callable, g: torch.Tensor, radius: float | None = None, *, damping: float = 0.0,
                rtol: float | None = None, max_iter: int | None = None) -> CGResult:
    """Approximately minimize ``phi(s)`` subject to ``|s| <= radius`` (no constraint if ``radius`` is None).

    Stops when ``|r| <= rtol |g|`` (default ``rtol = min(0.5, sqrt|g|)``, superlinear forcing), when the
    radius is reached, or at the first direction of non-positive curvature: with a radius, the step then
    goes to the boundary along it (``tau > 0``, still downhill since ``g.d < 0`` for every CG direction);
    without, the iterate so far is returned (``-g`` if that is the first iteration). Every nonzero step
    returned satisfies ``g.s < 0``.
    """
    A = _damped(matvec, damping)
    P = g.numel()
    max_iter = max_iter or P
    gnorm = float(g.norm())
    s = torch.zeros_like(g)
    if gnorm == 0:
        return CGResult(s, 0.0, 0, "zero_gradient")
    tol = (rtol if rtol is not None else min(0.5, math.sqrt(gnorm))) * gnorm
    r = g.clone()
    d = -r
    phi = 0.0
    rr = float(r @ r)
    for it in range(1, max_iter + 1):
        Ad = A(d)
        dAd = float(d @ Ad)
        if dAd <= 0:
            if radius is not None:
                tau = _to_boundary(s, d, radius)
                phi_b = phi + tau * float(r @ d) + 0.5 * tau * tau * dAd
                return CGResult(s + tau * d, phi_b, it, "negative_curvature", negative_curvature=True)
            if it == 1:
                phi_g = -gnorm ** 2 + 0.5 * dAd
                return CGResult(-g, phi_g, it, "negative_curvature", negative_curvature=True)
            return CGResult(s, phi, it, "negative_curvature", negative_curvature=True)
        alpha = rr / dAd
        s_next = s + alpha * d
        if radius is not None and float(s_next.norm()) >= radius:
            tau = _to_boundary(s, d, radius)
            return CGResult(s + tau * d, phi + tau * float(r @ d) + 0.5 * tau * tau * dAd, it, "boundary")
        phi += alpha * float(r @ d) + 0.5 * alpha * alpha * dAd
        s = s_next
        r = r + alpha * Ad
        rr_next = float(r @ r)
        if math.sqrt(rr_next) <= tol:
            return CGResult(s, phi, it, "converged")
        d = -r + (rr_next / rr) * d
        rr = rr_next
    return CGResult(s, phi, max_iter, "max_iter")


def _to_boundary(s: torch.Tensor, d: torch.Tensor, radius: float) -> float:
    """The positive root ``tau`` of ``|s + tau d| = radius`` (``|s| < radius``)."""
    a = float(d @ d)
    b = 2 * float(s @ d)
    c = float(s @ s) - radius ** 2
    return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def martens_cg(matvec: Callable, g: torch.Tensor, x0: torch.Tensor | None = None, *, damping: float = 0.0,
               max_iter: int = 250, min_iter: int = 1, tol: float = 5e-4, gamma: float = 1.3) -> CGResult:
    """CG on ``(B + damping I) s = -g`` from ``x0`` with Martens' stopping rule and saved iterates.

    Stops at iteration ``i`` when ``i >= min_iter``, ``phi_i < 0`` and
    ``(phi_i - phi_{i-k}) / phi_i < k * tol`` with ``k = max(10, i / 10)`` (the model no longer improves
    by a useful fraction), at ``max_iter``, on convergence (``|r| <= 1e-10 |g|``), or at non-positive
    curvature (possible only for an indefinite ``B``; the iterate so far is kept). A warm start with
    ``phi(x0) >= 0`` (no better than 0) is dropped for ``x0 = 0``. Iterates at ``i = ceil(gamma^j)`` and the
    last are saved in ``iterates`` for backtracking.
    """
    A = _damped(matvec, damping)
    gnorm = float(g.norm())
    if gnorm == 0:
        return CGResult(torch.zeros_like(g), 0.0, 0, "zero_gradient")
    products = 0
    if x0 is not None and float(x0.norm()) > 0:
        r = A(x0) + g
        products += 1
        x = x0.clone()
        phi = 0.5 * float(g @ x + r @ x)
        if not phi < 0:
            x, r, phi = torch.zeros_like(g), g.clone(), 0.0
    else:
        x, r, phi = torch.zeros_like(g), g.clone(), 0.0
    d = -r
    rr = float(r @ r)
    history = [phi]
    saves = _checkpoints(max_iter, gamma)
    iterates = []
    reason, negative = "max_iter", False
    i = 0
    for i in range(1, max_iter + 1):
        Ad = A(d)
        products += 1
        dAd = float(d @ Ad)
        if dAd <= 0:
            reason, negative, i = "negative_curvature", True, i - 1
            break
        alpha = rr / dAd
        phi += alpha * float(r @ d) + 0.5 * alpha * alpha * dAd
        x = x + alpha * d
        r = r + alpha * Ad
        history.append(phi)
        if i in saves:
            iterates.append((i, x, phi))
        rr_next = float(r @ r)
        if math.sqrt(rr_next) <= 1e-10 * gnorm:
            reason = "converged"
            break
        k = max(10, i // 10)
        if i >= max(min_iter, k) and phi < 0 and (phi - history[i - k]) / phi < k * tol:
            reason = "progress"
            break
        d = -r + (rr_next / rr) * d
        rr = rr_next
    if not iterates or iterates[-1][0] != i:
        iterates.append((i, x, phi))
    return CGResult(x, phi, products, reason, negative_curvature=negative, iterates=iterates)


def _checkpoints(max_iter: int, gamma: float) -> set[int]:
    out, j = set(), 0
    while True:
        i = math.ceil(gamma ** j)
        if i > max_iter:
            return out
        out.add(i)
        j += 1
