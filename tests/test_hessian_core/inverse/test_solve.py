"""hc.solve and InverseOperator against dense float64 solves (torch.linalg.solve of autograd Hessians)."""

import warnings
from collections import OrderedDict

import pytest
import torch
from reference import autograd_hessian, spectrum_matrix
from torch import nn

import hessian_core as hc

D = torch.float64


def spd(n, seed=0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=D)
    return A @ A.T / n + shift * torch.eye(n, dtype=D), torch.randn(n, 3, generator=g, dtype=D)


@pytest.mark.parametrize("method", ["cg", "minres", "dense", "auto"])
@pytest.mark.parametrize("preconditioner", [None, "diagonal"])
def test_solve_matches_dense_solve(method, preconditioner):
    A, B = spd(40)
    damping = 0.25
    ref = torch.linalg.solve(A + damping * torch.eye(40, dtype=D), B)
    if method == "dense" and preconditioner is not None:
        with pytest.raises(hc.InvalidInputError, match="no preconditioner"):
            hc.solve(A, B, damping, method=method, preconditioner=preconditioner)
        return
    res = hc.solve(A, B, damping, method=method, tol=1e-13, preconditioner=preconditioner)
    assert res.x.shape == B.shape
    torch.testing.assert_close(res.x, ref, rtol=0, atol=1e-10)
    assert res.converged and float(res.relative_residuals.max()) <= 1e-13
    one = hc.solve(A, B[:, 0], damping, method=method, tol=1e-13)
    assert one.x.shape == (40,)
    torch.testing.assert_close(one.x, ref[:, 0], rtol=0, atol=1e-10)


def test_jacobi_preconditioning_helps_a_badly_scaled_system():
    g = torch.Generator().manual_seed(3)
    S = torch.diag(torch.logspace(0, 4, 60, dtype=D))
    A0, _ = spd(60, 3, shift=0.1)
    A = S.sqrt() @ A0 @ S.sqrt()  # well conditioned up to a diagonal scaling
    b = torch.randn(60, generator=g, dtype=D)
    plain = hc.solve(A, b, method="cg", tol=1e-10)
    jacobi = hc.solve(A, b, method="cg", tol=1e-10, preconditioner="diagonal")
    given = hc.solve(A, b, method="cg", tol=1e-10, preconditioner=A.diagonal())
    func = hc.solve(A, b, method="cg", tol=1e-10, preconditioner=lambda V: V / A.diagonal()[:, None])
    ref = torch.linalg.solve(A, b)
    for r in (plain, jacobi, given, func):
        assert float((A @ r.x - b).norm() / b.norm()) <= 1e-10
        torch.testing.assert_close(r.x, ref, rtol=1e-6, atol=1e-10)
    assert jacobi.iterations < plain.iterations / 2
    # the same preconditioner three ways (equal up to the last bit: x / d and x * (1 / d))
    counts = [jacobi.iterations, given.iterations, func.iterations]
    assert max(counts) - min(counts) <= 1


def test_solve_curvature_operator_over_unequal_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)  # 4, 4, 2
    H = autograd_hessian(model, nn.MSELoss(), X, y)
    damping = 0.5 + max(0.0, -float(torch.linalg.eigvalsh(H)[0]))
    A = H + damping * torch.eye(H.shape[0], dtype=D)
    B = torch.randn(H.shape[0], 3, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), loader, progress=False)
    for method in ("cg", "minres", "dense"):
        res = hc.solve(op, B, damping, method=method, tol=1e-12)
        torch.testing.assert_close(res.x, torch.linalg.solve(A, B), rtol=0, atol=1e-10)
        assert res.num_matvecs > 0
    # parameter-shaped right-hand side: answered in the same form
    parts = op.params.unflatten(B[:, 0])
    x = hc.solve(op, parts, damping, tol=1e-12).x
    assert isinstance(x, list) and [t.shape for t in x] == [p.shape for p in model.parameters()]
    torch.testing.assert_close(op.params.flatten(x), torch.linalg.solve(A, B[:, 0]), rtol=0, atol=1e-10)


