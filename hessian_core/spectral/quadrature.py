"""Stochastic Lanczos quadrature (SLQ): Gauss quadrature nodes and weights of the spectral measure
seen from random probes, shared by :func:`spectral_density` and the matrix functions.

For a unit probe ``q``, ``m`` Lanczos steps give a tridiagonal ``T`` (m, m) with eigenpairs
``(theta_i, u_i)``; ``q^T f(A) q ~ sum_i u_i[0]^2 f(theta_i)``. Probes run together as the columns
of one block (each column its own Lanczos recurrence, one ``matmat`` per step).

Memory: with ``reorth="full"`` the Lanczos vectors of the probes in flight are kept
(``(num_iters + 1) x P x probes_in_flight``; the number in flight is cut to fit the memory budget),
because full reorthogonalization needs them. With ``reorth="none"`` only three vectors per probe are
kept (``3 x P x probes_in_flight``); the quadrature stays accurate (Paige, Greenbaum), the nodes may
carry ghost copies with split weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..arguments import check_choice, check_int
from ..operators.base import LinearOperator
from .probes import generator, probes

REORTH = ("full", "none")


@dataclass
class Quadrature:
    """Nodes ``(n,)`` and weights ``(n,)`` of all probes concatenated; ``probe`` ``(n,)`` says which
    probe each node belongs to. The weights of one probe sum to 1. ``residuals`` ``(n,)``: the Lanczos
    residual estimate of each node (``beta_m |u_i[m]|``): an eigenvalue of the operator lies within it of the
    node; a node whose residual is not small stands for mass spread around it that the Lanczos steps did not
    resolve (0 when the Krylov space became invariant: then the nodes are eigenvalues)."""

    nodes: torch.Tensor
    weights: torch.Tensor
    probe: torch.Tensor
    num_probes: int
    num_matvecs: int
    residuals: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"Quadrature({self.nodes.numel()} nodes of {self.num_probes} probes in [{float(self.nodes.min()):.4g}, "
                f"{float(self.nodes.max()):.4g}], num_matvecs={self.num_matvecs})")

    def per_probe(self, f) -> torch.Tensor:
        """``(num_probes,)`` values ``sum_i w_i f(theta_i)`` of each probe."""
        vals = self.weights * f(self.nodes)
        return torch.zeros(self.num_probes, dtype=vals.dtype).index_add_(0, self.probe, vals)


def slq(
    A: LinearOperator,
    num_probes: int,
    num_iters: int,
    seed: int | None,
    reorth: str = "full",
    progress: bool | None = None,
) -> Quadrature:
    """Quadrature of ``num_probes`` Rademacher probes with ``num_iters`` Lanczos steps each (fewer when
    a Krylov space becomes invariant, and never more than ``P``)."""
    check_int(num_probes, "num_probes")
    check_int(num_iters, "num_iters")
    check_choice(reorth, "reorth", REORTH)
    P = A.size
    m = min(num_iters, P)
    kept = (m + 1) if reorth == "full" else 3
    per_probe = (kept + 2) * P * A.itemsize
    budget = A.budget if A.budget is not None else 2**62
    in_flight = max(1, min(num_probes, budget // per_probe))
    A.check_fits(
        per_probe,
        f"the Lanczos vectors of one probe ({kept} x {P})",
        "reorth='none' (three vectors per probe) or fewer num_iters",
    )
    gen = generator(seed, A.device)
    show = A.progress if progress is None else progress
    nodes, weights, owner, resid = [], [], [], []
    with tqdm(total=num_probes * m, desc="SLQ", disable=(not show) if show is not None else None, leave=False) as bar:
        for first in range(0, num_probes, in_flight):
            c = min(in_flight, num_probes - first)
            Z = probes(gen, (P, c), A.dtype, A.device)
            alphas, betas, lengths = _lanczos_columns(A, Z, m, reorth == "full", bar)
            for j in range(c):
                n = int(lengths[j])
                T = torch.diag(alphas[:n, j]) + torch.diag(betas[: n - 1, j], 1) + torch.diag(betas[: n - 1, j], -1)
                theta, U = torch.linalg.eigh(T)
                nodes.append(theta.cpu())
                weights.append(U[0].square().cpu())
                owner.append(torch.full((n,), first + j, dtype=torch.long))
                resid.append((betas[n - 1, j] * U[n - 1].abs()).cpu())
    return Quadrature(torch.cat(nodes), torch.cat(weights), torch.cat(owner), num_probes, A.num_matvecs,
                      torch.cat(resid))


def _lanczos_columns(A: LinearOperator, Z: torch.Tensor, m: int, full: bool, bar):
    """Independent Lanczos recurrences from the columns of ``Z`` (P, c). Returns ``alphas`` (m, c),
    ``betas`` (m, c) and ``lengths`` (c,) (steps done before the column's Krylov space became invariant)."""
    P, c = Z.shape
    eps = torch.finfo(A.dtype).eps
    q = Z / torch.linalg.vector_norm(Z, dim=0)
    prev = torch.zeros_like(q)
    beta_prev = torch.zeros(c, dtype=A.dtype, device=A.device)
    basis = torch.empty(m, P, c, dtype=A.dtype, device=A.device) if full else None
    alphas = torch.zeros(m, c, dtype=A.dtype, device=A.device)
    betas = torch.zeros(m, c, dtype=A.dtype, device=A.device)
    lengths = torch.full((c,), m, dtype=torch.long)
    alive = torch.ones(c, dtype=torch.bool, device=A.device)
    scale = torch.zeros(c, dtype=A.dtype, device=A.device)
    for j in range(m):
        if full:
            basis[j] = q
        idx = alive.nonzero().flatten()
        w = torch.zeros_like(q)
        w[:, idx] = A.matmat(q[:, idx])
        bar.update(len(idx))
        alpha = (q * w).sum(0)
        w = w - alpha * q - beta_prev * prev
        if full:  # twice, against every earlier Lanczos vector of the same column
            for _ in range(2):
                coef = torch.einsum("jpc,pc->jc", basis[: j + 1], w)
                w = w - torch.einsum("jpc,jc->pc", basis[: j + 1], coef)
        beta = torch.linalg.vector_norm(w, dim=0)
        alphas[j] = torch.where(alive, alpha, 0)
        betas[j] = torch.where(alive, beta, 0)
        scale = torch.maximum(scale, torch.maximum(alpha.abs(), beta))
        ended = alive & (beta <= eps ** (2 / 3) * scale)
        lengths[ended.cpu()] = j + 1
        alive = alive & ~ended
        if j == m - 1 or not bool(alive.any()):
            break
        prev, beta_prev = q, beta
        q = torch.where(alive, w / torch.where(alive, beta, 1), 0)
    return alphas, betas, lengths
