"""Plots for the spectral tools (matplotlib, imported lazily): spectral density and the loss along
directions in parameter space (1D curve, 2D contour), e.g. along the top Hessian eigenvectors.

The landscape functions evaluate the loss through :class:`~hessian_core.objective.Objective` at
``theta + a * d1 (+ b * d2)`` with the parameters passed functionally: the model is never modified (its
parameters, buffers, ``.grad`` and train/eval flags are as before), and the loss is the globally
normalized one over all batches of ``data``.
"""

from __future__ import annotations

import torch
from torch.func import vmap

from .errors import InvalidInputError
from .objective import Objective


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("hessian_core.plot needs matplotlib: pip install matplotlib") from e
    return plt


def _axes(ax):
    return _pyplot().subplots()[1] if ax is None else ax


def plot_spectral_density(density, ax=None, log: bool = False, label: str | None = None, **line_kwargs):
    """Plot a :class:`~hessian_core.spectral.SpectralDensity`; returns the axes.

    Linear-scale densities are drawn against the eigenvalue, with a log y-axis when ``log=True`` (the
    usual view of a spiked Hessian spectrum). Log-scale densities (``spectral_density(..., log=True)``)
    are drawn against ``|eigenvalue|`` on a log x-axis, positive and negative eigenvalues as two curves;
    the mass at and near zero, which a log axis cannot show, is marked by a dotted line at ``zero_width``
    and labelled with its share of the spectrum.
    """
    ax = _axes(ax)
    if density.log:
        ax.semilogx(density.grid.numpy(), density.density.numpy(), label=label or "eigenvalues > 0", **line_kwargs)
        if bool((density.density_negative > 0).any()):
            ax.semilogx(density.grid.numpy(), density.density_negative.numpy(), "--",
                        label=(label + " (< 0)") if label else "eigenvalues < 0", **line_kwargs)
        if density.mass_near_zero > 0:
            ax.axvline(density.zero_width, color="gray", linestyle=":",
                       label=f"{100 * density.mass_near_zero:.0f}% at |eigenvalue| <= {density.zero_width:.2g} "
                             "(not resolved)")
        ax.set_xlabel("|eigenvalue|")
        ax.set_ylabel("density per decade")
        ax.legend()
    else:
        y = density.density
        if log:
            y = y.clamp_min(float(y.max()) * 1e-12)
            ax.set_yscale("log")
        ax.plot(density.grid.numpy(), y.numpy(), label=label, **line_kwargs)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        if label:
            ax.legend()
    return ax


def losses_at(model, loss_fn, data, directions, coords: torch.Tensor, **objective_options) -> torch.Tensor:
    """Globally normalized loss at ``theta + sum_j coords[i, j] * directions[j]`` for each row ``i``.

    Args:
        directions: list of ``d`` directions, each flat ``(P,)`` or a list of param-shaped tensors.
        coords: ``(n, d)``.
        objective_options: options of :class:`~hessian_core.objective.Objective` (``reduction``, ...).

    Returns:
        ``(n,)`` losses, in the parameters' dtype.
    """
    obj = Objective(model, loss_fn, data, **objective_options)
    spec = obj.params
    D = torch.stack([spec.as_flat(d, "direction") for d in directions], dim=1)  # (P, d)
    if D.dim() != 2 or D.shape[1] != len(directions):
        raise InvalidInputError("each direction must be one vector (P,) or a list of param-shaped tensors")
    coords = torch.as_tensor(coords, dtype=spec.dtype, device=spec.device).reshape(-1, D.shape[1])
    if not bool(torch.isfinite(coords).all()):
        raise InvalidInputError("the coordinates of the landscape must be finite")
    base = spec.flatten(spec.primals())
    thetas = base[None, :] + coords @ D.T  # (n, P)
    out = torch.zeros(thetas.shape[0], dtype=spec.dtype, device=spec.device)

    def contribution(ctx, acc, w):
        def one(theta):
            return ctx.loss(tuple(spec.unflatten(theta)))

        for a in range(0, thetas.shape[0], 64):
            chunk = thetas[a:a + 64]
            try:
                vals = vmap(one, randomness="same")(chunk)
            except (RuntimeError, NotImplementedError):  # models vmap cannot batch: one point at a time
                vals = torch.stack([one(t) for t in chunk])
            acc[a:a + 64].add_(vals, alpha=w)

    with torch.no_grad():
        return obj.accumulate(contribution, out, desc="loss landscape")


def landscape_1d(model, loss_fn, data, direction, alphas=None, **objective_options):
    """``(alphas, losses)``: the loss at ``theta + alpha * direction``; ``alphas`` default ``linspace(-1, 1, 41)``."""
    alphas = torch.linspace(-1, 1, 41, dtype=torch.float64) if alphas is None else torch.as_tensor(alphas)
    losses = losses_at(model, loss_fn, data, [direction], alphas.reshape(-1, 1), **objective_options)
    return alphas, losses


def landscape_2d(model, loss_fn, data, dir1, dir2, alphas=None, betas=None, **objective_options):
    """``(alphas, betas, losses)`` with ``losses[i, j]`` the loss at ``theta + alphas[i] dir1 + betas[j] dir2``;
    both axes default to ``linspace(-1, 1, 21)``."""
    alphas = torch.linspace(-1, 1, 21, dtype=torch.float64) if alphas is None else torch.as_tensor(alphas)
    betas = torch.linspace(-1, 1, 21, dtype=torch.float64) if betas is None else torch.as_tensor(betas)
    grid = torch.cartesian_prod(alphas.reshape(-1), betas.reshape(-1)).reshape(-1, 2)
    losses = losses_at(model, loss_fn, data, [dir1, dir2], grid, **objective_options)
    return alphas, betas, losses.reshape(len(alphas), len(betas))


def plot_loss_landscape_1d(model, loss_fn, data, direction, alphas=None, ax=None, label: str | None = None,
                           **objective_options):
    """Plot the loss along ``direction`` (e.g. ``eigsh(op).param_vectors[-1]``); returns the axes."""
    a, losses = landscape_1d(model, loss_fn, data, direction, alphas, **objective_options)
    ax = _axes(ax)
    ax.plot(a.cpu().numpy(), losses.detach().cpu().numpy(), label=label)
    ax.set_xlabel("step along direction")
    ax.set_ylabel("loss")
    if label:
        ax.legend()
    return ax


def plot_loss_landscape_2d(model, loss_fn, data, dir1, dir2, alphas=None, betas=None, ax=None, levels: int = 30,
                           **objective_options):
    """Filled contour of the loss on the plane spanned by ``dir1`` (x) and ``dir2`` (y); returns the axes."""
    a, b, losses = landscape_2d(model, loss_fn, data, dir1, dir2, alphas, betas, **objective_options)
    ax = _axes(ax)
    cs = ax.contourf(a.cpu().numpy(), b.cpu().numpy(), losses.detach().cpu().numpy().T, levels=levels)
    ax.figure.colorbar(cs, ax=ax, label="loss")
    ax.plot([0], [0], "k+", markersize=10)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    return ax
