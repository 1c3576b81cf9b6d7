"""Laplace approximations against closed forms: Bayesian linear regression (where Laplace is exact: evidence
log N(y; 0, sigma^2 I + X X^T / prior_precision), Gaussian-process predictive, evidence maximum), softmax
regression (GGN = Hessian, written out with autograd), the empirical Fisher of the negative log likelihood."""

import math

import pytest
import torch
from reference import autograd_hessian
from scipy.optimize import minimize, minimize_scalar
from torch import nn

import hessian_core as hc
from hessian_core.inverse.posterior import STRUCTURES, FullPosterior, register_structure

D = torch.float64


def regression_data(N=30, d=3, outputs=2, sigma=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=D)
    W = torch.randn(d, outputs, generator=g, dtype=D)
    y = X @ W + 0.5 + sigma * torch.randn(N, outputs, generator=g, dtype=D)
    return X, y


def augmented(X):
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=D)], 1)


def map_model(X, y, delta, sigma):
    """The MAP of Bayesian linear regression with bias (prior N(0, 1/delta) on weights and bias), closed form."""
    Xa = augmented(X)
    A = Xa.T @ Xa / sigma ** 2 + delta * torch.eye(Xa.shape[1], dtype=D)
    Wa = torch.linalg.solve(A, Xa.T @ y / sigma ** 2)  # (d + 1, O)
    model = nn.Linear(X.shape[1], y.shape[1]).double()
    with torch.no_grad():
        model.weight.copy_(Wa[:-1].T)
        model.bias.copy_(Wa[-1])
    return model


def evidence(X, y, delta, sigma):
    """sum over outputs of log N(y_o; 0, sigma^2 I + Xa Xa^T / delta), with torch.distributions."""
    Xa = augmented(X)
    K = sigma ** 2 * torch.eye(X.shape[0], dtype=D) + Xa @ Xa.T / delta
    dist = torch.distributions.MultivariateNormal(torch.zeros(X.shape[0], dtype=D), covariance_matrix=K)
    return float(sum(dist.log_prob(y[:, o]) for o in range(y.shape[1])))


@pytest.mark.parametrize("reduction,batch", [("mean", None), ("mean", 7), ("sum", 7)])
def test_bayesian_linear_regression_evidence_is_exact(reduction, batch):
    X, y = regression_data()
    data = (X, y) if batch is None else torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                                                    batch_size=batch)  # 7, 7, 7, 7, 2
    for delta, sigma in [(2.0, 0.4), (0.3, 1.3)]:
        model = map_model(X, y, delta, sigma)
        la = hc.Laplace(model, nn.MSELoss(reduction=reduction), data, prior_precision=delta, sigma_noise=sigma,
                        progress=False)
        assert la.n_data == 30 and la.likelihood.n_outputs == 2
        assert float(la.log_marginal_likelihood()) == pytest.approx(evidence(X, y, delta, sigma), rel=1e-12)
        # evaluating at other hyperparameters does not change the stored ones
        la.log_marginal_likelihood(prior_precision=5.0, sigma_noise=2.0)
        assert float(la.prior_precision) == delta and float(la.sigma_noise) == sigma


