"""Trace and diagonal estimators: unbiased over seeds, exact once the sketch spans the range, standard
errors that describe the spread, probe counts as requested, the generator helper."""

import math

import pytest
import torch
from reference import spectrum_matrix
from torch import nn

import hessian_core as hc
from hessian_core.errors import InvalidInputError
from hessian_core.spectral.probes import generator


@pytest.fixture(scope="module")
def A():
    """Indefinite, decaying spectrum, P = 60."""
    return spectrum_matrix(torch.cat([torch.tensor([20.0, -12.0, 9.0]), torch.linspace(-1, 2, 57)]))


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_trace_unbiased_over_seeds(A, method):
    exact = float(torch.trace(A))
    ests = torch.tensor([float(hc.trace(A, num_matvecs=12, method=method, seed=s)) for s in range(200)])
    spread = float(ests.std()) / math.sqrt(len(ests))
    assert abs(float(ests.mean()) - exact) < 4 * spread
    assert spread > 0  # a real estimator, not the exact value


@pytest.mark.parametrize("method", ["hutchinson", "hutch++", "xtrace"])
def test_trace_stderr_describes_spread(A, method):
    ests, errs = [], []
    for s in range(200):
        r = hc.trace(A, num_matvecs=24, method=method, seed=s)
        ests.append(float(r))
        errs.append(r.stderr)
        assert r.num_matvecs == 24
    true_sd = float(torch.tensor(ests).std())
    mean_err = float(torch.tensor(errs).mean())
    assert 0.4 * true_sd < mean_err < 2.5 * true_sd


def test_hutchpp_beats_hutchinson_on_decaying_spectrum():
    A = spectrum_matrix(2.0 ** -torch.arange(80, dtype=torch.float64) * 100)
    exact = float(torch.trace(A))

    def mse(method):
        return sum((float(hc.trace(A, num_matvecs=30, method=method, seed=s)) - exact) ** 2 for s in range(50))

    assert mse("hutch++") < 1e-3 * mse("hutchinson")
    assert mse("xtrace") < 1e-3 * mse("hutchinson")


def test_hutchpp_and_xtrace_exact_when_sketch_spans():
    g = torch.Generator().manual_seed(2)
    B = torch.randn(50, 6, generator=g, dtype=torch.float64)
    low_rank = B @ torch.diag(torch.tensor([5.0, -3, 2, 1, -1, 0.5], dtype=torch.float64)) @ B.T  # rank 6
    exact = float(torch.trace(low_rank))
    for seed in range(3):
        r = hc.trace(low_rank, num_matvecs=21, method="hutch++", seed=seed)  # sketch of 7 >= rank
        assert float(r) == pytest.approx(exact, rel=1e-10, abs=1e-10)
        r = hc.trace(low_rank, num_matvecs=14, method="xtrace", seed=seed)
        assert float(r) == pytest.approx(exact, rel=1e-10, abs=1e-10) and r.stderr == 0
    full = spectrum_matrix(torch.linspace(-3, 5, 20))
    assert float(hc.trace(full, num_matvecs=60, method="hutch++", seed=0)) == pytest.approx(float(torch.trace(full)))


def test_trace_of_network_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    X, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, y), progress=False)
    H = hc.hessian(model, nn.MSELoss(), (X, y))
    r = hc.trace(op, num_matvecs=ptotal(model) * 3 + 3, method="hutch++", seed=0)  # sketch spans R^P: exact
    assert float(r) == pytest.approx(float(torch.trace(H)), rel=1e-9)


