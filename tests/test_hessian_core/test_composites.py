"""The equivalent composites compute what PyTorch's own operations compute (forward values, against PyTorch),
never write into their arguments, and are used only where needed."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import hessian_core as hc
from hessian_core.composites import Composites, composites

D = torch.float64


def under(fn, *args, **kwargs):
    used = {}
    with Composites(used):
        out = fn(*args, **kwargs)
    return out, used


@pytest.mark.parametrize("kwargs", [
    {"padding_idx": 0}, {"padding_idx": -1}, {"scale_grad_by_freq": True}, {"sparse": True},
    {"max_norm": 1.0}, {"max_norm": 0.5, "norm_type": 1.0}])
def test_embedding_values_and_weight_untouched(kwargs):
    weight = torch.randn(6, 3, dtype=D) * 2
    before = weight.clone()
    idx = torch.tensor([[0, 1, 5], [2, 2, 4]])
    out, used = under(F.embedding, idx, weight, **kwargs)
    assert torch.equal(weight, before)  # max_norm renormalized a copy
    expected = F.embedding(idx, weight.clone(), **kwargs)  # PyTorch renormalizes its copy in place
    torch.testing.assert_close(out, expected, rtol=1e-15, atol=1e-15)
    assert used


def test_plain_embedding_is_left_to_pytorch():
    _, used = under(F.embedding, torch.tensor([1, 2]), torch.randn(4, 2, dtype=D))
    assert used == {}


BAGS = [
    dict(mode="sum"), dict(mode="mean"), dict(mode="max"), dict(mode="mean", padding_idx=2),
    dict(mode="max", padding_idx=2), dict(mode="sum", max_norm=1.0),
]


@pytest.mark.parametrize("kwargs", BAGS)
@pytest.mark.parametrize("layout", ["2d", "offsets", "last offset"])
def test_embedding_bag_values(kwargs, layout):
    weight = torch.randn(6, 3, dtype=D) * 2
    if layout == "2d":
        args = (torch.tensor([[0, 1, 2], [2, 2, 2], [5, 4, 3]]),)
    else:  # bags of 3, 0 (empty), 4 and 3 entries
        offsets = torch.tensor([0, 3, 3, 7] + ([10] if layout == "last offset" else []))
        args = (torch.tensor([0, 1, 2, 2, 2, 5, 4, 3, 1, 0]), offsets)
        kwargs = dict(kwargs, include_last_offset=layout == "last offset")
    out, used = under(F.embedding_bag, args[0], weight, *args[1:], **kwargs)
    expected = F.embedding_bag(args[0], weight.clone(), *args[1:], **kwargs)
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-14)
    assert "EmbeddingBag" in used


def test_embedding_bag_per_sample_weights():
    weight, idx, psw = torch.randn(5, 3, dtype=D), torch.tensor([[0, 1], [4, 4]]), torch.randn(2, 2, dtype=D)
    out, _ = under(F.embedding_bag, idx, weight, mode="sum", per_sample_weights=psw)
    torch.testing.assert_close(out, F.embedding_bag(idx, weight, mode="sum", per_sample_weights=psw))


def test_hardsigmoid_rrelu_weight_norm_values():
    x = torch.linspace(-4, 4, 41, dtype=D)
    assert torch.equal(under(F.hardsigmoid, x)[0], F.hardsigmoid(x))
    y = x.clone()
    under(F.hardsigmoid, y, inplace=True)
    assert torch.equal(y, F.hardsigmoid(x))
    assert torch.equal(under(F.rrelu, x, 0.1, 0.3)[0], F.rrelu(x, 0.1, 0.3))
    v, g = torch.randn(4, 3, dtype=D), torch.randn(4, 1, dtype=D)
    torch.testing.assert_close(under(torch._weight_norm, v, g, 0)[0], torch._weight_norm(v, g, 0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_margin_losses_values(reduction):
    x, y = torch.randn(5, 4, dtype=D), torch.randint(0, 4, (5,))
    w = torch.rand(4, dtype=D) + 0.5
    for kwargs in ({}, {"p": 2, "margin": 2.0, "weight": w}):
        out, _ = under(F.multi_margin_loss, x, y, reduction=reduction, **kwargs)
        torch.testing.assert_close(out, F.multi_margin_loss(x, y, reduction=reduction, **kwargs))
    labels = torch.tensor([[3, 0, -1, 1], [0, 1, 2, 3], [1, 1, -1, 0], [-1, 2, 2, 2], [2, -1, 3, 3]])
    out, _ = under(F.multilabel_margin_loss, x, labels, reduction=reduction)
    torch.testing.assert_close(out, F.multilabel_margin_loss(x, labels, reduction=reduction))
    torch.testing.assert_close(under(F.multi_margin_loss, x[0], y[:1])[0], F.multi_margin_loss(x[0], y[:1]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("concatenated", [False, True])
def test_ctc_values(reduction, concatenated):
    T, N, C = 6, 3, 4
    lp = torch.randn(T, N, C, dtype=D).log_softmax(-1)
    targets = torch.tensor([[1, 2, 2], [3, 0, 0], [1, 1, 0]])
    il, tl = torch.tensor([6, 4, 5]), torch.tensor([3, 1, 2])
    if concatenated:
        targets = torch.cat([targets[n, :tl[n]] for n in range(N)])
    out, _ = under(F.ctc_loss, lp, targets, il, tl, reduction=reduction)
    torch.testing.assert_close(out, F.ctc_loss(lp, targets, il, tl, reduction=reduction), rtol=1e-12, atol=1e-12)


def test_ctc_impossible_alignment():
    lp = torch.randn(2, 1, 3, dtype=D).log_softmax(-1)
    args = (lp, torch.tensor([[1, 1]]), torch.tensor([2]), torch.tensor([2]))  # needs 3 frames
    assert under(F.ctc_loss, *args, reduction="sum")[0] == float("inf") == F.ctc_loss(*args, reduction="sum")
    assert under(F.ctc_loss, *args, zero_infinity=True)[0] == 0 == F.ctc_loss(*args, zero_infinity=True)


def test_cross_map_lrn2d_forward_is_restored():
    m = nn.CrossMapLRN2d(3, alpha=0.3, beta=0.7, k=1.5)
    x = torch.randn(2, 5, 3, 3, dtype=D)
    used = {}
    with composites(m, used):
        out = m(x)
    assert "forward" not in vars(m) and "CrossMapLRN2d" in used
    torch.testing.assert_close(out, m(x), rtol=1e-12, atol=1e-12)


def test_plan_names_the_substitutions_and_plain_models_skip_them():
    model = nn.Sequential(nn.Linear(3, 4), nn.Hardsigmoid(), nn.Linear(4, 2)).to(D)
    data = (torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D))
    op = hc.HessianOperator(model, nn.MSELoss(), data)
    assert "hardsigmoid" in op.plan()["composites"]
    plain = hc.HessianOperator(nn.Sequential(nn.Linear(3, 2)).to(D), nn.MSELoss(), data)
    assert plain.objective.probe.composites == () and not plain.objective.uses_composites
