"""Guarantees of the whole family: no ascent step at indefinite Hessians; non-finite values raise a clear
error and leave the parameters exactly as they were before the failed step; only the parameters change."""

import math

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc
from hessian_core.optim import HessianFree, Newton, NewtonCG

D = torch.float64

OPTIMIZERS = {
    "newton": lambda p: Newton(p),
    "newton_lm": lambda p: Newton(p, adaptive_damping=True),
    "newton_saddle_free": lambda p: Newton(p, saddle_free=True),
    "newton_cg_tr": lambda p: NewtonCG(p),
    "newton_cg_ls": lambda p: NewtonCG(p, trust_region=False),
    "hessian_free_hessian": lambda p: HessianFree(p, damping=0.0, curvature="hessian"),
}


def indefinite_problem():
    """A tanh MLP at a point where its Hessian has eigenvalues of both signs and where the plain Newton
    step -H^{-1} g goes uphill (both checked in the test)."""
    torch.manual_seed(19)
    model = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(D)
    X, Y = torch.randn(12, 2, dtype=D), torch.randn(12, 1, dtype=D)
    return model, nn.MSELoss(), X, Y


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_indefinite_hessian_never_gives_ascent(name):
    model, loss_fn, X, Y = indefinite_problem()
    evals = torch.linalg.eigvalsh(autograd_hessian(model, loss_fn, X, Y))
    assert evals.min() < -1e-3 and evals.max() > 1e-3
    params = list(model.parameters())
    x0 = torch.cat([p.detach().reshape(-1) for p in params])
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(model(X), Y), params)])
    H = autograd_hessian(model, loss_fn, X, Y)
    assert float(g @ torch.linalg.solve(H, g)) < 0  # the unmodified Newton step would be an ascent step
    opt = OPTIMIZERS[name](params)
    f0 = float(opt.step(lambda: loss_fn(model(X), Y)))
    s = torch.cat([p.detach().reshape(-1) for p in params]) - x0
    assert float(s.norm()) > 0 and float(g @ s) < 0  # a descent direction
    if name not in ("newton", "newton_saddle_free"):  # those with a damping / radius / line search test it
        assert float(loss_fn(model(X), Y)) < f0


def test_newton_step_functional_descent_at_indefinite():
    model, loss_fn, X, Y = indefinite_problem()
    for method in ("dense", "cg"):
        res = hc.newton_step(model, loss_fn, (X, Y), method=method)
        assert float(res.grad @ res.flat_step) < 0


def nan_closure_after(model, X, Y, calls_ok):
    """A closure whose loss turns NaN from call number ``calls_ok + 1`` on."""
    count = [0]

    def closure():
        count[0] += 1
        out = nn.functional.mse_loss(model(X), Y)
        return out * math.nan if count[0] > calls_ok else out

    return closure


def snapshot(model):
    return [t.detach().clone() for t in model.parameters()]


def assert_unchanged(before, model):
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b.detach())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_nonfinite_loss_raises_and_keeps_parameters(name):
    model, _, X, Y = indefinite_problem()
    opt = OPTIMIZERS[name](list(model.parameters()))
    before = snapshot(model)
    with pytest.raises(hc.NonFiniteError, match="NaN or Inf"):
        opt.step(nan_closure_after(model, X, Y, 0))
    assert_unchanged(before, model)


def test_nonfinite_hessian_raises_and_keeps_parameters():
    """|x|^1.5 at x = 0: finite loss and gradient, infinite curvature."""
    for make in (lambda p: Newton(p), lambda p: NewtonCG(p), lambda p: HessianFree(p)):
        x = torch.tensor([0.0, 1.0], dtype=D, requires_grad=True)
        opt = make([x])
        with pytest.raises(hc.NonFiniteError):
            opt.step(lambda x=x: (x.abs() ** 1.5).sum())
        assert torch.equal(x.detach(), torch.tensor([0.0, 1.0], dtype=D))


def test_failure_after_a_rejected_trial_restores_the_start():
    """NewtonCG: NaN at the trial point (rejected, parameters restored), then NaN when the closure is
    re-evaluated at the start: the error leaves the parameters at the start, not at the trial."""
    model, _, X, Y = indefinite_problem()
    opt = NewtonCG(list(model.parameters()))
    before = snapshot(model)
    with pytest.raises(hc.NonFiniteError):
        opt.step(nan_closure_after(model, X, Y, 1))
    assert_unchanged(before, model)


def test_nonfinite_curvature_data_in_hessian_free():
    model, loss_fn, X, Y = indefinite_problem()
    bad = X.clone()
    bad[0, 0] = math.inf
    opt = HessianFree(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=(bad, Y))
    before = snapshot(model)
    with pytest.raises(hc.NonFiniteError):
        opt.step(lambda: loss_fn(model(X), Y))
    assert_unchanged(before, model)


def test_rejected_trials_with_lm_damping_are_not_errors():
    """A NaN at a trial point is a rejected step for Levenberg-Marquardt (damping goes up), not a failure.
    f = x - 2 log x from x = 10: the full Newton step (-0.8 / 0.02 = -40) lands at x = -30, outside the
    domain."""
    x = torch.tensor([10.0], dtype=D, requires_grad=True)
    opt = Newton([x], adaptive_damping=True)
    f0 = float(opt.step(lambda: (x - 2 * torch.log(x)).sum()))
    last = opt.state[x]["last"]
    assert last["accepted"] and last["trials"] > 1 and last["damping"] > 0
    assert 0 < float(x) < 10 and float(x - 2 * torch.log(x)) < f0


def test_only_the_parameters_change():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).to(D)
    X, Y = torch.randn(16, 3, dtype=D), torch.randn(16, 1, dtype=D)
    model.eval()
    frozen = model[0].bias
    frozen.requires_grad_(False)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    kept = frozen.detach().clone()
    opt = NewtonCG([p for p in model.parameters() if p.requires_grad])
    opt.step(lambda: nn.functional.mse_loss(model(X), Y))
    assert torch.equal(frozen.detach(), kept) and not model.training
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n])


@pytest.mark.parametrize("make", [lambda p: Newton(p, adaptive_damping=True), lambda p: NewtonCG(p),
                                  lambda p: HessianFree(p, curvature="hessian")])
def test_closure_error_at_a_trial_point_restores_the_start(make):
    model, _, X, Y = indefinite_problem()
    count = [0]

    def closure():
        count[0] += 1
        if count[0] == 2:  # the first trial point
            raise RuntimeError("data loader died")
        return nn.functional.mse_loss(model(X), Y)

    opt = make(list(model.parameters()))
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="data loader died"):
        opt.step(closure)
    assert_unchanged(before, model)
