"""Stochastic diagonal estimates for operators too large for the exact diagonal (``P`` products):
Hutchinson (Bekas et al. 2007) and XDiag (Epperly, Tropp & Webber 2024)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..arguments import check_choice, check_int
from ..errors import InvalidInputError
from ..named import named_unflatten
from ..operators.base import LinearOperator, counting_view
from .probes import generator, probes
from .trace_estimators import exchangeable_sketch, probe_block

DIAGONAL_METHODS = ("hutchinson", "xdiag")


@dataclass
class DiagonalResult:
    """A diagonal estimate: ``estimate`` ``(P,)``, ``stderr`` ``(P,)`` per entry (Hutchinson's sample
    standard error; for XDiag the spread of its exchangeable estimates), ``num_matvecs``, ``method``."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    num_matvecs: int
    method: str
    _unflatten: object = None

    @property
    def param_estimate(self) -> list[torch.Tensor]:
        """The estimate as tensors shaped like the parameters, indexed by position or parameter name
        (operators from a model only)."""
        if self._unflatten is None:
            raise InvalidInputError("param_estimate needs an operator built from a model (it has no .params)")
        return self._unflatten(self.estimate)


def diagonal_estimate(op, num_matvecs: int = 100, method: str = "xdiag", seed: int | None = None) -> DiagonalResult:
    """Estimate ``diag(A)`` with ``num_matvecs`` products and Rademacher probes.

    Args:
        op: a CurvatureOperator, dense symmetric tensor/array or scipy LinearOperator.
        num_matvecs: products to spend (XDiag: even, >= 2).
        method: ``"hutchinson"``: ``mean(z * A z)``, unbiased, entry ``i`` has variance
            ``sum_{j != i} A_ij^2 / m``. ``"xdiag"``: low-rank part from a sketch of half the products plus
            exchangeable Hutchinson on the rest; much better when the spectrum decays, exact once the
            sketch spans the range of ``A``.
        seed: seed of the probes (None: drawn from torch's global RNG).

    Returns:
        :class:`DiagonalResult`.
    """
    method = check_choice(method, "method", DIAGONAL_METHODS)
    A = counting_view(op)
    with A.reuse():
        gen = generator(seed, A.device)
        unflatten = named_unflatten(A.params)
        if method == "hutchinson":
            m = check_int(num_matvecs, "num_matvecs")
            total = torch.zeros(A.size, dtype=A.dtype, device=A.device)
            total_sq = torch.zeros_like(total)
            step = probe_block(A, m)
            for a in range(0, m, step):
                Z = probes(gen, (A.size, min(step, m - a)), A.dtype, A.device)
                d = Z * A.matmat(Z)
                total += d.sum(1)
                total_sq += d.square().sum(1)
            mean = total / m
            var = ((total_sq / m - mean.square()).clamp_min(0) * (m / (m - 1)) if m > 1
                   else torch.full_like(mean, math.inf))
            return DiagonalResult(mean, (var / m).sqrt(), A.num_matvecs, method, unflatten)
        m = check_int(num_matvecs, "num_matvecs", 2, even=True, why=" for xdiag (each probe is used twice)")
        est, err = _xdiag(A, m // 2, gen)
        return DiagonalResult(est, err, A.num_matvecs, method, unflatten)


def _xdiag(A: LinearOperator, s: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    sk = exchangeable_sketch(A, s, gen)
    W, AW, Q, S = sk.W, sk.AW, sk.Q, sk.S
    QtA = sk.AQ.T  # (A Q)^T = Q^T A, A symmetric
    full = (Q * sk.AQ).sum(1)  # diag(Q Q^T A)
    if S is None:  # Q holds the range of A: A = Q Q^T A
        return full, torch.zeros_like(full)
    # Estimate i: diag(Q_i Q_i^T A) + diag(w_i w_i^T (I - Q_i Q_i^T) A), Q_i Q_i^T = Q (I - s_i s_i^T) Q^T.
    QtAW = QtA @ W  # (s, s)
    low = full[:, None] - (Q @ S) * (S.T @ QtA).T  # (P, s): diag(Q_i Q_i^T A) for each i
    comp = AW - Q @ (QtAW - S * (S * QtAW).sum(0))  # (I - Q_i Q_i^T) A w_i
    ests = low + W * comp / W.square()
    mean = ests.mean(1)
    err = ests.std(1, unbiased=True) / math.sqrt(s) if s > 1 else torch.full_like(mean, math.inf)
    return mean, err
