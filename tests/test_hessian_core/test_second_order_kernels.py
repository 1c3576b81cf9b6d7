"""Attention and the other ops without second derivatives: every routine against hand-written references.

References share no code with the engine: the same parameters run through attention written out by hand
(``softmax(q k^T / sqrt(d) + causal mask) v``), differentiated by torch.autograd / torch.func, and central
finite differences of the reference gradient (which needs no second derivative at all).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from reference import flat_loss_fn
from torch import nn

import hessian_core as hc
from hessian_core.diagnosis import FIXES, fix_for, parse
from hessian_core.forward import analysis_scope
from hessian_core.second_order_kernels import second_order_kernels

D = torch.float64


def attention_by_hand(q, k, v, causal):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(s, -1) @ v


class CausalSelfAttention(nn.Module):
    """Causal self-attention and a per-token classifier; logits ``(B, C, T)`` for ``nn.CrossEntropyLoss``."""

    def __init__(self, d=4, heads=2, classes=3, by_hand=False):
        super().__init__()
        self.qkv, self.out, self.heads, self.by_hand = nn.Linear(d, 3 * d), nn.Linear(d, classes), heads, by_hand

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, -1))
        if self.by_hand:
            y = attention_by_hand(q, k, v, causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(torch.tanh(y.transpose(1, 2).reshape(B, T, d))).transpose(1, 2)


def attention_problem():
    model = CausalSelfAttention().double()
    by_hand = CausalSelfAttention(by_hand=True).double()
    by_hand.load_state_dict(model.state_dict())
    X = torch.randn(3, 4, 4, dtype=D)
    y = torch.randint(0, 3, (3, 4))
    return model, by_hand, X, y


def rows_of_jacobian(f, theta0):
    """Jacobian of ``f`` (any output shape) by one plain backward per output element (no vmap: the batching
    rule of layer_norm's backward is wrong for nested transforms, functorch issue 534)."""
    theta = theta0.clone().requires_grad_()
    out = f(theta).reshape(-1)
    return torch.stack([torch.autograd.grad(o, theta, retain_graph=True)[0] for o in out])


def explicit_ggn(model, loss_fn, X, y):
    """``J^T H_L J`` from the full Jacobian of the outputs and the loss's Hessian (torch.autograd)."""
    f, theta0 = flat_loss_fn(model, lambda out, _: out, X, y)
    J = rows_of_jacobian(f, theta0)
    out = f(theta0).detach()
    HL = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), y), out.reshape(-1))
    return J.T @ HL @ J


def gradient(f, theta):
    theta = theta.clone().requires_grad_()
    return torch.autograd.grad(f(theta), theta)[0]


def central_differences(f, theta0, v, h=1e-5):
    """``(g(theta + h v) - g(theta - h v)) / 2h`` with the reference gradient: no second derivative."""
    return (gradient(f, theta0 + h * v) - gradient(f, theta0 - h * v)) / (2 * h)


def check_hessian(H, f, theta0, directions=3, columns=6):
    """``H`` against the hand-written ``f``: products with random vectors against central differences of its
    gradient (no second derivative involved), and random columns exactly against one plain double backward
    each (not torch.func.hessian nor jacrev(jacrev): on the encoder below both are off by O(1e-2) --
    forward-over-reverse through F.layer_norm with the input and weight views of one tensor, pytorch issues
    196700/198017, and nested vmap through layer_norm's backward, functorch issue 534)."""
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12 * H.abs().max())
    for v in torch.randn(directions, theta0.numel(), dtype=theta0.dtype):
        fd = central_differences(f, theta0, v)
        assert (H @ v - fd).norm() <= 1e-7 * fd.norm()
    theta = theta0.clone().requires_grad_()
    grad = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
    for j in torch.randperm(theta0.numel())[:columns].tolist():
        col = torch.autograd.grad(grad[j], theta, retain_graph=True)[0]
        torch.testing.assert_close(H[:, j], col, rtol=1e-10, atol=1e-12)


def test_fused_attention_has_no_double_backward_and_the_scope_gives_it():
    """The reproduction: plain double backward through SDPA fails (pytorch issue 116350); inside
    second_order_kernels() the same code runs."""
    model, _, X, y = attention_problem()
    loss_fn = nn.CrossEntropyLoss()

    def double_backward():
        g = torch.autograd.grad(loss_fn(model(X), y), list(model.parameters()), create_graph=True)
        return torch.autograd.grad(sum(t.sum() for t in g), list(model.parameters()))

    with pytest.raises(RuntimeError, match="derivative for .*scaled_dot_product"):
        double_backward()
    with second_order_kernels(model):
        double_backward()


