"""Kronecker-factored Laplace (structure="kron"/"ekfac") against independent references: Bayesian linear
regression, where KFAC with weight and bias in one block is the exact GGN (closed-form evidence, the full
Laplace's predictive and covariance); deep networks, where log det, inverse, evidence and predictive equal
dense computations on s * K.to_dense() + diag(prior); laplace-torch 0.3's "kron" where it is installed."""

import copy
import math

import pytest
import torch
from optional import need
from torch import nn
from torch.func import functional_call, jacrev

import hessian_core as hc

D = torch.float64


def regression_data(N=30, d=3, outputs=2, sigma=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d, generator=g, dtype=D)
    W = torch.randn(d, outputs, generator=g, dtype=D)
    return X, X @ W + 0.5 + sigma * torch.randn(N, outputs, generator=g, dtype=D)


def augmented(X):
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=D)], 1)


def map_model(X, y, delta, sigma):
    """The MAP of Bayesian linear regression with bias (prior N(0, 1/delta)), closed form."""
    Xa = augmented(X)
    A = Xa.T @ Xa / sigma ** 2 + delta * torch.eye(Xa.shape[1], dtype=D)
    Wa = torch.linalg.solve(A, Xa.T @ y / sigma ** 2)
    model = nn.Linear(X.shape[1], y.shape[1]).double()
    with torch.no_grad():
        model.weight.copy_(Wa[:-1].T)
        model.bias.copy_(Wa[-1])
    return model


def evidence(X, y, delta, sigma):
    """sum over outputs of log N(y_o; 0, sigma^2 I + Xa Xa^T / delta)."""
    Xa = augmented(X)
    K = sigma ** 2 * torch.eye(X.shape[0], dtype=D) + Xa @ Xa.T / delta
    dist = torch.distributions.MultivariateNormal(torch.zeros(X.shape[0], dtype=D), covariance_matrix=K)
    return float(sum(dist.log_prob(y[:, o]) for o in range(y.shape[1])))


JOINT = {"separate_bias": False}  # [W | b] with inputs [x, 1]: KFAC = GGN for one Linear layer with MSE


