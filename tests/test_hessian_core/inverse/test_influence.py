"""Influence scores against leave-one-out retraining (logistic regression with L2, retrained by Newton to a
1e-12 gradient) and against the dense formula with autograd Hessians."""

import pytest
import torch
from reference import autograd_hessian, explicit_ggn
from torch import nn

import hessian_core as hc
from hessian_core.inverse import influence

D = torch.float64
L2 = 0.05


def logistic_data(n=200, n_test=7, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n + n_test, d, generator=g, dtype=D)
    w = torch.tensor([1.5, -2.0, 0.7], dtype=D)[:d]
    y = (torch.rand(n + n_test, generator=g, dtype=D) < torch.sigmoid(X @ w + 0.3)).to(D)[:, None]
    return X[:n], y[:n], X[n:], y[n:]


def newton_fit(X, y, weights, theta0=None):
    """argmin sum_i weights[m, i] * bce_i / n + L2/2 |theta|^2 over theta = (w, b) for every row m of weights
    (``(M, n)``: M problems at once), by Newton's method in plain torch (closed-form gradient and Hessian)."""
    n = X.shape[0]
    Xa = torch.cat([X, torch.ones(n, 1, dtype=D)], 1)
    theta = torch.zeros(weights.shape[0], Xa.shape[1], dtype=D) if theta0 is None else theta0.expand(
        weights.shape[0], -1).clone()
    eye = torch.eye(Xa.shape[1], dtype=D)
    for _ in range(100):
        p = torch.sigmoid(theta @ Xa.T)  # (M, n)
        g = (weights * (p - y[:, 0])) @ Xa / n + L2 * theta
        if float(g.abs().max()) < 1e-13:
            break
        H = torch.einsum("mi,ia,ib->mab", weights * p * (1 - p), Xa, Xa) / n + L2 * eye
        theta = theta - torch.linalg.solve(H, g)
    assert float(g.abs().max()) < 1e-12
    return theta


def per_sample_grads(model, loss_fn, Xs, ys):
    """``(n, P)``: the gradient of each sample's loss alone, one autograd call per sample."""
    rows = []
    for i in range(Xs.shape[0]):
        g = torch.autograd.grad(loss_fn(model(Xs[i:i + 1]), ys[i:i + 1]), list(model.parameters()))
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    return torch.stack(rows)


def dense_scores(model, loss_fn, A, train, test):
    """``-G_test A^{-1} G_train^T`` from per-sample autograd gradients and a dense solve."""
    return -per_sample_grads(model, loss_fn, *test) @ torch.linalg.solve(A, per_sample_grads(model, loss_fn, *train).T)


def test_influence_predicts_leave_one_out_retraining():
    X, y, Xt, yt = logistic_data()
    n = X.shape[0]
    theta = newton_fit(X, y, torch.ones(1, n, dtype=D))[0]
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(theta[:3][None])
        model.bias.copy_(theta[3:])
    loss_fn = nn.BCEWithLogitsLoss()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)  # 64, 64, 64, 8
    scores = hc.influence_scores(model, loss_fn, loader, (Xt, yt), damping=L2, progress=False)
    assert scores.shape == (Xt.shape[0], n)

    def test_losses(th):  # (M, 4) -> (n_test, M)
        z = Xt @ th[:, :3].T + th[:, 3]
        return nn.functional.binary_cross_entropy_with_logits(z, yt.expand_as(z), reduction="none")

    # leave-one-out: the upweighting objective at eps = -1/n (sample i removed, the rest still divided by n)
    loo = newton_fit(X, y, 1 - torch.eye(n, dtype=D), theta)
    actual = test_losses(loo) - test_losses(theta[None])
    predicted = -scores / n
    corr = torch.corrcoef(torch.stack([predicted.flatten(), actual.flatten()]))[0, 1]
    assert corr > 0.99
    # not just correlated: the same size (first order in 1/n, so a few percent apart)
    assert float((predicted - actual).norm() / actual.norm()) < 0.05


