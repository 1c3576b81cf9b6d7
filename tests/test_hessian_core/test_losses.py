"""CausalLMLoss: Hugging Face's next-token loss convention, exact global normalization over tokens, and a
tiny transformers GPT-2 (built locally, random weights) through every kind of product."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from optional import need
from reference import flat_loss_fn
from torch import nn

import hessian_core as hc

D = torch.float64
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "huggingface_causal_lm.py"


class TinyLM(nn.Module):
    """Embedding, a causal mixing layer and a vocabulary head: logits (B, T, V) in a dict, as models return."""

    def __init__(self, vocab=5, d=3):
        super().__init__()
        self.emb, self.mix, self.head = nn.Embedding(vocab, d), nn.Linear(d, d), nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.emb(ids).cumsum(1) / torch.arange(1, ids.shape[1] + 1)[:, None]  # causal mean
        return {"logits": self.head(torch.tanh(self.mix(h))), "hidden": h}


def shifted_by_hand(logits, labels):
    """Position t predicts labels[t + 1]; -100 left out; mean over the rest (transformers' ForCausalLMLoss)."""
    pred, target = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    keep = target != -100
    return -torch.log_softmax(pred[keep], -1).gather(1, target[keep, None]).mean()


def test_causal_lm_loss_convention_and_count():
    loss = hc.CausalLMLoss()
    logits = torch.randn(2, 5, 4, dtype=D)
    labels = torch.tensor([[1, 2, -100, 0, 3], [2, -100, 1, 1, -100]])
    torch.testing.assert_close(loss({"logits": logits}, labels), shifted_by_hand(logits, labels), rtol=1e-14, atol=0)
    torch.testing.assert_close(loss((logits, None), labels), loss(logits, labels))
    assert int(loss.count_fn(None, labels)) == 5
    assert hc.Objective(TinyLM(), loss, (labels.clamp(min=0), labels)).count_fn == loss.count_fn
    with pytest.raises(hc.InvalidInputError, match="'logits'"):
        loss({"scores": logits}, labels)
    with pytest.raises(hc.InvalidInputError, match="reduction"):
        hc.CausalLMLoss(reduction="none")


def test_global_normalization_over_tokens():
    """Two batches with 3 and 6 counted tokens give the Hessian and GGN of the 9 tokens as one batch."""
    model = TinyLM().double()
    ids = torch.randint(0, 5, (4, 5))
    labels = ids.clone()
    labels[0, 2:] = -100
    labels[1, :3] = -100
    loss = hc.CausalLMLoss()
    batches = [(ids[:2], labels[:2]), (ids[2:], labels[2:])]
    f, theta0 = flat_loss_fn(model, lambda o, y: shifted_by_hand(o["logits"], y), ids, labels)
    H = hc.hessian(model, loss, batches)
    theta = theta0.clone().requires_grad_()
    g = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
    ref = torch.stack([torch.autograd.grad(g[j], theta, retain_graph=True)[0] for j in range(g.numel())], 1)
    torch.testing.assert_close(H, ref, rtol=1e-11, atol=1e-13)
    G_batches = hc.GGNOperator(model, loss, batches).to_dense()
    torch.testing.assert_close(G_batches, hc.GGNOperator(model, loss, (ids, labels)).to_dense(),
                               rtol=1e-11, atol=1e-13)


def test_transformers_gpt2_sdpa_against_eager_attention():
    """A tiny GPT-2 from transformers with its default SDPA attention (fused kernels without double
    backward) against the same weights with the library's own eager attention written out; the loss equals
    the model's own ``labels=`` loss; the GGN equals ``J^T H_L J`` built from explicit Jacobians."""
    transformers = need("transformers")
    config = transformers.GPT2Config(vocab_size=7, n_positions=8, n_embd=4, n_layer=1, n_head=2, n_inner=8,
                                     use_cache=False, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    model = transformers.GPT2LMHeadModel(config).double()
    eager = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**config.to_dict(),
                                                                     "attn_implementation": "eager"})).double()
    eager.load_state_dict(model.state_dict())
    assert model.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    ids = torch.randint(0, 7, (2, 5))
    labels = ids.clone()
    labels[0, 3:] = -100  # right padding: not predicted
    loss = hc.CausalLMLoss()
    torch.testing.assert_close(loss(model(ids), labels).float(), model(ids, labels=labels).loss, rtol=1e-6, atol=0)

    f, theta0 = flat_loss_fn(eager, loss, ids, labels)
    eager.eval()
    theta = theta0.clone().requires_grad_()
    g = torch.autograd.grad(f(theta), theta, create_graph=True)[0]
    op = hc.HessianOperator(model, loss, (ids, labels))
    cols = torch.randperm(op.size)[:6]
    E = torch.eye(op.size, dtype=D)[:, cols]
    ref = torch.stack([torch.autograd.grad(g @ e, theta, retain_graph=True)[0] for e in E.T], 1)
    torch.testing.assert_close(op.matmat(E), ref, rtol=1e-10, atol=1e-12)
    v = torch.randn(op.size, dtype=D)
    h = 1e-4

    def grad_at(t):
        t = t.clone().requires_grad_()
        return torch.autograd.grad(f(t), t)[0]

    def central(h):
        return (grad_at(theta0 + h * v) - grad_at(theta0 - h * v)) / (2 * h)

    fd = (4 * central(h / 2) - central(h)) / 3  # Richardson: error O(h^4) (LayerNorm's curvature is large)
    assert (op.matvec(v) - fd).norm() <= 1e-7 * fd.norm()
    top = hc.eigsh(op, k=1, which="LA")
    assert top.residuals[0] <= 1e-6 * abs(float(top.values[0]))

    ggn = hc.GGNOperator(model, loss, (ids, labels))
    out = lambda t: flat_loss_fn(eager, lambda o, _: o.logits, ids, labels)[0](t)  # noqa: E731
    logits = out(theta)
    J = torch.stack([torch.autograd.grad(o, theta, retain_graph=True)[0] for o in logits.reshape(-1)])
    L0 = logits.detach()
    HL = torch.autograd.functional.hessian(lambda o: F.cross_entropy(
        o.reshape(L0.shape)[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1)), L0.reshape(-1))
    torch.testing.assert_close(ggn.matmat(E), (J.T @ HL @ J) @ E, rtol=1e-10, atol=1e-12)


