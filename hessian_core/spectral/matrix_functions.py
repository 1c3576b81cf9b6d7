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

from ..arguments import check_bool, check_real
from ..operators.base import counting_view
from .definiteness import known_psd
from .invariances import probe_invariances
from .lanczos import EigenResult, lanczos
from .quadrature import slq


@dataclass
class ConditionResult:
    """``value = lambda_max / lambda_min`` for a definite operator (of either sign); ``inf`` when singular,
    ``nan`` when indefinite, with ``reason``. ``float(result)`` is ``value``. ``lower_bound``: a proven
    lower bound of the condition number when the operator is not shown indefinite (``|theta_max / theta_min|``
    of the extreme Ritz values, since ``|lambda_max| >= |theta_max|`` and ``|lambda_min| <= |theta_min|``;
    ``|theta_max| / ||A x||`` when an invariance direction ``x`` proved singularity), informative when
    ``value`` is ``inf``. ``lambda_min`` / ``lambda_max``: the extreme Ritz values (converged when
    ``stopped == "converged"``; otherwise bounds: ``lambda_min`` from above, ``lambda_max`` from below).
    ``stopped``: why the computation ended (``"converged"``, ``"indefinite"``, ``"singular"``,
    ``"invariance"``, ``"max_matvecs"``, ``"dense"``)."""

    value: float
    lambda_min: float
    lambda_max: float
    reason: str | None
    eigen: EigenResult
    num_matvecs: int
    lower_bound: float = math.nan

    def __float__(self) -> float:
        return self.value

    @property
    def stopped(self) -> str:
        return self.eigen.stopped

    def __repr__(self) -> str:
        return (f"ConditionResult(value={self.value:.6g}, lambda_min={self.lambda_min:.6g}, "
                f"lambda_max={self.lambda_max:.6g}, lower_bound={self.lower_bound:.3g}, reason={self.reason!r}, "
                f"stopped={self.stopped!r}, num_matvecs={self.num_matvecs})")


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
    psd: bool | None = None,
    invariances: bool = True,
    progress: bool | None = None,
) -> ConditionResult:
    """2-norm condition number ``|lambda|_max / |lambda|_min`` of a definite symmetric operator.

    Computes both extreme eigenvalues (``eigsh(which="BE", k=2)``), and stops as soon as the answer is
    decided: **indefinite** (Ritz values of both signs beyond ``rtol * ||A||``, a proof since Ritz values are
    Rayleigh quotients) gives ``nan`` (the smallest ``|lambda|`` is then an interior eigenvalue that Lanczos
    does not find without linear solves); **singular** gives ``inf``: for a positive semi-definite operator
    (``psd``) as soon as the smallest Ritz value is below ``rtol * ||A||`` (then ``0 <= lambda_min <= rtol
    ||A||``), or, for an operator built from a model, as soon as a direction along which the loss is
    invariant (:mod:`~hessian_core.spectral.invariances`: the softmax logit shift, the shift and scale before
    a normalization layer; tested first, one product per candidate, at most 64) has ``||A x|| <= rtol ||A||``
    (``stopped="invariance"``, for any symmetric operator), otherwise when an extreme eigenvalue is zero
    within its error bound after convergence.

    Args:
        rtol: eigenvalues smaller than ``rtol * max |lambda|`` count as zero (default ``sqrt(eps)``).
        psd: whether the operator is positive semi-definite; default: known for the empirical Fisher, the
            GGN of torch's convex losses and their sums (:func:`~hessian_core.spectral.definiteness.known_psd`).
        invariances: test the invariance directions first (default ``True``; needs ``op.params``).
        tol, seed, max_matvecs, progress: passed to :func:`eigsh`.

    ``result.stopped`` says why the computation stopped (``"converged"``, ``"indefinite"``, ``"singular"``,
    ``"invariance"``, ``"max_matvecs"``), ``result.reason`` explains a non-finite value.
    """
    invariances = check_bool(invariances, "invariances")
    A = counting_view(op)
    semidefinite = known_psd(op, psd)
    with A.reuse():
        eps = torch.finfo(A.dtype).eps
        rtol = eps**0.5 if rtol is None else check_real(rtol, "rtol", positive=True, at_most=1.0)

        probe = probe_invariances(A) if invariances else None

        def decide(theta, resid, norm):
            lo, hi = float(theta[0]), float(theta[-1])
            if probe is not None and probe.residual <= rtol * max(norm, probe.rayleigh_max):
                return "invariance"
            if lo < -rtol * norm and hi > rtol * norm:
                return "indefinite"
            if semidefinite and lo <= rtol * norm:
                return "singular"
            return None

        # one vector per end: multiplicities do not change the condition number
        k = 2 if A.size > 1 else 1
        with warnings.catch_warnings():  # an unconverged end is explained in the result's reason instead
            warnings.simplefilter("ignore", RuntimeWarning)
            eig = lanczos(A, k, "BE", tol=tol, seed=seed, max_matvecs=max_matvecs, block_size=1,
                          progress=progress, stop=decide)
        lo, hi = float(eig.values[0]), float(eig.values[-1])
        r_lo, r_hi = float(eig.residuals[0]), float(eig.residuals[-1])
        if eig.stopped == "invariance":
            top = max(abs(lo), abs(hi), abs(probe.rayleigh_max), abs(probe.rayleigh_min))
            reason = (f"singular: {probe.describe()} <= rtol={rtol:g} times the largest |eigenvalue| seen "
                      f"({top:.3g}), so an eigenvalue lies within {probe.residual:.2g} of zero (the loss is "
                      "invariant along that direction)")
            bound = top / probe.residual if probe.residual > 0 else math.inf
            return _condition((A, min(lo, probe.rayleigh_min), max(hi, probe.rayleigh_max), eig), math.inf,
                              reason, bound)
        kind = eig.stopped if eig.stopped in ("indefinite", "singular") else _definiteness(lo, r_lo, hi, r_hi, rtol)
        bound = abs(hi / lo) if lo != 0 and (lo > 0 or hi < 0) else math.inf
        done = (A, lo, hi, eig)
        if kind == "positive":
            return _condition(done, hi / lo, None, bound)
        if kind == "negative":
            return _condition(done, lo / hi, None, bound)
        if kind == "singular":
            if eig.stopped == "singular":
                reason = (f"singular: the operator is positive semi-definite and a Ritz value {lo:.3g} <= "
                          f"rtol={rtol:g} times the largest |eigenvalue| {hi:.3g} bounds lambda_min from above")
            elif eig.stopped == "max_matvecs":
                reason = (f"singular or too ill-conditioned to resolve in {eig.num_matvecs} products: zero is within "
                          f"the error bound {r_lo:.2g} of the smallest Ritz value {lo:.3g}; the condition number is "
                          f"at least {bound:.3g} (raise max_matvecs for more)")
            else:
                reason = (f"singular: an extreme eigenvalue ({lo:.3g} or {hi:.3g}) is zero within its error bound "
                          f"or rtol={rtol:g} times the largest |eigenvalue|")
            return _condition(done, math.inf, reason, bound)
        reason = (
            f"indefinite: eigenvalues {lo:.6g} < 0 < {hi:.6g}; the condition number needs the smallest "
            "|eigenvalue|, an interior one, which is not estimated (consider the GGN, which is PSD)"
        )
        return _condition(done, math.nan, reason, math.nan)