@pytest.mark.parametrize("curvature", ["hessian", "ggn"])
def test_influence_matches_dense_formula(curvature):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(9, 3, dtype=D), torch.randint(0, 2, (9,))
    Xt, yt = torch.randn(4, 3, dtype=D), torch.randint(0, 2, (4,))
    loss_fn = nn.CrossEntropyLoss()
    reference = autograd_hessian if curvature == "hessian" else explicit_ggn  # J^T H_L J, written out
    H = reference(model, loss_fn, X, y)
    damping = 0.3 + max(0.0, -float(torch.linalg.eigvalsh(H)[0]))  # positive definite, for CG
    A = H + damping * torch.eye(H.shape[0], dtype=D)

    expected = dense_scores(model, loss_fn, A, (X, y), (Xt, yt))
    for method in ("dense", "cg"):
        got = hc.influence_scores(model, loss_fn, [(X[:5], y[:5]), (X[5:], y[5:])], (Xt, yt), damping=damping,
                                  curvature=curvature, method=method, tol=1e-12, progress=False)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_influence_sum_reduction_and_small_budget_chunks(monkeypatch):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    X, y, Xt, yt = torch.randn(12, 3, dtype=D), torch.randn(12, 1, dtype=D), torch.randn(5, 3, dtype=D), \
        torch.randn(5, 1, dtype=D)
    loss_fn = nn.MSELoss(reduction="sum")
    # reference: per-sample autograd gradients (l_i alone, "sum": no division) and the dense float64 Hessian
    A = autograd_hessian(model, loss_fn, X, y) + torch.eye(21, dtype=D)
    expected = dense_scores(model, loss_fn, A, (X, y), (Xt, yt))
    chunks, solves = [], []  # samples per per-sample-gradient call; test samples per solve + training pass
    spied_gradients, spied_scores = influence.losses_and_gradients, influence._scores

    def gradients(objective, ctx, a=0, b=None):
        chunks.append(b - a)
        return spied_gradients(objective, ctx, a, b)

    def scores(inv, train, G_test):
        solves.append(G_test.shape[1])
        return spied_scores(inv, train, G_test)

    monkeypatch.setattr(influence, "losses_and_gradients", gradients)
    monkeypatch.setattr(influence, "_scores", scores)
    full = hc.influence_scores(model, loss_fn, (X, y), (Xt, yt), damping=1.0, progress=False)
    torch.testing.assert_close(full, expected, rtol=1e-10, atol=1e-12)
    assert (chunks, solves) == ([5, 12], [5])  # the default budget: everything at once
    # tiny budget: test samples solved a few at a time, the training data streamed once per chunk of them
    chunks.clear(), solves.clear()
    small = hc.influence_scores(model, loss_fn, (X, y), (Xt, yt), damping=1.0, progress=False,
                                memory_budget=100_000)
    torch.testing.assert_close(small, expected, rtol=1e-10, atol=1e-12)
    assert len(solves) >= 2 and sum(solves) == 5, solves
    assert max(chunks) < 5 and sum(chunks) == 5 + 12 * len(solves), chunks


def test_influence_refuses_what_it_cannot_answer():
    model = nn.Linear(3, 2).double()
    X, y = torch.randn(8, 3, dtype=D), torch.randint(0, 2, (8,))
    shuffled = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4, shuffle=True)
    with pytest.raises(hc.InvalidInputError, match="shuffle"):
        hc.influence_scores(model, nn.CrossEntropyLoss(), shuffled, (X, y))
    weighted = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0], dtype=D))
    with pytest.raises(hc.InvalidInputError, match="per-sample losses"):
        hc.influence_scores(model, weighted, (X, y), (X, y), damping=0.1)
    with pytest.raises(hc.InvalidInputError, match="train mode"):
        hc.influence_scores(model, nn.CrossEntropyLoss(), (X, y), (X, y), train_mode=True)
    with pytest.raises(hc.InvalidInputError, match="curvature"):
        hc.influence_scores(model, nn.CrossEntropyLoss(), (X, y), (X, y), curvature="fisher")
