"""Steihaug CG and the NewtonCG optimizer, against dense solves and known minimizers."""

import numpy as np
import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.optim import Newton, NewtonCG
from hessian_core.optim.cg import steihaug_cg

D = torch.float64


def spd(n, seed, cond_shift=1.0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=D)
    return A @ A.T + cond_shift * torch.eye(n, dtype=D), torch.randn(n, generator=g, dtype=D)


def model_value(A, g, s):
    return float(g @ s + 0.5 * s @ A @ s)


def test_steihaug_interior_is_the_newton_solve():
    A, g = spd(8, 0)
    res = steihaug_cg(lambda v: A @ v, g, radius=1e6, rtol=1e-12, max_iter=50)
    np.testing.assert_allclose(res.step.numpy(), -np.linalg.solve(A.numpy(), g.numpy()), rtol=1e-8)
    assert res.reason == "converged"
    assert res.model_change == pytest.approx(model_value(A, g, res.step), rel=1e-10)


def test_steihaug_boundary_beats_cauchy_point():
    A, g = spd(8, 1)
    radius = 0.05
    res = steihaug_cg(lambda v: A @ v, g, radius=radius)
    assert res.reason == "boundary" and float(res.step.norm()) == pytest.approx(radius)
    # Cauchy point: minimizer of the model along -g within the radius (Nocedal & Wright 4.12)
    gAg = float(g @ A @ g)
    tau = min(1.0, float(g.norm()) ** 3 / (radius * gAg))
    cauchy = -tau * radius / float(g.norm()) * g
    assert model_value(A, g, res.step) <= model_value(A, g, cauchy) + 1e-14
    assert res.model_change == pytest.approx(model_value(A, g, res.step), rel=1e-10)


def test_steihaug_negative_curvature_goes_downhill_to_boundary():
    A = torch.diag(torch.tensor([2.0, 1.0, -3.0], dtype=D))
    g = torch.tensor([1.0, 1.0, 0.5], dtype=D)
    res = steihaug_cg(lambda v: A @ v, g, radius=2.0)
    assert res.negative_curvature and res.reason == "negative_curvature"
    assert float(res.step.norm()) == pytest.approx(2.0)
    assert float(g @ res.step) < 0
    assert res.model_change == pytest.approx(model_value(A, g, res.step), rel=1e-10)
    # without a radius: the iterate so far, or -g when the first direction already has negative curvature
    free = steihaug_cg(lambda v: A @ v, g, None)
    assert free.negative_curvature and float(g @ free.step) < 0
    first = steihaug_cg(lambda v: -v, g, None)
    torch.testing.assert_close(first.step, -g)


@pytest.mark.parametrize("trust_region,steps", [(True, 40), (False, 80)])
def test_rosenbrock_converges(trust_region, steps):
    # (line search is slower in the curved valley: negative curvature truncates CG to a Cauchy-like step)
    x = torch.tensor([-1.2, 1.0], dtype=D, requires_grad=True)
    opt = NewtonCG([x], trust_region=trust_region)
    losses = [float(opt.step(lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)) for _ in range(steps)]
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # every accepted step lowers the loss
    torch.testing.assert_close(x.detach(), torch.ones(2, dtype=D), rtol=0, atol=1e-6)


def test_logistic_regression_matches_dense_newton():
    torch.manual_seed(0)
    X = torch.randn(40, 3, dtype=D)
    y = (X @ torch.tensor([1.0, -2.0, 0.5], dtype=D) + 0.3 * torch.randn(40, dtype=D) > 0).to(D)
    results = []
    for make in (lambda p: Newton(p), lambda p: NewtonCG(p, radius=10.0, cg_rtol=1e-12)):
        torch.manual_seed(1)
        model = nn.Linear(3, 1).to(D)
        opt = make(list(model.parameters()))

        def closure(model=model):
            return nn.functional.binary_cross_entropy_with_logits(model(X)[:, 0], y)

        for _ in range(25):
            opt.step(closure)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        g = torch.autograd.grad(closure(), list(model.parameters()))
        assert max(float(t.abs().max()) for t in g) < 1e-10  # a stationary point
    torch.testing.assert_close(results[0], results[1], rtol=1e-8, atol=1e-10)