def _condition(done, value, reason, bound) -> ConditionResult:
    A, lo, hi, eig = done
    return ConditionResult(value, lo, hi, reason, eig, A.num_matvecs, bound)


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
    psd: bool | None = None,
    invariances: bool = True,
    progress: bool | None = None,
) -> LogdetResult:
    """``log det A = tr log A`` of a symmetric positive definite operator by SLQ.

    With ``check=True`` (default) the smallest eigenvalue is computed first (``eigsh(which="SA", k=1)``,
    products counted) and the operator must be certified positive definite: otherwise the value is
    ``-inf`` (singular) or ``nan`` (indefinite) with the reason and no SLQ is run. The check stops at the
    first negative Ritz value (indefinite) and, for a positive semi-definite operator (``psd``, known for
    the empirical Fisher and the GGN of torch's convex losses), at the first Ritz value below
    ``rtol * ||A||`` (singular). For an operator built from a model, the directions along which the loss is
    invariant (:mod:`~hessian_core.spectral.invariances`) are tested first: one with ``||A x|| <= rtol ||A||``
    proves an eigenvalue at zero (``-inf`` at once for a positive semi-definite operator, else unless the check
    finds a negative eigenvalue). With ``check=False``
    only the quadrature nodes are checked (a node ``<= 0`` proves ``lambda_min <= 0``).

    Args:
        num_probes, num_iters: SLQ probes and Lanczos steps per probe.
        rtol: eigenvalues below ``rtol * lambda_max`` count as zero (default ``sqrt(eps)``).
        psd: whether the operator is positive semi-definite (default: known by construction, see above).
        invariances: test the invariance directions in the check (default ``True``; needs ``op.params``).
    """
    check = check_bool(check, "check")
    invariances = check_bool(invariances, "invariances")
    A = counting_view(op)
    semidefinite = known_psd(op, psd)
    with A.reuse():
        eps = torch.finfo(A.dtype).eps
        rtol = eps**0.5 if rtol is None else check_real(rtol, "rtol", positive=True, at_most=1.0)
        lam_min = None
        if check:
            probe = probe_invariances(A) if invariances else None

            def null(norm):  # an invariance direction proves an eigenvalue within rtol ||A|| of zero
                return probe is not None and probe.residual <= rtol * max(norm, probe.rayleigh_max)

            def decide(theta, resid, norm):
                lo = float(theta[0])
                if lo < -rtol * norm:
                    return "indefinite"
                if semidefinite and (lo <= rtol * norm or null(norm)):
                    return "singular"
                return None

            with warnings.catch_warnings():  # only the error bound matters here, not convergence to tol
                warnings.simplefilter("ignore", RuntimeWarning)
                eig = lanczos(A, 1, "SA", tol=1e-3, seed=seed, progress=progress, stop=decide)
                lam_min, r = float(eig.values[0]), float(eig.residuals[0])
            if eig.stopped == "indefinite" or lam_min < -rtol * eig.norm_estimate:
                # a Rayleigh quotient: lambda_min <= lam_min < 0
                reason = f"indefinite: lambda_min <= {lam_min:.6g} < 0, log det of a real matrix is undefined here"
                return LogdetResult(math.nan, math.nan, reason, lam_min, A.num_matvecs)
            if null(eig.norm_estimate):
                reason = (f"singular: {probe.describe()} <= rtol={rtol:g} times the largest eigenvalue seen, so an "
                          "eigenvalue lies within that of zero (the loss is invariant along that direction)")
                return LogdetResult(-math.inf, math.nan, reason, min(lam_min, probe.rayleigh_min), A.num_matvecs)
            if eig.stopped == "singular":
                reason = (f"singular: the operator is positive semi-definite and lambda_min <= {lam_min:.3g} <= "
                          f"rtol={rtol:g} times the largest eigenvalue")
                return LogdetResult(-math.inf, math.nan, reason, lam_min, A.num_matvecs)
            if lam_min - r <= rtol * eig.norm_estimate:
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
