"""The hard end of a spectrum and early decisions: the bulk end of a network-like spectrum converges
within the default budget, condition number and log-determinant stop as soon as indefiniteness or (for a
positive semi-definite operator) singularity is proven, every result says why its eigensolver stopped."""

import math
import warnings

import pytest
import torch
from reference import spectrum_matrix
from torch import nn

import hessian_core as hc
from hessian_core.spectral.definiteness import known_psd

D = torch.float64


@pytest.fixture(scope="module")
def bulk():
    """A network-Hessian-like spectrum: 280 eigenvalues in a bulk near zero, 20 outliers at the top."""
    vals = torch.cat([torch.linspace(-0.01, 0.02, 280, dtype=D), torch.linspace(1, 5, 20, dtype=D)])
    return spectrum_matrix(vals), vals


@pytest.fixture(scope="module")
def trained_net():
    """A 6-12-12-4 tanh MLP (P = 292) trained on 40 samples: its GGN has rank <= 40 * 3 < P."""
    torch.manual_seed(0)
    X, y = torch.randn(40, 6, dtype=D), torch.randint(0, 4, (40,))
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 4)).to(D)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, (X, y)


def test_bulk_end_converges_within_the_default_budget(bulk):
    """With the previous defaults (restart basis of 48 for blocks of 4) the six smallest took 2398 products
    and did not converge; a larger basis keeps what the restarts threw away."""
    A, vals = bulk
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = hc.eigsh(A, k=6, which="SA", seed=0)
    assert res.stopped == "converged" and bool(res.converged.all())
    torch.testing.assert_close(res.values, vals[:6], rtol=0, atol=1e-9)
    assert res.num_matvecs < 600
    top = hc.eigsh(A, k=6, which="LA", seed=0)
    torch.testing.assert_close(top.values, vals[-6:], rtol=0, atol=1e-9)
    assert "stopped='converged'" in repr(res)


def test_stopped_says_why():
    A = spectrum_matrix(torch.linspace(0, 1, 300, dtype=D) ** 3)
    with pytest.warns(RuntimeWarning, match="converged"):
        assert hc.eigsh(A, k=3, which="SA", max_matvecs=30, seed=0).stopped == "max_matvecs"
    assert hc.eigsh(spectrum_matrix(torch.linspace(0, 1, 20, dtype=D)), k=2, seed=0).stopped == "dense"
    with pytest.raises(hc.InvalidInputError, match="max_matvecs"):
        hc.eigsh(A, k=1, max_matvecs=-5)
    with pytest.raises(hc.InvalidInputError, match="max_matvecs"):
        hc.condition_number(A, max_matvecs=0)


def test_condition_number_stops_at_proven_indefiniteness():
    """The previous code converged both ends (162 products here) before answering nan."""
    c = hc.condition_number(spectrum_matrix(torch.linspace(-1, 4, 200, dtype=D)), seed=0)
    assert math.isnan(float(c)) and "indefinite" in c.reason
    assert c.eigen.stopped == "indefinite" and c.num_matvecs <= 20
    assert c.lambda_min < 0 < c.lambda_max  # Rayleigh quotients: the proof


def test_condition_number_of_a_singular_ggn_stops_early(trained_net):
    """The GGN of a loss convex in the outputs is PSD, so a Ritz value below rtol ||G|| proves singularity.
    Before: 1200 products, a convergence warning, then inf."""
    model, data = trained_net
    G = hc.GGNOperator(model, nn.CrossEntropyLoss(), data)
    assert known_psd(G)
    dense = torch.linalg.eigvalsh(G.to_dense())
    assert float(dense[0]) <= 1.5e-8 * float(dense[-1])  # really singular (rank <= 120 < 292)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        c = hc.condition_number(G, seed=0, invariances=False)
    assert math.isinf(float(c)) and c.stopped == "singular" and "semi-definite" in c.reason
    assert c.num_matvecs < 300
    assert c.lambda_max == pytest.approx(float(dense[-1]), rel=1e-6)
    assert c.lower_bound >= 1 / 1.5e-8
    r = hc.logdet(G, seed=0, invariances=False)
    assert float(r) == -math.inf and "singular" in r.reason


