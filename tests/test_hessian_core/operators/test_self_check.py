"""The operators' cheap self-check (symmetry on a random pair; forward-over-reverse against reverse-over-
reverse), the automatic fallbacks it and PyTorch's missing derivatives lead to, and what plan() reports."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


class NotAGradient(torch.autograd.Function):
    """``x * y`` whose backward returns ``2 x g`` for ``y``: a "gradient" that is not one (as a
    straight-through estimator's), so its derivative is not symmetric."""

    @staticmethod
    def forward(x, y):
        return x * y

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * y, 2 * g * x


class WrongTangent(torch.autograd.Function):
    """``x ** 3`` with a correct backward and a forward-mode derivative off by a factor 1.5."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.x = inputs[0]

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g

    @staticmethod
    def jvp(ctx, t):
        return 4.5 * ctx.x ** 2 * t


class Host(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.head, self.fn = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(4, 2), fn

    def forward(self, x):
        h = torch.tanh(self.a(x))
        h = self.fn(h, torch.tanh(self.b(x))) if self.fn == NotAGradient.apply else self.fn(h)
        return self.head(h)


def data():
    return torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)


def squares(out, y):  # MSE written out: torch's MSELoss has no forward-over-reverse (ZeroTensor)
    return ((out - y) ** 2).mean()


@pytest.mark.parametrize("op", [hc.HessianOperator, hc.GGNOperator])
def test_a_backward_that_is_not_a_gradient_is_refused_by_name(op):
    model = Host(NotAGradient.apply).to(D)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=D)
    if op is hc.GGNOperator:  # the GGN only sees the model through J: symmetric by construction
        op(model, nn.MSELoss(), data()).matvec(v)
        return
    with pytest.raises(hc.InvalidInputError, match=r"self-check failed.*not symmetric.*module '(a|b)' \(Linear\)"):
        op(model, nn.MSELoss(), data()).matvec(v)
    assert all(torch.equal(before[k], t) for k, t in model.state_dict().items())
    H = hc.hessian(model, nn.MSELoss(), data(), self_check=False)  # the documented way to get it anyway
    assert (H - H.T).abs().max() > 1e-3


def test_wrong_forward_mode_is_caught_and_not_used():
    model = Host(WrongTangent.apply).to(D)
    X, Y = data()
    op = hc.HessianOperator(model, squares, (X, Y))
    H = op.to_dense()
    torch.testing.assert_close(H, autograd_hessian(model, squares, X, Y), rtol=1e-10, atol=1e-12)
    plan = op.plan()
    assert "disagreed with reverse-over-reverse" in plan["forward-over-reverse"]
    assert plan["products"]["dense columns"].startswith("reverse-over-reverse")


def test_self_check_passes_and_is_reported():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    op = hc.HessianOperator(model, squares, data(), strategy="generic")
    op.matvec(torch.ones(op.shape[0], dtype=D))
    assert op.plan()["self-check"].startswith("symmetric on a random pair")
    assert "forward-over-reverse" not in op.plan()["self-check"]  # compared only before its first use
    op.matmat(torch.ones(op.shape[0], 3, dtype=D))  # blocks go through the kept graph (no forward mode)
    assert "forward-over-reverse" not in op.plan()["self-check"]
    op.to_dense()  # dense columns: forward-over-reverse, compared before its first use
    assert "forward-over-reverse agrees" in op.plan()["self-check"]
    g = hc.GGNOperator(model, nn.MSELoss(), data())
    g.matvec(torch.ones(g.shape[0], dtype=D))
    assert g.plan()["self-check"].startswith("symmetric") and g.plan()["J v"] == "forward mode"
    assert hc.HessianOperator(model, nn.MSELoss(), data(), self_check=False).plan()["self-check"].startswith("off")
    with pytest.raises(hc.InvalidInputError, match="self_check"):
        hc.HessianOperator(model, nn.MSELoss(), data(), self_check="yes")


def test_ggn_falls_back_to_reverse_mode_where_forward_mode_is_missing():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    torch.nn.utils.parametrizations.spectral_norm(model[0])  # power iteration with out= ops: no forward mode
    op = hc.GGNOperator(model, nn.MSELoss(), data(), train_mode=True)
    G = op.to_dense()
    assert op.plan()["J v"].startswith("reverse mode (double vjp)") and "forward-mode" in op.plan()["J v"]
    torch.testing.assert_close(G, G.T, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(G).min() > -1e-10  # MSE: J^T 2I J / n is positive semi-definite


def test_old_style_function_uses_plain_autograd():
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    model = Host(Cube.apply).to(D)
    X, Y = data()
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    torch.testing.assert_close(op.to_dense(), autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)
    assert op.plan()["engine"].startswith("autograd (torch.func cannot run this model")


def test_structured_failure_falls_back_and_is_reported(monkeypatch):
    import hessian_core.structured.strategies as strategies

    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)).to(D)
    X, Y = data()
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)  # the Linear chain (in-place ReLU)
    assert op.last_path == "structured: Linear chain" and "structured fallback" not in op.plan()

    def broken(*args, **kwargs):
        raise RuntimeError("a view was modified by an in-place operation")

    monkeypatch.setattr(strategies, "add_batch_hessian", broken)  # a failure inside a structured path
    monkeypatch.setattr(strategies, "add_slice_hessian", broken)
    torch.testing.assert_close(op.to_dense(), ref, rtol=1e-10, atol=1e-12)
    note = op.plan()["structured fallback"]
    assert op.last_strategy == "generic" and "in-place" in note and note.endswith("the generic path ran instead")


def test_gradient_of_an_old_style_function_model():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    model = Host(Square.apply).to(D)
    X, Y = data()
    value, g = hc.Objective(model, nn.MSELoss(), (X, Y)).value_and_grad()
    loss = nn.MSELoss()(model(X), Y)
    ref = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)  # (b is unused here)
    ref = [torch.zeros_like(p) if r is None else r for r, p in zip(ref, model.parameters())]
    assert abs(value - float(loss)) < 1e-12
    torch.testing.assert_close(g, torch.cat([r.reshape(-1) for r in ref]), rtol=1e-12, atol=1e-14)
