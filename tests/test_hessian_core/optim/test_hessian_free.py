"""Martens CG and the HessianFree optimizer (GGN curvature, sub-sampling, warm start, backtracking)."""

import numpy as np
import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.optim import HessianFree
from hessian_core.optim.cg import martens_cg

D = torch.float64


def spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=D)
    return A @ A.T + torch.eye(n, dtype=D), torch.randn(n, generator=g, dtype=D)


def test_martens_cg_solves_and_tracks_the_model():
    A, g = spd(10, 0)
    res = martens_cg(lambda v: A @ v, g, damping=0.5, max_iter=200, tol=1e-14)
    exact = -np.linalg.solve(A.numpy() + 0.5 * np.eye(10), g.numpy())
    np.testing.assert_allclose(res.step.numpy(), exact, rtol=1e-8)
    Ad = A + 0.5 * torch.eye(10, dtype=D)
    for _, x, phi in res.iterates:  # the phi of every saved iterate is the damped quadratic at it
        assert phi == pytest.approx(float(g @ x + 0.5 * x @ Ad @ x), rel=1e-9, abs=1e-12)
    its = [i for i, _, _ in res.iterates]
    assert its[:4] == [1, 2, 3, 4] and its == sorted(its)


def test_martens_cg_warm_start_and_bad_warm_start():
    g_ = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, generator=g_, dtype=D))
    A = Q @ torch.diag(torch.logspace(-2, 2, 60, dtype=D)) @ Q.T  # condition number 1e4
    g = torch.randn(60, generator=g_, dtype=D)
    exact = torch.linalg.solve(A, -g)
    near = exact + 1e-4 * torch.randn(60, generator=g_, dtype=D)  # the previous step's solution, nearly
    cold = martens_cg(lambda v: A @ v, g, max_iter=500, tol=0.0)
    warm = martens_cg(lambda v: A @ v, g, near, max_iter=500, tol=0.0)
    assert cold.reason == warm.reason == "converged"
    assert warm.iterations < cold.iterations  # products, including the one for the initial residual
    torch.testing.assert_close(warm.step, exact, rtol=1e-6, atol=1e-8)
    bad = martens_cg(lambda v: A @ v, g, -10 * exact, max_iter=500, tol=0.0)  # phi(x0) > 0: dropped
    assert bad.iterations == cold.iterations + 1
    torch.testing.assert_close(bad.step, exact, rtol=1e-6, atol=1e-8)


def regression(n=64):
    torch.manual_seed(0)
    X = torch.linspace(-2, 2, n, dtype=D)[:, None]
    Y = torch.sin(2 * X)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).to(D)
    return model, nn.MSELoss(), X, Y


