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
