"""EKFAC's eigenvalue corrections (George et al. 2018): the curvature's diagonal in the Kronecker eigenbasis.

For a block with eigenbases ``Q_A`` (of ``A``) and ``Q_G`` (of ``G``), the correction is, entry ``(o, i)``,

    S[o, i] = sum_b w_b sum_{j, n} sign[j, n] (Q_G^T D[j, n] Q_A)[o, i]^2 / W

with ``D[j, n] = sum_s g[j, n, s] a[n, s]^T`` the whole gradient of sample ``n``'s column ``j`` w.r.t. the
block's matrix (every weight-sharing position, no expand/reduce approximation) and the same normalization
``w_b / W`` as the factors. Because sample ``n``'s columns factor its output-curvature block, ``S`` is
exactly ``diag((Q_G ⊗ Q_A)^T C (Q_G ⊗ Q_A))`` for the curvature ``C`` of the block (the GGN for
``type="exact"``, the empirical Fisher for ``"empirical"``; in expectation for ``"mc"``).
"""

from __future__ import annotations

import torch

from .capture import Backprop, column_chunk, forward_batch
from .factors import augmented


def eigenvalue_corrections(objective, layers, curvature, bases) -> dict[str, torch.Tensor]:
    """``{block key: S (d_out, d_A)}`` for ``bases = {layer name: (Q_A or None, Q_G)}``."""
    spec = objective.params
    opts = dict(dtype=spec.dtype, device=spec.device)
    keys, out = [], []
    for layer in layers:
        for block in layer.blocks:
            keys.append(block.key)
            out.append(torch.zeros(block.d_out, block.d_A, **opts))
    slot = {k: i for i, k in enumerate(keys)}
    backprop = Backprop()
    budget = objective.budget

    def contribution(ctx, acc, w):
        f, cap = forward_batch(objective, ctx, layers)
        rotated_inputs = {}
        for layer in layers:
            QA = bases[layer.name][0]
            if layer.name in cap.rows:
                rows = cap.rows.pop(layer.name)
                for block in layer.blocks:
                    if block.input_factor != "one":
                        rotated_inputs[block.key] = augmented(rows, block.input_factor) @ QA
        U, signs = curvature.columns(ctx, f)
        step = column_chunk(objective, U.shape[0])
        by_name = {layer.name: layer for layer in layers}
        for j in range(0, U.shape[0], step):
            grads = backprop(f, cap, layers, U[j:j + step])
            sg = None if signs is None else signs[j:j + step]
            for name, g in grads.items():
                gq = g @ bases[name][1]  # (k, B, S, d_out) in G's eigenbasis
                for block in by_name[name].blocks:
                    if block.input_factor == "one":
                        term = _weighted_square_sum(gq.sum(2)[..., None], sg)
                    elif block.key in rotated_inputs:
                        term = _per_sample_square_sum(gq, rotated_inputs[block.key], sg, budget)
                    else:
                        continue  # layer not called on this batch: no curvature
                    acc[slot[block.key]].add_(term, alpha=w)

    objective.accumulate(contribution, out, per_sample=curvature.per_sample,
                         desc=f"EKFAC eigenvalue corrections ({curvature.type})")
    return dict(zip(keys, out))


def _weighted_square_sum(M: torch.Tensor, signs) -> torch.Tensor:
    """``sum_{j, n} sign[j, n] M[j, n]^2`` for ``M`` of shape ``(k, B, ...)``."""
    M2 = M.square()
    if signs is not None:
        M2 = M2 * signs.reshape(*signs.shape, *([1] * (M.dim() - 2)))
    return M2.sum((0, 1))


def _per_sample_square_sum(gq: torch.Tensor, aq: torch.Tensor, signs, budget: int) -> torch.Tensor:
    """``sum_{j, n} sign[j, n] (sum_s gq[j, n, s] aq[n, s]^T)^2`` (entrywise square), ``(d_out, d_A)``.

    Without weight sharing (``S = 1``) the square of an outer product is the outer product of the squares:
    one matrix product. Otherwise, in chunks of samples within the budget, either per-sample gradients
    (``d_out d_A`` numbers per sample and column) or, when smaller, Gram matrices over the positions
    (``S^2 (d_out + d_A)``): ``sum_{s,t} (gq_s . gq_t)_o (aq_s . aq_t)_i``."""
    k, B, S, d_out = gq.shape
    d_A = aq.shape[-1]
    if S == 1:
        g2 = gq[:, :, 0].square()
        if signs is not None:
            g2 = g2 * signs[..., None]
        return g2.sum(0).T @ aq[:, 0].square()
    item = gq.element_size()
    gram = S * S * (d_out + d_A) < k * d_out * d_A
    per_sample = item * (S * S * (k * d_out + d_A) if gram else 2 * k * d_out * d_A)
    chunk = int(max(1, min(B, budget // (4 * max(per_sample, 1)))))
    total = torch.zeros(d_out, d_A, dtype=gq.dtype, device=gq.device)
    for a in range(0, B, chunk):
        g, x = gq[:, a:a + chunk], aq[a:a + chunk]
        sg = None if signs is None else signs[:, a:a + chunk]
        if gram:
            Gg = torch.einsum("jnso,jnto->jnsto", g, g)
            if sg is not None:
                Gg = Gg * sg[:, :, None, None, None]
            total += torch.einsum("nsto,nsti->oi", Gg.sum(0), torch.einsum("nsi,nti->nsti", x, x))
        else:
            total += _weighted_square_sum(torch.einsum("jnso,nsi->jnoi", g, x), sg)
    return total