def ptotal(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("method", ["hutchinson", "xdiag"])
def test_diagonal_unbiased_and_stderr(A, method):
    exact = torch.diagonal(A)
    runs = [hc.diagonal_estimate(A, num_matvecs=10, method=method, seed=s) for s in range(200)]
    ests = torch.stack([r.estimate for r in runs])
    spread = ests.std(0) / math.sqrt(len(runs))
    assert bool(((ests.mean(0) - exact).abs() < 4.5 * spread + 1e-12).all())
    assert runs[0].num_matvecs == 10 and runs[0].estimate.shape == (60,)
    if method == "hutchinson":  # per-entry standard error matches the spread over seeds
        ratio = torch.stack([r.stderr for r in runs]).mean(0) / ests.std(0)
        assert 0.6 < float(ratio.median()) < 1.5


def test_xdiag_exact_for_low_rank_and_param_shapes():
    g = torch.Generator().manual_seed(3)
    B = torch.randn(40, 4, generator=g, dtype=torch.float64)
    low_rank = B @ B.T
    r = hc.diagonal_estimate(low_rank, num_matvecs=10, method="xdiag", seed=0)
    torch.testing.assert_close(r.estimate, torch.diagonal(low_rank))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, y), progress=False)
    est = hc.diagonal_estimate(op, num_matvecs=4, method="hutchinson", seed=0)
    assert [t.shape for t in est.param_estimate] == [p.shape for p in model.parameters()]


def test_bad_counts_and_methods(A):
    with pytest.raises(InvalidInputError, match="even int"):
        hc.trace(A, num_matvecs=7, method="xtrace")
    with pytest.raises(InvalidInputError, match=">= 3"):
        hc.trace(A, num_matvecs=2, method="hutch++")
    with pytest.raises(InvalidInputError, match="method"):
        hc.trace(A, num_matvecs=10, method="exact")
    with pytest.raises(InvalidInputError, match="method"):
        hc.diagonal_estimate(A, num_matvecs=10, method="diag++")
    with pytest.raises(InvalidInputError, match="param_estimate"):
        _ = hc.diagonal_estimate(A, num_matvecs=4, method="hutchinson").param_estimate


def test_generator_helper_follows_global_seed():
    torch.manual_seed(5)
    a = torch.randn(3, generator=generator(None, "cpu"))
    torch.manual_seed(5)
    b = torch.randn(3, generator=generator(None, "cpu"))
    assert torch.equal(a, b)
    assert torch.equal(torch.randn(3, generator=generator(9, "cpu")), torch.randn(3, generator=generator(9, "cpu")))
    with pytest.raises(InvalidInputError, match="seed"):
        generator(1.5, "cpu")


def test_every_allocation_sized_by_an_argument_is_checked_first():
    A = hc.DenseOperator(spectrum_matrix(torch.linspace(0, 1, 200)), budget=40_000)
    huge = 10**9  # a sketch this wide would need terabytes: refused before allocating, with what to do instead
    with pytest.raises(hc.MemoryBudgetError, match="Hutch\\+\\+ sketch"):
        hc.trace(A, num_matvecs=3 * 300, method="hutch++")
    with pytest.raises(hc.MemoryBudgetError, match="exchangeable sketch"):
        hc.trace(A, num_matvecs=2 * 100, method="xtrace")
    with pytest.raises(hc.MemoryBudgetError, match="exchangeable sketch"):
        hc.diagonal_estimate(A, num_matvecs=2 * 100, method="xdiag")
    with pytest.raises(hc.MemoryBudgetError, match="Lanczos"):
        hc.eigsh(A, k=2, ncv=30)
    with pytest.raises(hc.MemoryBudgetError, match="Lanczos vectors"):
        hc.spectral_density(A, num_probes=2, num_iters=500)
    # Hutchinson streams its probes in blocks that fit: any count works within the budget
    assert hc.trace(A, num_matvecs=500, method="hutchinson", seed=0).num_matvecs == 500
    # a sketch wider than P is capped at P, where it is exact
    big = hc.DenseOperator(A.matrix, budget=10**9)
    r = hc.trace(big, num_matvecs=huge, method="hutch++", seed=0)
    assert r.estimate == pytest.approx(float(A.matrix.trace()), rel=1e-12) and r.num_matvecs == 400
