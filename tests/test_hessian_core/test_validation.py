"""The first-batch probe: random forwards are fixed per batch (one matrix), randomness a seed cannot fix is
refused by module, and forwards that write into buffers run on copies (the user's untouched)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import autograd_hessian, flat_loss_fn
from torch import nn

import hessian_core as hc

D = torch.float64


class MCDropout(nn.Module):
    """Dropout in every mode (Monte Carlo dropout)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.b(F.dropout(torch.tanh(self.a(x)), 0.5, training=True))


def fd_hessian(model, X, Y, masks_seed):
    """Central differences of the gradient of the loss with the dropout draws fixed by the same seed."""
    f, theta = flat_loss_fn(model, nn.MSELoss(), X, Y)

    def g(t):
        with torch.random.fork_rng():
            torch.manual_seed(masks_seed)
            t = t.clone().requires_grad_(True)
            return torch.autograd.grad(f(t), t)[0]

    h = 1e-6
    cols = [(g(theta + h * e) - g(theta - h * e)) / (2 * h) for e in torch.eye(theta.numel(), dtype=D)]
    return torch.stack(cols, 1)


def test_a_random_forward_is_one_fixed_matrix_per_seed():
    torch.manual_seed(8)
    model = MCDropout().to(D)
    X, Y = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), seed=3)
    assert op.objective.validate().random
    H = op.to_dense()
    torch.testing.assert_close(H, H.T, rtol=1e-10, atol=1e-12)
    V = torch.randn(op.shape[0], 4, dtype=D)
    torch.testing.assert_close(op @ V, H @ V)
    torch.testing.assert_close(op @ V, H @ V)  # the same draws on every pass
    torch.testing.assert_close(op.diagonal(), H.diagonal())
    ref = fd_hessian(model, X, Y, op.objective.batch_seed(0))
    torch.testing.assert_close(H, ref, rtol=1e-5, atol=1e-6)
    assert "seed=3" in op.plan()["random forward"]


class NumpyNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x) + torch.as_tensor(np.random.standard_normal(2))


def test_randomness_outside_torch_is_refused_by_module():
    model = nn.Sequential(nn.Linear(3, 3), NumpyNoise()).to(D)
    X, Y = torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D)
    with pytest.raises(hc.InvalidInputError, match=r"module '1' \(NumpyNoise\)"):
        hc.hessian(model, nn.MSELoss(), (X, Y))


class Counting(nn.Module):
    """Writes into a buffer in forward (a call counter and a running cache), like observers do."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))
        self.register_buffer("last_mean", torch.zeros(3, dtype=torch.float64))

    def forward(self, x):
        self.calls += 1
        self.last_mean.copy_(x.detach().mean(0))
        return self.lin(x)


def test_a_forward_that_writes_into_its_buffers_changes_nothing_of_the_user():
    module = Counting
    torch.manual_seed(9)
    model = module().to(D)
    X, Y = torch.randn(7, 3, dtype=D), torch.randn(7, 2, dtype=D)
    X0, state0 = X.clone(), {k: v.clone() for k, v in model.state_dict().items()}
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    hc.HessianOperator(model, nn.MSELoss(), (X, Y)).matvec(torch.ones(H.shape[0], dtype=D))
    assert torch.equal(X, X0)
    assert all(torch.equal(v, state0[k]) for k, v in model.state_dict().items())
    ref = autograd_hessian(model, nn.MSELoss(), X0.clone(), Y)
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
