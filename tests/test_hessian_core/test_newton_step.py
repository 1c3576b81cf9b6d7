"""hessian_core.newton_step: one Newton step on (model, loss_fn, data), against float64 autograd."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)
    return model, nn.MSELoss(), X, Y


def flat_grad(model, loss_fn, X, Y):
    params = list(model.parameters())
    return torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(model(X), Y), params)])


def test_dense_step_is_the_damped_solve_and_model_untouched():
    model, loss_fn, X, Y = problem()
    before = [p.detach().clone() for p in model.parameters()]
    res = hc.newton_step(model, loss_fn, (X, Y), lr=0.5, damping=2.0)
    H = autograd_hessian(model, loss_fn, X, Y)
    g = flat_grad(model, loss_fn, X, Y)
    A = H + 2.0 * torch.eye(H.shape[0], dtype=D)
    assert torch.linalg.eigvalsh(A).min() > 0
    expected = -0.5 * torch.linalg.solve(A, g)
    torch.testing.assert_close(res.flat_step, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.grad, g, rtol=1e-12, atol=1e-14)
    assert res.info["method"] == "cholesky" and not res.applied
    quadratic = float(g @ expected + 0.5 * expected @ H @ expected)
    assert res.predicted_change == pytest.approx(quadratic, rel=1e-10)
    assert res.names == [n for n, _ in model.named_parameters()]
    for b, p, s, new in zip(before, model.parameters(), res.step, res.params):
        assert torch.equal(b, p.detach()) and p.grad is None  # model untouched
        torch.testing.assert_close(new, b + s)


def test_cg_step_matches_dense_and_apply_writes_params():
    model, loss_fn, X, Y = problem()
    dense = hc.newton_step(model, loss_fn, (X, Y), damping=1.0)
    cg = hc.newton_step(model, loss_fn, (X, Y), damping=1.0, method="cg", cg_rtol=1e-12, max_cg_iters=200)
    torch.testing.assert_close(cg.flat_step, dense.flat_step, rtol=1e-8, atol=1e-10)
    res = hc.newton_step(model, loss_fn, (X, Y), damping=1.0, apply=True)
    assert res.applied
    for p, new in zip(model.parameters(), res.params):
        assert torch.equal(p.detach(), new)


def test_unequal_batches_are_normalized_globally():
    model, loss_fn, X, Y = problem()
    batches = [(X[:4], Y[:4]), (X[4:8], Y[4:8]), (X[8:], Y[8:])]  # 4, 4, 2 samples
    one = hc.newton_step(model, loss_fn, (X, Y), damping=0.5)
    many = hc.newton_step(model, loss_fn, batches, damping=0.5)
    torch.testing.assert_close(many.flat_step, one.flat_step, rtol=1e-10, atol=1e-12)
    assert many.loss == pytest.approx(float(loss_fn(model(X), Y)))


def test_subset_of_parameters_and_errors():
    model, loss_fn, X, Y = problem()
    res = hc.newton_step(model, loss_fn, (X, Y), params=["2.weight", "2.bias"])
    H = autograd_hessian(model, loss_fn, X, Y, names={"2.weight", "2.bias"})
    g = flat_grad(model, loss_fn, X, Y)[-10:]
    torch.testing.assert_close(res.flat_step, -torch.linalg.solve(H, g), rtol=1e-9, atol=1e-11)
    with pytest.raises(hc.InvalidInputError, match="method"):
        hc.newton_step(model, loss_fn, (X, Y), method="lbfgs")
    with pytest.raises(hc.MemoryBudgetError):
        hc.newton_step(model, loss_fn, (X, Y), memory_budget=100)
    bad = X.clone()
    bad[0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(hc.NonFiniteError):
        hc.newton_step(model, loss_fn, (bad, Y), apply=True)
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p.detach())
