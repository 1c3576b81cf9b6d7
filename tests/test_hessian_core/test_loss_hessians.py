"""Closed-form output Hessians of the standard losses against torch.autograd's Hessian of the loss itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.loss_hessians import output_hessian, recognized

D = torch.float64


def as_matrix(H, out):
    n = out.numel()
    return torch.stack([H.apply(e.reshape(out.shape), out).reshape(-1) for e in torch.eye(n, dtype=out.dtype)], 1)


def autograd_loss_hessian(loss_fn, out, targets):
    n = out.numel()
    return torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), targets), out.reshape(-1)) \
        .reshape(n, n)


def cross_entropy_by_hand(loss_fn, out, targets):
    """nn.CrossEntropyLoss written out (log_softmax, weights, ignore_index, label smoothing, reduction), as
    documented; its value is checked against torch's, its Hessian is the reference."""
    if out.dim() == 1:
        out, targets = out[None], targets[None]
    C, eps = out.shape[1], loss_fn.label_smoothing
    logp = torch.log_softmax(out, 1).movedim(1, -1).reshape(-1, C)
    w = torch.ones(C, dtype=out.dtype) if loss_fn.weight is None else loss_fn.weight
    if targets.dtype.is_floating_point:
        q = targets.movedim(1, -1).reshape(-1, C) * (1 - eps) + eps / C
        per = -(q * w * logp).sum(1)
        return per.sum() / (per.numel() if loss_fn.reduction == "mean" else 1)
    t = targets.reshape(-1)
    keep = t != loss_fn.ignore_index
    t, logp = t[keep], logp[keep]
    per = -(1 - eps) * w[t] * logp.gather(1, t[:, None])[:, 0] - eps / C * (w * logp).sum(1)
    return per.sum() / (w[t].sum() if loss_fn.reduction == "mean" else 1)


W = torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=D)
INDEX = torch.tensor([0, 3, -100, 1, 3, 2])
CASES = [
    (nn.CrossEntropyLoss(), (6, 4), INDEX.clamp(min=0)),
    (nn.CrossEntropyLoss(), (6, 4), INDEX),
    (nn.CrossEntropyLoss(weight=W), (6, 4), INDEX),
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.2), (6, 4), INDEX),
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.1, reduction="sum"), (6, 4), INDEX),
    (nn.CrossEntropyLoss(weight=W, ignore_index=3, label_smoothing=0.3), (6, 4), INDEX.clamp(min=0)),
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.2), (6, 4), "probabilities"),
    (nn.CrossEntropyLoss(reduction="sum"), (6, 4), "probabilities"),
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), (2, 4, 3), torch.tensor([[0, 3, -100], [1, 1, 2]])),
    (nn.CrossEntropyLoss(label_smoothing=0.1), (4,), torch.tensor(2)),
    (nn.MSELoss(), (6, 4), "real"),
    (nn.MSELoss(reduction="sum"), (3, 2, 2), "real"),
    (nn.BCEWithLogitsLoss(weight=torch.rand(6, 4, dtype=D), pos_weight=torch.rand(4, dtype=D) + 0.5), (6, 4),
     "unit"),
    (nn.BCEWithLogitsLoss(reduction="sum"), (6, 4), "unit"),
    (nn.BCELoss(weight=torch.rand(4, dtype=D)), (6, 4), "unit"),
    (hc.CausalLMLoss(), (2, 5, 4), torch.tensor([[1, 2, -100, 0, 3], [2, -100, 1, 1, -100]])),
    (hc.CausalLMLoss(reduction="sum"), (2, 5, 4), torch.tensor([[1, 2, 0, 0, 3], [2, -100, 1, 1, 0]])),
]


