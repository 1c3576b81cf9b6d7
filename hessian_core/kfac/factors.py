"""KFAC's per-layer Kronecker factors ``A`` (inputs) and ``G`` (backpropagated output curvature), over all
batches with the objective's normalization.

For a covered layer with input rows ``a[n, s]`` (sample ``n``, weight-sharing position ``s``) and gradients
``g[j, n, s]`` of the output-curvature columns ``j`` (:mod:`~hessian_core.kfac.output_curvature`) w.r.t.
its output:

* ``approx="expand"`` (Eschenhagen et al. 2023; plain KFAC when ``S = 1``):
  ``A = sum_{n,s} a a^T / R`` with ``R`` the number of rows ``(n, s)`` over all batches, and
  ``G = sum_b w_b sum_{j,n,s} sign g g^T / W``;
* ``approx="reduce"``: the same with ``a[n] = mean_s a[n, s]`` (``R`` = number of samples) and
  ``g[j, n] = sum_s g[j, n, s]``.

``w_b / W`` is the objective's normalization (:meth:`hessian_core.objective.Objective.accumulate`): ``c_b /
sum c`` for a mean loss, 1 for a sum, 1 per sample for the empirical type (divided by the total count).
So ``A`` is an average over rows, ``G`` carries the loss's scale, and ``G ⊗ A`` does not depend on how the
data is split into batches: batches of 4, 4 and 2 give the factors of the 10 samples as one batch.
With weight and bias together the rows are ``[a, 1]``. A layer never called has zero factors (its
parameters do not affect the loss); a parameter used outside its layer's call is refused on the first batch
(:func:`~hessian_core.kfac.capture.verify_capture`).
"""

from __future__ import annotations

import torch

from .capture import Backprop, column_chunk, forward_batch, verify_capture

APPROXES = ("expand", "reduce")


def augmented(rows: torch.Tensor, kind: str) -> torch.Tensor:
    """Rows with a trailing 1 for ``"augmented"`` input factors (weight and bias together)."""
    if kind == "augmented":
        return torch.cat([rows, rows.new_ones(*rows.shape[:-1], 1)], dim=-1)
    return rows


def weighted_gram(X: torch.Tensor, signs: torch.Tensor | None) -> torch.Tensor:
    """``sum_{j, n, ...} sign[j, n] x x^T`` for ``X`` of shape ``(k, B, ..., d)``."""
    d = X.shape[-1]
    if signs is None:
        Y = X.reshape(-1, d)
        return Y.T @ Y
    W = X * signs.reshape(*signs.shape, *([1] * (X.dim() - 2)))
    return W.reshape(-1, d).T @ X.reshape(-1, d)


def kronecker_factors(objective, layers, curvature, approx: str) -> dict[str, tuple[torch.Tensor | None, torch.Tensor]]:
    """``{layer name: (A, G)}`` (``A`` is ``None`` for a layer whose weight is not differentiated)."""
    spec = objective.params
    opts = dict(dtype=spec.dtype, device=spec.device)
    slots = {}
    out = []
    for layer in layers:
        kind = layer.input_factor()
        dA = layer.d_in + (kind == "augmented") if kind else 0
        entry = {"kind": kind, "A": len(out) if kind else None}
        if kind:
            out += [torch.zeros(dA, dA, **opts), torch.zeros((), **opts)]
        entry["G"] = len(out)
        out.append(torch.zeros(layer.d_out, layer.d_out, **opts))
        slots[layer.name] = entry
    backprop = Backprop()

    def contribution(ctx, acc, w):
        verify = ctx.index == 0
        f, cap = forward_batch(objective, ctx, layers, verify=verify)
        for layer in layers:
            s = slots[layer.name]
            if s["kind"] and layer.name in cap.rows:
                a = augmented(cap.rows[layer.name], s["kind"])
                a = a.reshape(-1, a.shape[-1]) if approx == "expand" else a.mean(1)
                acc[s["A"]].add_(a.T @ a)  # rows are averaged, whatever the loss weighting: A/R below
                acc[s["A"] + 1].add_(a.shape[0])
        U, signs = curvature.columns(ctx, f)
        step = column_chunk(objective, U.shape[0])
        for j in range(0, U.shape[0], step):
            grads = backprop(f, cap, layers, U[j:j + step])
            if verify and j == 0:
                verify_capture(objective, f, cap, layers, grads, U[j:j + step])
            sg = None if signs is None else signs[j:j + step]
            for name, g in grads.items():
                if approx == "reduce":
                    g = g.sum(2)
                acc[slots[name]["G"]].add_(weighted_gram(g, sg), alpha=w)

    objective.accumulate(contribution, out, per_sample=curvature.per_sample, desc=f"KFAC factors ({curvature.type})")
    factors = {}
    for layer in layers:
        s = slots[layer.name]
        G = _symmetric(out[s["G"]])
        A = None
        if s["kind"]:
            rows = float(out[s["A"] + 1])
            A = _symmetric(out[s["A"]] / rows) if rows > 0 else torch.zeros_like(out[s["A"]])
        factors[layer.name] = (A, G)
    return factors


def _symmetric(M: torch.Tensor) -> torch.Tensor:
    return (M + M.T) / 2
