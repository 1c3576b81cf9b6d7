"""SLQ spectral density (integrates to 1, matches the dense histogram and the smoothed exact density, log
scale), condition number and log-determinant (and their refusals)."""

import math

import pytest
import torch
from reference import spectrum_matrix
from torch import nn

import hessian_core as hc
from hessian_core.spectral import trace_function


@pytest.fixture(scope="module")
def bimodal():
    g = torch.Generator().manual_seed(1)
    vals = torch.cat(
        [
            torch.randn(150, generator=g, dtype=torch.float64) * 0.3 - 2,
            torch.randn(90, generator=g, dtype=torch.float64) * 0.5 + 3,
            torch.tensor([12.0, -7.0], dtype=torch.float64),
        ]
    )
    return spectrum_matrix(vals), vals


@pytest.mark.parametrize("reorth", ["full", "none"])
def test_density_integrates_to_one_and_matches_histogram(bimodal, reorth):
    A, vals = bimodal
    d = hc.spectral_density(A, num_probes=20, num_iters=40, seed=0, reorth=reorth, sigma=0.2)
    assert d.integral() == pytest.approx(1.0, abs=1e-6)
    assert d.num_matvecs == 20 * 40
    # smoothed exact density: the same Gaussian around every true eigenvalue
    kernel = torch.exp(-0.5 * ((d.grid[:, None] - vals[None, :]) / 0.2) ** 2)
    exact = kernel.sum(1) / (len(vals) * 0.2 * math.sqrt(2 * math.pi))
    l1 = float(torch.trapezoid((d.density - exact).abs(), d.grid))
    assert l1 < 0.1
    # histogram: mass of each bin, SLQ (integrated density) vs dense eigenvalues
    edges = torch.tensor([-10.0, -4.0, -1.0, 1.0, 6.0, 15.0], dtype=torch.float64)
    for a, b in zip(edges[:-1], edges[1:]):
        inside = (d.grid >= a) & (d.grid <= b)
        slq_mass = float(torch.trapezoid(d.density[inside], d.grid[inside]))
        true_mass = float(((vals >= a) & (vals < b)).double().mean())
        assert slq_mass == pytest.approx(true_mass, abs=0.06)


def test_density_nodes_reach_the_extremes(bimodal):
    A, vals = bimodal
    d = hc.spectral_density(A, num_probes=2, num_iters=40, seed=0)
    assert float(d.quadrature.nodes.max()) == pytest.approx(12.0, abs=1e-6)
    assert float(d.quadrature.nodes.min()) == pytest.approx(-7.0, abs=1e-6)


def test_log_density_integrates_and_splits_signs():
    vals = torch.cat([torch.logspace(-3, 2, 60, dtype=torch.float64), -torch.logspace(-2, 0, 20, dtype=torch.float64)])
    A = spectrum_matrix(vals)
    d = hc.spectral_density(A, num_probes=30, num_iters=80, log=True, seed=0, sigma=0.1)
    assert d.integral() == pytest.approx(1.0, abs=1e-4)
    u = torch.log10(d.grid)
    neg = float(torch.trapezoid(d.density_negative, u))
    assert neg == pytest.approx(20 / 80, abs=0.08)
    assert d.mass_near_zero == pytest.approx(0.0, abs=1e-9)


def test_density_of_network_hessian_integrates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,))
    op = hc.HessianOperator(model, nn.CrossEntropyLoss(), (X, y), progress=False)
    d = hc.spectral_density(op, num_probes=3, num_iters=20, seed=0)
    assert d.integral() == pytest.approx(1.0, abs=1e-5)
    ev = torch.linalg.eigvalsh(hc.hessian(model, nn.CrossEntropyLoss(), (X, y)))
    assert float(d.quadrature.nodes.max()) == pytest.approx(float(ev[-1]), rel=1e-6)


def test_slq_memory_is_checked():
    A = spectrum_matrix(torch.linspace(0, 1, 50))
    op = hc.as_operator(A)
    op.budget = 1000  # bytes: not even one probe's Lanczos vectors fit
    with pytest.raises(hc.MemoryBudgetError, match="reorth='none'"):
        hc.spectral_density(op, num_probes=2, num_iters=10, num_points=10)  # a grid that fits


def test_condition_number_positive_definite():
    vals = torch.cat([torch.tensor([0.5, 40.0]), torch.linspace(1, 30, 78)]).double()
    c = hc.condition_number(spectrum_matrix(vals), seed=0)
    assert float(c) == pytest.approx(80.0, rel=1e-8) and c.reason is None
    c = hc.condition_number(spectrum_matrix(-vals), seed=0)  # negative definite: same conditioning
    assert float(c) == pytest.approx(80.0, rel=1e-8)