def test_softmax_shift_invariance_proves_singularity_in_a_few_products(trained_net):
    """Cross-entropy ignores a shift of all logits: the all-ones direction on the output layer's bias (and on
    its weight's rows) is a null vector of the Hessian and of the GGN, whatever the parameters. Testing it
    first decides 'singular' in one batched product per candidate (12 here) plus a few Lanczos steps, where
    Lanczos alone needs hundreds to resolve the zero eigenvalue from the bulk (1200 and a warning before)."""
    model, data = trained_net
    for Op in (hc.GGNOperator, hc.HessianOperator):
        A = Op(model, nn.CrossEntropyLoss(), data)
        dense = torch.linalg.eigvalsh(A.to_dense())
        c = hc.condition_number(A, seed=0)
        assert math.isinf(float(c)) and c.stopped == "invariance", c
        assert c.num_matvecs <= 20
        assert "ones on 4.bias" in c.reason or "ones on 4.weight" in c.reason
        # the proof: an eigenvalue within ||A x|| of zero, and the bound from Rayleigh quotients
        assert float(dense.abs().min()) <= 1e-14 * float(dense.abs().max())
        assert c.lower_bound >= 1 / 1.5e-8 and c.lower_bound <= float(dense.abs().max()) / float(dense.abs().min())
        assert c.lambda_max <= float(dense[-1]) + 1e-12
        r = hc.logdet(A, seed=0)
        if Op is hc.GGNOperator:  # PSD: singular at once
            assert float(r) == -math.inf and "invariant" in r.reason and r.num_matvecs <= 20
        else:  # the Hessian is indefinite: the check still finds that
            assert math.isnan(float(r)) and "indefinite" in r.reason


def test_normalization_shift_invariance_and_no_false_alarm():
    """A bias before LayerNorm is removed by its mean subtraction: its all-ones direction is null (MSE, so no
    softmax shift). Without such a layer (and with more samples than parameters) the GGN is positive
    definite: the candidates cost their products and the answer is the converged condition number."""
    torch.manual_seed(0)
    X, Y = torch.randn(64, 4, dtype=D), torch.randn(64, 2, dtype=D)
    normed = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 2)).to(D)
    c = hc.condition_number(hc.GGNOperator(normed, nn.MSELoss(), (X, Y)), seed=0)
    # a uniform shift of the pre-activations: the bias's all-ones direction, and the weight's (it shifts every
    # feature by the same sum_i x_i); either proves it, whichever has the smaller residual in rounding
    assert math.isinf(float(c)) and c.stopped == "invariance"
    assert "ones on 0.bias" in c.reason or "ones on 0.weight" in c.reason
    plain = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(D)
    G = hc.GGNOperator(plain, nn.MSELoss(), (X, Y))
    lam = torch.linalg.eigvalsh(G.to_dense())
    assert float(lam[0]) > 1e-6 * float(lam[-1])  # positive definite
    c = hc.condition_number(G, seed=0)
    assert c.reason is None and c.stopped in ("converged", "dense")
    assert float(c) == pytest.approx(float(lam[-1] / lam[0]), rel=1e-4)  # lambda_min to ~tol ‖A‖ / lambda_min


def test_condition_number_of_the_network_hessian_is_indefinite_quickly(trained_net):
    model, data = trained_net
    H = hc.HessianOperator(model, nn.CrossEntropyLoss(), data)
    c = hc.condition_number(H, seed=0, invariances=False)
    assert math.isnan(float(c)) and c.num_matvecs <= 40  # previously 126
    dense = torch.linalg.eigvalsh(H.to_dense())
    assert float(dense[0]) <= c.lambda_min < 0  # the Ritz value bounds lambda_min from above


def test_condition_number_positive_definite_is_unchanged():
    vals = torch.cat([torch.tensor([0.5, 40.0]), torch.linspace(1, 30, 198)]).double()
    c = hc.condition_number(spectrum_matrix(vals), seed=0)
    assert float(c) == pytest.approx(80.0, rel=1e-8) and c.reason is None and c.eigen.stopped == "converged"
    assert c.lower_bound == pytest.approx(80.0, rel=1e-8)


def test_known_psd(trained_net):
    model, data = trained_net
    G = hc.GGNOperator(model, nn.CrossEntropyLoss(), data)
    F = hc.EmpiricalFisherOperator(model, nn.CrossEntropyLoss(), data)
    H = hc.HessianOperator(model, nn.CrossEntropyLoss(), data)
    assert known_psd(G) and known_psd(F) and not known_psd(H)
    assert known_psd(2.0 * G + 0.1 * hc.IdentityOperator(G)) and not known_psd(G - F)
    custom = hc.GGNOperator(model, lambda o, t: nn.functional.cross_entropy(o, t), data)
    assert not known_psd(custom) and known_psd(custom, psd=True)
    with pytest.raises(hc.InvalidInputError, match="psd"):
        known_psd(G, psd="yes")
