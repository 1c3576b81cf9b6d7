"""Spectral density by stochastic Lanczos quadrature with Gaussian smoothing (Lin, Saad & Yang 2016;
Ghorbani et al. 2019), on a linear eigenvalue axis or on ``log10 |lambda|``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..operators.base import counting_view
from .quadrature import Quadrature, slq


@dataclass
class SpectralDensity:
    """Smoothed eigenvalue density.

    Linear scale (``log=False``): ``density[i]`` at eigenvalue ``grid[i]``; ``trapz(density, grid) ~ 1``
    (exactly 1 on an infinite grid: each probe's weights sum to 1 and each Gaussian integrates to 1).

    Log scale (``log=True``): ``grid`` holds ``|lambda|`` on a log-spaced axis; ``density`` is the density
    of the positive eigenvalues and ``density_negative`` that of the negative ones, both with respect to
    ``u = log10 |lambda|`` (smoothing ``sigma`` in decades); eigenvalues with ``|lambda| <= floor`` make up
    ``mass_near_zero``. ``trapz(density + density_negative, log10(grid)) + mass_near_zero ~ 1``.

    ``quadrature`` holds the raw SLQ nodes and weights; ``num_matvecs`` the products used.
    """

    grid: torch.Tensor
    density: torch.Tensor
    sigma: float
    log: bool
    quadrature: Quadrature
    num_matvecs: int
    density_negative: torch.Tensor | None = None
    mass_near_zero: float = 0.0
    floor: float = 0.0

    def integral(self) -> float:
        """Total mass on the grid (trapezoid rule), plus ``mass_near_zero`` on the log scale."""
        if not self.log:
            return float(torch.trapezoid(self.density, self.grid))
        u = torch.log10(self.grid)
        return float(torch.trapezoid(self.density + self.density_negative, u)) + self.mass_near_zero


def spectral_density(
    op,
    num_probes: int = 10,
    num_iters: int = 80,
    sigma: float | None = None,
    grid=None,
    log: bool = False,
    seed: int | None = None,
    reorth: str = "full",
    floor: float = 1e-8,
    num_points: int = 1001,
    progress: bool | None = None,
) -> SpectralDensity:
    """Eigenvalue density of a symmetric operator by SLQ.

    Args:
        op: a CurvatureOperator, dense symmetric tensor/array or scipy LinearOperator.
        num_probes: Rademacher probes (products: ``num_probes * num_iters``).
        num_iters: Lanczos steps per probe (at most ``P``).
        sigma: Gaussian smoothing width: in eigenvalue units (linear) or decades (log). Default 1/100
            of the range of the quadrature nodes (of ``log10 |nodes|`` for ``log=True``).
        grid: points to evaluate at: eigenvalues (linear) or ``|lambda|`` values (log). Default
            ``num_points`` points over the node range widened by 5 sigma (log: log-spaced).
        log: density over ``log10 |lambda|`` with positive and negative parts (see :class:`SpectralDensity`).
        seed: seed of the probes (None: drawn from torch's global RNG).
        reorth: ``"full"`` or ``"none"``; see :mod:`.quadrature` for the memory each keeps.
        floor: (log only) ``|lambda| <= floor * max |lambda|`` counts as zero.

    Returns:
        :class:`SpectralDensity`.
    """
    A = counting_view(op)
    with A.reuse():
        quad = slq(A, num_probes, num_iters, seed, reorth, progress)
        nodes = quad.nodes.to(torch.float64)
        weights = quad.weights.to(torch.float64) / num_probes
        if not log:
            lo, hi = float(nodes.min()), float(nodes.max())
            sigma = _sigma(sigma, hi - lo, max(abs(lo), abs(hi)))
            g = _grid(grid, lo - 5 * sigma, hi + 5 * sigma, num_points, log=False)
            return SpectralDensity(g, _smooth(g, nodes, weights, sigma), sigma, False, quad, quad.num_matvecs)
        top = float(nodes.abs().max())
        cut = floor * top
        big = nodes.abs() > cut
        if not bool(big.any()):
            raise InvalidInputError(
                f"every quadrature node is within floor={floor:g} of zero: the log density is empty")
        u = torch.log10(nodes.abs()[big])
        w = weights[big]
        positive = nodes[big] > 0
        lo, hi = float(u.min()), float(u.max())
        sigma = _sigma(sigma, hi - lo, 1.0)
        g = _grid(grid, 10 ** (lo - 5 * sigma), 10 ** (hi + 5 * sigma), num_points, log=True)
        ug = torch.log10(g)
        return SpectralDensity(
            g,
            _smooth(ug, u[positive], w[positive], sigma),
            sigma,
            True,
            quad,
            quad.num_matvecs,
            density_negative=_smooth(ug, u[~positive], w[~positive], sigma),
            mass_near_zero=float(weights[~big].sum()),
            floor=cut,
        )


def _sigma(sigma, width: float, size: float) -> float:
    if sigma is None:
        return width / 100 if width > 0 else 1e-3 * max(size, 1e-12)
    if not float(sigma) > 0:
        raise InvalidInputError(f"sigma must be > 0, got {sigma!r}")
    return float(sigma)


def _grid(grid, lo: float, hi: float, num_points: int, log: bool) -> torch.Tensor:
    if grid is not None:
        g = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if log and bool((g <= 0).any()):
            raise InvalidInputError("a log-scale grid holds |lambda| values and must be > 0")
        return g
    if log:
        return torch.logspace(math.log10(lo), math.log10(hi), num_points, dtype=torch.float64)
    return torch.linspace(lo, hi, num_points, dtype=torch.float64)


def _smooth(x: torch.Tensor, nodes: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sum_i weights_i N(x; nodes_i, sigma^2)``, in chunks of grid points."""
    out = torch.empty_like(x)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for a in range(0, x.numel(), 256):
        d = (x[a : a + 256, None] - nodes[None, :]) / sigma
        out[a : a + 256] = (torch.exp(-0.5 * d * d) * weights).sum(1) * norm
    return out
