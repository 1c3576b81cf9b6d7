"""Finiteness checks of results: NaN or Inf raises :class:`~hessian_core.errors.NonFiniteError` naming what."""

from __future__ import annotations

import math

import torch

from .errors import NonFiniteError


def check_finite(t: torch.Tensor, what: str) -> None:
    """Raise when ``t`` has a NaN or Inf entry, saying how many and where to look."""
    # The sum is finite exactly when every entry is (barring overflow): a cheap test before the full one.
    if t.numel() and not math.isfinite(float(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(
            f"{bad} of {t.numel()} entries of the {what} are NaN or Inf; check the data and the loss "
            "(e.g. log of 0 probabilities) at these parameters"
        )
