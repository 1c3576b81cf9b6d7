"""Extreme eigenpairs of a symmetric operator: thick-restart block Lanczos (block Krylov-Schur).

Algorithm (why this one): the basis ``V`` (P, n) grows by blocks of ``b`` vectors, each block
``A V_j`` orthogonalized against the whole basis twice (full reorthogonalization: no loss of
orthogonality, so no ghost copies of converged eigenvalues). The projected matrix ``H = V^T A V`` is
kept explicitly from the orthogonalization coefficients, so after a restart (when the basis reaches
``ncv`` vectors) it is simply ``diag(kept Ritz values)`` plus the coupling to the next block: a thick
(Krylov-Schur) restart that keeps the best ``p`` Ritz vectors. Blocks (``b > 1``) use the batched
``matmat`` of the operators (one pass over the data per block) and find repeated eigenvalues up to
multiplicity ``b`` (measured on the CPU, a block costs about ``b`` products; on a GPU it should cost
far less); ``b = 1`` needs the fewest products. Convergence is tested on every Rayleigh-Ritz step from
the Lanczos residual estimate; the reported residuals are then recomputed with one more product per
eigenvector.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..arguments import check_choice, check_int, check_real
from ..errors import InvalidInputError
from ..named import named_unflatten
from ..operators.base import counting_view
from .orthogonalize import orthonormalize, project_out
from .probes import generator, probes

WHICH = ("LA", "SA", "LM", "BE")
#: Default basis size, and per block vector, when the memory budget allows (see :func:`default_ncv`).
NCV_DEFAULT, NCV_PER_BLOCK_VECTOR = 96, 24


@dataclass
class EigenResult:
    """Eigenpairs from :func:`eigsh`.

    Attributes:
        values: ``(k,)`` eigenvalues in ascending algebraic order (as ``scipy.sparse.linalg.eigsh``
            returns them, whatever ``which`` is; ``values[-1]`` is the largest).
        vectors: ``(P, k)`` orthonormal eigenvectors, column ``i`` belongs to ``values[i]``.
        residuals: ``(k,)`` ``||A v_i - values[i] v_i||``, recomputed with fresh products.
        converged: ``(k,)`` bool, residual within ``tol`` times the norm estimate.
        num_matvecs: operator-vector products used in total (including the residual check).
        which, tol: as requested; ``norm_estimate``: largest ``|Ritz value|`` seen (``~ ||A||``).
        stopped: why the iteration ended: ``"converged"`` (every wanted pair within ``tol``),
            ``"max_matvecs"`` (budget spent: see ``converged``), ``"dense"`` (small problem: the matrix was
            formed and solved exactly), or the answer a caller was looking for (``condition_number`` and
            ``logdet`` stop as soon as definiteness or singularity is decided).
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    num_matvecs: int
    which: str
    tol: float
    norm_estimate: float
    _unflatten: object = None
    stopped: str = "converged"

    @property
    def param_vectors(self) -> list[list[torch.Tensor]]:
        """Each eigenvector as tensors shaped like the parameters, indexed by position or parameter name
        (operators from a model only)."""
        if self._unflatten is None:
            raise InvalidInputError("param_vectors needs an operator built from a model (it has no .params)")
        return [self._unflatten(self.vectors[:, i]) for i in range(self.vectors.shape[1])]

    def __iter__(self):
        """``values, vectors = eigsh(...)``."""
        return iter((self.values, self.vectors))

    def __repr__(self) -> str:
        return (
            f"EigenResult(which={self.which!r}, values={self.values.tolist()}, "
            f"max residual={float(self.residuals.max()):.3g}, converged={int(self.converged.sum())}/"
            f"{self.values.numel()}, num_matvecs={self.num_matvecs}, stopped={self.stopped!r})"
        )


def select(theta: torch.Tensor, which: str, count: int) -> torch.Tensor:
    """Indices of the ``count`` wanted values of ``theta`` (``BE``: the extra one from the top)."""
    if which == "LA":
        return torch.argsort(theta, descending=True)[:count]
    if which == "SA":
        return torch.argsort(theta)[:count]
    if which == "LM":
        return torch.argsort(theta.abs(), descending=True)[:count]
    order = torch.argsort(theta)
    hi, lo = (count + 1) // 2, count // 2
    return torch.cat([order[len(order) - hi :], order[:lo]])


