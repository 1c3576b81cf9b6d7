"""Plot helpers: the loss landscape values against direct evaluation of the shifted model, the model
left bit-for-bit untouched, the figures drawn (Agg backend)."""

import copy

import matplotlib
import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core import plot

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.BatchNorm1d(5), nn.Linear(5, 2)).double()
    model.train()  # the landscape is evaluated in eval mode (the core's default) and the flag restored
    X, y = torch.randn(24, 3, dtype=torch.float64), torch.randn(24, 2, dtype=torch.float64)
    data = [(X[:10], y[:10]), (X[10:20], y[10:20]), (X[20:], y[20:])]  # unequal batches
    return model, nn.MSELoss(), data, X, y


def shifted_loss(model, loss_fn, X, y, flat):
    m = copy.deepcopy(model).eval()
    torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(m.parameters()) + flat, m.parameters())
    with torch.no_grad():
        return float(loss_fn(m(X), y))


def test_landscapes_match_direct_evaluation_and_model_untouched(setup):
    model, loss_fn, data, X, y = setup
    state = copy.deepcopy(model.state_dict())
    P = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    d1, d2 = torch.randn(P, generator=g, dtype=torch.float64), torch.randn(P, generator=g, dtype=torch.float64)
    a, losses = plot.landscape_1d(model, loss_fn, data, d1, alphas=torch.linspace(-0.5, 0.5, 5))
    for ai, li in zip(a, losses):
        assert float(li) == pytest.approx(shifted_loss(model, loss_fn, X, y, ai * d1), rel=1e-12)
    a, b, grid = plot.landscape_2d(
        model,
        loss_fn,
        data,
        d1,
        _as_list(model, d2),
        alphas=torch.tensor([-0.3, 0.2]),
        betas=torch.tensor([0.1, 0.0, 0.4]),
    )
    assert grid.shape == (2, 3)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            assert float(grid[i, j]) == pytest.approx(shifted_loss(model, loss_fn, X, y, ai * d1 + bj * d2), rel=1e-12)
    assert float(grid[1, 1]) != float(grid[0, 1])
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert model.training and all(p.grad is None for p in model.parameters())


def _as_list(model, flat):
    out, i = [], 0
    for p in model.parameters():
        out.append(flat[i : i + p.numel()].reshape(p.shape))
        i += p.numel()
    return out


def test_plots_draw(setup):
    model, loss_fn, data, _, _ = setup
    import matplotlib.pyplot as plt

    op = hc.HessianOperator(model, loss_fn, data, progress=False)
    eig = hc.eigsh(op, k=2, which="LA", seed=0)
    ax = plot.plot_loss_landscape_1d(model, loss_fn, data, eig.param_vectors[-1], label="top")
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 41
    ax = plot.plot_loss_landscape_2d(
        model,
        loss_fn,
        data,
        eig.vectors[:, -1],
        eig.vectors[:, 0],
        alphas=torch.linspace(-1, 1, 5),
        betas=torch.linspace(-1, 1, 4),
    )
    assert ax.get_xlabel() == "direction 1"
    dens = hc.spectral_density(op, num_probes=2, num_iters=10, seed=0)
    ax = plot.plot_spectral_density(dens, log=True)
    assert ax.get_yscale() == "log"
    A = torch.diag(torch.cat([torch.logspace(-2, 1, 20), -torch.logspace(-1, 0, 5)])).double()
    ax = plot.plot_spectral_density(hc.spectral_density(A, num_probes=3, num_iters=25, log=True, seed=0))
    assert ax.get_xscale() == "log" and len(ax.lines) == 2
    plt.close("all")


def test_bad_direction(setup):
    model, loss_fn, data, _, _ = setup
    with pytest.raises(hc.InvalidInputError, match="direction"):
        plot.landscape_1d(model, loss_fn, data, torch.ones(3))
