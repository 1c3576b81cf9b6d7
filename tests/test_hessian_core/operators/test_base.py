"""The one operator base: composition against dense algebra, counters, budgets and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch
from reference import autograd_hessian, spectrum_matrix
from torch import nn

import hessian_core as hc
from hessian_core.operators.base import counting_view

D = torch.float64


@pytest.fixture
def mats():
    A = spectrum_matrix(torch.linspace(-1, 3, 12), seed=1)
    B = spectrum_matrix(torch.linspace(0, 2, 12), seed=2)
    return A, B


def test_sums_scales_and_identity_equal_dense_algebra(mats):
    A, B = mats
    a, b = hc.as_operator(A), hc.as_operator(B)
    eye = hc.IdentityOperator(a)
    V = torch.randn(12, 3, dtype=D)
    cases = {
        "a + b": (a + b, A + B), "a - b": (a - b, A - B), "2.5 * a": (2.5 * a, 2.5 * A), "a * -3": (a * -3, -3 * A),
        "-a": (-a, -A), "a / 4": (a / 4, A / 4), "a + 0.3 I": (a + 0.3 * eye, A + 0.3 * torch.eye(12, dtype=D)),
        "sum": (sum([a, b, a]), 2 * A + B), "nested": ((a + b) + 2 * (a - b), 3 * A - B),
    }
    for name, (op, dense) in cases.items():
        torch.testing.assert_close(op @ V, dense @ V, msg=name)
        torch.testing.assert_close(op.matvec(V[:, 0]), dense @ V[:, 0], msg=name)
        torch.testing.assert_close(op.to_dense(), dense, msg=name)
        torch.testing.assert_close(op.diagonal(), dense.diagonal(), msg=name)
        assert op.shape == (12, 12) and op.dtype == D


def test_eigsh_and_trace_on_a_damped_curvature_operator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(9, 3, dtype=D), torch.randn(9, 2, dtype=D)
    H = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    dense = autograd_hessian(model, nn.MSELoss(), X, Y)  # independent of the operator
    damped = H + 0.7 * hc.IdentityOperator(H)
    ev = torch.linalg.eigvalsh(dense + 0.7 * torch.eye(H.shape[0], dtype=D))
    res = hc.eigsh(damped, k=2, which="BE", seed=0)
    torch.testing.assert_close(res.values, torch.stack([ev[0], ev[-1]]), rtol=1e-8, atol=1e-10)
    assert float(hc.trace(damped, num_matvecs=3 * H.shape[0], seed=0)) == pytest.approx(float(ev.sum()), rel=1e-10)
    # the GGN plus the Hessian, and parameter-shaped vectors through a composition
    G = hc.GGNOperator(model, nn.MSELoss(), (X, Y))
    v = [torch.randn_like(p) for p in model.parameters()]
    out = (G + H).matvec(v)
    ref = (G.to_dense() + dense) @ torch.cat([t.reshape(-1) for t in v])
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in out]), ref)


def test_block_diagonal_over_parameter_groups():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(7, 3, dtype=D), torch.randn(7, 2, dtype=D)
    H = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    dense = autograd_hessian(model, nn.MSELoss(), X, Y)  # independent of the operator
    groups = [[model[0].weight, model[0].bias], [model[2].weight]]  # model[2].bias in no group: zero rows
    blocks = hc.block_diagonal([H.with_params(g) for g in groups])
    ref = torch.zeros_like(dense)
    for a, b in ((0, 16), (16, 24)):  # layer 0 (weight 12, bias 4), layer 2's weight (8); its bias: 24..26
        ref[a:b, a:b] = dense[a:b, a:b]
    torch.testing.assert_close(blocks.to_dense(), ref)
    V = torch.randn(26, 2, dtype=D)
    torch.testing.assert_close(blocks @ V, ref @ V)
    torch.testing.assert_close(blocks.diagonal(), ref.diagonal())
    with pytest.raises(hc.InvalidInputError, match="overlap"):
        hc.BlockDiagonalOperator([(range(0, 3), hc.as_operator(torch.eye(3, dtype=D))),
                                  (range(2, 5), hc.as_operator(torch.eye(3, dtype=D)))], 6)


def test_counters_views_and_scipy(mats):
    A, _ = mats
    a = hc.as_operator(A)
    view = counting_view(a)
    view.matmat(torch.randn(12, 5, dtype=D))
    assert view.num_matvecs == 5 and a.num_matvecs == 5
    res = hc.eigsh(a, k=1, seed=0)
    assert res.num_matvecs > 0 and a.num_matvecs == 5 + res.num_matvecs  # eigsh reports its own products
    vals = sla.eigsh(a.to_scipy(), k=1, which="LA", return_eigenvectors=False)
    assert vals[0] == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-10)
    back = hc.as_operator(sla.aslinearoperator(A.numpy()))
    torch.testing.assert_close(back @ torch.eye(12, dtype=D), A)
    f = hc.FunctionOperator(lambda V: A @ V, 12)
    torch.testing.assert_close(f.to_dense(), A)


def test_composition_keeps_the_tightest_budget(mats):
    A, B = mats
    a, b = hc.DenseOperator(A, budget=10**9), hc.DenseOperator(B, budget=500)
    assert (a + b).budget == 500 and (3 * a).budget == 10**9
    with pytest.raises(hc.MemoryBudgetError):
        hc.spectral_density(a + b, num_probes=2, num_iters=10)


def test_a_closure_operator_keeps_its_budget_in_the_spectral_routines():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 1)).to(D)
    X, Y = torch.randn(5, 20, dtype=D), torch.randn(5, 1, dtype=D)
    op = hc.ClosureHessianOperator(lambda: nn.functional.mse_loss(model(X), Y), list(model.parameters()),
                                   memory_budget=20_000)
    assert op.budget == 20_000
    with pytest.raises(hc.MemoryBudgetError, match="Lanczos"):
        hc.eigsh(op, k=2)
    with pytest.raises(hc.MemoryBudgetError, match="sketch"):
        hc.trace(op, num_matvecs=300, method="hutch++")


def test_bad_compositions_and_vectors_are_named(mats):
    A, _ = mats
    a = hc.as_operator(A)
    small = hc.as_operator(torch.eye(3, dtype=D))
    with pytest.raises(hc.InvalidInputError, match="sizes 12 and 3"):
        a + small
    with pytest.raises(hc.InvalidInputError, match="real number"):
        a * (1 + 2j)
    with pytest.raises(hc.InvalidInputError, match="not operators"):
        a @ a
    with pytest.raises(hc.InvalidInputError, match="add an operator"):
        a + 1.0
    with pytest.raises(hc.InvalidInputError, match="complex"):
        a @ torch.ones(12, dtype=torch.complex128)
    with pytest.raises(hc.InvalidInputError, match="meta"):
        a @ torch.empty(12, device="meta")
    with pytest.raises(hc.InvalidInputError, match="NaN or Inf"):
        a @ torch.full((12,), float("nan"))
    with pytest.raises(hc.InvalidInputError, match="shape"):
        a @ torch.ones(11)
    with pytest.raises(hc.InvalidInputError, match="not symmetric"):
        hc.as_operator(torch.triu(torch.ones(4, 4)))
    with pytest.raises(hc.InvalidInputError, match="matrix-free|cannot use"):
        hc.as_operator("A")
    assert np.allclose(a.to_scipy().matvec(np.ones(12)), (A @ torch.ones(12, dtype=D)).numpy())
