"""Small bad inputs reach one shared validation (hessian_core.arguments and the checks built on it) and
come back as errors that name the argument, never as raw PyTorch errors or silently accepted values."""

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.optim import HessianFree, Newton, NewtonCG

D = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    return model, nn.MSELoss(), (torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D))


@pytest.mark.parametrize("budget", [float("inf"), True, float("nan"), -1, 0.5, "a lot"])
def test_memory_budget_must_be_a_size(budget):
    model, loss_fn, data = problem()
    with pytest.raises(hc.InvalidInputError, match="memory_budget"):
        hc.hessian(model, loss_fn, data, memory_budget=budget)
    with pytest.raises(hc.InvalidInputError, match="memory_budget"):
        Newton(model.parameters(), memory_budget=budget).step(lambda: loss_fn(model(data[0]), data[1]))


def test_numpy_data_says_pass_tensors():
    model, loss_fn, (X, Y) = problem()
    with pytest.raises(hc.InvalidInputError, match="pass torch tensors"):
        hc.hessian(model, loss_fn, (X.numpy(), Y.numpy()))
    with pytest.raises(hc.InvalidInputError, match="pass torch tensors"):
        hc.hessian(model, loss_fn, (X, Y.numpy()))


@pytest.mark.parametrize("v, match", [
    (torch.ones(26, dtype=torch.complex128), "complex"),
    (torch.full((26,), float("nan"), dtype=D), "v has NaN or Inf"),
    (torch.empty(26, device="meta"), "meta device"),
    (torch.ones(26, dtype=torch.bool), "bool"),
])
def test_bad_vectors_are_named(v, match):
    """A complex v lost its imaginary part, a NaN v was blamed on the data, a meta v raised a raw error."""
    model, loss_fn, data = problem()
    with pytest.raises(hc.InvalidInputError, match=match):
        hc.hvp(model, loss_fn, data, v)
    with pytest.raises(hc.InvalidInputError, match=match):
        hc.HessianOperator(model, loss_fn, data).matvec(v)


@pytest.mark.parametrize("call, match", [
    (lambda op: hc.eigsh(op, k=1, max_matvecs=-1), "max_matvecs"),
    (lambda op: hc.eigsh(op, k=True), "k must"),
    (lambda op: hc.eigsh(op, k=1, which="top"), "which"),
    (lambda op: hc.eigsh(op, k=1, tol=float("nan")), "tol"),
    (lambda op: hc.trace(op, num_matvecs=-3), "num_matvecs"),
    (lambda op: hc.trace(op, method="hutch+"), "method"),
    (lambda op: hc.diagonal_estimate(op, num_matvecs=2.5), "num_matvecs"),
    (lambda op: hc.spectral_density(op, num_probes=0), "num_probes"),
    (lambda op: hc.spectral_density(op, sigma=-1.0), "sigma"),
    (lambda op: hc.spectral_density(op, log="yes"), "log"),
    (lambda op: hc.condition_number(op, rtol=2.0), "rtol"),
    (lambda op: hc.logdet(op, check=1), "check"),
    (lambda op: hc.trace(op, seed=1.5), "seed"),
])
def test_spectral_arguments(call, match):
    model, loss_fn, data = problem()
    with pytest.raises(hc.InvalidInputError, match=match):
        call(hc.HessianOperator(model, loss_fn, data))


@pytest.mark.parametrize("make, match", [
    (lambda p: Newton(p, lr=True), "lr"),
    (lambda p: Newton(p, damping=-1.0), "damping"),
    (lambda p: Newton(p, max_trials=0), "max_trials"),
    (lambda p: Newton(p, line_search="no"), "line_search"),
    (lambda p: NewtonCG(p, radius=float("inf")), "radius"),
    (lambda p: NewtonCG(p, min_radius=10.0), "min_radius"),
    (lambda p: NewtonCG(p, max_cg_iters=-1), "max_cg_iters"),
    (lambda p: NewtonCG(p, eta=0.5), "eta"),
    (lambda p: NewtonCG(p, minibatch=1), "minibatch"),
    (lambda p: HessianFree(p, cg_decay=1.5), "cg_decay"),
    (lambda p: HessianFree(p, max_cg_iters=0), "max_cg_iters"),
    (lambda p: HessianFree(p, curvature="fisher"), "curvature"),
    (lambda p: HessianFree(p, min_cg_iters=300), "min_cg_iters"),
])
def test_optimizer_arguments(make, match):
    model, _, _ = problem()
    with pytest.raises(hc.InvalidInputError, match=match):
        make(list(model.parameters()))


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0}, "lr"), ({"damping": float("nan")}, "damping"), ({"method": "lu"}, "method"),
    ({"max_cg_iters": -2, "method": "cg"}, "max_cg_iters"), ({"apply": "yes"}, "apply"),
    ({"radius": -1.0, "method": "cg"}, "radius"),
])
def test_newton_step_arguments(kwargs, match):
    model, loss_fn, data = problem()
    with pytest.raises(hc.InvalidInputError, match=match):
        hc.newton_step(model, loss_fn, data, **kwargs)


def test_newton_with_model_needs_both_model_and_loss():
    model, loss_fn, data = problem()
    with pytest.raises(hc.InvalidInputError, match="model= and loss_fn= together"):
        Newton(model.parameters(), model=model)
    with pytest.raises(hc.InvalidInputError, match="needs curvature data"):
        Newton(model.parameters(), model=model, loss_fn=loss_fn).step(lambda: loss_fn(model(data[0]), data[1]))
