"""KFAC operators in the rest of hessian_core, unchanged: spectra, scipy, and as preconditioners of CG,
Newton-CG and Hessian-free."""

import math

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch
from torch import nn

import hessian_core as hc
from hessian_core import InvalidInputError
from hessian_core.optim.cg import martens_cg, steihaug_cg

D = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X, y = torch.randn(16, 4, dtype=D), torch.randint(0, 3, (16,))
    return model, nn.CrossEntropyLoss(), X, y


def test_spectra_trace_and_scipy_work_on_kfac_unchanged():
    model, loss, X, y = problem()
    op = hc.KFACOperator(model, loss, (X, y))
    K = op.to_dense()
    ev = torch.linalg.eigvalsh(K)
    top = hc.eigsh(op, k=3, which="LA")
    assert torch.allclose(top.values.sort().values, ev[-3:], rtol=1e-8)
    assert torch.allclose(op.eigenvalues(), ev, atol=1e-13, rtol=1e-12)
    assert math.isclose(op.trace(), float(K.trace()), rel_tol=1e-13)
    est = hc.trace(op, num_matvecs=op.size, method="hutch++", seed=0)
    assert abs(float(est) - op.trace()) < 0.2 * op.trace()
    w = sla.eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    assert np.allclose(np.sort(w), ev[-2:].numpy(), rtol=1e-8)


def test_kfac_inverse_as_a_scipy_cg_preconditioner():
    # where KFAC is the GGN (one linear layer, MSE) its damped inverse is the ideal preconditioner: one iteration;
    # elsewhere CG still converges to the same solution (KFAC is no guarantee of fewer iterations: it drops the
    # blocks between layers, see docs/kfac.md)
    damping = 1e-2
    torch.manual_seed(4)
    linear = nn.Linear(12, 3).double()
    X, Y = torch.randn(30, 12, dtype=D), torch.randn(30, 3, dtype=D)
    model, loss, Xc, y = problem()
    for net, lossf, data in ((linear, nn.MSELoss(), (X, Y)), (model, loss, (Xc, y))):
        G = hc.GGNOperator(net, lossf, data).to_dense().numpy()
        G += damping * np.eye(G.shape[0])
        b = np.random.default_rng(0).standard_normal(G.shape[0])
        M = hc.KFACOperator(net, lossf, data, separate_bias=False).inverse(damping).to_scipy()
        iterations = []
        x, info = sla.cg(G, b, M=M, rtol=1e-10, maxiter=500, callback=iterations.append)
        assert info == 0 and np.allclose(x, np.linalg.solve(G, b), atol=1e-8, rtol=1e-12)
        if net is linear:
            assert len(iterations) == 1


def test_preconditioned_cg_solves_and_keeps_the_trust_region_in_the_preconditioner_norm():
    torch.manual_seed(1)
    Q = torch.linalg.qr(torch.randn(8, 8, dtype=D)).Q
    A = Q @ torch.diag(torch.logspace(-2, 2, 8, dtype=D)) @ Q.T
    g = torch.randn(8, dtype=D)
    exact = -torch.linalg.solve(A, g)
    Minv = torch.linalg.inv(A)
    res = steihaug_cg(lambda v: A @ v, g, None, rtol=1e-12, precondition=lambda r: Minv @ r)
    assert res.iterations == 1 and torch.allclose(res.step, exact, atol=1e-10, rtol=1e-12)  # the ideal preconditioner
    B = torch.diag(torch.rand(8, dtype=D) + 0.5)  # another SPD preconditioner M^-1 = B
    res = steihaug_cg(lambda v: A @ v, g, None, rtol=1e-12, max_iter=50, precondition=lambda r: B @ r)
    assert torch.allclose(res.step, exact, atol=1e-8, rtol=1e-12)
    assert math.isclose(res.model_change, float(g @ res.step + 0.5 * res.step @ A @ res.step), rel_tol=1e-10)
    # a radius: the step ends on the boundary |s|_M = radius, M = B^-1
    res = steihaug_cg(lambda v: A @ v, g, 0.1, precondition=lambda r: B @ r)
    assert res.reason == "boundary"
    s = res.step
    assert math.isclose(float(s @ torch.linalg.solve(B, s)) ** 0.5, 0.1, rel_tol=1e-10)
    # negative curvature: to the boundary in the same norm
    Aneg = A - 0.5 * torch.eye(8, dtype=D)
    res = steihaug_cg(lambda v: Aneg @ v, g, 0.5, precondition=lambda r: B @ r)
    assert res.negative_curvature or res.reason in ("boundary", "converged")
    if res.reason != "converged":
        assert math.isclose(float(res.step @ torch.linalg.solve(B, res.step)) ** 0.5, 0.5, rel_tol=1e-10)
    res = martens_cg(lambda v: A @ v, g, max_iter=50, tol=0.0, precondition=lambda r: B @ r)
    assert torch.allclose(res.step, exact, atol=1e-8, rtol=1e-12)
    res = martens_cg(lambda v: A @ v, g, max_iter=50, tol=0.0, precondition=lambda r: Minv @ r)
    assert res.iterations == 1 and res.reason == "converged"
    with pytest.raises(InvalidInputError, match="not positive definite"):
        steihaug_cg(lambda v: A @ v, g, None, precondition=lambda r: -r)


def test_hessian_free_and_newton_cg_take_a_kfac_preconditioner():
    # linear regression: KFAC is the exact GGN (= Hessian), so the preconditioned CG needs one iteration
    torch.manual_seed(2)
    model = nn.Linear(5, 2).double()
    X, Y = torch.randn(20, 5, dtype=D), torch.randn(20, 2, dtype=D)
    mse = nn.MSELoss()

    def closure():
        return mse(model(X), Y)

    def kfac_inverse(damping):
        return hc.KFACOperator(model, mse, (X, Y), separate_bias=False).inverse(damping)

    hf = hc.optim.HessianFree(model.parameters(), damping=1e-3, model=model, loss_fn=mse, curvature_data=(X, Y),
                              preconditioner=kfac_inverse, adaptive_damping=False)
    plain = nn.Linear(5, 2).double()
    plain.load_state_dict(model.state_dict())
    loss0 = closure().item()
    hf.step(closure)
    assert hf.state[model.weight]["last"]["cg_iterations"] == 1
    assert closure().item() < loss0
    hf_plain = hc.optim.HessianFree(plain.parameters(), damping=1e-3, model=plain, loss_fn=mse,
                                    curvature_data=(X, Y), adaptive_damping=False)
    hf_plain.step(lambda: mse(plain(X), Y))
    assert hf_plain.state[plain.weight]["last"]["cg_iterations"] > 1

    torch.manual_seed(3)
    net = nn.Linear(5, 2).double()
    fixed = hc.KFACOperator(net, mse, (X, Y), separate_bias=False).inverse(0.0)
    opt = hc.optim.NewtonCG(net.parameters(), trust_region=False, preconditioner=fixed, cg_rtol=1e-10)
    before = mse(net(X), Y).item()
    opt.step(lambda: mse(net(X), Y))
    assert opt.state[net.weight]["last"]["cg_iterations"] == 1
    lstsq = torch.linalg.lstsq(torch.cat([X, torch.ones(20, 1, dtype=D)], 1), Y).solution
    # one Newton step solves least squares
    assert torch.allclose(net.weight.detach(), lstsq[:5].T, atol=1e-6, rtol=1e-12)
    assert mse(net(X), Y).item() < before
    with pytest.raises(InvalidInputError, match="size"):
        hc.optim.NewtonCG(net.parameters(), preconditioner=torch.eye(3, dtype=D)).step(lambda: mse(net(X), Y))