def test_huggingface_example_against_eager_autograd(capsys):
    """examples/huggingface_causal_lm.py at its smallest size: what it prints and returns against the same
    weights with transformers' eager attention and plain autograd (the token loss by hand over both batches,
    its gradient, and H x = lambda x for the top eigenvectors by double backward)."""
    transformers = need("transformers")
    spec = importlib.util.spec_from_file_location("huggingface_causal_lm", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    top = example.main(["--layers", "1", "--width", "8", "--vocab", "11"])
    out = capsys.readouterr().out
    assert out.startswith("GPT-2 with 1 layers, width 8, vocabulary 11: ") and "attention 'sdpa'" in out
    ours, theirs = re.search(r"CausalLMLoss (\S+) = model\(ids, labels=labels\)\.loss (\S+)", out).groups()
    assert ours == theirs
    value, grad_norm = (float(x) for x in re.search(r"loss over all tokens (\S+), gradient norm (\S+)", out).groups())
    for line in ("Hessian-vector product: ", "top GGN eigenvalue ", "GGN trace ~ "):
        assert line in out

    model = example.build(1, 8, 11)
    config = {**model.config.to_dict(), "attn_implementation": "eager"}
    eager = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config)).eval()
    eager.load_state_dict(model.state_dict())
    params = list(eager.parameters())
    assert sum(p.numel() for p in params) == top.vectors.shape[0]
    total, count = 0.0, 0
    for ids, labels in example.batches(11):  # mean over the predicted tokens of both batches
        logits, target = eager(ids).logits[:, :-1], labels[:, 1:]
        total = total + F.cross_entropy(logits.reshape(-1, 11), target.reshape(-1), reduction="sum")
        count += int((target != -100).sum())
    loss = total / count
    assert value == pytest.approx(float(loss.detach()), abs=2e-6)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, create_graph=True)])
    assert grad_norm == pytest.approx(float(g.detach().norm()), abs=2e-4)
    residuals = []
    for lam, x in zip(top.values, top.vectors.T):
        Hx = torch.cat([t.reshape(-1) for t in torch.autograd.grad(g @ x, params, retain_graph=True)])
        residuals.append(float((Hx - lam * x).norm()))
    # eigsh's tol=1e-3 holds, and the residuals it reports (and the example prints) are the true ones
    largest = float(top.values.abs().max())
    assert max(residuals) <= 1e-3 * largest
    torch.testing.assert_close(top.residuals.double(), torch.tensor(residuals, dtype=D), rtol=1e-3, atol=1e-5)
    printed = float(re.search(r"relative residuals <= (\S+)\)", out)[1])
    assert printed == pytest.approx(max(residuals) / largest, rel=0.05)