def test_trust_radius_adapts_and_counts():
    x = torch.tensor([3.0, -2.0], dtype=D, requires_grad=True)
    opt = NewtonCG([x], radius=0.1)
    opt.step(lambda: (x ** 2).sum())  # quadratic: rho = 1 on the boundary, radius doubles
    st = opt.state[x]
    assert st["radius"] == pytest.approx(0.2)
    assert st["last"]["accepted"] and st["last"]["cg_reason"] == "boundary"
    assert st["closure_evals"] == 2 and st["hvps"] >= 2


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_preconditioned_trust_region_adapts_its_radius_in_the_preconditioner_norm(scale):
    # M^-1 = scale * I: |s|_M = |s| / sqrt(scale). A boundary step whose gain ratio is 1 (a quadratic) must
    # double the radius whatever the scale; measured in the Euclidean norm, scale = 0.01 never grows it (the
    # step looks 10x inside) and scale = 100 doubles it from interior steps.
    x = torch.full((3,), 50.0, dtype=D, requires_grad=True)
    opt = NewtonCG([x], radius=0.5, preconditioner=scale * torch.eye(3, dtype=D))
    radii = []
    for _ in range(3):
        opt.step(lambda: 0.5 * (x * x).sum())
        last = opt.state[x]["last"]
        assert last["accepted"] and last["cg_reason"] == "boundary"
        radii.append(last["radius"])
    assert radii == [1.0, 2.0, 4.0]
    # every step ended on the boundary of the radius it was taken with, in the M norm
    assert float((50.0 - x.detach()).norm()) / scale ** 0.5 == pytest.approx(0.5 + 1.0 + 2.0, rel=1e-10)


def test_a_curvature_operator_replaces_the_hessian():
    """curvature=: Gauss-Newton-CG with the GGN operator. The step solves (G + damping I) d = -g with G built
    independently as J^T H_L J from autograd Jacobians (G != H on this tanh net), the loss and gradient still
    from the closure; a wrong operator size is refused by name."""
    torch.manual_seed(3)
    Dt = torch.float64
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(Dt)
    X, Y = torch.randn(20, 2, dtype=Dt), torch.randn(20, 1, dtype=Dt)
    loss_fn = nn.MSELoss()
    params = list(model.parameters())
    x0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    shapes = [p.shape for p in params]

    def outputs(theta):
        tensors, a = {}, 0
        for (name, p), shape in zip(model.named_parameters(), shapes):
            tensors[name] = theta[a:a + p.numel()].reshape(shape)
            a += p.numel()
        return torch.func.functional_call(model, tensors, (X,)).reshape(-1)

    J = torch.autograd.functional.jacobian(outputs, x0)  # (N, P)
    G = J.T @ (2 / 20 * torch.eye(20, dtype=Dt)) @ J  # MSE mean over 20 scalars: H_L = 2/N I
    g = torch.autograd.grad(loss_fn(model(X), Y), params)
    g = torch.cat([t.reshape(-1) for t in g])
    H = torch.autograd.functional.hessian(lambda t: loss_fn(outputs(t).reshape(-1, 1), Y), x0)
    assert not torch.allclose(G, H, atol=1e-6)
    damping = 1e-3
    d = torch.linalg.solve(G + damping * torch.eye(len(x0), dtype=Dt), -g)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(X), Y)
        loss.backward()
        return loss

    opt = hc.optim.NewtonCG(params, damping=damping, trust_region=False, cg_rtol=1e-13, max_cg_iters=100,
                            curvature=hc.GGNOperator(model, loss_fn, (X, Y)))
    opt.step(closure)
    s = torch.cat([p.detach().reshape(-1) for p in params]) - x0
    t = float(s @ d / (d @ d))  # the line search may have halved the step
    assert min(abs(t - 0.5**k) for k in range(11)) < 1e-8  # the full step or one of its halvings
    torch.testing.assert_close(s, t * d, rtol=1e-8, atol=1e-12)
    with pytest.raises(hc.InvalidInputError, match="size P = 13"):
        bad = hc.optim.NewtonCG(params, curvature=hc.DenseOperator(torch.eye(5, dtype=Dt)))
        bad.step(closure)
    with pytest.raises(hc.InvalidInputError, match="curvature must be a LinearOperator"):
        hc.optim.NewtonCG(params, curvature=torch.eye(13, dtype=Dt))
    # the optimizer's parameters in another order than the operator's (same size): refused, not misapplied
    reordered = [params[1], params[0], params[2], params[3]]
    with pytest.raises(hc.InvalidInputError, match="another order"):
        hc.optim.NewtonCG(reordered, curvature=hc.GGNOperator(model, loss_fn, (X, Y))).step(closure)
