"""Spectral density by stochastic Lanczos quadrature with Gaussian smoothing (Lin, Saad & Yang 2016;
Ghorbani et al. 2019), on a linear eigenvalue axis or on ``log10 |lambda|``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..arguments import check_bool, check_int, check_real
from ..errors import InvalidInputError
from ..named import format_float
from ..operators.base import counting_view
from .quadrature import Quadrature, slq


@dataclass
class SpectralDensity:
    """Smoothed eigenvalue density.

    Linear scale (``log=False``): ``density[i]`` at eigenvalue ``grid[i]``; ``trapz(density, grid) ~ 1``
    (exactly 1 on an infinite grid: each probe's weights sum to 1 and each Gaussian integrates to 1).

    Log scale (``log=True``): ``grid`` holds ``|lambda|`` on a log-spaced axis; ``density`` is the density
    of the positive eigenvalues and ``density_negative`` that of the negative ones, both with respect to
    ``u = log10 |lambda|``. ``mass_near_zero`` is the fraction of the spectrum at or near zero: quadrature
    nodes within ``floor`` of zero, and nodes the Lanczos steps did not resolve away from zero (their
    residual estimate is at least their distance to zero, so neither their sign nor their magnitude is
    known; this is where the bulk of a network Hessian usually sits). ``zero_width`` bounds where that mass
    lies: ``|lambda| <= zero_width``. ``trapz(density + density_negative, log10(grid)) + mass_near_zero ~ 1``.

    ``quadrature`` holds the raw SLQ nodes, weights and residual estimates; ``num_matvecs`` the products used.
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
    zero_width: float = 0.0

    def integral(self) -> float:
        """Total mass on the grid (trapezoid rule), plus ``mass_near_zero`` on the log scale."""
        if not self.log:
            return float(torch.trapezoid(self.density, self.grid))
        u = torch.log10(self.grid)
        return float(torch.trapezoid(self.density + self.density_negative, u)) + self.mass_near_zero

    @property
    def mass_negative(self) -> float:
        """Fraction of the spectrum below zero (log scale: away from zero; linear: on the grid)."""
        if self.log:
            return float(torch.trapezoid(self.density_negative, torch.log10(self.grid)))
        below = self.grid <= 0
        return float(torch.trapezoid(self.density[below], self.grid[below])) if int(below.sum()) > 1 else 0.0

    def __repr__(self) -> str:
        q = self.quadrature
        axis = "|eigenvalue|" if self.log else "eigenvalue"
        text = (f"SpectralDensity(log={self.log}, {self.grid.numel()} points, {axis} in "
                f"[{format_float(self.grid[0])}, {format_float(self.grid[-1])}], sigma={format_float(self.sigma)}"
                f"{' decades' if self.log else ''}, mass_negative={self.mass_negative:.3g}")
        if self.log:
            text += f", mass_near_zero={self.mass_near_zero:.3g} (|eigenvalue| <= {format_float(self.zero_width)})"
        return text + f", probes={q.num_probes}, num_matvecs={self.num_matvecs})"


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
            of the range of the quadrature nodes (of ``log10 |nodes|`` for ``log=True``); on the log scale
            each node is by default also widened to the spread its residual estimate allows
            (``log10(1 + r_i / |theta_i|)`` decades), so that an unresolved node is not drawn as a sharp peak.
        grid: points to evaluate at: eigenvalues (linear) or ``|lambda|`` values (log). Default
            ``num_points`` points over the node range widened by 5 sigma (log: log-spaced).
        log: density over ``log10 |lambda|`` with positive and negative parts (see :class:`SpectralDensity`).
        seed: seed of the probes (None: drawn from torch's global RNG).
        reorth: ``"full"`` or ``"none"``; see :mod:`.quadrature` for the memory each keeps.
        floor: (log only) nodes with ``|theta| <= floor * max |theta|`` count as zero, as do nodes whose
            residual estimate is at least ``|theta|`` (not resolved away from zero).

    Returns:
        :class:`SpectralDensity`.
    """
    check_bool(log, "log")
    check_int(num_points, "num_points", 2)
    floor = check_real(floor, "floor", nonnegative=True, at_most=1.0)
    A = counting_view(op)
    if grid is None:  # the grid and the density on it (float64), before any product is spent
        A.check_fits(2 * num_points * 8, f"the density on {num_points} grid points", "fewer num_points or grid=")
    with A.reuse():
        quad = slq(A, num_probes, num_iters, seed, reorth, progress)
        nodes = quad.nodes.to(torch.float64)
        weights = quad.weights.to(torch.float64) / num_probes
        if not log:
            lo, hi = float(nodes.min()), float(nodes.max())
            sigma = _sigma(sigma, hi - lo, max(abs(lo), abs(hi)))
            g = _grid(grid, lo - 5 * sigma, hi + 5 * sigma, num_points, log=False)
            return SpectralDensity(g, _smooth(g, nodes, weights, sigma), sigma, False, quad, quad.num_matvecs)
        resid = quad.residuals.to(torch.float64)
        top = float(nodes.abs().max())
        cut = floor * top
        big = (nodes.abs() > cut) & (nodes.abs() > resid)
        if not bool(big.any()):
            raise InvalidInputError(
                f"no quadrature node is resolved away from zero (floor={floor:g}, {num_iters} Lanczos steps): "
                "the log density is empty; use more num_iters or the linear scale")
        u = torch.log10(nodes.abs()[big])
        w = weights[big]
        positive = nodes[big] > 0
        explicit = sigma is not None
        sigma = _sigma(sigma, float(u.max() - u.min()), 1.0)
        widths = torch.full_like(u, sigma)
        if not explicit:  # an unresolved node spreads over +-r around theta: that many decades
            widths = torch.maximum(widths, torch.log10(1 + resid[big] / nodes.abs()[big]))
        g = _grid(grid, 10 ** float((u - 5 * widths).min()), 10 ** float((u + 5 * widths).max()), num_points, log=True)
        ug = torch.log10(g)
        near = ~big
        zero_width = float((nodes.abs() + resid)[near].max()) if bool(near.any()) else cut
        return SpectralDensity(
            g,
            _smooth(ug, u[positive], w[positive], widths[positive]),
            sigma,
            True,
            quad,
            quad.num_matvecs,
            density_negative=_smooth(ug, u[~positive], w[~positive], widths[~positive]),
            mass_near_zero=float(weights[near].sum()),
            floor=cut,
            zero_width=max(zero_width, cut),
        )


def _sigma(sigma, width: float, size: float) -> float:
    if sigma is None:
        return width / 100 if width > 0 else 1e-3 * max(size, 1e-12)
    return check_real(sigma, "sigma", positive=True)


def _grid(grid, lo: float, hi: float, num_points: int, log: bool) -> torch.Tensor:
    if grid is not None:
        g = torch.as_tensor(grid, dtype=torch.float64).flatten()
        if log and bool((g <= 0).any()):
            raise InvalidInputError("a log-scale grid holds |lambda| values and must be > 0")
        return g
    if log:
        return torch.logspace(math.log10(lo), math.log10(hi), num_points, dtype=torch.float64)
    return torch.linspace(lo, hi, num_points, dtype=torch.float64)


def _smooth(x: torch.Tensor, nodes: torch.Tensor, weights: torch.Tensor, sigma) -> torch.Tensor:
    """``sum_i weights_i N(x; nodes_i, sigma_i^2)`` (``sigma`` a number or one width per node), in chunks of
    grid points."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(nodes.shape)
    out = torch.empty_like(x)
    norm = weights / (sigma * math.sqrt(2 * math.pi))
    for a in range(0, x.numel(), 256):
        d = (x[a : a + 256, None] - nodes[None, :]) / sigma
        out[a : a + 256] = (torch.exp(-0.5 * d * d) * norm).sum(1)
    return out
