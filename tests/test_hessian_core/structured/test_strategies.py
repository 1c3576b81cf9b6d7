"""The structured (Linear-chain) Hessian strategies against independent float64 references, and the silent
fallback to the generic path for models they cannot handle."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc
import hessian_core.structured.factored_diagonal as factored
import hessian_core.structured.strategies as strategies
from hessian_core.structured import parse_chain

D = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def mlp(act=nn.Tanh, sizes=(3, 5, 4, 2), bias=True, tail=()):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, bias=bias), act()]
    return nn.Sequential(*layers[:-1], *tail).to(D)


def custom_loss(o, t):
    return ((o - t) ** 4).mean() + torch.log1p((o * t).exp()).sum() / o.shape[0]


LOSSES = {
    "mse": (nn.MSELoss(), 2, False),
    "mse_sum": (nn.MSELoss(reduction="sum"), 2, False),
    "ce": (nn.CrossEntropyLoss(), 4, True),
    "custom": (custom_loss, 2, False),
}


def targets(name, n, c):
    if LOSSES[name][2]:
        return torch.randint(0, c, (n,))
    return torch.randn(n, c, dtype=D)


def dense(model, loss_fn, data, **kw):
    op = hc.HessianOperator(model, loss_fn, data, **kw)
    return op.to_dense(), op.last_strategy


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.Sigmoid, nn.GELU])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_structured_dense_matches_autograd(act, bias, loss):
    loss_fn, c, _ = LOSSES[loss]
    model = mlp(act, (3, 5, 4, c), bias)
    X, Y = torch.randn(9, 3, dtype=D), targets(loss, 9, c)
    H, used = dense(model, loss_fn, (X, Y))
    assert used == "structured"
    torch.testing.assert_close(H, autograd_hessian(model, loss_fn, X, Y), **TOL)
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-14 * float(H.abs().max()))  # mirrored blocks


def test_bce_with_sigmoid_tail_and_flatten_prefix():
    # Trailing elementwise modules are folded into the loss; a Flatten before the first Linear is allowed.
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 4), nn.Tanh(), nn.Dropout(0.3), nn.Linear(4, 1),
                          nn.Sigmoid()).to(D)
    X = torch.randn(7, 2, 2, 2, dtype=D)
    t = torch.randint(0, 2, (7, 1)).to(D)
    H, used = dense(model, nn.BCELoss(), (X, t))
    assert used == "structured"
    torch.testing.assert_close(H, autograd_hessian(model.eval(), nn.BCELoss(), X, t), **TOL)


def test_deep_chain_cross_layer_blocks():
    # Four Linear layers, two consecutive Linears (identity activation), mixed activations: every
    # cross-layer residual term K_{l,m} over several layers is exercised.
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5), nn.Linear(5, 3), nn.Softplus(),
                          nn.Linear(3, 2)).to(D)
    X, Y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)
    H, used = dense(model, nn.MSELoss(), (X, Y))
    assert used == "structured"
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)


def test_unequal_batches_mean_and_sum():
    model = mlp(nn.Tanh)
    X, Y = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)
    loader = [(X[:4], Y[:4]), (X[4:8], Y[4:8]), (X[8:], Y[8:])]
    for loss_fn in (nn.MSELoss(), nn.MSELoss(reduction="sum")):
        H, used = dense(model, loss_fn, loader)
        assert used == "structured"
        torch.testing.assert_close(H, autograd_hessian(model, loss_fn, X, Y), **TOL)
        d = hc.HessianOperator(model, loss_fn, loader).diagonal()
        torch.testing.assert_close(d, H.diagonal(), **TOL)


def test_frozen_params_and_subsets():
    model = mlp(nn.Tanh, (3, 5, 4, 2))
    model[2].weight.requires_grad_(False)  # frozen: excluded from the Hessian
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    H, used = dense(model, nn.MSELoss(), (X, Y))
    assert used == "structured" and H.shape == (20 + 4 + 8 + 2,) * 2
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    names = ["0.weight", "4.bias"]
    sub = op.with_params(names)
    torch.testing.assert_close(sub.to_dense(), autograd_hessian(model, nn.MSELoss(), X, Y, names=set(names)), **TOL)
    assert sub.last_strategy == "structured"
    torch.testing.assert_close(sub.diagonal(), sub.to_dense().diagonal(), **TOL)


def test_diagonal_matches_autograd():
    for act, loss in [(nn.Tanh, "ce"), (nn.Sigmoid, "custom"), (nn.ReLU, "mse")]:
        loss_fn, c, _ = LOSSES[loss]
        model = mlp(act, (3, 6, 5, c))
        X, Y = torch.randn(11, 3, dtype=D), targets(loss, 11, c)
        op = hc.HessianOperator(model, loss_fn, (X, Y))
        d = op.diagonal()
        assert op.last_strategy == "structured"
        torch.testing.assert_close(d, autograd_hessian(model, loss_fn, X, Y).diagonal(), **TOL)
        diag_list = hc.hessian_diagonal(model, loss_fn, (X, Y))
        torch.testing.assert_close(torch.cat([t.reshape(-1) for t in diag_list]), d, **TOL)


def test_blocks_match_autograd():
    model = mlp(nn.Tanh, (3, 5, 4, 2))
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)
    blocks = hc.hessian_blocks(model, nn.MSELoss(), (X, Y), groups="module")
    spans = [(0, 20), (20, 44), (44, 54)]
    for B, (a, b) in zip(blocks, spans):
        torch.testing.assert_close(B, ref[a:b, a:b], **TOL)
    blocks = hc.hessian_blocks(model, nn.MSELoss(), (X, Y), groups=[["0.bias", "4.weight"]])
    idx = torch.cat([torch.arange(15, 20), torch.arange(44, 52)])
    torch.testing.assert_close(blocks[0], ref[idx][:, idx], **TOL)


def test_row_chunking_under_a_small_budget(monkeypatch):
    # With no minimum work area the batch is cut into one-sample slices and one output unit per GEMM.
    monkeypatch.setattr(strategies, "MIN_WORK_BYTES", 0)
    model = mlp(nn.Tanh, (3, 6, 5, 2))
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    P = 3 * 6 + 6 + 6 * 5 + 5 + 5 * 2 + 2
    calls = []
    original = strategies.add_batch_hessian
    monkeypatch.setattr(strategies, "add_batch_hessian", lambda *a: calls.append(1) or original(*a))
    H, used = dense(model, nn.MSELoss(), (X, Y), memory_budget=P * P * 8 + 64)
    assert used == "structured" and len(calls) == 8  # one sample per slice
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)


def test_float32_model():
    model = mlp(nn.Tanh).float()
    X, Y = torch.randn(8, 3), torch.randn(8, 2)
    H, used = dense(model, nn.MSELoss(), (X, Y))
    assert used == "structured" and H.dtype == torch.float32
    ref = autograd_hessian(model.double(), nn.MSELoss(), X.double(), Y.double())
    torch.testing.assert_close(H.double(), ref, rtol=1e-4, atol=1e-5)


def _shared_weight_model():
    lin = nn.Linear(3, 3)
    return nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(3, 2))


def _small_cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 16, 2))


def test_fallback_when_structure_does_not_apply():
    # Tied weights: no structured path (residual blocks, CNNs, softmax inside: tests/.../test_graph_engine.py)
    model = _shared_weight_model().to(D)
    X, Y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)
    H, used = dense(model, nn.MSELoss(), (X, Y))  # MSELoss: forward-over-reverse fails, then recovers
    assert used == "generic"
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)
    with pytest.raises(hc.InvalidInputError, match="structured"):
        hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="structured").to_dense()


def test_model_parameters_untouched_after_failed_forward_over_reverse():
    model = _small_cnn().to(D)
    registered = [(m, n, p) for m in model.modules() for n, p in m._parameters.items()]
    X, Y = torch.randn(6, 1, 4, 4, dtype=D), torch.randn(6, 2, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="generic")
    op.to_dense()
    assert op.forward_over_reverse_ok is False  # MSELoss trips forward mode in torch 2.13
    assert all(m._parameters[n] is p for m, n, p in registered)


def test_tied_parameters_stay_registered():
    model = _shared_weight_model().to(D)
    registered = [(m, n, p) for m in model.modules() for n, p in m._parameters.items()]
    hc.HessianOperator(model, nn.MSELoss(), (torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)))
    assert all(m._parameters[n] is p for m, n, p in registered)


def test_fallback_for_loss_coupling_samples():
    model = mlp(nn.Tanh)
    X, Y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)

    def coupled(o, t):  # not a sum over samples: the output Hessian is not block diagonal
        return ((o - t).sum(0) ** 2).sum() / o.shape[0]

    assert parse_chain(hc.Objective(model, coupled, (X, Y))) is not None
    for method in ("to_dense", "diagonal"):
        op = hc.HessianOperator(model, coupled, (X, Y))
        got = getattr(op, method)()
        assert op.last_path != "structured: Linear chain"  # the chain's per-sample recursion does not apply
        ref = autograd_hessian(model, coupled, X, Y)
        torch.testing.assert_close(got, ref if method == "to_dense" else ref.diagonal(), **TOL)


def test_eval_policy_model_untouched_and_train_mode_dropout_exact():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 2)).to(D).train()
    before = [p.detach().clone() for p in model.parameters()]
    X, Y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)
    H, used = dense(model, nn.MSELoss(), (X, Y))
    assert used == "structured" and model.training and model[2].training
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(H, autograd_hessian(model.eval(), nn.MSELoss(), X, Y), **TOL)
    model.train()
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True)
    Ht = op.to_dense()
    # dropout masks in train mode are drawn per batch from the seed (hessian_core.composites), the same in the
    # traced forward and in the products: the graph engine's result is that one fixed matrix
    assert op.last_strategy == "structured"
    Hg = hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True, strategy="generic").to_dense()
    torch.testing.assert_close(Ht, Hg, **TOL)
    e = torch.zeros(Ht.shape[0], dtype=D)
    e[3] = 1
    torch.testing.assert_close(Ht[:, 3], op.matvec(e), **TOL)  # one fixed matrix: same dropout masks


def test_strategy_option_is_checked():
    model = mlp()
    with pytest.raises(hc.InvalidInputError, match="strategy"):
        hc.HessianOperator(model, nn.MSELoss(), (torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)),
                           strategy="fast")


def _cnn(tail=()):
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 2),
                         nn.ReLU(), nn.Flatten(), nn.Linear(3, 2), *tail).to(D)


@pytest.mark.parametrize("loss", ["ce", "mse", "custom", "bce"])
def test_factored_diagonal_of_cnn_matches_autograd(loss):
    model = _cnn((nn.Sigmoid(),) if loss == "bce" else ())
    X = torch.randn(7, 1, 4, 4, dtype=D)
    Y = {"ce": torch.randint(0, 2, (7,)), "bce": torch.randint(0, 2, (7, 2)).to(D)}.get(
        loss, torch.randn(7, 2, dtype=D))
    loss_fn = {"ce": nn.CrossEntropyLoss(), "mse": nn.MSELoss(), "custom": custom_loss, "bce": nn.BCELoss()}[loss]
    op = hc.HessianOperator(model, loss_fn, (X, Y))
    d = op.diagonal()
    assert op.last_strategy == "structured"
    assert not d.requires_grad and d.grad_fn is None  # a plain result, not attached to the model's graph
    torch.testing.assert_close(d, autograd_hessian(model, loss_fn, X, Y).diagonal(), **TOL)


def test_factored_diagonal_batches_subsets_frozen_conv1d():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Softplus(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(6, 2)).to(D)
    model[0].bias.requires_grad_(False)
    X, Y = torch.randn(9, 2, 6, dtype=D), torch.randn(9, 2, dtype=D)
    loader = [(X[:4], Y[:4]), (X[4:8], Y[4:8]), (X[8:], Y[8:])]
    ref = autograd_hessian(model, nn.MSELoss(), X, Y).diagonal()
    op = hc.HessianOperator(model, nn.MSELoss(), loader)
    torch.testing.assert_close(op.diagonal(), ref, **TOL)
    assert op.last_strategy == "structured"
    sub = op.with_params(["0.weight"])
    torch.testing.assert_close(sub.diagonal(), ref[:18], **TOL)
    assert sub.last_strategy == "structured"


def test_factored_diagonal_with_batchnorm():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 2)).to(D)
    X, Y = torch.randn(5, 1, 4, 4, dtype=D), torch.randn(5, 2, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    d = op.diagonal()
    torch.testing.assert_close(d, autograd_hessian(model.eval(), nn.MSELoss(), X, Y).diagonal(), **TOL)


def test_diagonals_in_one_sample_slices(monkeypatch):
    monkeypatch.setattr(strategies, "MIN_WORK_BYTES", 0)
    monkeypatch.setattr(strategies, "DIAGONAL_WORK_BYTES", 1)
    calls = []
    original = factored._backprop
    monkeypatch.setattr(factored, "_backprop", lambda *a: calls.append(1) or original(*a))
    for model, X, Y in [(_cnn(), torch.randn(5, 1, 4, 4, dtype=D), torch.randn(5, 2, dtype=D)),
                        (mlp(nn.Tanh), torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D))]:
        op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
        d = op.diagonal()
        assert op.last_strategy == "structured"
        torch.testing.assert_close(d, autograd_hessian(model, nn.MSELoss(), X, Y).diagonal(), **TOL)
    assert len(calls) == 5  # the CNN's batch of 5 went through the factored path one sample at a time


def test_factored_diagonal_in_place_activations_and_overlapping_pools():
    """In-place curving activations (their input is kept for their derivatives) and max pooling whose windows
    overlap (an entry that is the maximum of two windows collects both)."""
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Hardswish(inplace=True), nn.MaxPool2d(2, stride=1),
                          nn.Conv2d(2, 2, 2), nn.SiLU(inplace=True), nn.Flatten(), nn.Linear(8, 2)).to(D)
    X, Y = torch.randn(6, 1, 5, 5, dtype=D), torch.randn(6, 2, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    d = op.diagonal()
    assert op.last_path == "structured: square-root factors"
    torch.testing.assert_close(d, autograd_hessian(model, nn.MSELoss(), X, Y).diagonal(), **TOL)
    generic = hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="generic").diagonal()
    torch.testing.assert_close(d, generic, rtol=1e-12, atol=1e-12 * float(generic.abs().max()))


def _paths():
    """(model, data, loss, the dense path, the diagonal path) for every structured computation."""
    g = torch.Generator().manual_seed(5)

    def x(*shape):
        return torch.randn(*shape, generator=g, dtype=D)

    cnn = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8, 3)).to(D).eval()
    ln = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 2)).to(D)
    X1, X2, Xc = x(7, 3), x(7, 3), x(7, 1, 4, 4)
    ce = torch.randint(0, 3, (7,), generator=g)
    return {
        "Linear chain": (mlp(nn.Tanh), [(X1[:4], x(4, 2)), (X1[4:], x(3, 2))], nn.MSELoss(), "Linear chain",
                         "Linear chain"),
        "CNN with BatchNorm (eval)": (cnn, [(Xc[:5], ce[:5]), (Xc[5:], ce[5:])], nn.CrossEntropyLoss(),
                                      "graph (per sample", "square-root factors"),
        "LayerNorm/GELU MLP": (ln, [(X2[:3], x(3, 2)), (X2[3:], x(4, 2))], nn.MSELoss(), "graph (per sample",
                               "graph (per sample"),
        "BatchNorm (train)": (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(D),
                              [(X1[:5], x(5, 2)), (X1[5:], x(2, 2))], nn.MSELoss(), "graph (the batch as one unit",
                              "graph (the batch as one unit"),
    }


@pytest.mark.parametrize("name", ["Linear chain", "CNN with BatchNorm (eval)", "LayerNorm/GELU MLP",
                                  "BatchNorm (train)"])
def test_every_structured_path_equals_the_generic_path(name):
    """Whichever path runs, the same matrix: structured and generic dense Hessians and diagonals agree to 1e-12
    (relative to the largest entry) over two unequal batches."""
    model, batches, loss, dense_path, diag_path = _paths()[name]
    kw = {"train_mode": True} if "train" in name else {}
    op = hc.HessianOperator(model, loss, batches, strategy="structured", **kw)
    generic = hc.HessianOperator(model, loss, batches, strategy="generic", **kw)
    H, G = op.to_dense(), generic.to_dense()
    assert op.last_path.startswith("structured: " + dense_path), op.last_path
    torch.testing.assert_close(H, G, rtol=1e-12, atol=1e-12 * float(G.abs().max()))
    d, dg = op.diagonal(), generic.diagonal()
    assert op.last_path.startswith("structured: " + diag_path), op.last_path
    torch.testing.assert_close(d, dg, rtol=1e-12, atol=1e-12 * float(dg.abs().max()))
    torch.testing.assert_close(dg, G.diagonal(), rtol=1e-12, atol=1e-12 * float(dg.abs().max()))