def test_predictive_is_the_gaussian_process_posterior():
    X, y = regression_data()
    delta, sigma = 1.5, 0.4
    la = hc.Laplace(map_model(X, y, delta, sigma), nn.MSELoss(), (X, y), prior_precision=delta, sigma_noise=sigma)
    Xs = torch.randn(6, 3, dtype=D)
    K = sigma ** 2 * torch.eye(30, dtype=D) + augmented(X) @ augmented(X).T / delta
    ks = augmented(Xs) @ augmented(X).T / delta
    mean = ks @ torch.linalg.solve(K, y)
    var = (augmented(Xs) ** 2).sum(1) / delta - (ks * torch.linalg.solve(K, ks.T).T).sum(1)
    p = la.predictive(Xs)
    torch.testing.assert_close(p.f_mean, mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(p.f_covariance, torch.diag_embed(var[:, None].expand(6, 2)), rtol=0, atol=1e-12)
    torch.testing.assert_close(p.variance, var[:, None].expand(6, 2) + sigma ** 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.mean, mean, rtol=0, atol=1e-11)
    # Monte Carlo over posterior draws: the same Gaussian (the model is linear in its parameters)
    mc = la.predictive(Xs, mode="mc", n_samples=4000, seed=0)
    torch.testing.assert_close(mc.f_mean, mean, rtol=0, atol=4 * float(var.max().sqrt()) / math.sqrt(4000))
    torch.testing.assert_close(torch.diagonal(mc.f_covariance, dim1=1, dim2=2), var[:, None].expand(6, 2),
                               rtol=0.1, atol=0)


def test_optimize_prior_precision_maximizes_the_laplace_evidence_on_a_grid():
    X, y = regression_data()
    la = hc.Laplace(map_model(X, y, 1.0, 0.4), nn.MSELoss(), (X, y), prior_precision=1.0, sigma_noise=0.4)
    found = float(la.optimize_prior_precision())
    grid = torch.logspace(-3, 3, 2001, dtype=D)
    values = torch.stack([la.log_marginal_likelihood(prior_precision=g) for g in grid])
    best = int(values.argmax())
    assert float(la.log_marginal_likelihood()) >= float(values.max()) - 1e-12
    step = math.log(float(grid[1] / grid[0]))
    assert abs(math.log(found) - math.log(float(grid[best]))) <= step


def test_mackay_iterations_reach_the_closed_form_evidence_maximum():
    """Refit the MAP at the new prior, rebuild the Laplace approximation, optimize again: the fixed point is the
    maximum of the exact evidence (envelope theorem), compared with scipy on the closed form."""
    X, y = regression_data(N=40)
    delta, sigma = 1.0, 1.0
    for _ in range(100):
        la = hc.Laplace(map_model(X, y, delta, sigma), nn.MSELoss(), (X, y), prior_precision=delta,
                        sigma_noise=sigma)
        new = float(la.optimize_prior_precision(sigma_noise=True))
        moved = abs(math.log(new / delta)) + abs(math.log(float(la.sigma_noise) / sigma))
        delta, sigma = new, float(la.sigma_noise)
        if moved < 1e-10:
            break
    ref = minimize(lambda u: -evidence(X, y, math.exp(u[0]), math.exp(u[1])), [0.0, 0.0], method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 4000})
    assert math.log(delta) == pytest.approx(ref.x[0], abs=1e-5)
    assert math.log(sigma) == pytest.approx(ref.x[1], abs=1e-5)
    # the prior precision alone, at a fixed noise
    delta = 1.0
    for _ in range(100):
        la = hc.Laplace(map_model(X, y, delta, 0.5), nn.MSELoss(), (X, y), prior_precision=delta, sigma_noise=0.5)
        new = float(la.optimize_prior_precision())
        if abs(math.log(new / delta)) < 1e-11:
            break
        delta = new
    ref1 = minimize_scalar(lambda t: -evidence(X, y, math.exp(t), 0.5), bounds=(-10, 10), method="bounded",
                           options={"xatol": 1e-10})
    assert math.log(delta) == pytest.approx(ref1.x, abs=1e-6)


def softmax_regression(N=25, d=3, C=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=D)
    y = torch.randint(0, C, (N,), generator=g)
    torch.manual_seed(seed)
    return nn.Linear(d, C).double(), X, y


@pytest.mark.parametrize("structure", ["full", "diag"])
@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_softmax_regression_evidence_matches_the_written_out_formula(structure, curvature):
    model, X, y = softmax_regression()
    delta = 0.7
    H = autograd_hessian(model, nn.CrossEntropyLoss(), X, y)  # GGN = Hessian: linear in the parameters
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    L = float(nn.CrossEntropyLoss()(model(X), y).detach())
    N, P = 25, theta.numel()
    Lam = N * H + delta * torch.eye(P, dtype=D)
    logdet = torch.logdet(Lam) if structure == "full" else Lam.diagonal().log().sum()
    ref = -N * L - 0.5 * delta * float(theta @ theta) + 0.5 * P * math.log(delta) - 0.5 * float(logdet)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=10)
    la = hc.Laplace(model, nn.CrossEntropyLoss(), loader, structure=structure, curvature=curvature,
                    prior_precision=delta, progress=False)
    assert float(la.log_marginal_likelihood()) == pytest.approx(ref, rel=1e-12)


def test_last_layer_is_the_laplace_of_the_last_layer_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X, y = torch.randn(20, 3, dtype=D), torch.randint(0, 3, (20,))
    delta = 0.5
    names = ["2.weight", "2.bias"]
    H = autograd_hessian(model, nn.CrossEntropyLoss(), X, y, names=names)  # linear in the last layer: = GGN
    theta = torch.cat([model[2].weight.detach().reshape(-1), model[2].bias.detach()])
    L, N, P = float(nn.CrossEntropyLoss()(model(X), y).detach()), 20, theta.numel()
    ref = (-N * L - 0.5 * delta * float(theta @ theta) + 0.5 * P * math.log(delta)
           - 0.5 * float(torch.logdet(N * H + delta * torch.eye(P, dtype=D))))
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="last_layer", prior_precision=delta)
    assert la.params.names == names and la.n_params == 18
    assert float(la.log_marginal_likelihood()) == pytest.approx(ref, rel=1e-12)
    same = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), params=names, prior_precision=delta)
    assert float(same.log_marginal_likelihood()) == pytest.approx(ref, rel=1e-12)


