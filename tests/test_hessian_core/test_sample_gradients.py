"""Per-sample losses and gradients (hessian_core.sample_gradients, what the empirical Fisher, influence
scores and Laplace share) against autograd on one sample at a time: tuple inputs, vmap's fallback loop."""

import warnings

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.objective import Objective
from hessian_core.sample_gradients import index, losses_and_gradients, take

D = torch.float64


class TwoInputs(nn.Module):
    """Two input tensors; with ``branch=True`` a data-dependent branch that vmap cannot batch."""

    def __init__(self, branch=False):
        super().__init__()
        self.a, self.b, self.branch = nn.Linear(3, 4), nn.Linear(2, 4), branch

    def forward(self, x, z):
        h = torch.tanh(self.a(x) + self.b(z))
        if self.branch and float(h.sum()) > 0:  # per sample: vmap refuses it
            h = h * 2
        return h.sum(-1, keepdim=True)


def reference(model, loss_fn, x, z, y):
    params = list(model.parameters())
    losses, cols = [], []
    for i in range(y.shape[0]):
        loss = loss_fn(model(x[i:i + 1], z[i:i + 1]), y[i:i + 1])
        losses.append(float(loss.detach()))
        cols.append(torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)]))
    return torch.tensor(losses, dtype=D), torch.stack(cols, dim=1)


@pytest.mark.parametrize("branch", [False, True], ids=["vmapped", "loop after vmap refuses"])
def test_losses_and_gradients_match_autograd_per_sample(branch):
    torch.manual_seed(0)
    model = TwoInputs(branch).double()
    x, z, y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D), torch.randn(6, 1, dtype=D)
    objective = Objective(model, nn.MSELoss(), ((x, z), y))
    ctx = next(iter(objective.contexts()))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        losses, G = losses_and_gradients(objective, ctx, 1, 5)
    assert any("looping over samples" in str(w.message) for w in seen) == branch
    ref_losses, ref_G = reference(model, nn.MSELoss(), x[1:5], z[1:5], y[1:5])
    torch.testing.assert_close(losses, ref_losses, rtol=1e-14, atol=0)
    torch.testing.assert_close(G, ref_G, rtol=1e-13, atol=1e-15)
    # the empirical Fisher is built from the same gradients: F = G G^T / n over the whole batch
    _, G_all = reference(model, nn.MSELoss(), x, z, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        F = hc.EmpiricalFisherOperator(model, nn.MSELoss(), ((x, z), y)).to_dense()
    torch.testing.assert_close(F, G_all @ G_all.T / 6, rtol=1e-12, atol=1e-15)


def test_sample_helpers_on_tuples():
    x = (torch.arange(6.0).reshape(3, 2), torch.arange(3.0))
    assert torch.equal(index(x, 1)[0], torch.tensor([2.0, 3.0])) and float(index(x, 1)[1]) == 1.0
    assert index(x, 2, keep=True)[0].shape == (1, 2)
    assert [t.shape[0] for t in take(x, 1, 3)] == [2, 2]


class ToList(nn.Module):
    """A forward vmap cannot batch whose error does not mention vmap ("Cannot access data pointer ...")."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x) * (1.0 + len(x.detach().tolist()))


def test_any_vmap_failure_falls_back_to_the_loop_once():
    """Before: only errors that mentioned vmap fell back (this model raised), and a failing vmap was retried
    and warned about on every product. Now any error of the batched call whose loop succeeds falls back, is
    remembered, and is warned about once; the empirical Fisher matches per-sample autograd."""
    torch.manual_seed(0)
    model = ToList().double()
    X, Y = torch.randn(5, 4, dtype=D), torch.randn(5, 3, dtype=D)
    op = hc.EmpiricalFisherOperator(model, nn.MSELoss(), (X, Y))
    v = torch.ones(op.size, dtype=D)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        results = [op.matvec(v) for _ in range(3)]
    assert sum("looping over samples" in str(w.message) for w in seen) == 1
    params = list(model.parameters())
    G = torch.stack([torch.cat([t.reshape(-1) for t in torch.autograd.grad(
        nn.MSELoss()(model(X[i:i + 1]), Y[i:i + 1]), params)]) for i in range(5)], dim=1)
    for r in results:
        torch.testing.assert_close(r, G @ (G.T @ v) / 5, rtol=1e-12, atol=1e-14)
    assert "per-sample vmap" in op.objective.notes


def test_an_error_of_the_model_itself_is_raised():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            raise RuntimeError("the model's own bug")

    model = Broken().double()
    X, Y = torch.randn(5, 4, dtype=D), torch.randn(5, 3, dtype=D)
    with pytest.raises(Exception, match="the model's own bug"):
        hc.EmpiricalFisherOperator(model, nn.MSELoss(), (X, Y)).matvec(torch.ones(15, dtype=D))