def test_one_undamped_step_on_linear_model_is_least_squares():
    """GGN = Hessian for a linear model with MSE: one HF step with no damping solves least squares."""
    torch.manual_seed(0)
    X, Y = torch.randn(30, 4, dtype=D), torch.randn(30, 2, dtype=D)
    model = nn.Linear(4, 2).to(D)
    loss_fn = nn.MSELoss()
    opt = HessianFree(model.parameters(), damping=0.0, adaptive_damping=False, model=model, loss_fn=loss_fn,
                      curvature_data=(X, Y), max_cg_iters=50, cg_tol=1e-14, backtrack=False,
                      line_search=False)
    opt.step(lambda: loss_fn(model(X), Y))
    A = torch.cat([X, torch.ones(30, 1, dtype=D)], dim=1)
    sol = torch.linalg.lstsq(A, Y).solution
    torch.testing.assert_close(model.weight.detach(), sol[:4].T, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(model.bias.detach(), sol[4], rtol=1e-8, atol=1e-10)


def test_training_with_subsampled_curvature():
    model, loss_fn, X, Y = regression()
    gen = torch.Generator().manual_seed(0)
    drawn = []

    def curvature_batch():  # a fresh random quarter of the gradient batch each step
        idx = torch.randperm(len(X), generator=gen)[:16]
        drawn.append(idx)
        return X[idx], Y[idx]

    opt = HessianFree(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=curvature_batch,
                      max_cg_iters=30)
    model.train()
    losses = [float(opt.step(lambda: loss_fn(model(X), Y))) for _ in range(8)]
    assert model.training  # the model's own mode is left alone
    assert len(drawn) == 8 and all(len(i) == 16 for i in drawn)
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # the line search never accepts an increase
    assert losses[-1] < 0.2 * losses[0]
    st = opt.state[next(model.parameters())]
    assert st["curvature_products"] > 8 and st["cg_solution"].shape == (25,)
    assert set(st["last"]) >= {"cg_iterations", "chosen_iterate", "rho", "damping", "alpha"}


def test_curvature_data_per_step_and_errors():
    model, loss_fn, X, Y = regression()
    opt = HessianFree(model.parameters(), model=model, loss_fn=loss_fn)
    with pytest.raises(hc.InvalidInputError, match="needs curvature data"):
        opt.step(lambda: loss_fn(model(X), Y))
    opt.step(lambda: loss_fn(model(X), Y), curvature_data=(X[:8], Y[:8]))
    with pytest.raises(hc.InvalidInputError, match="needs model= and loss_fn="):
        HessianFree(model.parameters(), curvature="ggn")
    other = torch.zeros(3, dtype=D, requires_grad=True)
    with pytest.raises(hc.InvalidInputError, match="not parameters of model="):
        HessianFree([other], model=model, loss_fn=loss_fn)


def test_hessian_mode_without_model():
    x = torch.tensor([-1.2, 1.0], dtype=D, requires_grad=True)
    opt = HessianFree([x], damping=1e-2)
    losses = [float(opt.step(lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)) for _ in range(80)]
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 1e-8


def test_one_step_is_the_damped_gauss_newton_solve():
    """Nonlinear model: the converged CG step equals -(G + lam I)^{-1} g with G = J^T (2/(N k)) J built from
    an explicit Jacobian (torch.autograd.functional.jacobian), independent of the GGN operator."""
    model, loss_fn, X, Y = regression(n=20)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in params])

    def outputs(theta):
        chunks, offset = {}, 0
        for n, p in zip(names, params):
            chunks[n] = theta[offset:offset + p.numel()].reshape(p.shape)
            offset += p.numel()
        return torch.func.functional_call(model, chunks, (X,)).reshape(-1)

    J = torch.autograd.functional.jacobian(outputs, theta0)  # (N k, P)
    G = J.T @ J * (2.0 / J.shape[0])
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(model(X), Y), params)])
    expected = -torch.linalg.solve(G + 0.1 * torch.eye(len(g), dtype=D), g)
    opt = HessianFree(params, damping=0.1, adaptive_damping=False, model=model, loss_fn=loss_fn,
                      curvature_data=(X, Y), max_cg_iters=200, cg_tol=1e-15, backtrack=False,
                      line_search=False)
    opt.step(lambda: loss_fn(model(X), Y))
    step = torch.cat([p.detach().reshape(-1) for p in params]) - theta0
    torch.testing.assert_close(step, expected, rtol=1e-7, atol=1e-9)


def test_cg_backtracking_picks_the_best_iterate():
    x = torch.zeros(2, dtype=D, requires_grad=True)
    opt = HessianFree([x])
    target = torch.tensor([1.0, 1.0], dtype=D)
    p = [torch.tensor(v, dtype=D) for v in ([0.5, 0.5], [0.9, 1.0], [2.0, 2.0])]
    candidates = [(1, p[0], -1.0), (2, p[1], -2.0), (3, p[2], -3.0)]
    seen = []

    def closure():
        seen.append(x.detach().clone())
        return ((x - target) ** 2).sum()

    i, chosen, _, f = opt._backtrack(closure, torch.zeros(2, dtype=D), candidates, 1.0, True)
    assert i == 2 and torch.equal(chosen, p[1]) and f == pytest.approx(0.01)
    assert len(seen) == 3  # the last, then earlier while better, stopping at the first that is worse


def test_state_dict_round_trip():
    model, loss_fn, X, Y = regression()
    opt = HessianFree(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=(X, Y),
                      max_cg_iters=10)
    opt.step(lambda: loss_fn(model(X), Y))
    again = HessianFree(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=(X, Y))
    again.load_state_dict(opt.state_dict())
    a, b = opt.state[next(model.parameters())], again.state[next(model.parameters())]
    assert a["damping"] == b["damping"] and torch.equal(a["cg_solution"], b["cg_solution"])
