"""What KFAC does not cover is an error naming it (or an exact block when asked); stale factors are refused;
the model is never changed."""

import pytest
import torch
from kfac_refs import block, dense_ef, dense_ggn
from torch import nn

import hessian_core as hc
from hessian_core import InvalidInputError, MemoryBudgetError

D = torch.float64


def data(n=8, d=4, c=3):
    torch.manual_seed(0)
    return torch.randn(n, d, dtype=D), torch.randint(0, c, (n,))


def normed():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3)).double()


def test_uncovered_layers_are_named_or_handled_by_their_exact_block():
    model, (X, y) = normed(), data()
    ce = nn.CrossEntropyLoss()
    with pytest.raises(InvalidInputError, match=r"'1\.weight' \(LayerNorm\), '1\.bias' \(LayerNorm\)"):
        hc.KFACOperator(model, ce, (X, y))
    ref = dense_ggn(model, ce, X, y)
    exact = hc.KFACOperator(model, ce, (X, y), uncovered="exact")
    idx, b = exact.blocks[exact.keys.index("uncovered")]
    # the GGN's block of the LayerNorm params
    assert torch.allclose(b.to_dense(), block(ref, idx), atol=1e-13, rtol=1e-12)
    assert torch.equal(idx, torch.arange(25, 35))  # after 0.weight (20) and 0.bias (5)
    diag = hc.KFACOperator(model, ce, (X, y), uncovered="diagonal")
    idx, b = diag.blocks[diag.keys.index("uncovered")]
    assert torch.allclose(b.diagonal(), block(ref, idx).diagonal(), atol=1e-13, rtol=1e-12)
    emp = hc.EKFACOperator(model, ce, (X, y), type="empirical", uncovered="exact")
    idx, b = emp.blocks[emp.keys.index("uncovered")]
    assert torch.allclose(b.to_dense(), block(dense_ef(model, ce, X, y), idx), atol=1e-13, rtol=1e-12)
    # the whole operator is still exactly invertible
    K = exact.to_dense()
    eye = torch.eye(K.shape[0], dtype=D)
    assert (exact.inverse(1e-3).to_dense() @ (K + 1e-3 * eye) - eye).abs().max() < 1e-10
    # or leave them out
    sub = hc.KFACOperator(model, ce, (X, y), params=["0.weight", "0.bias", "3.weight", "3.bias"])
    assert sub.size == 43 and sub.uncovered == []
    for key in sub.keys:  # the layers' blocks do not depend on which other parameters are differentiated
        assert torch.allclose(sub.block(key).to_dense(), exact.block(key).to_dense(), atol=1e-14, rtol=1e-12)


def test_partly_frozen_layers_and_subsets():
    torch.manual_seed(2)
    model = nn.Linear(4, 3).double()
    X, Y = torch.randn(9, 4, dtype=D), torch.randn(9, 3, dtype=D)
    ref = dense_ggn(model, nn.MSELoss(), X, Y)
    only_bias = hc.KFACOperator(model, nn.MSELoss(), (X, Y), params=[model.bias])
    assert only_bias.keys == ["bias"] and only_bias.factors[""][0] is None
    assert torch.allclose(only_bias.to_dense(), ref[12:, 12:], atol=1e-13, rtol=1e-12)
    only_weight = hc.KFACOperator(model, nn.MSELoss(), (X, Y), params=[model.weight], separate_bias=False)
    assert torch.allclose(only_weight.to_dense(), ref[:12, :12], atol=1e-13, rtol=1e-12)


def test_unsupported_layer_options_and_uses_are_named():
    X4 = torch.randn(4, 4, 5, 5, dtype=D)
    y = torch.randint(0, 2, (4,))
    ce = nn.CrossEntropyLoss()
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(36, 2)).double()
    with pytest.raises(InvalidInputError, match=r"'0' is a grouped convolution"):
        hc.KFACOperator(grouped, ce, (X4, y))
    circular = nn.Sequential(nn.Conv2d(4, 2, 3, padding=1, padding_mode="circular"), nn.Flatten(),
                             nn.Linear(50, 2)).double()
    with pytest.raises(InvalidInputError, match="padding_mode='circular'"):
        hc.KFACOperator(circular, ce, (X4, y))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.fc(torch.tanh(self.fc(x)))))

    X, y2 = torch.randn(5, 4, dtype=D), torch.randint(0, 2, (5,))
    with pytest.raises(InvalidInputError, match=r"'fc' \(Linear\) is called more than once"):
        hc.KFACOperator(Twice().double(), ce, (X, y2))

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    with pytest.raises(InvalidInputError, match="shared by"):
        hc.KFACOperator(Tied().double(), nn.MSELoss(), (X, torch.randn(5, 4, dtype=D)))

    class SequenceFirst(nn.Module):  # (T, B, d): the layer's first dimension is not the sample
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x.transpose(0, 1)).mean(0)

    with pytest.raises(InvalidInputError, match="sample dimension first"):
        hc.KFACOperator(SequenceFirst().double(), ce, (torch.randn(5, 3, 4, dtype=D), y2))