@pytest.mark.parametrize("loss_fn,shape,targets", CASES, ids=lambda c: repr(c)[:60] if isinstance(c, nn.Module) else "")
def test_closed_form_equals_autograd(loss_fn, shape, targets):
    out = torch.randn(shape, dtype=D)
    if isinstance(loss_fn, nn.BCELoss):
        out = torch.sigmoid(out)
    if isinstance(targets, str):
        targets = {"probabilities": torch.softmax(torch.randn(shape, dtype=D), 1),
                   "real": torch.randn(shape, dtype=D), "unit": torch.rand(shape, dtype=D)}[targets]
    H = output_hessian(loss_fn, out, targets)
    assert H is not None
    reference = loss_fn
    if type(loss_fn) is nn.CrossEntropyLoss:
        def reference(o, t):
            return cross_entropy_by_hand(loss_fn, o, t)

        torch.testing.assert_close(reference(out, targets), loss_fn(out, targets), rtol=1e-14, atol=0)
    ref = autograd_loss_hessian(reference, out, targets)
    # BCE on probabilities: torch's double backward and the closed form round differently (1e-11 relative)
    rtol = 1e-9 if isinstance(loss_fn, nn.BCELoss) else 1e-12
    torch.testing.assert_close(as_matrix(H, out), ref, rtol=rtol, atol=1e-14 * ref.abs().max())


def test_softmax_chunks_over_positions(monkeypatch):
    """Positions are processed in chunks (the softmax of a vocabulary-sized output is never formed whole)."""
    import hessian_core.loss_hessians as lh

    monkeypatch.setattr(lh, "_CHUNK_BYTES", 3 * 4 * 8 * 4)  # three rows at a time
    loss_fn, out, y = nn.CrossEntropyLoss(), torch.randn(10, 4, dtype=D), torch.randint(0, 4, (10,))
    torch.testing.assert_close(as_matrix(output_hessian(loss_fn, out, y), out), autograd_loss_hessian(loss_fn, out, y))


def test_not_recognized_means_autograd():
    class MyCE(nn.CrossEntropyLoss):
        pass

    hooked = nn.CrossEntropyLoss()
    hooked.register_forward_hook(lambda *a: None)
    for loss_fn in (MyCE(), hooked, nn.HuberLoss(), lambda o, t: (o - t).pow(2).mean()):
        assert not recognized(loss_fn)
        assert output_hessian(loss_fn, torch.randn(3, 2, dtype=D), torch.randn(3, 2, dtype=D)) is None
    # BCE where torch clamps its logarithms: not the closed form's function, so autograd decides
    x = torch.tensor([[1e-13, 0.5]], dtype=D)
    assert output_hessian(nn.BCELoss(), x, torch.rand(1, 2, dtype=D)) is None


@pytest.mark.parametrize("loss_fn,targets", [
    (nn.CrossEntropyLoss(weight=W, label_smoothing=0.1), INDEX),
    (nn.BCEWithLogitsLoss(pos_weight=torch.rand(4, dtype=D) + 0.5), "unit"),
    (nn.MSELoss(), "real"),
])
def test_monte_carlo_fisher_is_unbiased(loss_fn, targets):
    """The sampled (rank-k per position) Hessian averages to the exact one: error ~ 1/sqrt(k)."""
    out = torch.randn(6, 4, dtype=D)
    if isinstance(targets, str):
        targets = {"real": torch.randn(6, 4, dtype=D), "unit": torch.rand(6, 4, dtype=D)}[targets]
    exact = as_matrix(output_hessian(loss_fn, out, targets), out)
    g = torch.Generator().manual_seed(0)
    mc = as_matrix(output_hessian(loss_fn, out, targets, mc_samples=40_000, generator=g), out)
    assert (mc - exact).norm() <= 0.03 * exact.norm()
    again = as_matrix(output_hessian(loss_fn, out, targets, mc_samples=40_000, generator=g.manual_seed(0)), out)
    torch.testing.assert_close(mc, again)  # fixed by the generator
    few = as_matrix(output_hessian(loss_fn, out, targets, mc_samples=1, generator=g), out)
    assert (few - exact).norm() > 0.03 * exact.norm()  # one sample is not the exact matrix
