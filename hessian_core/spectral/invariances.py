"""Null directions a network's curvature has by construction, found with one batched product.

A loss that does not change along a direction ``v`` of the parameters, whatever the parameters, has
``H v = 0`` and ``G v = 0`` (Hessian and Gauss-Newton alike). Networks have such directions where an
output is invariant to a shift or a scale: softmax (cross-entropy) ignores a shift of all logits, so the
all-ones direction on the output layer's bias and on its weight rows is null; a normalization layer
(BatchNorm, LayerNorm, GroupNorm) ignores a shift of its input per channel (the bias before it) and a scale
of it (the weights before it, with their bias). Their curvature is then singular, and Lanczos needs
hundreds of products to resolve a zero eigenvalue from the bulk of tiny ones every network spectrum has.

:func:`probe_invariances` tests the span of those candidates (the all-ones direction of each parameter
tensor and the tensor's own values: its scale) with one batched product: the smallest ``||A x||`` over unit
``x`` in the span is the distance from zero to the nearest eigenvalue of ``A`` or less (for a symmetric
``A``, ``min_i |lambda_i| <= ||A x||``), a proof of near-singularity that needs no convergence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: At most this many candidate directions (two per parameter tensor, from the output end of the model).
MAX_DIRECTIONS = 64


@dataclass
class InvarianceProbe:
    """Outcome of :func:`probe_invariances`.

    ``residual``: ``min ||A x||`` over unit ``x`` in the span of the candidates (an eigenvalue of ``A`` lies
    within it of zero); ``vector``: that ``x`` ``(P,)``; ``rayleigh_min`` / ``rayleigh_max``: the extreme Ritz
    values of ``A`` on the span (``lambda_min <= rayleigh_min``, ``rayleigh_max <= lambda_max``);
    ``directions``: labels of the candidates that make up ``vector`` (e.g. ``"ones on 4.bias"``,
    ``"scale of 0.weight"``); ``num_matvecs``: products used (the number of independent candidates).
    """

    residual: float
    vector: torch.Tensor
    rayleigh_min: float
    rayleigh_max: float
    directions: list[str]
    num_matvecs: int

    def describe(self) -> str:
        """``"||A x|| = ... along <labels>"`` for a reason string."""
        return f"||A x|| = {self.residual:.2g} for a unit x along {' + '.join(self.directions)}"


def candidate_directions(spec, limit: int = MAX_DIRECTIONS) -> tuple[torch.Tensor, list[str]]:
    """``(C, labels)``: unit columns ``C`` ``(P, m)``: for each parameter tensor of ``spec`` (a
    :class:`~hessian_core.params.ParamSpec`), from the last to the first, the all-ones direction on it
    (``"ones on <name>"``) and its current values (``"scale of <name>"``, when not a multiple of the former);
    at most ``limit`` columns."""
    cols, labels = [], []
    P = spec.numel
    for name, t, sl in reversed(list(zip(spec.names, spec.tensors, spec.slices))):
        ones = torch.zeros(P, dtype=spec.dtype, device=spec.device)
        ones[sl] = 1.0
        cols.append(ones / ones.norm())
        labels.append(f"ones on {name}")
        values = t.detach().reshape(-1)
        if values.numel() > 1 and bool((values != values[0]).any()):
            scale = torch.zeros(P, dtype=spec.dtype, device=spec.device)
            scale[sl] = values
            cols.append(scale / scale.norm())
            labels.append(f"scale of {name}")
        if len(cols) >= limit:
            break
    return torch.stack(cols[:limit], 1), labels[:limit]


def probe_invariances(A, limit: int = MAX_DIRECTIONS) -> InvarianceProbe | None:
    """Test the candidate null directions of ``A`` (a counting view of an operator with ``params``) with one
    batched product; ``None`` when ``A`` has no parameters to build them from."""
    spec = A.params
    if spec is None:
        return None
    C, labels = candidate_directions(spec, limit)
    U, S, Vh = torch.linalg.svd(C, full_matrices=False)
    keep = S > S[0] * C.shape[0] * torch.finfo(C.dtype).eps
    Q = U[:, keep]  # orthonormal basis of the span (dependent candidates dropped)
    AQ = A.matmat(Q)
    _, sig, Yh = torch.linalg.svd(AQ, full_matrices=False)
    y = Yh[-1]  # the unit combination with the smallest ||A Q y||
    ritz = torch.linalg.eigvalsh((Q.T @ AQ + AQ.T @ Q) / 2)
    coef = Vh[keep].T @ (y / S[keep])  # x = Q y = C coef
    weight = coef.abs()
    main = [lab for lab, w in zip(labels, weight.tolist()) if w >= 0.1 * float(weight.max())]
    return InvarianceProbe(float(sig[-1]), Q @ y, float(ritz[0]), float(ritz[-1]), main, Q.shape[1])