def test_parameters_used_outside_their_layer_are_caught_by_the_self_check():
    torch.manual_seed(3)
    X, y = torch.randn(5, 6, 4, dtype=D), torch.randint(0, 3, (5,))
    ce = nn.CrossEntropyLoss()

    class Attention(nn.Module):  # nn.MultiheadAttention uses out_proj's weight without calling out_proj
        def __init__(self):
            super().__init__()
            self.att = nn.MultiheadAttention(4, 2, batch_first=True)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.att(x, x, x)[0]).mean(1)

    with pytest.raises(InvalidInputError, match=r"'att\.out_proj' \(Linear\) is used in the forward, but the layer"):
        hc.KFACOperator(Attention().double(), ce, (X, y), uncovered="diagonal")

    class Reused(nn.Module):  # fc's weight also enters through F.linear outside fc's call
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            h = torch.tanh(self.fc(x))
            return self.out(h + nn.functional.linear(h, self.fc.weight))

    with pytest.raises(InvalidInputError, match=r"weight of layer 'fc' \(Linear\) assembled .* differs"):
        hc.KFACOperator(Reused().double(), ce, (X[:, 0], y))

    class Unused(nn.Module):  # a head that the loss does not see: its exact block is zero, and so is KFAC's
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.aux = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    op = hc.KFACOperator(Unused().double(), ce, (X[:, 0], y))
    assert float(op.block("aux.weight").to_dense().abs().max()) == 0.0


def test_option_and_loss_errors():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X, y = data()
    ce = nn.CrossEntropyLoss()
    with pytest.raises(InvalidInputError, match="type must be one of"):
        hc.KFACOperator(model, ce, (X, y), type="fisher")
    with pytest.raises(InvalidInputError, match="approx must be one of"):
        hc.KFACOperator(model, ce, (X, y), approx="both")
    with pytest.raises(InvalidInputError, match="mc_samples=3 applies to type='mc' only"):
        hc.KFACOperator(model, ce, (X, y), mc_samples=3)
    with pytest.raises(InvalidInputError, match="type='mc' draws labels"):
        hc.KFACOperator(model, nn.CrossEntropyLoss(weight=torch.ones(3, dtype=D)), (X, y), type="mc")
    Y = torch.randn(8, 3, dtype=D)
    with pytest.raises(InvalidInputError, match="couples different samples"):
        hc.KFACOperator(model, lambda o, t: ((o - t).mean(0) ** 2).sum(), (X, Y))
    bn = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5, affine=False), nn.Linear(5, 3)).double()
    with pytest.raises(InvalidInputError, match="BatchNorm in train mode"):
        hc.KFACOperator(bn, ce, (X, y), train_mode=True)
    hc.KFACOperator(bn, ce, (X, y))  # eval mode: running statistics, per-sample terms
    with pytest.raises(InvalidInputError, match="takes no loss_fn"):
        hc.KFACOperator(hc.Objective(model, ce, (X, y)), ce)
    op = hc.KFACOperator(model, ce, (X, y), memory_budget=1000)
    with pytest.raises(MemoryBudgetError):
        op.to_dense()


def test_stale_factors_are_refused_and_refresh_recomputes():
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X, y = data()
    ce = nn.CrossEntropyLoss()
    op = hc.KFACOperator(model, ce, (X, y))
    inv = op.inverse(1e-2)
    v = torch.randn(op.size, dtype=D)
    before = inv @ v
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    for call in (lambda: op @ v, op.to_dense, op.trace, lambda: op.inverse(1e-2), lambda: op.logdet(1.0)):
        with pytest.raises(InvalidInputError, match="changed since its factors were computed"):
            call()
    assert torch.equal(inv @ v, before)  # an inverse is a fixed matrix of its own
    op.refresh()
    assert torch.allclose(op.to_dense(), hc.KFACOperator(model, ce, (X, y)).to_dense(), atol=0, rtol=1e-12)


def test_the_model_is_not_changed():
    model = nn.Sequential(nn.Linear(4, 5), nn.Dropout(0.3), nn.Tanh(), nn.Linear(5, 3)).double()
    model.train()
    model[3].eval()
    X, y = data()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for cls in (hc.KFACOperator, hc.EKFACOperator):
        for t in ("exact", "mc", "empirical"):
            cls(model, nn.CrossEntropyLoss(), (X, y), type=t)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and model[0].training and not model[3].training
