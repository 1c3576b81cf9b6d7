"""Stochastic trace estimators: Hutchinson, Hutch++ (Meyer et al. 2021), XTrace (Epperly et al. 2024).

All use exactly ``num_matvecs`` products with the operator (blocks of probes through ``matmat``) and
Rademacher probes from :mod:`.probes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..arguments import check_int
from ..errors import InvalidInputError
from ..operators.base import LinearOperator, counting_view
from .probes import generator, probes

TRACE_METHODS = ("hutchinson", "hutch++", "xtrace")


@dataclass
class TraceResult:
    """A trace estimate. ``float(result)`` is the estimate; ``stderr`` its standard error (0 when the
    estimate is exact because the sketch spans the range of the operator)."""

    estimate: float
    stderr: float
    num_matvecs: int
    method: str

    def __float__(self) -> float:
        return self.estimate

    def __repr__(self) -> str:
        return (
            f"TraceResult({self.estimate:.6g} +- {self.stderr:.2g}, method={self.method!r}, "
            f"num_matvecs={self.num_matvecs})"
        )


def probe_block(A: LinearOperator, columns: int) -> int:
    """How many probes to push through one ``matmat``: all of them, or what 1/4 of the budget holds."""
    per_col = 4 * A.size * A.itemsize
    budget = A.budget if A.budget is not None else 2**62
    return max(1, min(columns, budget // 4 // per_col))


def hutchinson_samples(A: LinearOperator, count: int, gen, project=None, distribution="rademacher") -> torch.Tensor:
    """``count`` samples ``z^T (A) z`` (or ``z^T M A M z`` with ``M = project``), in blocks of probes."""
    out = []
    step = probe_block(A, count)
    for a in range(0, count, step):
        Z = probes(gen, (A.size, min(step, count - a)), A.dtype, A.device, distribution)
        if project is not None:
            Z = project(Z)
        out.append((Z * A.matmat(Z)).sum(0))
    return torch.cat(out)


def trace(
    op,
    num_matvecs: int = 100,
    method: str = "hutch++",
    seed: int | None = None,
    distribution: str = "rademacher",
) -> TraceResult:
    """Estimate ``tr(A)`` with ``num_matvecs`` products.

    Args:
        op: a CurvatureOperator, dense symmetric tensor/array or scipy LinearOperator.
        num_matvecs: products to spend (Hutch++ >= 3, XTrace >= 2 and even).
        method: ``"hutchinson"`` (unbiased, variance ``2 ||A||_F^2 / m``), ``"hutch++"`` (low-rank sketch
            of a third of the products, exact part plus Hutchinson on the rest: unbiased, exact once the
            sketch spans the range of ``A``) or ``"xtrace"`` (exchangeable Hutch++: each probe serves both
            as sketch and as Hutchinson probe).
        seed: seed of the probes (None: drawn from torch's global RNG).
        distribution: ``"rademacher"`` or ``"gaussian"`` probes.

    Returns:
        :class:`TraceResult` (``float(result)`` is the estimate).
    """
    A = counting_view(op)
    with A.reuse():
        gen = generator(seed, A.device)
        if method == "hutchinson":
            m = check_int(num_matvecs, "num_matvecs")
            s = hutchinson_samples(A, m, gen, distribution=distribution)
            return TraceResult(float(s.mean()), _stderr(s), A.num_matvecs, method)
        if method == "hutch++":
            return _hutchpp(A, check_int(num_matvecs, "num_matvecs", 3, why=" for hutch++"), gen, distribution)
        if method == "xtrace":
            m = check_int(num_matvecs, "num_matvecs", 2, even=True, why=" for xtrace (each probe is used twice)")
            return _xtrace(A, m // 2, gen, distribution)
        raise InvalidInputError(f"method must be one of {TRACE_METHODS}, got {method!r}")


def _stderr(samples: torch.Tensor) -> float:
    n = samples.numel()
    return float(samples.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("inf")


def sketch_basis(A: LinearOperator, s: int, gen, distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``Q`` (P, min(s, P)) of the range of ``A S`` for ``s`` random probes, and ``S``."""
    A.check_fits(5 * A.size * s * A.itemsize, f"the Hutch++ sketch ({s} vectors of length {A.size})",
                 "fewer num_matvecs, or method='hutchinson' (probes in blocks within the budget)")
    S = probes(gen, (A.size, s), A.dtype, A.device, distribution)
    Q, _ = torch.linalg.qr(A.matmat(S))
    return Q[:, : min(s, A.size)], S


def _hutchpp(A: LinearOperator, m: int, gen, distribution) -> TraceResult:
    s = min(m // 3, A.size)  # a sketch of P vectors spans everything: the trace is then exact
    Q, _ = sketch_basis(A, s, gen, distribution)
    exact = float((Q * A.matmat(Q)).sum())
    g = m - A.num_matvecs
    if g <= 0 or s == A.size:
        return TraceResult(exact, 0.0, A.num_matvecs, "hutch++")
    samples = hutchinson_samples(A, g, gen, project=lambda Z: Z - Q @ (Q.T @ Z), distribution=distribution)
    return TraceResult(exact + float(samples.mean()), _stderr(samples), A.num_matvecs, "hutch++")


@dataclass
class ExchangeableSketch:
    """The shared start of XTrace and XDiag: probes ``W`` (P, s), ``AW``, ``Q R = qr(A W)``, ``AQ`` and
    ``S`` (s, s), the normalized columns of ``R^{-T}``, which give the leave-one-out bases
    ``Q_i Q_i^T = Q (I - s_i s_i^T) Q^T``. ``S`` is None when ``A W`` is rank deficient (rank of ``A`` below
    ``s``, or ``s >= P``): ``Q`` then already contains the range of ``A`` and the sketch alone is exact."""

    W: torch.Tensor
    AW: torch.Tensor
    Q: torch.Tensor
    AQ: torch.Tensor
    S: torch.Tensor | None


def exchangeable_sketch(A: LinearOperator, s: int, gen, distribution: str = "rademacher") -> ExchangeableSketch:
    """``2 s`` products: ``A W`` and ``A Q``. ``s`` is at most ``P`` (then the sketch is exact)."""
    s = min(s, A.size)
    A.check_fits(8 * A.size * s * A.itemsize, f"the exchangeable sketch ({s} probes of length {A.size}, with their "
                 "products and leave-one-out terms)", "fewer num_matvecs, or method='hutchinson' (probes in blocks)")
    W = probes(gen, (A.size, s), A.dtype, A.device, distribution)
    AW = A.matmat(W)
    Q, R = torch.linalg.qr(AW)
    AQ = A.matmat(Q)
    S = None
    if s < A.size and not _singular(R):
        S = torch.linalg.inv(R.T)
        S = S / torch.linalg.vector_norm(S, dim=0)
    return ExchangeableSketch(W, AW, Q, AQ, S)


def _xtrace(A: LinearOperator, s: int, gen, distribution) -> TraceResult:
    """XTrace with ``s`` probes (``2 s`` products)."""
    sk = exchangeable_sketch(A, s, gen, distribution)
    W, AW, Q, AQ, S = sk.W, sk.AW, sk.Q, sk.AQ, sk.S
    tr_full = float((Q * AQ).sum())
    if S is None:
        return TraceResult(tr_full, 0.0, A.num_matvecs, "xtrace")
    traces = tr_full - ((S * ((Q.T @ AQ) @ S)).sum(0))  # tr(Q_i^T A Q_i) for each i
    QtW = Q.T @ W
    deflated = QtW - S * (S * QtW).sum(0)  # (I - s_i s_i^T) Q^T w_i, column by column
    APW = AW - AQ @ deflated  # A (I - Q_i Q_i^T) w_i
    QtAPW = Q.T @ APW
    PAPW = APW - Q @ (QtAPW - S * (S * QtAPW).sum(0))  # (I - Q_i Q_i^T) A (I - Q_i Q_i^T) w_i
    traces = traces + (W * PAPW).sum(0)
    return TraceResult(float(traces.mean()), _stderr(traces), A.num_matvecs, "xtrace")


def _singular(R: torch.Tensor) -> bool:
    d = torch.linalg.svdvals(R)
    return bool(d.min() <= d.max() * torch.finfo(R.dtype).eps * R.shape[0] * 10) if d.numel() else True