def eigsh(
    op,
    k: int = 6,
    which: str = "LA",
    *,
    tol: float | None = None,
    max_matvecs: int | None = None,
    block_size: int | None = None,
    ncv: int | None = None,
    v0=None,
    seed: int | None = None,
    progress: bool | None = None,
) -> EigenResult:
    """``k`` eigenpairs at one or both ends of the spectrum of a symmetric operator.

    Args:
        op: a CurvatureOperator (Hessian, GGN, Fisher), a dense symmetric torch tensor or numpy array,
            or a scipy LinearOperator.
        k: number of eigenpairs, ``1 <= k <= P``.
        which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest magnitude,
            ``"BE"`` both ends (``k // 2`` smallest and ``k - k // 2`` largest, like scipy).
        tol: relative residual tolerance: converged when ``||A v - lambda v|| <= tol * ||A||`` (``||A||``
            estimated by the largest Ritz value); the eigenvalue error is then at most the residual and
            usually ``~ residual^2 / gap``. Default ``sqrt(eps)`` of the dtype (1.5e-8 in float64).
        max_matvecs: budget of products (``>= 1``); the result says which pairs converged (``stopped=
            "max_matvecs"``, and a warning) when it is spent. Default ``max(1000, 50 * ncv)``.
        block_size: vectors per block (one batched product). Default ``min(k, 4)`` when the operator's
            block products are more than twice as cheap per vector as single ones (dense matrices, small
            models whose batched products were measured so: ``op.preferred_block``), else 1, which needs
            the fewest products, by far at the hard end of a network Hessian (the dense bulk near zero,
            usually ``which="SA"``: about 4x fewer than blocks of 4 there). Blocks resolve repeated
            eigenvalues up to their size (a single vector can miss copies of a repeated eigenvalue): use at
            least the multiplicity of the repeated eigenvalues you need to resolve.
        ncv: largest basis size before a restart. Default ``max(96, 2 * k + 2 * b, 24 * b)`` vectors, at most
            ``P / 2`` and what half the memory budget holds (never below ``max(20, 2 * k + 2 * b, 12 * b)``): a
            restart discards what the discarded vectors knew, which is what makes the hard end expensive.
            When ``ncv`` reaches ``P`` the dense matrix is formed instead (``P`` products, exact).
        v0: optional start block ``(P,)`` or ``(P, b)``; default random from ``seed``.
        seed: seed of the start block (None: drawn from torch's global RNG).
        progress: tqdm bar over products (default: the operator's ``progress`` setting).

    Returns:
        :class:`EigenResult` (``stopped`` says why the iteration ended).
    """
    A = counting_view(op)
    with A.reuse():
        return lanczos(A, k, which, tol=tol, max_matvecs=max_matvecs, block_size=block_size, ncv=ncv, v0=v0,
                       seed=seed, progress=progress)


