"""Dense Newton: solves against numpy, Levenberg-Marquardt damping, saddle-free, memory budget, inputs."""

import numpy as np
import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.optim import Newton
from hessian_core.optim.dense_solve import newton_direction

D = torch.float64


def rosenbrock(p):
    return (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2


def random_sym(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=D)
    return (A + A.T) / 2 + shift * torch.eye(n, dtype=D), torch.randn(n, generator=g, dtype=D)


def test_direction_positive_definite_is_the_solve():
    H, g = random_sym(6, 0, shift=8.0)
    d = newton_direction(H, g, damping=0.5)
    assert d.method == "cholesky"
    np.testing.assert_allclose(d.direction.numpy(), -np.linalg.solve(H.numpy() + 0.5 * np.eye(6), g.numpy()),
                               rtol=1e-12)


def test_direction_indefinite_is_descent_and_saddle_free_is_abs():
    H, g = random_sym(6, 1)
    lam, V = np.linalg.eigh(H.numpy())
    assert lam.min() < 0 < lam.max()  # genuinely indefinite
    shifted = newton_direction(H, g)
    assert shifted.method == "shifted" and float(g @ shifted.direction) < 0
    assert shifted.min_eigenvalue == pytest.approx(lam.min())
    sf = newton_direction(H, g, damping=0.1, saddle_free=True)
    expected = -V @ ((V.T @ g.numpy()) / (np.abs(lam) + 0.1))
    np.testing.assert_allclose(sf.direction.numpy(), expected, rtol=1e-10)
    assert float(g @ sf.direction) < 0


def test_rosenbrock_with_levenberg_marquardt():
    x = torch.tensor([-1.2, 1.0], dtype=D, requires_grad=True)
    opt = Newton([x], adaptive_damping=True, damping=1e-3)
    losses = [float(opt.step(lambda: rosenbrock(x))) for _ in range(40)]
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # LM never accepts an increase
    torch.testing.assert_close(x.detach(), torch.ones(2, dtype=D), rtol=0, atol=1e-8)
    st = opt.state[x]
    assert st["step"] == 40 and "damping" in st


def test_saddle_free_escapes_saddle_direction():
    """f = x^2 - y^2 + y^4/4 near the saddle: plain Newton goes to the saddle (0, 0), saddle-free away."""
    def f(p):
        return p[0] ** 2 - p[1] ** 2 + p[1] ** 4 / 4

    p = torch.tensor([0.5, 0.1], dtype=D, requires_grad=True)
    opt = Newton([p], saddle_free=True)
    for _ in range(30):
        opt.step(lambda: f(p))
    torch.testing.assert_close(p.detach().abs(), torch.tensor([0.0, 2 ** 0.5], dtype=D), rtol=0, atol=1e-8)
    assert opt.state[p]["last"]["method"] == "saddle-free"


def test_memory_budget_refusal_leaves_parameters():
    model = nn.Linear(30, 10).to(D)
    before = [t.detach().clone() for t in model.parameters()]
    opt = Newton(model.parameters(), memory_budget="100KB")
    X = torch.randn(4, 30, dtype=D)
    with pytest.raises(hc.MemoryBudgetError, match=r"310 x 310 Hessian.*NewtonCG or HessianFree"):
        opt.step(lambda: model(X).square().mean())
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)


def test_bad_inputs_are_named():
    x = torch.ones(2, dtype=D, requires_grad=True)
    y = torch.ones(2, dtype=D, requires_grad=True)
    with pytest.raises(hc.InvalidInputError, match="parameter groups"):
        Newton([{"params": [x]}, {"params": [y], "lr": 0.5}])
    with pytest.raises(hc.InvalidInputError, match="needs a closure"):
        Newton([x]).step()
    with pytest.raises(hc.InvalidInputError, match="lr must be > 0"):
        Newton([x], lr=0)
    with pytest.raises(hc.InvalidInputError, match="dtype"):
        Newton([x, torch.ones(2, dtype=torch.float32, requires_grad=True)])
    with pytest.raises(hc.InvalidInputError, match="loss.item"):
        Newton([x]).step(lambda: 1.0)


def test_large_indefinite_direction_without_eigh(monkeypatch):
    """Above EIGH_UP_TO the smallest eigenvalue comes from Lanczos on the dense matrix and Cholesky
    certifies the shifted matrix: the same kind of direction as with the full eigendecomposition."""
    from hessian_core.optim import dense_solve

    H, g = random_sym(80, 3)
    lam = np.linalg.eigvalsh(H.numpy())
    exact = newton_direction(H, g)
    monkeypatch.setattr(dense_solve, "EIGH_UP_TO", 10)
    approx = newton_direction(H, g)
    assert approx.method == exact.method == "shifted"
    # a rough estimate (a Ritz value: an upper bound of lambda_min, its residual at most 10% of its size) ...
    assert lam.min() - 1e-12 <= approx.min_eigenvalue < 0
    assert approx.min_eigenvalue == pytest.approx(lam.min(), rel=0.25)
    # ... is enough: the shift takes twice its size and Cholesky certifies the shifted matrix
    assert float(g @ approx.direction) < 0
    shifted = H.numpy() + approx.shift * np.eye(80)
    assert np.linalg.eigvalsh(shifted).min() > 0
    np.testing.assert_allclose(approx.direction.numpy(), -np.linalg.solve(shifted, g.numpy()), rtol=1e-8)


def test_model_based_hessian_gives_the_closure_step():
    """Newton(model=, loss_fn=, curvature_data=) builds H with the core's dense paths; with the closure's
    own data it takes exactly the closure-only step."""
    torch.manual_seed(0)
    X, y = torch.randn(30, 4, dtype=D), torch.randint(0, 3, (30,))
    loss_fn = nn.CrossEntropyLoss()
    steps = []
    for model_based in (False, True):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
        extra = dict(model=model, loss_fn=loss_fn, curvature_data=(X, y)) if model_based else {}
        opt = Newton(model.parameters(), damping=1e-3, **extra)
        for _ in range(2):
            opt.step(lambda model=model: loss_fn(model(X), y))
        steps.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        assert opt.state[next(model.parameters())]["last"]["accepted"]
    torch.testing.assert_close(steps[1], steps[0], rtol=1e-10, atol=1e-12)


def test_model_based_hessian_on_a_subsample():
    """Sub-sampled Newton: the Hessian of a quarter of the data (a callable drawing it), the gradient of all."""
    torch.manual_seed(0)
    X, Y = torch.randn(40, 3, dtype=D), torch.randn(40, 1, dtype=D)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).to(D)
    loss_fn = nn.MSELoss()
    drawn = []

    def quarter():
        idx = torch.randperm(40)[:10]
        drawn.append(idx)
        return X[idx], Y[idx]

    opt = Newton(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=quarter)
    losses = [float(opt.step(lambda: loss_fn(model(X), Y))) for _ in range(5)]
    assert all(b <= a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0]
    assert len(drawn) == 5  # a fresh sub-sample each step