def test_attention_every_routine_against_attention_by_hand():
    model, by_hand, X, y = attention_problem()
    loss_fn = nn.CrossEntropyLoss()
    f, theta0 = flat_loss_fn(by_hand, loss_fn, X, y)
    P = theta0.numel()

    H = hc.hessian(model, loss_fn, (X, y))
    check_hessian(H, f, theta0)
    v = torch.randn(P, dtype=D)
    fd = central_differences(f, theta0, v)
    assert (hc.hvp(model, loss_fn, (X, y), v) - fd).norm() <= 1e-7 * fd.norm()
    diag = torch.cat([d.reshape(-1) for d in hc.hessian_diagonal(model, loss_fn, (X, y))])
    torch.testing.assert_close(diag, H.diagonal(), rtol=1e-10, atol=1e-12)
    blocks = hc.hessian_blocks(model, loss_fn, (X, y), groups="module")
    n = model.qkv.weight.numel() + model.qkv.bias.numel()
    torch.testing.assert_close(blocks[0], H[:n, :n], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(blocks[1], H[n:, n:], rtol=1e-10, atol=1e-12)
    top = hc.eigsh(hc.HessianOperator(model, loss_fn, (X, y)), k=2, which="LA")
    torch.testing.assert_close(torch.sort(top.values).values, torch.linalg.eigvalsh(H)[-2:], rtol=1e-8, atol=1e-10)

    G = hc.GGNOperator(model, loss_fn, (X, y)).to_dense()  # closed-form cross-entropy over (B, C, T) logits
    torch.testing.assert_close(G, explicit_ggn(by_hand, loss_fn, X, y), rtol=1e-10, atol=1e-12)


def test_attention_empirical_fisher_and_estimators():
    """Per-sample gradients (vmapped, first order) and the stochastic estimators on the same model."""
    model, by_hand, X, y = attention_problem()
    loss_fn = nn.CrossEntropyLoss()
    rows = []
    for i in range(X.shape[0]):
        f, theta0 = flat_loss_fn(by_hand, loss_fn, X[i:i + 1], y[i:i + 1])
        rows.append(gradient(f, theta0))
    G = torch.stack(rows, 1)
    EF = hc.EmpiricalFisherOperator(model, loss_fn, (X, y))
    torch.testing.assert_close(EF.to_dense(), G @ G.T / X.shape[0], rtol=1e-10, atol=1e-13)
    H = hc.HessianOperator(model, loss_fn, (X, y))
    tr = hc.trace(H, num_matvecs=20, seed=0)
    assert abs(float(tr) - float(H.to_dense().trace())) <= 5 * float(tr.stderr) + 1e-9


def test_attention_in_a_closure_optimizer():
    """Closures (optimizers, ClosureHessianOperator) run the user's own forward: rerouted there too."""
    model, by_hand, X, y = attention_problem()
    loss_fn = nn.CrossEntropyLoss()
    f, theta0 = flat_loss_fn(by_hand, loss_fn, X, y)
    op = hc.ClosureHessianOperator(lambda: loss_fn(model(X), y), list(model.parameters()))
    check_hessian(op.to_dense(), f, theta0)


def encoder_by_hand(layer: nn.TransformerEncoderLayer, params: dict, x):
    """``nn.TransformerEncoderLayer`` (post-norm, ReLU, batch_first, no dropout) written out."""
    B, T, d = x.shape
    h = layer.self_attn.num_heads
    q, k, v = F.linear(x, params["self_attn.in_proj_weight"], params["self_attn.in_proj_bias"]).split(d, -1)
    q, k, v = (t.view(B, T, h, d // h).transpose(1, 2) for t in (q, k, v))
    a = attention_by_hand(q, k, v, causal=False).transpose(1, 2).reshape(B, T, d)
    a = F.linear(a, params["self_attn.out_proj.weight"], params["self_attn.out_proj.bias"])
    x = F.layer_norm(x + a, (d,), params["norm1.weight"], params["norm1.bias"], layer.norm1.eps)
    f = F.linear(F.relu(F.linear(x, params["linear1.weight"], params["linear1.bias"])),
                 params["linear2.weight"], params["linear2.bias"])
    return F.layer_norm(x + f, (d,), params["norm2.weight"], params["norm2.bias"], layer.norm2.eps)


class Encoder(nn.Module):
    def __init__(self, by_hand=False, dropout=0.0):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(4, 2, 6, dropout=dropout, batch_first=True)
        self.head = nn.Linear(4, 3)
        self.by_hand = by_hand

    def forward(self, x):
        if self.by_hand:
            params = dict(self.layer.named_parameters())
            return self.head(encoder_by_hand(self.layer, params, x).mean(1))
        return self.head(self.layer(x).mean(1))


@pytest.mark.parametrize("train_mode", [False, True])
def test_transformer_encoder_layer_fast_path_and_attention(train_mode):
    """Eval mode takes nn.TransformerEncoderLayer's fused fast path (no forward mode: the GGN's J v fails
    without the reroute); train mode its regular path with SDPA. Both against the layer written out."""
    model = Encoder().double()
    by_hand = Encoder(by_hand=True).double()
    by_hand.load_state_dict(model.state_dict())
    X, y = torch.randn(3, 5, 4, dtype=D), torch.randint(0, 3, (3,))
    loss_fn = nn.CrossEntropyLoss()
    f, theta0 = flat_loss_fn(by_hand, loss_fn, X, y)
    check_hessian(hc.hessian(model, loss_fn, (X, y), train_mode=train_mode), f, theta0)
    G = hc.GGNOperator(model, loss_fn, (X, y), train_mode=train_mode).to_dense()
    torch.testing.assert_close(G, explicit_ggn(by_hand, loss_fn, X, y), rtol=1e-9, atol=1e-11)
    assert model.training  # the model's own flag untouched
    assert torch.backends.mha.get_fastpath_enabled()


def test_multihead_attention_module_against_by_hand():
    class MHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.head = nn.MultiheadAttention(4, 2, batch_first=True), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))

    model = MHA().double().eval()
    X, y = torch.randn(3, 5, 4, dtype=D), torch.randn(3, 2, dtype=D)

    def by_hand(params, x):
        B, T, d = x.shape
        q, k, v = F.linear(x, params["attn.in_proj_weight"], params["attn.in_proj_bias"]).split(d, -1)
        q, k, v = (t.view(B, T, 2, 2).transpose(1, 2) for t in (q, k, v))
        a = attention_by_hand(q, k, v, causal=False).transpose(1, 2).reshape(B, T, d)
        a = F.linear(a, params["attn.out_proj.weight"], params["attn.out_proj.bias"])
        return F.linear(a.mean(1), params["head.weight"], params["head.bias"])

    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        return F.mse_loss(by_hand({n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}, X), y)

    check_hessian(hc.hessian(model, nn.MSELoss(), (X, y)), f, theta0)


def test_encoder_dropout_in_train_mode_matches_finite_differences():
    """Train mode with attention dropout: the masks are fixed per batch by the seed, so the Hessian is one
    symmetric matrix; its products agree with central differences of the (same-seed) gradient."""
    model = Encoder(dropout=0.2).double()
    X, y = torch.randn(3, 5, 4, dtype=D), torch.randint(0, 3, (3,))
    opts = dict(train_mode=True, seed=3)
    op = hc.HessianOperator(model, nn.CrossEntropyLoss(), (X, y), **opts)
    H = op.to_dense()
    torch.testing.assert_close(H, H.T, rtol=1e-10, atol=1e-12)
    obj = hc.Objective(model, nn.CrossEntropyLoss(), (X, y), **opts)
    assert obj.validate().random
    v = torch.randn(op.size, dtype=D)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def grad_at(theta):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(theta, model.parameters())
        return obj.value_and_grad()[1]

    h = 1e-5
    fd = (grad_at(theta0 + h * v) - grad_at(theta0 - h * v)) / (2 * h)
    grad_at(theta0)
    assert (H @ v - fd).norm() <= 1e-7 * fd.norm()


@pytest.mark.parametrize("lean", [True, False], ids=["flags set directly", "through sdpa_kernel"])
def test_scope_restores_flags_and_skips_under_no_grad(lean, monkeypatch):
    """The same settings whether the scope sets torch's flags itself or (another torch) uses sdpa_kernel."""
    import hessian_core.second_order_kernels as sok

    if not lean:
        monkeypatch.setattr(sok, "_SDP_FLAGS", None)
    else:
        assert sok._SDP_FLAGS is not None  # torch 2.13 has the functions sdpa_kernel uses

    def enabled():
        cuda = torch.backends.cuda
        return (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.cudnn_sdp_enabled(),
                cuda.math_sdp_enabled(), torch.backends.mha.get_fastpath_enabled())

    before = enabled()
    with second_order_kernels():  # only the math attention backend, no fused fast path
        assert enabled() == (False, False, False, True, False)
    with torch.no_grad(), second_order_kernels():
        assert enabled() == before  # no derivative can be taken: the fused kernels are exact and faster
    with pytest.raises(ValueError), second_order_kernels():
        raise ValueError
    assert enabled() == before


class HardsigmoidNet(nn.Module):
    def __init__(self, functional=False):
        super().__init__()
        self.a, self.b, self.functional = nn.Linear(3, 5), nn.Linear(5, 2), functional
        if not functional:
            self.act = nn.Hardsigmoid()

    def forward(self, x):
        h = self.a(x)
        return self.b(F.hardsigmoid(h) if self.functional else self.act(h))


def test_hardsigmoid_module_and_function_are_replaced():
    model = HardsigmoidNet().double()
    X, y = torch.randn(8, 3, dtype=D) * 3, torch.randn(8, 2, dtype=D)
    # hardsigmoid(x) = relu6(x + 3) / 6, written out:
    def f(theta):
        w1, b1, w2, b2 = (t.reshape(p.shape) for t, p in zip(
            torch.split(theta, [p.numel() for p in model.parameters()]), model.parameters()))
        return F.mse_loss(F.linear(F.relu6(F.linear(X, w1, b1) + 3) / 6, w2, b2), y)

    theta0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    torch.testing.assert_close(f(theta0), nn.MSELoss()(model(X), y), rtol=1e-14, atol=0)  # f is the model's loss
    check_hessian(hc.hessian(model, nn.MSELoss(), (X, y), strategy="generic"), f, theta0)
    functional = HardsigmoidNet(functional=True).double()  # F.hardsigmoid called directly: replaced too
    functional.load_state_dict(model.state_dict())
    check_hessian(hc.hessian(functional, nn.MSELoss(), (X, y), strategy="generic"), f, theta0)


def bags_by_hand(weight, index, offsets, mode, per_sample_weights=None, padding_idx=None):
    ends = torch.cat([offsets[1:], torch.tensor([index.numel()])])
    out = []
    for s, e in zip(offsets.tolist(), ends.tolist()):
        rows = [weight[i] * (1 if per_sample_weights is None else per_sample_weights[j])
                for j, i in zip(range(s, e), index[s:e].tolist()) if i != padding_idx]
        total = sum(rows) if rows else torch.zeros(weight.shape[1], dtype=weight.dtype)
        out.append(total / max(len(rows), 1) if mode == "mean" else total)
    return torch.stack(out)


@pytest.mark.parametrize("mode,psw,padding_idx", [("sum", False, None), ("mean", False, 2), ("sum", True, 1)])
def test_embedding_bag_rerouted(mode, psw, padding_idx):
    class Bags(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.EmbeddingBag(5, 3, mode=mode, padding_idx=padding_idx)
            self.head = nn.Linear(3, 2)

        def forward(self, index, offsets, weights):
            return self.head(torch.tanh(self.emb(index, offsets, per_sample_weights=weights if psw else None)))

    model = Bags().double()
    index = torch.tensor([0, 2, 1, 1, 4, 2, 3, 0])
    offsets = torch.tensor([0, 3, 3, 5])  # an empty bag too
    weights = torch.rand(8, dtype=D)
    y = torch.randn(4, 2, dtype=D)
    with torch.enable_grad(), analysis_scope(model):  # the replaced forward is the same function
        torch.testing.assert_close(model(index, offsets, weights),
                                   model.head(torch.tanh(bags_by_hand(model.emb.weight, index, offsets, mode,
                                                                      weights if psw else None, padding_idx))))
    shapes = [p.shape for p in model.parameters()]

    def f(theta):
        w, hw, hb = (t.reshape(s) for t, s in zip(torch.split(theta, [s.numel() for s in shapes]), shapes))
        bags = bags_by_hand(w, index, offsets, mode, weights if psw else None, padding_idx)
        return F.mse_loss(F.linear(torch.tanh(bags), hw, hb), y)

    theta0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    H = hc.hessian(model, nn.MSELoss(), ((index, offsets, weights), y), count_fn=lambda x, t: t.shape[0])
    check_hessian(H, f, theta0)


def test_ops_without_second_derivatives_are_named_with_the_fix():
    class Distances(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return torch.cdist(self.a(x), x)

    X = torch.randn(4, 3, dtype=D)
    with pytest.raises(hc.InvalidInputError, match=r"_cdist.*write the distances out"):
        hc.HessianOperator(Distances().double(), nn.MSELoss(), (X, torch.randn(4, 4, dtype=D))).to_dense()
    assert parse("something else") == (None, None)
    assert parse("derivative for aten::_cdist_backward is not implemented")[0] == "_cdist_backward"
    assert fix_for("_cdist_backward").startswith("write the distances out") and fix_for("unknown_op") is None
    assert all(isinstance(fix, str) and fix for fix in FIXES.values())
