"""Curvature of a Hugging Face causal language model: its own loss convention, exact over many batches.

    python examples/huggingface_causal_lm.py [--layers 2] [--width 64] [--vocab 1000]

A GPT-2 is built from a small config here (random weights, nothing downloaded; for a pretrained model use
``GPT2LMHeadModel.from_pretrained(...)`` instead, the rest is the same). The model keeps its default
attention (``attn_implementation="sdpa"``: fused kernels without second derivatives); hessian_core runs
the math kernel inside its own computations, so nothing about the model changes.

The loss is ``hc.CausalLMLoss()``: what ``model(input_ids, labels=labels).loss`` computes -- the logits at
position t predict the label at t + 1, labels equal to -100 (padding, prompt tokens) are not predicted, the
mean is over the predicted tokens -- read from the ``logits`` entry of the model's ``ModelOutput``. It also
tells hessian_core what its mean averages over (``count_fn``: the predicted tokens), so a loader of batches
with different numbers of real tokens gives the curvature of the mean over *all* tokens, not a mean of
batch means. Sequences are right-padded, so no attention mask is needed: a causal model never looks right.
"""

from __future__ import annotations

import argparse
import time

import torch

import hessian_core as hc


def build(layers: int, width: int, vocab: int = 1000, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=width, n_layer=layers, n_head=4,
                        bos_token_id=0, eos_token_id=0, use_cache=False)
    return GPT2LMHeadModel(config).eval()  # the analysis is in eval mode anyway (no dropout)


def batches(vocab: int, seed: int = 0):
    """Two batches of right-padded sequences: 3 x 12 tokens and 2 x 16, with different padding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, T, lengths in ((3, 12, (12, 7, 9)), (2, 16, (16, 5))):
        ids = torch.randint(1, vocab, (n, T), generator=g)
        labels = ids.clone()
        for i, length in enumerate(lengths):
            ids[i, length:] = 0  # padding token (any id: it is never predicted, and causal attention ignores it)
            labels[i, length:] = -100
        out.append((ids, labels))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=64, help="embedding width (a multiple of the 4 heads)")
    ap.add_argument("--vocab", type=int, default=1000, help="vocabulary size (at least 2)")
    args = ap.parse_args(argv)
    model = build(args.layers, args.width, args.vocab)
    data = batches(model.config.vocab_size)
    loss = hc.CausalLMLoss()
    P = sum(p.numel() for p in model.parameters())
    print(f"GPT-2 with {args.layers} layers, width {args.width}, vocabulary {args.vocab}: {P:,} parameters, attention "
          f"'{model.config._attn_implementation}'")

    # the loss is the model's own, and the normalization is over the 44 predicted tokens of both
    # batches (49 real tokens; the first of each sequence is not predicted)
    ids, labels = data[0]
    with torch.no_grad():
        print(f"CausalLMLoss {float(loss(model(ids), labels)):.6f} = model(ids, labels=labels).loss "
              f"{float(model(ids, labels=labels).loss):.6f}")
    objective = hc.Objective(model, loss, data)
    value, grad = objective.value_and_grad()
    print(f"loss over all tokens {value:.6f}, gradient norm {float(grad.norm()):.4f}")

    H = hc.HessianOperator(objective)
    G = hc.GGNOperator(objective)
    t = time.perf_counter()
    v = torch.randn(P)
    Hv = H.matvec(v)
    print(f"Hessian-vector product: {time.perf_counter() - t:.2f} s, v^T H v = {float(v @ Hv):.4f}")
    t = time.perf_counter()
    top = hc.eigsh(H, k=3, which="LA", tol=1e-3, seed=0)
    relative = float(top.residuals.max() / top.values.abs().max())
    print(f"top-3 Hessian eigenvalues {[round(float(x), 4) for x in top.values]} ({top.num_matvecs} products, "
          f"{time.perf_counter() - t:.1f} s, relative residuals <= {relative:.1e})")
    t = time.perf_counter()
    top_ggn = hc.eigsh(G, k=1, which="LA", tol=1e-3, seed=0)
    print(f"top GGN eigenvalue {float(top_ggn.values[0]):.4f} ({top_ggn.num_matvecs} products, "
          f"{time.perf_counter() - t:.1f} s); GGN plan: {G.plan()['loss Hessian']}")
    tr = hc.trace(G, num_matvecs=30, seed=0)
    print(f"GGN trace ~ {float(tr):.3f} +- {float(tr.stderr):.3f} (Hutch++, 30 products)")
    return top


if __name__ == "__main__":
    main()
