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

from ..errors import InvalidInputError
from ..operators.base import counting_view
from .orthogonalize import orthonormalize, project_out
from .probes import generator, probes

WHICH = ("LA", "SA", "LM", "BE")


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

    @property
    def param_vectors(self) -> list[list[torch.Tensor]]:
        """Each eigenvector as a list of tensors shaped like the parameters (operators from a model only)."""
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
            f"{self.values.numel()}, num_matvecs={self.num_matvecs})"
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
        max_matvecs: budget of products; the result says which pairs converged (and warns) when hit.
            Default ``max(1000, 50 * ncv)``.
        block_size: vectors per block (one batched product). Default ``min(k, 4)`` when the operator's
            block products are more than twice as cheap per vector as single ones (dense matrices, small
            models whose batched products were measured so: ``op.preferred_block``), else 1, which needs
            about half the products. Blocks resolve repeated eigenvalues up to their size (a single vector
            can miss copies of a repeated eigenvalue): use at least the multiplicity you need to resolve.
        ncv: largest basis size before a restart. Default ``max(20, 2 * k + 2 * b, 12 * b)``.
            When ``ncv`` reaches ``P`` the dense matrix is formed instead (``P`` products, exact).
        v0: optional start block ``(P,)`` or ``(P, b)``; default random from ``seed``.
        seed: seed of the start block (None: drawn from torch's global RNG).
        progress: tqdm bar over products (default: the operator's ``progress`` setting).

    Returns:
        :class:`EigenResult`.
    """
    A = counting_view(op)
    with A.reuse():
        P = A.size
        if which not in WHICH:
            raise InvalidInputError(f"which must be one of {WHICH}, got {which!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= P:
            raise InvalidInputError(f"k must be an int with 1 <= k <= P = {P}, got {k!r}")
        # a block Lanczos run needs about twice the products of a single-vector one: blocks must pay that
        b = A.preferred_block(min(k, 4), cost=2.0) if block_size is None else block_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise InvalidInputError(f"block_size must be a positive int, got {block_size!r}")
        eps = torch.finfo(A.dtype).eps
        tol = eps**0.5 if tol is None else float(tol)
        if not tol > 0:
            raise InvalidInputError(f"tol must be > 0, got {tol}")
        m = max(20, 2 * k + 2 * b, 12 * b) if ncv is None else int(ncv)
        if m < k + 2 * b:  # a restart keeps k vectors and needs room for two blocks
            raise InvalidInputError(f"ncv={m} must be at least k + 2 * block_size = {k + 2 * b}")
        if max_matvecs is None:
            max_matvecs = max(1000, 50 * m)
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
                done = bool((resid[sel] <= tol * norm_est).all())
                if done or A.num_matvecs + b + k > max_matvecs:
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
        return _finish(A, theta[sel], X, AX, which, tol, eps, norm_est)


def _finish(A, values, X, AX, which, tol, eps, norm_est) -> EigenResult:
    residuals = torch.linalg.vector_norm(AX - X * values, dim=0)
    norm_est = max(norm_est, float(values.abs().max()))
    converged = residuals <= max(tol, 100 * eps) * norm_est
    order = torch.argsort(values)
    if not bool(converged.all()):
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
        A.unflatten if A.params is not None else None,
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
    return _finish(A, theta[sel], X, M @ X, which, tol, eps, norm_est)