def test_cg_refuses_an_indefinite_operator_and_minres_solves_it():
    A = spectrum_matrix([3.0, 2.0, 1.0, 0.5, -0.7, -2.0], seed=1)
    b = torch.arange(1.0, 7.0, dtype=D)
    with pytest.raises(hc.InvalidInputError, match="method='minres'.*damping") as e:
        hc.solve(A, b, method="cg")
    assert "positive definite" in str(e.value)
    for method in ("minres", "dense"):
        res = hc.solve(A, b, method=method, tol=1e-12)
        torch.testing.assert_close(res.x, torch.linalg.solve(A, b), rtol=0, atol=1e-10)
    assert hc.solve(A, b, method="dense").method == "ldl"
    # enough damping makes it positive definite: CG then solves it
    res = hc.solve(A, b, 2.5, method="cg", tol=1e-12)
    torch.testing.assert_close(res.x, torch.linalg.solve(A + 2.5 * torch.eye(6, dtype=D), b), rtol=0, atol=1e-10)
    # "auto" without room for the dense path: CG meets negative curvature and hands over to MINRES, saying so
    small = hc.DenseOperator(A, budget=3 * 6 * 6 * 8 - 1)
    auto = hc.solve(small, b, method="auto", tol=1e-12)
    assert auto.method == "minres" and "negative curvature" in auto.note
    torch.testing.assert_close(auto.x, torch.linalg.solve(A, b), rtol=0, atol=1e-10)


def test_dense_paths_check_the_budget_before_any_product():
    A, B = spd(30)
    calls = []

    def matmat(V):
        calls.append(V.shape[1])
        return A @ V

    op = hc.FunctionOperator(matmat, 30, budget=2 * 30 * 30 * 8 - 1)
    with pytest.raises(hc.MemoryBudgetError, match="method='cg'"):
        hc.solve(op, B, method="dense")
    with pytest.raises(hc.MemoryBudgetError):
        hc.InverseOperator(op, method="dense").matvec(B[:, 0])
    assert calls == []
    assert hc.solve(op, B, method="auto").method == "cg"  # auto does not try what does not fit
    # auto forms a dense matrix for many right-hand sides, not for one (P products against a few CG iterations)
    roomy = hc.FunctionOperator(matmat, 30)
    assert hc.solve(roomy, B[:, 0], method="auto").method == "cg"
    assert hc.solve(roomy, B, method="auto").method == "cholesky"


def test_singular_dense_solve_is_refused():
    A = torch.diag(torch.tensor([1.0, 2.0, 0.0], dtype=D))
    with pytest.raises(hc.InvalidInputError, match="singular"):
        hc.solve(A, torch.ones(3, dtype=D), method="dense")


def test_nonconvergence_warns_and_zero_rhs_is_solved_by_zero():
    A, B = spd(40, shift=1e-3)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        res = hc.solve(A, B, method="cg", maxiter=2)
    assert not res.converged and res.iterations <= 2 * 3  # refinements restart at most twice
    B[:, 1] = 0
    res = hc.solve(A, B, method="cg", tol=1e-12)
    assert res.converged and float(res.x[:, 1].abs().max()) == 0.0


def test_bad_arguments_are_refused():
    A, B = spd(5)
    with pytest.raises(hc.InvalidInputError, match="method"):
        hc.solve(A, B, method="lsqr")
    with pytest.raises(hc.InvalidInputError, match="shape"):
        hc.solve(A, torch.ones(4, dtype=D))
    with pytest.raises(hc.InvalidInputError, match="non-positive"):
        hc.solve(A - 10 * torch.eye(5, dtype=D), B, method="cg", preconditioner="diagonal")
    with pytest.raises(hc.InvalidInputError, match="damping"):
        hc.solve(A, B, damping=float("nan"))