def default_ncv(A, k: int, b: int) -> int:
    """``max(96, 2k + 2b, 24 b)`` basis vectors, cut to ``P / 2`` and to what half of the memory budget holds
    (with the Lanczos work vectors), but never below the restart minimum ``max(20, 2k + 2b, 12 b)``."""
    least = max(20, 2 * k + 2 * b, 12 * b)
    room = (A.budget // 2) // max(A.size * A.itemsize, 1) - 2 * b - 2 * k
    return max(least, min(max(NCV_DEFAULT, 2 * k + 2 * b, NCV_PER_BLOCK_VECTOR * b), room, A.size // 2))


def lanczos(A, k, which, *, tol=None, max_matvecs=None, block_size=None, ncv=None, v0=None, seed=None,
            progress=None, stop=None) -> EigenResult:
    """:func:`eigsh` on an operator seen through a counting view, inside its reuse scope. ``stop``: optional
    ``stop(theta, residuals, norm_estimate) -> str | None`` called after every Rayleigh-Ritz step with the
    wanted Ritz values (ascending) and their Lanczos residual estimates; a string ends the iteration and is
    reported as ``stopped`` (used by callers that only need to decide something about the spectrum)."""
    P = A.size
    which = check_choice(which, "which", WHICH)
    k = check_int(k, "k", 1, most=P, why=f" (P = {P})")
    # a block Lanczos run needs about twice the products of a single-vector one: blocks must pay that
    b = A.preferred_block(min(k, 4), cost=2.0) if block_size is None else check_int(block_size, "block_size")
    eps = torch.finfo(A.dtype).eps
    tol = eps**0.5 if tol is None else check_real(tol, "tol", positive=True)
    m = default_ncv(A, k, b) if ncv is None else check_int(ncv, "ncv")
    if m < k + 2 * b:  # a restart keeps k vectors and needs room for two blocks
        raise InvalidInputError(f"ncv={m} must be at least k + 2 * block_size = {k + 2 * b}")
    max_matvecs = max(1000, 50 * m) if max_matvecs is None else check_int(max_matvecs, "max_matvecs")
    show = A.progress if progress is None else progress
    gen = generator(seed, A.device)
    if m + b >= P:
        return _dense_eigsh(A, k, which, tol, eps)

    work = m + 2 * b + 2 * k  # basis, the block and its product, the eigenvectors and theirs
    A.check_fits(work * P * A.itemsize, f"the Lanczos work vectors ({work} of length {P})", "a smaller ncv")
    V = torch.zeros(P, m, dtype=A.dtype, device=A.device)
    H = torch.zeros(m, m, dtype=A.dtype, device=A.device)
    if v0 is None:
        X0 = probes(gen, (P, b), A.dtype, A.device, "gaussian")
    else:
        X0 = (A.params.as_flat(v0, "v0") if A.params is not None else torch.as_tensor(v0)).to(A.device, A.dtype)
        X0 = X0.reshape(P, -1)
        if X0.shape[1] != b:
            raise InvalidInputError(f"v0 has {X0.shape[1]} columns, expected block_size = {b}")
    V[:, :b], _ = orthonormalize(X0, None, gen)
    n = b
    norm_est = 0.0
    stopped = "converged"
    bar = tqdm(
        total=max_matvecs,
        desc=f"eigsh {which}",
        disable=(not show) if show is not None else None,
        leave=False,
    )
    try:
        while True:
            W = A.matmat(V[:, n - b : n])
            bar.update(b)
            W, h = project_out(W, V[:, :n])
            H[:n, n - b : n] = h
            H[n - b : n, :n] = h.T
            Q, R = orthonormalize(W, V[:, :n], gen)
            theta, Y = torch.linalg.eigh((H[:n, :n] + H[:n, :n].T) / 2)
            norm_est = max(norm_est, float(theta.abs().max()))
            resid = torch.linalg.vector_norm(R @ Y[n - b : n], dim=0)
            sel = select(theta, which, k)
            if bool((resid[sel] <= tol * norm_est).all()):
                break
            if stop is not None:
                order = torch.argsort(theta[sel])
                decided = stop(theta[sel][order], resid[sel][order], norm_est)
                if decided:
                    stopped = decided
                    break
            if A.num_matvecs + b + k > max_matvecs:
                stopped = "max_matvecs"
                break
            if n + b > m:  # thick restart: keep p Ritz vectors and the coupling to the next block
                p = min(n - b, max(k, (m + k) // 2))
                keep = select(theta, which, p)
                Yk = Y[:, keep]
                V[:, :p] = V[:, :n] @ Yk
                coupling = R @ Yk[n - b : n]
                H.zero_()
                H[:p, :p] = torch.diag(theta[keep])
                H[p : p + b, :p] = coupling
                H[:p, p : p + b] = coupling.T
                n = p
            else:
                H[n : n + b, n - b : n] = R
                H[n - b : n, n : n + b] = R.T
            V[:, n : n + b] = Q
            n += b
        X = V[:, :n] @ Y[:, sel]
        AX = A.matmat(X)
        bar.update(k)
    finally:
        bar.close()
    return _finish(A, theta[sel], X, AX, which, tol, eps, norm_est, stopped)


def _finish(A, values, X, AX, which, tol, eps, norm_est, stopped="converged") -> EigenResult:
    residuals = torch.linalg.vector_norm(AX - X * values, dim=0)
    norm_est = max(norm_est, float(values.abs().max()))
    converged = residuals <= max(tol, 100 * eps) * norm_est
    order = torch.argsort(values)
    if not bool(converged.all()) and stopped in ("converged", "max_matvecs"):
        warnings.warn(
            f"eigsh: {int(converged.sum())} of {values.numel()} eigenpairs ({which}) converged to tol={tol:g} "
            f"after {A.num_matvecs} products (largest residual {float(residuals.max()):.3g}); raise max_matvecs "
            "or ncv, or loosen tol",
            RuntimeWarning,
            stacklevel=3,
        )
    return EigenResult(
        values[order],
        X[:, order],
        residuals[order],
        converged[order],
        A.num_matvecs,
        which,
        tol,
        norm_est,
        named_unflatten(A.params),
        stopped,
    )


def _dense_eigsh(A, k, which, tol, eps) -> EigenResult:
    """Small problems (the Krylov basis would span everything): form the matrix with ``P`` products."""
    P = A.size
    A.check_fits(2 * P * P * A.itemsize, f"the dense {P} x {P} matrix", "eigsh with a smaller ncv")
    M = A.matmat(torch.eye(P, dtype=A.dtype, device=A.device))
    theta, Y = torch.linalg.eigh((M + M.T) / 2)
    sel = select(theta, which, k)
    X = Y[:, sel]
    norm_est = float(theta.abs().max())
    return _finish(A, theta[sel], X, M @ X, which, tol, eps, norm_est, "dense")
