"""Krylov solvers for ``A X = B`` with ``A`` symmetric, known through block products.

* :func:`block_cg`: preconditioned conjugate gradients on all columns of ``B`` at once: one block product
  ``A P`` per iteration over the columns not yet converged (one pass over the data for a curvature
  operator, vmapped), each column with its own step sizes. This is not O'Leary's block CG (one Krylov space
  shared by the columns), which breaks down when columns converge at different speeds. CG needs ``A``
  positive definite: a search direction with ``p.A p <= 0`` proves it is not, and raises
  :class:`NegativeCurvature` at once instead of returning a meaningless iterate.
* :func:`minres`: ``scipy.sparse.linalg.minres`` column by column, for symmetric indefinite ``A``,
  restarted on the true residual until it meets ``tol`` (scipy's own test is relative to ``||A|| ||x||``).

Both stop on the relative residual ``||b - A x|| <= tol ||b||`` of the recurrence and the caller
recomputes the true residual; if round-off left it above ``tol``, the solvers restart from their answer
(iterative refinement) at most ``REFINEMENTS`` times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

REFINEMENTS = 2
#: scipy MINRES runs per column at most, each from the true residual of the last (see :func:`minres`)
MINRES_RESTARTS = 5


class NegativeCurvature(Exception):  # noqa: N818 - a signal between solve() and block_cg, not an error type
    """CG met a direction ``p`` with ``p.A p <= 0``: ``A`` is not positive definite. ``rayleigh`` is
    ``p.A p / p.p``, an upper bound on the smallest eigenvalue of ``A``."""

    def __init__(self, rayleigh: float, iteration: int):
        super().__init__(f"p.A p / p.p = {rayleigh:.6g} at iteration {iteration}")
        self.rayleigh = rayleigh
        self.iteration = iteration


@dataclass
class KrylovOutcome:
    """``X`` ``(P, k)``; ``iterations`` ``(k,)`` per column; ``history``: largest relative residual of the
    active columns after each iteration (recurrence, not recomputed)."""

    X: torch.Tensor
    iterations: torch.Tensor
    history: list = field(default_factory=list)


def block_cg(apply_A: Callable, B: torch.Tensor, X0: torch.Tensor | None, apply_M: Callable | None, tol: float,
             maxiter: int, progress: bool | None = None) -> KrylovOutcome:
    """Preconditioned CG for ``A X = B``, ``B`` of shape ``(P, k)`` (see the module docstring).

    ``apply_A`` and ``apply_M`` (the preconditioner: an approximation of ``A^{-1}``, symmetric positive
    definite; ``None`` for none) map ``(P, m)`` to ``(P, m)``. Raises :class:`NegativeCurvature`.
    """
    P, k = B.shape
    eps = torch.finfo(B.dtype).eps
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    R = B - apply_A(X) if X0 is not None else B.clone()
    bnorm = B.norm(dim=0)
    target = tol * bnorm
    M = apply_M or (lambda V: V.clone())
    Z = M(R)
    D = Z.clone()
    rz = (R * Z).sum(0)
    iterations = torch.zeros(k, dtype=torch.long)
    active = R.norm(dim=0) > target
    norm_est = 0.0  # largest Rayleigh quotient seen: a lower bound on ||A||, scales the curvature test
    history = []
    bar = tqdm(total=maxiter, desc="CG", disable=(not progress) if progress is not None else None, leave=False)
    try:
        for it in range(1, maxiter + 1):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            Dk = D[:, idx]
            AD = apply_A(Dk)
            dAd = (Dk * AD).sum(0)
            dd = (Dk * Dk).sum(0)
            rayleigh = dAd / dd
            norm_est = max(norm_est, float(rayleigh.max()))
            bad = dAd <= 10 * eps * norm_est * dd
            if bool(bad.any()):
                raise NegativeCurvature(float(rayleigh[bad].min()), it)
            alpha = rz[idx] / dAd
            X[:, idx] += alpha * Dk
            R[:, idx] -= alpha * AD
            iterations[idx] = it
            rnorm = R[:, idx].norm(dim=0)
            history.append(float((rnorm / bnorm[idx].clamp_min(torch.finfo(B.dtype).tiny)).max()))
            done = rnorm <= target[idx]
            active[idx[done]] = False
            keep = idx[~done]
            if keep.numel():
                Zk = M(R[:, keep])
                rz_new = (R[:, keep] * Zk).sum(0)
                D[:, keep] = Zk + (rz_new / rz[keep]) * D[:, keep]
                rz[keep] = rz_new
            bar.update(1)
            bar.set_postfix(residual=f"{history[-1]:.1e}", refresh=False)
    finally:
        bar.close()
    return KrylovOutcome(X, iterations, history)


def minres(apply_A: Callable, B: torch.Tensor, X0: torch.Tensor | None, apply_M: Callable | None, tol: float,
           maxiter: int) -> KrylovOutcome:
    """``scipy.sparse.linalg.minres`` for each column of ``B`` (``(P, k)``), in float64; ``apply_M`` an
    approximation of ``A^{-1}`` (symmetric positive definite) or ``None``."""
    from scipy.sparse.linalg import LinearOperator as ScipyLinearOperator
    from scipy.sparse.linalg import minres as scipy_minres

    P, k = B.shape
    dtype, device = B.dtype, B.device

    def wrap(f):
        def mv(x):
            t = torch.as_tensor(np.asarray(x).reshape(P, -1), dtype=dtype, device=device)
            return f(t).detach().cpu().numpy().astype(np.float64).reshape(np.shape(x))
        return ScipyLinearOperator((P, P), matvec=mv, matmat=mv, dtype=np.float64)

    A = wrap(apply_A)
    M = wrap(apply_M) if apply_M is not None else None
    X = torch.zeros_like(B) if X0 is None else X0.clone()
    iterations = torch.zeros(k, dtype=torch.long)
    eps = np.finfo(np.float64).eps
    for j in range(k):
        b = B[:, j].detach().cpu().numpy().astype(np.float64)
        bnorm = float(np.linalg.norm(b))
        x = X[:, j].detach().cpu().numpy().astype(np.float64)
        r = b - A.matvec(x) if X0 is not None else b.copy()
        count = [0]

        def callback(_xk, count=count):
            count[0] += 1

        # scipy stops on its estimate of ||r|| / (||A|| ||x||) (in the preconditioner's norm), which can be far
        # below ||r|| / ||b||: solve for the correction from the true residual, asking for what is still
        # missing divided by how far scipy's estimate fell short last time
        shortfall = 10.0
        for _ in range(MINRES_RESTARTS):
            rnorm = float(np.linalg.norm(r))
            if rnorm <= tol * bnorm or count[0] >= maxiter:
                break
            rtol = max(tol * bnorm / rnorm / shortfall, eps)
            y, _ = scipy_minres(A, r, rtol=rtol, maxiter=maxiter - count[0], M=M, callback=callback)
            x = x + y
            r = b - A.matvec(x)
            shortfall = max(shortfall, 2 * float(np.linalg.norm(r)) / rnorm / rtol)
        X[:, j] = torch.as_tensor(x, dtype=dtype, device=device)
        iterations[j] = count[0]
    return KrylovOutcome(X, iterations)


def relative(residuals: torch.Tensor, bnorm: torch.Tensor) -> torch.Tensor:
    """``residuals / bnorm`` with ``0 / 0 = 0`` (a zero right-hand side is solved by ``x = 0``)."""
    out = residuals / bnorm.clamp_min(torch.finfo(residuals.dtype).tiny)
    return torch.where(bnorm > 0, out, torch.where(residuals > 0, torch.full_like(out, math.inf), out))
