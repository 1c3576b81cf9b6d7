"""The normalization contract over loaders: batches of 4, 4 and 2 give the factors of the 10 samples as one
batch; Monte Carlo draws are seeded per batch and converge to the exact type."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hessian_core as hc

D = torch.float64


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def data(loss):
    torch.manual_seed(1)
    X = torch.randn(10, 4, dtype=D)
    if isinstance(loss, nn.CrossEntropyLoss):
        return X, torch.randint(0, 3, (10,))
    return X, torch.randn(10, 3, dtype=D)


def loader(X, Y):
    return DataLoader(TensorDataset(X, Y), batch_size=4)  # 4, 4, 2


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.MSELoss(), nn.MSELoss(reduction="sum")],
                         ids=["ce", "mse", "mse-sum"])
@pytest.mark.parametrize("type", ["exact", "empirical"])
@pytest.mark.parametrize("approx", ["expand", "reduce"])
def test_unequal_batches_give_the_factors_of_one_batch(loss, type, approx):
    model = mlp()
    X, Y = data(loss)
    one = hc.KFACOperator(model, loss, (X, Y), type=type, approx=approx)
    many = hc.KFACOperator(model, loss, loader(X, Y), type=type, approx=approx)
    for name, (A, G) in one.factors.items():
        A2, G2 = many.factors[name]
        assert torch.allclose(A, A2, atol=1e-14, rtol=1e-12) and torch.allclose(G, G2, atol=1e-14, rtol=1e-12), name
    assert torch.allclose(one.to_dense(), many.to_dense(), atol=1e-14, rtol=1e-12)
    # not what weighting the three batches equally would give (the usual mistake)
    parts = [hc.KFACOperator(model, loss, (X[a:b], Y[a:b]), type=type, approx=approx).to_dense()
             for a, b in ((0, 4), (4, 8), (8, 10))]
    if loss.reduction == "mean":
        assert (sum(parts) / 3 - one.to_dense()).abs().max() > 1e-4


def test_unequal_batches_ekfac_and_a_sequence_model_with_masked_tokens():
    model = mlp()
    X, y = data(nn.CrossEntropyLoss())
    one = hc.EKFACOperator(model, nn.CrossEntropyLoss(), (X, y))
    many = hc.EKFACOperator(model, nn.CrossEntropyLoss(), loader(X, y))
    assert torch.allclose(one.to_dense(), many.to_dense(), atol=1e-14, rtol=1e-12)

    # tokens: a Linear over positions, per-token cross-entropy with ignored tokens; the loss averages over the
    # kept tokens, which count_fn declares, so unequal batches (and unequal kept counts) are still exact
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(3, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.emb(x))).transpose(1, 2)

    torch.manual_seed(2)
    seq = Tokens().double()
    Xs, ys = torch.randn(10, 5, 3, dtype=D), torch.randint(0, 3, (10, 5))
    ys[torch.rand(10, 5) < 0.3] = -100
    count = lambda x, t: (t != -100).sum()  # noqa: E731
    kw = dict(count_fn=count)
    for cls in (hc.KFACOperator, hc.EKFACOperator):
        a = cls(seq, nn.CrossEntropyLoss(), (Xs, ys), **kw).to_dense()
        b = cls(seq, nn.CrossEntropyLoss(), loader(Xs, ys), **kw).to_dense()
        assert torch.allclose(a, b, atol=1e-14, rtol=1e-12), cls


def test_monte_carlo_is_seeded_per_batch_and_reproducible():
    model = mlp()
    X, y = data(nn.CrossEntropyLoss())
    a = hc.KFACOperator(model, nn.CrossEntropyLoss(), loader(X, y), type="mc", seed=3).to_dense()
    b = hc.KFACOperator(model, nn.CrossEntropyLoss(), loader(X, y), type="mc", seed=3).to_dense()
    c = hc.KFACOperator(model, nn.CrossEntropyLoss(), loader(X, y), type="mc", seed=4).to_dense()
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-6
    e1 = hc.EKFACOperator(model, nn.CrossEntropyLoss(), (X, y), type="mc", mc_samples=2, seed=3).to_dense()
    e2 = hc.EKFACOperator(model, nn.CrossEntropyLoss(), (X, y), type="mc", mc_samples=2, seed=3).to_dense()
    assert torch.equal(e1, e2)


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.MSELoss(), nn.BCEWithLogitsLoss(reduction="sum")],
                         ids=["ce", "mse", "bce-sum"])
def test_monte_carlo_converges_to_the_exact_type(loss):
    # the MC draws have the right scale: with many samples the relative error is about 1/sqrt(samples)
    model = mlp()
    X, Y = data(loss)
    if isinstance(loss, nn.BCEWithLogitsLoss):
        Y = (Y > 0).to(D)
    exact = hc.KFACOperator(model, loss, (X, Y)).to_dense()
    mc = hc.KFACOperator(model, loss, loader(X, Y), type="mc", mc_samples=1000).to_dense()
    rel = float((mc - exact).norm() / exact.norm())
    assert rel < 0.05, rel