def test_inverse_operator_is_an_operator():
    A, B = spd(25)
    inv = hc.InverseOperator(A, damping=0.1)
    ref = torch.linalg.inv(A + 0.1 * torch.eye(25, dtype=D))
    assert isinstance(inv, hc.LinearOperator) and inv.method == "dense"
    torch.testing.assert_close(inv.to_dense(), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(inv.diagonal(), ref.diagonal(), rtol=0, atol=1e-12)
    torch.testing.assert_close(inv @ B, ref @ B, rtol=0, atol=1e-12)
    top = hc.eigsh(inv, k=2, which="LA", tol=1e-10)
    torch.testing.assert_close(top.values, torch.linalg.eigvalsh(ref)[-2:], rtol=1e-9, atol=0)
    cg = hc.InverseOperator(A, damping=0.1, method="cg", tol=1e-13)
    torch.testing.assert_close(cg @ B, ref @ B, rtol=0, atol=1e-10)
    assert cg.last_result.method == "cg" and cg.last_result.converged
    sc = inv.to_scipy()
    torch.testing.assert_close(torch.as_tensor(sc @ B.numpy()), ref @ B, rtol=0, atol=1e-12)


def test_inverse_operator_keeps_its_factor_only_inside_reuse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1)).double()
    X, y = torch.randn(8, 3, dtype=D), torch.randn(8, 1, dtype=D)
    op = hc.GGNOperator(model, nn.MSELoss(), (X, y), progress=False)
    inv = hc.InverseOperator(op, damping=0.1)
    v = torch.randn(op.size, dtype=D)
    with inv.reuse():
        first = inv @ v
        before = op.num_matvecs
        again = inv @ v
        assert op.num_matvecs == before  # the factor was kept
    torch.testing.assert_close(first, again)
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # the model changes: a product outside reuse() sees it
    G = hc.GGNOperator(model, nn.MSELoss(), (X, y)).to_dense()
    torch.testing.assert_close(inv @ v, torch.linalg.solve(G + 0.1 * torch.eye(op.size, dtype=D), v),
                               rtol=0, atol=1e-10)


def test_float32_default_tolerance():
    A, B = spd(20)
    res = hc.solve(A.float(), B.float(), method="cg")
    assert res.tol == 1e-5 and res.converged and res.x.dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(res.x.double(), torch.linalg.solve(A, B), rtol=1e-3, atol=1e-4)


def test_kfac_inverse_as_preconditioner():
    """One Linear layer with MSE: KFAC (weight and bias in one block) is the GGN, so its damped inverse is the
    exact inverse and preconditioned CG stops after one iteration; on a deep net (KFAC only approximate) CG
    still converges to the dense solution."""
    torch.manual_seed(0)
    X, Y = torch.randn(30, 4, dtype=D), torch.randn(30, 3, dtype=D)
    loader = [(X[:12], Y[:12]), (X[12:24], Y[12:24]), (X[24:], Y[24:])]
    linear = nn.Linear(4, 3).double()
    op = hc.GGNOperator(linear, nn.MSELoss(), loader)
    K = hc.KFACOperator(linear, nn.MSELoss(), loader, separate_bias=False)
    B = torch.randn(op.size, 2, dtype=D)
    damping = 1e-3
    ref = torch.linalg.solve(autograd_hessian(linear, nn.MSELoss(), X, Y) + damping * torch.eye(op.size, dtype=D), B)
    res = hc.solve(op, B, damping, method="cg", preconditioner=K.inverse(damping))
    assert res.converged and res.iterations == 1
    torch.testing.assert_close(res.x, ref, rtol=0, atol=1e-10 * float(ref.abs().max()))
    assert hc.solve(op, B, damping, method="cg").iterations > 1
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    G = hc.GGNOperator(net, nn.MSELoss(), loader)
    K = hc.KFACOperator(net, nn.MSELoss(), loader)
    damping = 1e-2
    B = torch.randn(G.size, 2, dtype=D)
    ref = torch.linalg.solve(G.to_dense() + damping * torch.eye(G.size, dtype=D), B)
    for method in ("cg", "minres"):
        res = hc.solve(G, B, damping, method=method, tol=1e-12, preconditioner=K.inverse(damping))
        assert res.converged and res.method == method
        torch.testing.assert_close(res.x, ref, rtol=0, atol=1e-9 * float(ref.abs().max()))
    # a preconditioner over other parameters of the same sizes is refused
    other = nn.Sequential(OrderedDict(a=nn.Linear(4, 6), t=nn.Tanh(), b=nn.Linear(6, 3))).double()
    Ko = hc.KFACOperator(other, nn.MSELoss(), loader)
    with pytest.raises(hc.InvalidInputError, match="same parameters in the same order"):
        hc.solve(G, B, damping, method="cg", preconditioner=Ko.inverse(damping))
