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

from ..errors import InvalidInputError


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
                rtol: float | None = None, max_iter: int | None = None,
                precondition: Callable | None = None) -> CGResult:
    """Approximately minimize ``phi(s)`` subject to ``|s| <= radius`` (no constraint if ``radius`` is None).

    Stops when ``|r| <= rtol |g|`` (default ``rtol = min(0.5, sqrt|g|)``, superlinear forcing), when the
    radius is reached, or at the first direction of non-positive curvature: with a radius, the step then
    goes to the boundary along it (``tau > 0``, still downhill since ``g.d < 0`` for every CG direction);
    without, the iterate so far is returned (the first direction, ``-g``, if that is the first iteration).
    Every nonzero step returned satisfies ``g.s < 0``.

    ``precondition``: ``r -> M^{-1} r`` for a symmetric positive definite ``M`` (preconditioned CG); the
    trust region is then ``|s|_M <= radius`` (Steihaug 1983), its norms tracked by the recurrences of
    Conn, Gould & Toint (2000, section 7.5) without products with ``M``.
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
    y = _preconditioned(precondition, r)
    d = -y
    phi = 0.0
    ry = float(r @ y)
    # (|s|_M^2, s.M d, |d|_M^2); with M = I they are computed from the vectors themselves
    norms = (0.0, 0.0, ry)
    for it in range(1, max_iter + 1):
        if precondition is None:
            norms = (float(s @ s), float(s @ d), float(d @ d))
        Ad = A(d)
        dAd = float(d @ Ad)
        if dAd <= 0:
            if radius is not None:
                tau = _to_boundary(norms, radius)
                phi_b = phi + tau * float(r @ d) + 0.5 * tau * tau * dAd
                return CGResult(s + tau * d, phi_b, it, "negative_curvature", negative_curvature=True)
            if it == 1:
                return CGResult(d, float(g @ d) + 0.5 * dAd, it, "negative_curvature", negative_curvature=True)
            return CGResult(s, phi, it, "negative_curvature", negative_curvature=True)
        alpha = ry / dAd
        ss, sd, dd = norms
        ss_next = ss + 2 * alpha * sd + alpha * alpha * dd
        if radius is not None and math.sqrt(max(ss_next, 0.0)) >= radius:
            tau = _to_boundary(norms, radius)
            return CGResult(s + tau * d, phi + tau * float(r @ d) + 0.5 * tau * tau * dAd, it, "boundary")
        phi += alpha * float(r @ d) + 0.5 * alpha * alpha * dAd
        s = s + alpha * d
        r = r + alpha * Ad
        if math.sqrt(float(r @ r)) <= tol:
            return CGResult(s, phi, it, "converged")
        y = _preconditioned(precondition, r)
        ry_next = float(r @ y)
        beta = ry_next / ry
        norms = (ss_next, beta * (sd + alpha * dd), ry_next + beta * beta * dd)
        d = -y + beta * d
        ry = ry_next
    return CGResult(s, phi, max_iter, "max_iter")


def _to_boundary(norms, radius: float) -> float:
    """The positive root ``tau`` of ``|s + tau d|^2 = radius^2`` from ``norms = (|s|^2, s.d, |d|^2)`` in the
    trust region's norm (``|s| < radius``)."""
    ss, sd, dd = norms
    a, b, c = dd, 2 * sd, ss - radius ** 2
    return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def _preconditioned(precondition: Callable | None, r: torch.Tensor) -> torch.Tensor:
    """``M^{-1} r`` (``r`` itself without a preconditioner); refuses a preconditioner that is not positive
    definite on ``r`` (CG would divide by ``r.M^{-1} r <= 0``)."""
    if precondition is None:
        return r
    y = precondition(r)
    ry = float(r @ y)
    if not ry > 0 and float(r.abs().max()) > 0:
        raise InvalidInputError(f"the preconditioner is not positive definite (r.M^-1 r = {ry:.3g} for a residual "
                                "r); give the inverse of a positive definite matrix, e.g. kfac.inverse(damping > 0)")
    return y


def preconditioner_of(preconditioner, damping: float, size: int) -> Callable | None:
    """``r -> M^{-1} r`` for a ``preconditioner=`` option of the optimizers: ``None``; an operator applied as
    it is (anything :func:`~hessian_core.operators.as_operator` takes, e.g. ``kfac.inverse(1e-3)``); or a
    callable ``preconditioner(damping) -> operator`` called at each step with the current damping, to build
    one at the current parameters (``lambda d: hc.KFACOperator(model, loss_fn, batch).inverse(d + 1e-3)``)."""
    if preconditioner is None:
        return None
    from ..operators import as_operator

    is_operator = isinstance(preconditioner, torch.Tensor) or hasattr(preconditioner, "matmat")
    op = as_operator(preconditioner if is_operator or not callable(preconditioner) else preconditioner(damping))
    if op.size != size:
        raise InvalidInputError(f"the preconditioner has size {op.size}, the parameters {size}; build it over the "
                                "same parameters, in the same order")
    return op.matvec


def martens_cg(matvec: Callable, g: torch.Tensor, x0: torch.Tensor | None = None, *, damping: float = 0.0,
               max_iter: int = 250, min_iter: int = 1, tol: float = 5e-4, gamma: float = 1.3,
               precondition: Callable | None = None) -> CGResult:
    """CG on ``(B + damping I) s = -g`` from ``x0`` with Martens' stopping rule and saved iterates.

    Stops at iteration ``i`` when ``i >= min_iter``, ``phi_i < 0`` and
    ``(phi_i - phi_{i-k}) / phi_i < k * tol`` with ``k = max(10, i / 10)`` (the model no longer improves
    by a useful fraction), at ``max_iter``, on convergence (``|r| <= 1e-10 |g|``), or at non-positive
    curvature (possible only for an indefinite ``B``; the iterate so far is kept). A warm start with
    ``phi(x0) >= 0`` (no better than 0) is dropped for ``x0 = 0``. Iterates at ``i = ceil(gamma^j)`` and the
    last are saved in ``iterates`` for backtracking. ``precondition``: ``r -> M^{-1} r`` for a symmetric
    positive definite ``M`` (preconditioned CG, as Martens preconditions HF).
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
    y = _preconditioned(precondition, r)
    d = -y
    ry = float(r @ y)
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
        alpha = ry / dAd
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
        y = _preconditioned(precondition, r)
        ry_next = float(r @ y)
        d = -y + (ry_next / ry) * d
        ry = ry_next
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
