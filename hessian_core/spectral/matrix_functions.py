"""Condition number and log-determinant, where they mean something, and ``tr f(A)`` by SLQ.

Both refuse clearly instead of returning a number that is not what it claims: the result carries
``value`` (``inf`` / ``-inf`` when the operator is singular, ``nan`` when it is indefinite) and
``reason`` saying why. A negative Ritz value is a Rayleigh quotient, so it proves ``lambda_min < 0``;
positive definiteness is accepted when the smallest Ritz value minus its recomputed residual (the
distance to the nearest eigenvalue is at most the residual) stays above ``rtol * ||A||``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from ..operators.base import counting_view
from .lanczos import EigenResult, eigsh
from .quadrature import slq


@dataclass
class ConditionResult:
    """``value = lambda_max / lambda_min`` for a definite operator (of either sign); ``inf`` when singular,
    ``nan`` when indefinite, with ``reason``. ``float(result)`` is ``value``."""

    value: float
    lambda_min: float
    lambda_max: float
    reason: str | None
    eigen: EigenResult
    num_matvecs: int

    def __float__(self) -> float:
        return self.value


@dataclass
class LogdetResult:
    """``log det A`` estimate with its standard error, for a positive definite operator; ``-inf``
    (singular) or ``nan`` (indefinite) with ``reason`` otherwise. ``float(result)`` is ``value``."""

    value: float
    stderr: float
    reason: str | None
    lambda_min: float | None
    num_matvecs: int

    def __float__(self) -> float:
        return self.value


def _definiteness(lo: float, r_lo: float, hi: float, r_hi: float, rtol: float) -> str:
    """``"positive"``, ``"negative"``, ``"singular"`` or ``"indefinite"`` from the two extreme Ritz values
    and their residuals. Ritz values are Rayleigh quotients, so ``lambda_min <= lo`` and ``hi <= lambda_max``:
    indefiniteness is proven by ``lo < 0 < hi``. Definiteness assumes ``lo``, ``hi`` are the extreme
    eigenvalues (what Lanczos from a random start finds) and asks their error bounds to clear zero."""
    scale = max(abs(lo), abs(hi))
    if lo < -rtol * scale and hi > rtol * scale:
        return "indefinite"
    if lo - r_lo > rtol * scale:
        return "positive"
    if hi + r_hi < -rtol * scale:
        return "negative"
    return "singular"


def condition_number(
    op,
    *,
    rtol: float | None = None,
    tol: float | None = None,
    seed: int | None = None,
    max_matvecs: int | None = None,
    progress: bool | None = None,
) -> ConditionResult:
    """2-norm condition number ``|lambda|_max / |lambda|_min`` of a definite symmetric operator.

    Computes both extreme eigenvalues (``eigsh(which="BE", k=2)``). For an indefinite operator the
    smallest ``|lambda|`` is an interior eigenvalue that Lanczos does not find without linear solves,
    so the result is ``nan`` with the reason; for a singular one (an extreme eigenvalue within its error
    bound, or ``rtol`` times the largest ``|lambda|``, of zero) it is ``inf``.

    Args:
        rtol: eigenvalues smaller than ``rtol * max |lambda|`` count as zero (default ``sqrt(eps)``).
        tol, seed, max_matvecs, progress: passed to :func:`eigsh`.
    """
    A = counting_view(op)
    with A.reuse():
        eps = torch.finfo(A.dtype).eps
        rtol = eps**0.5 if rtol is None else float(rtol)
        k = 2 if A.size > 1 else 1
        eig = eigsh(A, k=k, which="BE", tol=tol, seed=seed, max_matvecs=max_matvecs, progress=progress)
        lo, hi = float(eig.values[0]), float(eig.values[-1])
        r_lo, r_hi = float(eig.residuals[0]), float(eig.residuals[-1])
        kind = _definiteness(lo, r_lo, hi, r_hi, rtol)
        if kind == "positive":
            return ConditionResult(hi / lo, lo, hi, None, eig, eig.num_matvecs)
        if kind == "negative":
            return ConditionResult(lo / hi, lo, hi, None, eig, eig.num_matvecs)
        if kind == "singular":
            reason = (
                f"singular: an extreme eigenvalue ({lo:.3g} or {hi:.3g}) is zero within its error bound "
                f"or rtol={rtol:g} times the largest |eigenvalue|"
            )
            return ConditionResult(math.inf, lo, hi, reason, eig, eig.num_matvecs)
        reason = (
            f"indefinite: eigenvalues {lo:.6g} < 0 < {hi:.6g}; the condition number needs the smallest "
            "|eigenvalue|, an interior one, which is not estimated (consider the GGN, which is PSD)"
        )
        return ConditionResult(math.nan, lo, hi, reason, eig, eig.num_matvecs)


def trace_function(
    op,
    f,
    num_probes: int = 10,
    num_iters: int = 50,
    seed: int | None = None,
    reorth: str = "full",
    progress: bool | None = None,
) -> tuple[float, float, int]:
    """``tr f(A)`` by SLQ: ``(estimate, standard error, products)``. ``f`` maps a tensor of eigenvalues
    to values elementwise; Rademacher probes make the estimate unbiased up to the quadrature error."""
    A = counting_view(op)
    with A.reuse():
        quad = slq(A, num_probes, num_iters, seed, reorth, progress)
        return (*_trace_of(quad, f, A.size), quad.num_matvecs)


def _trace_of(quad, f, P: int) -> tuple[float, float]:
    """``tr f(A)`` from SLQ: the mean over probes of ``P * sum_i w_i f(theta_i)`` (unbiased for Rademacher
    probes, whose squared norm is ``P``), and its standard error."""
    per = quad.per_probe(f) * P
    err = float(per.std(unbiased=True) / math.sqrt(quad.num_probes)) if quad.num_probes > 1 else math.inf
    return float(per.mean()), err


def logdet(
    op,
    num_probes: int = 10,
    num_iters: int = 50,
    *,
    seed: int | None = None,
    check: bool = True,
    rtol: float | None = None,
    reorth: str = "full",
    progress: bool | None = None,
) -> LogdetResult:
    """``log det A = tr log A`` of a symmetric positive definite operator by SLQ.

    With ``check=True`` (default) the smallest eigenvalue is computed first (``eigsh(which="SA", k=1)``,
    products counted) and the operator must be certified positive definite: otherwise the value is
    ``-inf`` (singular) or ``nan`` (indefinite) with the reason and no SLQ is run. With ``check=False``
    only the quadrature nodes are checked (a node ``<= 0`` proves ``lambda_min <= 0``).

    Args:
        num_probes, num_iters: SLQ probes and Lanczos steps per probe.
        rtol: eigenvalues below ``rtol * lambda_max`` count as zero (default ``sqrt(eps)``).
    """
    A = counting_view(op)
    with A.reuse():
        eps = torch.finfo(A.dtype).eps
        rtol = eps**0.5 if rtol is None else float(rtol)
        lam_min = None
        if check:
            with warnings.catch_warnings():  # only the error bound matters here, not convergence to tol
                warnings.simplefilter("ignore", RuntimeWarning)
                eig = eigsh(A, k=1, which="SA", tol=1e-3, seed=seed, progress=progress)
                lam_min, r = float(eig.values[0]), float(eig.residuals[0])
            if lam_min - r <= rtol * eig.norm_estimate:
                if lam_min < -rtol * eig.norm_estimate:  # a Rayleigh quotient: lambda_min <= lam_min < 0
                    reason = f"indefinite: lambda_min = {lam_min:.6g} < 0, log det of a real matrix is undefined here"
                    return LogdetResult(math.nan, math.nan, reason, lam_min, A.num_matvecs)
                reason = f"singular: lambda_min = {lam_min:.3g} is zero within its error bound {r:.2g}"
                return LogdetResult(-math.inf, math.nan, reason, lam_min, A.num_matvecs)
        quad = slq(A, num_probes, num_iters, seed, reorth, progress)
        smallest = float(quad.nodes.min())
        if smallest <= rtol * float(quad.nodes.abs().max()):
            reason = (
                f"not positive definite: a Lanczos node is {smallest:.3g}, so lambda_min <= {smallest:.3g}; "
                "log det is undefined (or -inf) there"
            )
            return LogdetResult(math.nan, math.nan, reason, smallest, A.num_matvecs)
        value, err = _trace_of(quad, torch.log, A.size)
        return LogdetResult(value, err, None, lam_min, A.num_matvecs)
