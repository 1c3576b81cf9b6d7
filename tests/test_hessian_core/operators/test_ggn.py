"""GGN products with the loss Hessian in closed form: against J^T H_L J built explicitly, the autograd path,
global normalization over unequal batches; the Monte-Carlo Fisher."""

from __future__ import annotations

import pytest
import torch
from reference import flat_loss_fn
from torch import nn

import hessian_core as hc

D = torch.float64


def explicit_ggn(model, loss_fn, batches, count_fn):
    """``sum_b c_b J_b^T H_b J_b / sum_b c_b``: Jacobians by one backward per output, loss Hessians by
    torch.autograd.functional.hessian of the loss itself."""
    total, out = 0.0, 0.0
    for X, y in batches:
        f, theta0 = flat_loss_fn(model, lambda o, _: o, X, y)
        theta = theta0.clone().requires_grad_()
        outputs = f(theta)
        J = torch.stack([torch.autograd.grad(o, theta, retain_graph=True)[0] for o in outputs.reshape(-1)])
        o0 = outputs.detach()
        HL = torch.autograd.functional.hessian(lambda o, o0=o0, y=y: loss_fn(o.reshape(o0.shape), y), o0.reshape(-1))
        c = float(count_fn(X, y))
        out = out + c * (J.T @ HL @ J)
        total += c
    return out / total


def mlp():
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4)).double()


LABELS = [torch.tensor([0, 3, -100, 1, 2]), torch.tensor([-100, 2, 1])]
CASES = {
    "cross-entropy, ignored labels": (nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=D)),
                                      LABELS, lambda x, y: (y != -100).sum()),
    "cross-entropy, label smoothing": (nn.CrossEntropyLoss(label_smoothing=0.1),
                                       [t.clamp(min=0) for t in LABELS], None),
    "mse": (nn.MSELoss(), [torch.randn(5, 4, dtype=D), torch.randn(3, 4, dtype=D)], None),
    "bce with logits": (nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=D)),
                        [torch.rand(5, 4, dtype=D), torch.rand(3, 4, dtype=D)], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_closed_form_ggn_against_explicit_jacobians(case):
    loss_fn, targets, count_fn = CASES[case]
    model = mlp()
    data = [(torch.randn(len(t), 3, dtype=D), t) for t in targets]
    weights_of = count_fn or (lambda x, y: y.shape[0])
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.weight is not None:
        weights_of = lambda x, y: loss_fn.weight[y[y != -100]].sum()  # noqa: E731 - what the mean divides by
    op = hc.GGNOperator(model, loss_fn, data, count_fn=weights_of)
    assert "closed form" in op.plan()["loss Hessian"]
    G = op.to_dense()
    torch.testing.assert_close(G, explicit_ggn(model, loss_fn, data, weights_of), rtol=1e-11, atol=1e-14)
    # the autograd path (an unrecognized callable computing the same loss) gives the same matrix
    generic = hc.GGNOperator(model, lambda o, t: loss_fn(o, t), data, count_fn=weights_of)
    assert "autograd" in generic.plan()["loss Hessian"]
    torch.testing.assert_close(generic.to_dense(), G, rtol=1e-11, atol=1e-14)
    V = torch.randn(op.size, 3, dtype=D)
    torch.testing.assert_close(op.matmat(V), G @ V, rtol=1e-11, atol=1e-13)
    with op.reuse():
        torch.testing.assert_close(op.matvec(V[:, 0]), G @ V[:, 0], rtol=1e-11, atol=1e-13)


def test_monte_carlo_fisher():
    model = mlp()
    loss_fn, targets, count_fn = CASES["cross-entropy, ignored labels"]
    data = [(torch.randn(len(t), 3, dtype=D), t) for t in targets]
    G = hc.GGNOperator(model, loss_fn, data).to_dense()
    F = hc.GGNOperator(model, loss_fn, data, mc_samples=4000, seed=1).to_dense()
    assert (F - G).norm() <= 0.05 * G.norm()
    torch.testing.assert_close(F, F.T, rtol=0, atol=1e-14)
    op = hc.GGNOperator(model, loss_fn, data, mc_samples=2, seed=1)
    F2 = op.to_dense()
    torch.testing.assert_close(op.to_dense(), F2)  # draws fixed per batch by the seed: one matrix
    v = torch.randn(op.size, dtype=D)
    torch.testing.assert_close(op.matvec(v), F2 @ v)
    assert not torch.allclose(hc.GGNOperator(model, loss_fn, data, mc_samples=2, seed=2).to_dense(), F2)
    assert op.with_params(["0.weight"]).mc_samples == 2
    assert op.plan()["mc_samples"] == 2 and "mc_samples=2" in repr(op) and op.kind == "MC Fisher"
    with pytest.raises(hc.InvalidInputError, match="mc_samples"):
        hc.GGNOperator(model, lambda o, t: loss_fn(o, t), data, mc_samples=1)
    with pytest.raises(hc.InvalidInputError, match="mc_samples"):
        hc.GGNOperator(model, loss_fn, data, mc_samples=0)