def test_condition_number_refuses_indefinite_and_singular():
    c = hc.condition_number(spectrum_matrix(torch.linspace(-1, 4, 60)), seed=0)
    assert math.isnan(float(c)) and "indefinite" in c.reason
    c = hc.condition_number(spectrum_matrix(torch.cat([torch.zeros(5), torch.linspace(1, 4, 55)])), seed=0)
    assert math.isinf(float(c)) and "singular" in c.reason


def test_logdet_spd_matches_dense():
    vals = torch.linspace(0.5, 6, 90, dtype=torch.float64)
    A = spectrum_matrix(vals)
    r = hc.logdet(A, num_probes=40, num_iters=30, seed=0)
    exact = float(torch.log(vals).sum())
    assert r.reason is None
    assert abs(float(r) - exact) < 4 * r.stderr + 1e-6
    assert r.stderr < 0.05 * abs(exact)
    # unbiased: mean over seeds
    means = torch.tensor([float(hc.logdet(A, num_probes=4, num_iters=20, seed=s, check=False)) for s in range(25)])
    assert abs(float(means.mean()) - exact) < 4 * float(means.std()) / math.sqrt(25)


def test_logdet_refuses_indefinite_and_singular():
    r = hc.logdet(spectrum_matrix(torch.linspace(-1, 3, 50)), seed=0)
    assert math.isnan(float(r)) and "indefinite" in r.reason and r.num_matvecs > 0
    r = hc.logdet(spectrum_matrix(torch.cat([torch.zeros(3), torch.linspace(1, 3, 47)])), seed=0)
    assert float(r) == -math.inf and "singular" in r.reason
    r = hc.logdet(spectrum_matrix(torch.linspace(-1, 3, 50)), seed=0, check=False)
    assert math.isnan(float(r)) and "not positive definite" in r.reason


def test_trace_function_matches_dense():
    vals = torch.linspace(-2, 3, 70, dtype=torch.float64)
    A = spectrum_matrix(vals)
    est, err, n = trace_function(A, torch.exp, num_probes=30, num_iters=25, seed=0)
    assert abs(est - float(torch.exp(vals).sum())) < 4 * err
    assert n == 30 * 25


def test_log_density_is_honest_about_the_bulk_near_zero():
    """A network-like spectrum: two thirds in a bulk |lambda| <= 1e-3, the rest spread over 1e-2..1. Thirty
    Lanczos steps cannot resolve the bulk; its nodes used to be drawn as sharp peaks at arbitrary small
    magnitudes with mass_near_zero = 0. Now the unresolved nodes are counted as mass near zero, with the
    width within which it lies, and that width holds about that share of the eigenvalues."""
    g = torch.Generator().manual_seed(0)
    bulk = (torch.rand(400, generator=g, dtype=torch.float64) * 2 - 1) * 1e-3
    vals = torch.cat([bulk, torch.logspace(-2, 0, 200, dtype=torch.float64)])
    d = hc.spectral_density(spectrum_matrix(vals), num_probes=10, num_iters=30, log=True, seed=0)
    assert d.integral() == pytest.approx(1.0, abs=1e-4)
    assert d.mass_near_zero > 0.4
    true_share = float((vals.abs() <= d.zero_width).double().mean())
    assert d.mass_near_zero == pytest.approx(true_share, abs=0.2)
    assert d.zero_width < 0.05  # the resolved part (|lambda| >= 1e-2) stays on the log axis
    u = torch.log10(d.grid)
    above = d.grid >= 1e-2
    assert float(torch.trapezoid((d.density + d.density_negative)[above], u[above])) == pytest.approx(1 / 3, abs=0.1)
    text = repr(d)
    assert len(text) < 400 and "mass_near_zero" in text and "tensor" not in text
    assert d.quadrature.residuals.shape == d.quadrature.nodes.shape


def test_linear_density_repr_is_compact(bimodal):
    A, _ = bimodal
    d = hc.spectral_density(A, num_probes=2, num_iters=10, seed=0)
    assert len(repr(d)) < 400 and "tensor" not in repr(d) and "mass_negative" in repr(d)


def test_the_grid_is_checked_against_the_memory_budget_before_any_product():
    """num_points=1e10 tried to allocate 80 GB after all the SLQ products; now refused first, by name."""
    op = hc.DenseOperator(torch.diag(torch.arange(1.0, 41.0, dtype=torch.float64)), budget="1MB")
    with pytest.raises(hc.MemoryBudgetError, match="grid points.*fewer num_points"):
        hc.spectral_density(op, num_points=10**10, seed=0)
    assert op.num_matvecs == 0
    assert hc.spectral_density(op, num_points=50, seed=0).density.shape == (50,)