@pytest.mark.parametrize("structure", ["kron", "ekfac"])
@pytest.mark.parametrize("reduction,batch", [("mean", None), ("sum", 7)])
def test_linear_regression_kron_is_the_exact_laplace(structure, reduction, batch):
    X, y = regression_data()
    delta, sigma = 1.5, 0.4
    data = (X, y) if batch is None else torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y),
                                                                    batch_size=batch)  # 7, 7, 7, 7, 2
    model = map_model(X, y, delta, sigma)
    loss_fn = nn.MSELoss(reduction=reduction)
    la = hc.Laplace(model, loss_fn, data, structure=structure, structure_options=JOINT, prior_precision=delta,
                    sigma_noise=sigma, progress=False)
    full = hc.Laplace(model, loss_fn, data, prior_precision=delta, sigma_noise=sigma, progress=False)
    assert float(la.log_marginal_likelihood()) == pytest.approx(evidence(X, y, delta, sigma), rel=1e-12)
    for p, s in [(0.3, 1.1), (4.0, 0.2)]:  # other hyperparameters: the same as the full Laplace
        assert float(la.log_marginal_likelihood(p, s)) == pytest.approx(
            float(full.log_marginal_likelihood(p, s)), rel=1e-12)
    Sigma = full.posterior_covariance()
    torch.testing.assert_close(la.posterior_covariance(), Sigma, rtol=1e-10, atol=1e-13)
    Xs = torch.randn(5, 3, dtype=D)
    p, q = la.predictive(Xs), full.predictive(Xs)
    torch.testing.assert_close(p.f_mean, q.f_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.f_covariance, q.f_covariance, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(p.variance, q.variance, rtol=1e-10, atol=1e-13)
    # draws: mean theta*, covariance Sigma (statistically: 4 standard errors)
    n = 20000
    S = la.sample(n, seed=0)
    sd = Sigma.diagonal().sqrt()
    assert float(((S.mean(0) - la.mean).abs() / sd).max()) < 4.5 / math.sqrt(n)
    corr = torch.corrcoef(S.T) - Sigma / torch.outer(sd, sd)
    assert float(corr.abs().max()) < 4.5 / math.sqrt(n) * 2
    torch.testing.assert_close(S.var(0) / Sigma.diagonal(), torch.ones(la.n_params, dtype=D), rtol=0, atol=0.05)


def test_empirical_fisher_kron_of_one_sample_is_exact():
    """With one sample the per-sample gradient of a Linear layer is delta ⊗ [x, 1]: its empirical Fisher is a
    Kronecker product, so the kron Laplace equals the full one, including the EF's likelihood scale."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    X, y = torch.randn(1, 3, dtype=D), torch.randn(1, 2, dtype=D)
    kw = dict(curvature="ef", prior_precision=0.8, sigma_noise=0.5)
    la = hc.Laplace(model, nn.MSELoss(), (X, y), structure="kron", structure_options=JOINT, **kw)
    full = hc.Laplace(model, nn.MSELoss(), (X, y), **kw)
    assert float(la.log_marginal_likelihood()) == pytest.approx(float(full.log_marginal_likelihood()), rel=1e-12)


def mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def cnn():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()


def classification(model_fn, N=20):
    model = model_fn()
    g = torch.Generator().manual_seed(3)
    X = torch.randn(N, 3, dtype=D, generator=g) if model_fn is mlp else torch.randn(N, 1, 4, 4, dtype=D, generator=g)
    return model, X, torch.randint(0, 3, (N,), generator=g)


def jacobian(model, X):
    """(n, C, P) Jacobians of the outputs, ParamSpec order, by torch.func."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    J = jacrev(lambda p: functional_call(model, p, (X,)))(params)
    return torch.cat([J[n].reshape(X.shape[0], -1, params[n].numel()) for n in params], 2)


@pytest.mark.parametrize("structure", ["kron", "ekfac"])
@pytest.mark.parametrize("model_fn", [mlp, cnn])
def test_deep_net_kron_equals_dense_computations(structure, model_fn):
    model, X, y = classification(model_fn)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=8)  # 8, 8, 4
    names = [n for n, _ in model.named_parameters()]
    layerwise = torch.linspace(0.3, 2.0, len(names), dtype=D)
    la = hc.Laplace(model, nn.CrossEntropyLoss(), loader, structure=structure, prior_precision=layerwise,
                    progress=False)
    cls = hc.KFACOperator if structure == "kron" else hc.EKFACOperator
    K = cls(model, nn.CrossEntropyLoss(), loader, progress=False).to_dense()
    N, P = 20, K.shape[0]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    L = float(nn.CrossEntropyLoss()(model(X), y).detach())
    for prior in (torch.tensor(0.7, dtype=D), layerwise):
        pvec = prior.expand(P) if prior.dim() == 0 else torch.repeat_interleave(
            prior, torch.tensor([p.numel() for p in model.parameters()]))
        Lam = N * K + torch.diag(pvec)
        ref = (-N * L - 0.5 * float((pvec * theta ** 2).sum()) + 0.5 * float(pvec.log().sum())
               - 0.5 * float(torch.linalg.slogdet(Lam)[1]))
        assert float(la.log_marginal_likelihood(prior)) == pytest.approx(ref, rel=1e-12)
    Lam = N * K + torch.diag(pvec)
    Sigma = torch.linalg.inv(Lam)
    torch.testing.assert_close(la.posterior_covariance(), Sigma, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(la.posterior_precision().to_dense(), Lam, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(la.posterior_precision().inverse().to_dense(), Sigma, rtol=1e-9, atol=1e-12)
    # the identities of docs/kfac.md for a scalar prior tau: P log s + K.logdet(tau / s), K.inverse(tau / s) / s
    op = la.posterior.operator
    tau = 0.7
    assert la.posterior.logdet(torch.tensor(float(N), dtype=D), torch.tensor(tau, dtype=D)).item() == pytest.approx(
        P * math.log(N) + op.logdet(tau / N), rel=1e-12)
    V = torch.randn(P, 3, dtype=D)
    torch.testing.assert_close(la.posterior.inv_matmat(N, torch.tensor(tau, dtype=D), V),
                               op.inverse(tau / N) @ V / N, rtol=1e-10, atol=1e-13)
    # GLM predictive: J Sigma J^T
    Xs = X[:4]
    J = jacobian(model, Xs)
    torch.testing.assert_close(la.predictive(Xs).f_covariance, J @ Sigma @ J.transpose(1, 2), rtol=1e-9,
                               atol=1e-12)
    # draws have covariance Sigma (a whitening check: Lambda^(1/2) draws are standard normal)
    n = 20000
    S = la.sample(n, seed=4) - la.mean
    lam, Q = torch.linalg.eigh(Lam)
    W = S @ Q * lam.sqrt()
    torch.testing.assert_close(torch.cov(W.T), torch.eye(P, dtype=D), rtol=0, atol=7 / math.sqrt(n))


def test_uncovered_parameters_exact_block_and_any_layerwise_prior():
    """LayerNorm outside the covered layers: its exact GGN block (dense), whose two tensors may take different
    priors (Cholesky of that block); the rest Kronecker."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(15, 3, dtype=D), torch.randn(15, 2, dtype=D)
    with pytest.raises(hc.InvalidInputError, match="structure_options=.'uncovered': 'exact'"):
        hc.Laplace(model, nn.MSELoss(), (X, y), structure="kron")
    prior = torch.tensor([0.5, 0.9, 1.3, 2.0, 0.7, 1.1], dtype=D)
    la = hc.Laplace(model, nn.MSELoss(), (X, y), structure="kron", structure_options={"uncovered": "exact"},
                    prior_precision=prior, sigma_noise=0.3)
    K = hc.KFACOperator(model, nn.MSELoss(), (X, y), uncovered="exact").to_dense()
    s = 15 * 2 / (2 * 0.3 ** 2)
    pvec = torch.repeat_interleave(prior, torch.tensor([p.numel() for p in model.parameters()]))
    Lam = s * K + torch.diag(pvec)
    assert float(la.posterior.logdet(s, pvec)) == pytest.approx(float(torch.linalg.slogdet(Lam)[1]), rel=1e-12)
    torch.testing.assert_close(la.posterior_covariance(), torch.linalg.inv(Lam), rtol=1e-9, atol=1e-12)
    S = la.sample(20000, seed=0) - la.mean
    lam, Q = torch.linalg.eigh(Lam)
    torch.testing.assert_close(torch.cov((S @ Q * lam.sqrt()).T), torch.eye(K.shape[0], dtype=D), rtol=0,
                               atol=0.05)


def test_kron_prior_optimization():
    model, X, y = classification(mlp)
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron")
    found = float(la.optimize_prior_precision())
    grid = torch.logspace(-3, 3, 601, dtype=D)
    values = torch.stack([la.log_marginal_likelihood(prior_precision=g) for g in grid])
    assert float(la.log_marginal_likelihood()) >= float(values.max()) - 1e-12
    assert abs(math.log(found) - math.log(float(grid[int(values.argmax())]))) <= math.log(float(grid[1] / grid[0]))
    before = float(la.log_marginal_likelihood())
    layer = la.optimize_prior_precision("layerwise")
    assert layer.shape == (6,) and float(la.log_marginal_likelihood()) >= before
    grad = torch.func.grad(lambda u: la.log_marginal_likelihood(prior_precision=u.exp()))(layer.log())
    assert float(grad.abs().max()) < 1e-5  # a stationary point
    with pytest.raises(hc.InvalidInputError, match="'scalar' or 'layerwise'"):
        la.optimize_prior_precision("diag")
    # regression: the noise too
    Xr, yr = regression_data()
    reg = hc.Laplace(mlp_regression(), nn.MSELoss(), (Xr, yr), structure="kron", sigma_noise=0.5)
    reg.optimize_prior_precision(sigma_noise=True)
    u = torch.stack([reg.prior_precision.log(), reg.sigma_noise.log()])
    grad = torch.func.grad(lambda u: reg.log_marginal_likelihood(u[0].exp(), u[1].exp()))(u)
    assert float(grad.abs().max()) < 1e-5


def mlp_regression():
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_kron_refuses_what_it_cannot_represent():
    model, X, y = classification(mlp)
    with pytest.raises(hc.InvalidInputError, match="not the Hessian"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron", curvature="hessian")
    with pytest.raises(hc.InvalidInputError, match="damping"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron", structure_options={"damping": 1.0})
    with pytest.raises(hc.InvalidInputError, match="type='empirical' is curvature='ef'"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron", structure_options={"type": "empirical"})
    with pytest.raises(hc.InvalidInputError, match="takes no structure_options"):
        hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="full", structure_options={"approx": "reduce"})
    la = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron")
    with pytest.raises(hc.InvalidInputError, match="one prior precision per Kronecker block"):
        la.prior_precision = torch.rand(la.n_params, dtype=D) + 0.5
    with pytest.raises(hc.InvalidInputError, match="one prior precision per Kronecker block"):
        la.log_marginal_likelihood(prior_precision=torch.rand(la.n_params, dtype=D) + 0.5)
    joint = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron", structure_options=JOINT)
    with pytest.raises(hc.InvalidInputError, match="separate_bias"):
        joint.prior_precision = torch.arange(1.0, 7.0, dtype=D)
    with pytest.raises(hc.InvalidInputError, match="'scalar' prior"):
        joint.optimize_prior_precision("layerwise")
    joint.prior_precision = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], dtype=D)  # one value per block is fine
    # Monte Carlo Fisher (the GGN in expectation) is an option of the GGN curvature
    mc = hc.Laplace(model, nn.CrossEntropyLoss(), (X, y), structure="kron",
                    structure_options={"type": "mc", "mc_samples": 200}, seed=0)
    assert float(mc.log_marginal_likelihood()) == pytest.approx(float(la.log_marginal_likelihood()), rel=0.02)


def test_agrees_with_laplace_torch_kron():
    """laplace-torch 0.3's KronLaplace (curvlinops backend, damping=False) computes the same posterior from the
    same factors; with unequal batches too (its per-batch factors are rescaled by batch/N)."""
    laplace = need("laplace")
    model, X, y = classification(mlp, N=22)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=8)  # 8, 8, 6
    for prior in (0.5, torch.tensor([0.5, 1.0, 2.0, 3.0, 0.7, 0.9], dtype=D)):
        theirs = laplace.Laplace(copy.deepcopy(model), "classification", subset_of_weights="all",
                                 hessian_structure="kron", prior_precision=prior)
        theirs.fit(loader)
        ours = hc.Laplace(model, nn.CrossEntropyLoss(), loader, structure="kron", prior_precision=prior,
                          progress=False)
        assert float(ours.log_marginal_likelihood()) == pytest.approx(float(theirs.log_marginal_likelihood()),
                                                                      rel=1e-12)
        Xs = X[:3]
        f_var = theirs.functional_variance(theirs.backend.jacobians(Xs)[0])
        torch.testing.assert_close(ours.predictive(Xs).f_covariance, f_var, rtol=1e-9, atol=1e-12)
