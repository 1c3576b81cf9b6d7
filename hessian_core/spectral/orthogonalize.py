"""Small dense helpers shared by the eigensolver and the estimators: orthogonalization of blocks."""

from __future__ import annotations

import torch

from .probes import probes


def project_out(W: torch.Tensor, V: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Remove from the columns of ``W`` (P, b) their components along the orthonormal columns of ``V``
    (P, n), twice (classical Gram-Schmidt run twice is orthogonal to working precision).

    Returns ``(W - V h, h)`` with ``h = V^T W`` of shape ``(n, b)`` (the sum of both passes).
    """
    if V is None or V.shape[1] == 0:
        return W, None
    h = V.T @ W
    W = W - V @ h
    h2 = V.T @ W
    return W - V @ h2, h + h2


def orthonormalize(
    W: torch.Tensor, V: torch.Tensor | None, gen: torch.Generator, rtol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis ``Q`` (P, b) of the columns of ``W`` (already orthogonal to ``V``), with ``W = Q R``.

    ``R`` is ``(b, b)`` (not triangular: an SVD is used so rank deficiency is seen). Directions whose
    singular value is below ``rtol`` times the largest (or exactly zero) are replaced by random unit
    vectors orthogonal to ``V`` and to the rest of ``Q``; their rows of ``R`` are zero, so ``W = Q R`` still
    holds. This keeps a Krylov basis growing after an invariant subspace was found.
    """
    if rtol is None:  # rounding grows with the length, but a cut above sqrt(eps) would drop real directions
        eps = torch.finfo(W.dtype).eps  # (float32 with P > 840k put it above 1: every direction was dropped)
        rtol = min(eps * W.shape[0] * 10, eps**0.5)
    U, S, Zh = torch.linalg.svd(W, full_matrices=False)
    R = S[:, None] * Zh
    bad = S <= rtol * max(float(S.max()) if S.numel() else 0.0, 0.0)
    if bool(bad.any()):
        nb = int(bad.sum())
        good = U[:, ~bad]
        R[bad] = 0
        basis = good if V is None else torch.cat([V, good], dim=1)
        fresh = probes(gen, (W.shape[0], nb), W.dtype, W.device, "gaussian")
        fresh, _ = project_out(fresh, basis)
        fresh, _ = torch.linalg.qr(fresh)
        fresh, _ = project_out(fresh, basis)
        fresh = fresh / torch.linalg.vector_norm(fresh, dim=0).clamp_min(torch.finfo(W.dtype).tiny)
        U = U.clone()
        U[:, bad] = fresh
    return U, R