def test_empirical_fisher_is_that_of_the_negative_log_likelihood():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    X, y = torch.randn(12, 2, dtype=D), torch.randn(12, 2, dtype=D)
    sigma, delta = 0.6, 0.4
    rows = []
    for i in range(12):  # nll_i = |y_i - f_i|^2 / (2 sigma^2)
        nll = ((model(X[i:i + 1]) - y[i:i + 1]) ** 2).sum() / (2 * sigma ** 2)
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(nll, list(model.parameters()))]))
    G = torch.stack(rows)
    ref = G.T @ G + delta * torch.eye(G.shape[1], dtype=D)
    la = hc.Laplace(model, nn.MSELoss(), (X, y), curvature="ef", prior_precision=delta, sigma_noise=sigma)
    torch.testing.assert_close(la.posterior_precision().to_dense(), ref, rtol=1e-12, atol=1e-12)


def test_classification_predictive_probit_and_samples():
    model, X, y = softmax_regression()
    delta = 0.7
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), prior_precision=delta)
    H = autograd_hessian(model, nn.CrossEntropyLoss(), X, y)
    Sigma = torch.linalg.inv(25 * H + delta * torch.eye(12, dtype=D))
    torch.testing.assert_close(la.posterior_covariance(), Sigma, rtol=1e-10, atol=1e-13)
    Xs = torch.randn(4, 3, dtype=D)
    f = model(Xs).detach()
    # J of f_c = W_c x + b_c with respect to (W row-major, b)
    J = torch.stack([torch.cat([torch.kron(torch.eye(3, dtype=D), x[None]), torch.eye(3, dtype=D)], 1) for x in Xs])
    cov = J @ Sigma @ J.transpose(1, 2)
    p = la.predictive(Xs)
    torch.testing.assert_close(p.f_covariance, cov, rtol=1e-10, atol=1e-13)
    probit = torch.softmax(f / torch.sqrt(1 + math.pi / 8 * torch.diagonal(cov, dim1=1, dim2=2)), -1)
    torch.testing.assert_close(p.mean, probit, rtol=1e-10, atol=1e-13)
    assert p.variance is None
    mc = la.predictive(Xs, link="mc", n_samples=20000, seed=0)
    draws = f + torch.einsum("nab,snb->sna", torch.linalg.cholesky(cov), torch.randn(20000, 4, 3, dtype=D))
    torch.testing.assert_close(mc.mean, torch.softmax(draws, -1).mean(0), rtol=0, atol=0.01)
    # posterior samples: mean theta*, covariance Sigma
    S = la.sample(20000, seed=1)
    torch.testing.assert_close(S.mean(0), la.mean, rtol=0, atol=4 * float(Sigma.diagonal().max().sqrt()) / 100)
    torch.testing.assert_close(torch.cov(S.T), Sigma, rtol=0, atol=0.05 * float(Sigma.abs().max()))
    torch.testing.assert_close(la.sample(3, seed=5), la.sample(3, seed=5))
    diag = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="diag", prior_precision=delta)
    Sd = diag.sample(20000, seed=2)
    torch.testing.assert_close(Sd.var(0), diag.posterior_covariance(), rtol=0.05, atol=0)


def test_binary_likelihood_and_layerwise_prior():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    X = torch.randn(20, 3, dtype=D)
    y = (torch.rand(20, 1, dtype=D) < 0.5).to(D)
    H = autograd_hessian(model, nn.BCEWithLogitsLoss(), X, y)
    prior = torch.tensor([0.5, 2.0], dtype=D)  # weight, bias
    pvec = torch.tensor([0.5, 0.5, 0.5, 2.0], dtype=D)
    theta = torch.cat([model.weight.detach().reshape(-1), model.bias.detach()])
    L = float(nn.BCEWithLogitsLoss()(model(X), y).detach())
    ref = (-20 * L - 0.5 * float((pvec * theta ** 2).sum()) + 0.5 * float(pvec.log().sum())
           - 0.5 * float(torch.logdet(20 * H + torch.diag(pvec))))
    la = hc.Laplace(model, nn.BCEWithLogitsLoss(), (X, y), prior_precision=prior)
    assert float(la.log_marginal_likelihood()) == pytest.approx(ref, rel=1e-12)
    assert float(la.log_marginal_likelihood(prior_precision=pvec)) == pytest.approx(ref, rel=1e-12)
    before = float(la.log_marginal_likelihood())
    found = la.optimize_prior_precision("layerwise")
    assert found.shape == (2,) and float(la.log_marginal_likelihood()) >= before
    grad = torch.func.grad(lambda u: la.log_marginal_likelihood(prior_precision=u.exp()))(found.log())
    assert float(grad.abs().max()) < 1e-6  # a stationary point


