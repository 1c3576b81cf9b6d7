"""Products over slices of samples (memory-bound batches) equal the products over the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hessian_core as hc
import hessian_core.sample_slices as slices_module

D = torch.float64


class TinyLM(nn.Module):
    def __init__(self, vocab=5, d=3):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(vocab, d), nn.Linear(d, d), nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.emb(ids).cumsum(1) / torch.arange(1, ids.shape[1] + 1)[:, None]
        return {"logits": self.head(torch.tanh(self.mix(h)))}


def count_slices(monkeypatch):
    used = []
    original = slices_module.sliced_apply

    def spy(op, ctx, prepare, slices):
        used.append(len(slices))
        return original(op, ctx, prepare, slices)

    for module in ("hessian_core.operators.ggn", "hessian_core.operators.hessian"):
        monkeypatch.setattr(f"{module}.sliced_apply", spy)
    return used


@pytest.mark.parametrize("op_cls", [hc.GGNOperator, hc.HessianOperator])
def test_language_model_slices_are_exact(op_cls, monkeypatch):
    model = TinyLM().double()
    ids = torch.randint(0, 5, (5, 4))
    labels = ids.clone()
    labels[1:3] = -100  # whole slices with nothing to predict contribute nothing
    labels[0, 2] = -100
    data = (ids, labels)
    loss = hc.CausalLMLoss()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, dtype=D)
    whole = op_cls(model, loss, data).matmat(V)
    used = count_slices(monkeypatch)
    op = op_cls(model, loss, data, memory_budget=2000)  # (forces slices)
    torch.testing.assert_close(op.matmat(V), whole, rtol=1e-12, atol=1e-14)
    with op.reuse():
        torch.testing.assert_close(op.matvec(V[:, 0]), whole[:, 0], rtol=1e-12, atol=1e-14)
    # one vector: each slice's product goes straight into the accumulator (no running sum), also over two
    # unequal batches normalized globally by their token counts
    torch.testing.assert_close(op.matvec(V[:, 0]), whole[:, 0], rtol=1e-12, atol=1e-14)
    two = op_cls(model, loss, [(ids[:3], labels[:3]), (ids[3:], labels[3:])], memory_budget=2000)
    torch.testing.assert_close(two.matvec(V[:, 0]), whole[:, 0], rtol=1e-12, atol=1e-14)
    assert used and max(used) >= 2 and op._slices_exact


def test_classifier_with_weights_and_ignored_labels(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    X, y = torch.randn(9, 3, dtype=D), torch.tensor([0, 3, -100, 1, 2, -100, -100, 3, 1])
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=D), label_smoothing=0.1)
    V = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=D)
    used = count_slices(monkeypatch)
    for op_cls in (hc.GGNOperator, hc.HessianOperator):
        torch.testing.assert_close(op_cls(model, loss, (X, y), memory_budget=1500).matmat(V),
                                   op_cls(model, loss, (X, y)).matmat(V), rtol=1e-12, atol=1e-14)
    assert used


def test_models_that_mix_samples_or_draw_randomly_are_not_sliced(monkeypatch):
    used = count_slices(monkeypatch)
    X, y = torch.randn(8, 3, dtype=D), torch.randint(0, 2, (8,))
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    op = hc.GGNOperator(bn, nn.CrossEntropyLoss(), (X, y), train_mode=True, memory_budget=300)
    V = torch.randn(op.size, 2, dtype=D)
    torch.testing.assert_close(op.matmat(V), hc.GGNOperator(bn, nn.CrossEntropyLoss(), (X, y),
                                                            train_mode=True).matmat(V))
    assert op._slices_exact is False and not used  # batch statistics: a slice's output differs
    drop = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    op = hc.HessianOperator(drop, nn.CrossEntropyLoss(), (X, y), train_mode=True, memory_budget=300)
    V = torch.randn(op.size, 2, dtype=D)
    torch.testing.assert_close(op.matmat(V), hc.HessianOperator(drop, nn.CrossEntropyLoss(), (X, y),
                                                                train_mode=True).matmat(V))
    assert not used  # the dropout masks depend on the slice


def test_monte_carlo_fisher_in_slices_is_one_matrix(monkeypatch):
    model = TinyLM().double()
    ids = torch.randint(0, 5, (6, 4))
    used = count_slices(monkeypatch)
    op = hc.GGNOperator(model, hc.CausalLMLoss(), (ids, ids), mc_samples=2, memory_budget=2000)  # (forces slices)
    V = torch.randn(op.size, 4, dtype=D)
    A = op.matmat(V)
    torch.testing.assert_close(op.matmat(V), A)
    torch.testing.assert_close(V.T @ A, A.T @ V, rtol=1e-10, atol=1e-12)  # symmetric
    assert used


class TiedLM(nn.Module):
    """Output projection tied to the token embedding (GPT-2's convention)."""

    def __init__(self, vocab=6, d=3):
        super().__init__()
        self.emb, self.mix = nn.Embedding(vocab, d), nn.Linear(d, d)

    def forward(self, ids):
        h = torch.tanh(self.mix(self.emb(ids).cumsum(1)))
        return h @ self.emb.weight.T


class NoForwardMode(torch.autograd.Function):
    """``tanh`` with a backward but no ``jvp``: forward mode (the closed form's ``J v``) fails on it."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class ReverseOnlyLM(TiedLM):
    def forward(self, ids):
        return NoForwardMode.apply(self.mix(self.emb(ids).cumsum(1))) @ self.emb.weight.T


def explicit_ggn(model, ids, labels):
    """``J^T H J / N`` with ``J`` by ``torch.autograd.functional.jacobian`` and ``H`` the softmax
    cross-entropy's ``diag(p) - p p^T`` per predicted position (the shift by one), ``N`` their count."""
    params = dict(model.named_parameters())
    names = list(params)

    def logits_of(*flat):
        return torch.func.functional_call(model, dict(zip(names, flat)), (ids,))[:, :-1].reshape(-1, 6)

    jac = torch.autograd.functional.jacobian(logits_of, tuple(params.values()))
    J = torch.cat([j.reshape(j.shape[0], j.shape[1], -1) for j in jac], dim=2)  # (positions, classes, P)
    keep = labels[:, 1:].reshape(-1) != -100
    with torch.no_grad():
        p = torch.softmax(logits_of(*params.values()), -1)
    H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", J[keep], H[keep], J[keep]) / keep.sum()


@pytest.mark.parametrize("lm", [TiedLM, ReverseOnlyLM])
def test_one_vector_accumulates_in_place_exactly_and_leaves_the_model_alone(lm, monkeypatch):
    # one column over slices: each slice's backward pass adds into the result through .grad of leaves of
    # the operator's own; the tied weight gets both of its parts, the model's own .grad is not touched, and
    # a model without forward mode (J v by the double vjp) is not added twice when the closed form gives up
    torch.manual_seed(0)
    model = lm().double()
    ids = torch.randint(0, 6, (5, 4))
    labels = ids.clone()
    labels[2, 1:] = -100
    G = explicit_ggn(model, ids, labels)
    assert torch.linalg.norm(G - G.T) < 1e-12 and torch.linalg.norm(G) > 1e-3
    marker = torch.full_like(model.emb.weight, 7.0)
    model.emb.weight.grad = marker.clone()
    used = count_slices(monkeypatch)
    op = hc.GGNOperator(model, hc.CausalLMLoss(), (ids, labels), memory_budget=1500)  # (forces slices)
    v = torch.randn(op.size, dtype=D)
    torch.testing.assert_close(op.matvec(v), G @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v), G @ v, rtol=1e-10, atol=1e-12)  # no state left behind
    assert used and max(used) >= 2
    assert torch.equal(model.emb.weight.grad, marker) and model.mix.weight.grad is None
    assert (op.plan()["J v"] == "forward mode") == (lm is TiedLM)
    whole = hc.GGNOperator(model, hc.CausalLMLoss(), (ids, labels))  # one batch whole: the same in place
    torch.testing.assert_close(whole.matvec(v), G @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(whole.matmat(torch.stack([v, 2 * v], 1)), torch.stack([G @ v, 2 * G @ v], 1),
                               rtol=1e-10, atol=1e-12)


class ParameterTable(nn.Module):
    """The output is a view of a parameter: its forward-mode tangent is a view of the vector multiplied."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(18))

    def forward(self, x):
        return self.table.view(6, 3)  # (one row per sample of a batch of 6)


@pytest.mark.parametrize("budget", [None, 200])
def test_the_vectors_multiplied_are_never_written(budget):
    torch.manual_seed(2)
    model = ParameterTable().double()
    X, y = torch.randn(6, 2, dtype=D), torch.tensor([0, 1, 2, 1, 0, 2])
    p = torch.softmax(model.table.detach().view(6, 3), 1)
    H = torch.block_diag(*[torch.diag(q) - torch.outer(q, q) for q in p]) / 6  # J = I: G is the loss Hessian
    op = hc.GGNOperator(model, nn.CrossEntropyLoss(), (X, y), memory_budget=budget)
    v, V = torch.randn(18, dtype=D), torch.randn(18, 3, dtype=D)
    v0, V0 = v.clone(), V.clone()
    torch.testing.assert_close(op.matvec(v), H @ v0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(op.matmat(V), H @ V0, rtol=1e-12, atol=1e-14)
    assert torch.equal(v, v0) and torch.equal(V, V0)
