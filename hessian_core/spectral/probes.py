"""The one source of randomness of the spectral routines: a ``torch.Generator`` built from ``seed``.

Every random probe and start vector of :mod:`hessian_core.spectral` comes from :func:`generator` and
:func:`probes`, so that one change here (for example making the seed identical on every rank of a
distributed run) applies everywhere.
"""

from __future__ import annotations

import torch

from ..arguments import check_choice, check_seed
from ..distributed import shared_seed

DISTRIBUTIONS = ("rademacher", "gaussian")


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or (``None``) a seed drawn from torch's global RNG, so ``torch.manual_seed`` controls it."""
    seed = check_seed(seed)
    if seed is None:
        return shared_seed(None)  # torch's global RNG; under torch.distributed rank 0's draw, on every rank
    return seed


def generator(seed: int | None, device) -> torch.Generator:
    """A generator on ``device`` seeded with :func:`resolve_seed` of ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(resolve_seed(seed))
    return gen


def probes(
    gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, device, distribution: str = "rademacher"
) -> torch.Tensor:
    """Random probe vectors of ``shape`` (usually ``(P, k)``): Rademacher (+-1) or standard Gaussian."""
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    if distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=gen, device=device)
        return (2 * bits - 1).to(dtype)
    return torch.randn(shape, generator=gen, device=device, dtype=dtype)