def test_registered_structure_is_used():
    model, X, y = softmax_regression()
    seen = []

    def builder(objective, curvature):
        seen.append(curvature)
        return FullPosterior(hc.GGNOperator(objective).to_dense(), objective.budget)

    register_structure("mine", builder)
    try:
        la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="mine")
        ref = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="full")
        assert seen == ["ggn"]
        assert float(la.log_marginal_likelihood()) == pytest.approx(float(ref.log_marginal_likelihood()), rel=1e-12)
    finally:
        del STRUCTURES["mine"]


def test_laplace_refuses_what_it_cannot_answer():
    model, X, y = softmax_regression()
    with pytest.raises(hc.InvalidInputError, match="negative log likelihood"):
        hc.Laplace(model, nn.L1Loss(), (X, y.double()[:, None].expand(-1, 3)))
    with pytest.raises(hc.InvalidInputError, match="sigma_noise"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), sigma_noise=2.0)
    with pytest.raises(hc.InvalidInputError, match="weight"):
        hc.Laplace(model, nn.CrossEntropyLoss(weight=torch.ones(3, dtype=D)), (X, y))
    with pytest.raises(hc.InvalidInputError, match="train mode"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), train_mode=True)
    with pytest.raises(hc.InvalidInputError, match="prior_precision"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), prior_precision=-1.0)
    with pytest.raises(hc.InvalidInputError, match="class-index"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, torch.softmax(torch.randn(25, 3, dtype=D), 1)))
    with pytest.raises(hc.MemoryBudgetError, match="structure='diag'"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), memory_budget=500)
    # an indefinite exact Hessian (away from a minimum) with a small prior: refused, the GGN suggested
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    la = hc.Laplace(net, nn.CrossEntropyLoss(), (X, y), curvature="hessian", prior_precision=1e-8)
    with pytest.raises(hc.InvalidInputError, match="curvature='ggn'"):
        la.log_marginal_likelihood()
    # the model changes afterwards: sampling and predicting refuse instead of mixing old and new
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y))
    with torch.no_grad():
        model.bias.add_(1.0)
    with pytest.raises(hc.InvalidInputError, match="changed"):
        la.predictive(X[:2])


def test_model_is_not_changed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Tanh(), nn.Linear(4, 3)).double().train()
    X, y = torch.randn(10, 3, dtype=D), torch.randint(0, 3, (10,))
    before = [p.detach().clone() for p in model.parameters()]
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y))
    la.optimize_prior_precision()
    la.predictive(X[:3])
    la.predictive(X[:3], mode="mc", n_samples=5, seed=0)
    la.sample(4)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_draws_are_checked_against_the_memory_budget_before_allocating():
    """sample(1e9) and predictive(n_samples=1e9) tried to allocate hundreds of GB and raised torch's raw
    allocation error; the budget is now checked first, naming the draws and what to do instead."""
    model, X, y = softmax_regression()
    la = hc.Laplace(model, nn.CrossEntropyLoss(reduction="sum"), (X, y), memory_budget="64MB")
    with pytest.raises(hc.MemoryBudgetError, match=r"posterior draws.*fewer draws"):
        la.sample(10**9)
    with pytest.raises(hc.MemoryBudgetError, match=r"mode='mc'.*fewer n_samples"):
        la.predictive(X, mode="mc", n_samples=10**9)
    with pytest.raises(hc.MemoryBudgetError, match=r"link='mc'.*link='probit'"):
        la.predictive(X, link="mc", n_samples=10**9)
    assert la.sample(3, seed=0).shape == (3, la.n_params)  # ordinary sizes still work
    assert la.predictive(X, link="mc", n_samples=5, seed=0).mean.shape == (X.shape[0], 3)


def test_predictive_covariances_are_checked_against_the_budget():
    """(inputs, O, O) covariances in either mode: refused by name before they are formed."""
    model, X, y = softmax_regression()
    la = hc.Laplace(model, nn.CrossEntropyLoss(reduction="sum"), (X, y), memory_budget="64MB")
    huge = X.new_zeros(3 * 10**6, X.shape[1])  # 3e6 x 3 x 3 covariances: 216 MB, over the budget of 64 MB
    with pytest.raises(hc.MemoryBudgetError, match="output covariances.*fewer inputs"):
        la.predictive(huge)
