"""ClosureHessianOperator: Hessian products from a closure's graph, against float64 autograd references."""

import numpy as np
import pytest
import torch
from reference import autograd_hessian, flat_loss_fn
from scipy.sparse.linalg import eigsh
from torch import nn

import hessian_core as hc
from hessian_core.closure import keep_graph
from hessian_core.operators import ClosureHessianOperator

D = torch.float64


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(7, 3, dtype=D), torch.randn(7, 2, dtype=D)
    return model, nn.MSELoss(), X, Y


@pytest.mark.parametrize("calls_backward", [False, True])
def test_dense_matches_autograd(calls_backward):
    model, loss_fn, X, Y = problem()

    def closure():
        model.zero_grad()
        loss = loss_fn(model(X), Y)
        if calls_backward:
            loss.backward()
        return loss

    op = ClosureHessianOperator(closure, list(model.parameters()))
    ref = autograd_hessian(model, loss_fn, X, Y)
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.diagonal(), ref.diagonal(), rtol=1e-10, atol=1e-12)
    V = torch.randn(op.shape[0], 5, dtype=D)
    torch.testing.assert_close(op.matmat(V), ref @ V, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(V[:, 0]), ref @ V[:, 0], rtol=1e-10, atol=1e-12)
    # the gradient it reports is the loss's gradient; .grad was filled by the closure only if it asked
    f, theta0 = flat_loss_fn(model, loss_fn, X, Y)
    g_ref = torch.autograd.functional.jacobian(f, theta0)
    torch.testing.assert_close(op.grad, g_ref, rtol=1e-10, atol=1e-12)
    assert (model[0].weight.grad is not None) == calls_backward


def test_core_interface_eigsh_and_blocks():
    model, loss_fn, X, Y = problem()
    op = ClosureHessianOperator(lambda: loss_fn(model(X), Y), list(model.parameters()), chunk_size=3)
    ref = autograd_hessian(model, loss_fn, X, Y).numpy()
    assert isinstance(op, hc.LinearOperator) and op.shape == ref.shape and op.dtype == D
    vals = eigsh(op.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(np.sort(vals), np.linalg.eigvalsh(ref)[-2:], rtol=1e-8)
    # diagonal block of the first layer's weight and bias: rows 0..15 of the Hessian
    block = op.with_params([model[0].weight, model[0].bias]).to_dense()
    np.testing.assert_allclose(block.numpy(), ref[:16, :16], rtol=1e-10, atol=1e-12)


def test_plain_tensors_and_unused_parameters():
    torch.manual_seed(0)
    x = torch.randn(3, dtype=D, requires_grad=True)  # a plain leaf tensor, not an nn.Parameter
    unused = torch.randn(2, dtype=D, requires_grad=True)
    A = torch.randn(3, 3, dtype=D)
    A = A @ A.T
    op = ClosureHessianOperator(lambda: 0.5 * x @ A @ x + x.sum() * 0, [x, unused])
    expected = torch.zeros(5, 5, dtype=D)
    expected[:3, :3] = A
    torch.testing.assert_close(op.to_dense(), expected)
    linear = ClosureHessianOperator(lambda: (2 * x).sum(), [x])  # gradient without graph: H = 0
    torch.testing.assert_close(linear.to_dense(), torch.zeros(3, 3, dtype=D))


def test_bad_closures_are_named():
    x = torch.ones(2, dtype=D, requires_grad=True)
    with pytest.raises(hc.InvalidInputError, match="return loss, not loss.item"):
        ClosureHessianOperator(lambda: float((x ** 2).sum()), [x])
    with pytest.raises(hc.InvalidInputError, match="scalar"):
        ClosureHessianOperator(lambda: x ** 2, [x])
    with pytest.raises(hc.InvalidInputError, match="requires_grad=False"):
        ClosureHessianOperator(lambda: (x ** 2).sum().detach(), [x])
    with pytest.raises(hc.NonFiniteError):
        ClosureHessianOperator(lambda: (x ** 2).sum() * float("nan"), [x])

    def frees_graph():
        loss = (x ** 3).sum()
        torch.autograd.grad(loss, x)  # frees the graph; backward() would not (keep_graph)
        return loss

    with pytest.raises(hc.InvalidInputError, match="freed the loss's graph"):
        ClosureHessianOperator(frees_graph, [x])


def test_keep_graph_restores_backward_even_on_error():
    original = torch.autograd.backward
    with pytest.raises(RuntimeError, match="boom"), keep_graph():
        raise RuntimeError("boom")
    assert torch.autograd.backward is original
    x = torch.ones(2, dtype=D, requires_grad=True)
    with keep_graph() as calls:
        y = (x ** 3).sum()
        y.backward()
        (g,) = torch.autograd.grad(y, x, create_graph=True)  # graph still there
    assert len(calls) == 1
    torch.testing.assert_close(g, 3 * x.detach() ** 2)
