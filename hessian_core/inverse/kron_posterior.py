"""The Kronecker-factored Laplace posterior: ``structure="kron"`` (KFAC) and ``structure="ekfac"`` (EKFAC).

``K`` is :class:`~hessian_core.kfac.KFACOperator` (or :class:`~hessian_core.kfac.EKFACOperator`) of the
normalized objective, the same contract as every other curvature here, so with the likelihood scale ``s``
and the prior precision of :mod:`.posterior`

    Lambda = s K + diag(prior).

Every block of ``K`` is ``Q diag(lam) Q^T`` with ``Q = Q_G ⊗ Q_A`` (a Kronecker block, from the
eigendecompositions of its factors; EKFAC's corrected eigenvalues), a dense ``Q`` (parameters outside the
covered layers with ``uncovered="exact"``) or ``Q = I`` (``uncovered="diagonal"``). With a prior constant on
a block, ``tau_b``, that block of ``Lambda`` is ``Q diag(s lam + tau_b) Q^T``, so, exactly and without any
``P x P`` matrix,

    log det Lambda  = sum_b sum log(s lam_b + tau_b)    (= P log s + K.logdet(tau / s) for a scalar prior)
    Lambda^{-1} V   = Q diag(1 / (s lam + tau)) Q^T V   (= K.inverse(tau / s) V / s)
    draws           = Q diag((s lam + tau)^{-1/2}) z,  z ~ N(0, I): covariance exactly Lambda^{-1},

differentiable in ``s`` and ``prior`` (the evidence is optimized through autograd). laplace-torch's ``kron``
(``damping=False``, its default) computes its log-determinant and products the same way, from the
eigendecompositions of its factors; its ``damping=True`` replaces ``g a + tau`` by ``(g + sqrt tau)(a + sqrt
tau)``, which is not ``Lambda``.

Priors: a number; one per parameter tensor when every Kronecker block holds one tensor (``separate_bias=True``,
the default: weight and bias are separate blocks, as in laplace-torch); a block of a weight with its bias
(``separate_bias=False``) takes one value. The dense block of uncovered parameters takes any prior (it is
then factored by Cholesky), the diagonal one too. Per-parameter priors on a Kronecker block would break its
structure and are refused by name.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from .posterior import _not_pd

#: KFAC options a Laplace approximation passes on (``structure_options=``)
OPTIONS = ("type", "mc_samples", "approx", "separate_bias", "uncovered")


class KronPosterior:
    """``Lambda = s K + diag(prior)`` for a Kronecker-factored ``K`` (see the module docstring): follows the
    protocol of :mod:`.posterior`. ``operator`` is ``K`` (its ``factors``, ``keys``, ``block(key)``)."""

    def __init__(self, K, kind: str):
        from ..kfac import DiagonalOperator, EigenOperator, KroneckerEigenOperator, KroneckerOperator

        self.kind = kind
        self.operator = K
        self.params = K.params
        self.size = K.size
        self.blocks = []
        offsets = torch.tensor(self.params.offsets, device=K.device)
        for key, (idx, op) in zip(K.keys, K.blocks):
            if isinstance(op, KroneckerOperator):
                a, QA, g, QG = op.eigh()
                bases, lam = (QG, QA), torch.outer(g, a).reshape(-1)
            elif isinstance(op, KroneckerEigenOperator):
                bases, lam = (op.QG, op.QA), op.values.reshape(-1)
            elif isinstance(op, EigenOperator):
                bases, lam = (op.Q,), op.values
            elif isinstance(op, DiagonalOperator):
                bases, lam = (), op.values
            else:  # pragma: no cover - KFAC/EKFAC build only the four
                raise InvalidInputError(f"block {key!r} of {type(K).__name__} is a {type(op).__name__}, which the "
                                        f"{kind} Laplace posterior cannot decompose")
            tensors = torch.unique(torch.bucketize(idx, offsets, right=True) - 1)
            self.blocks.append(_Block(key, _as_slice(idx), bases, lam.detach(), int(tensors.numel())))
        self.eigenvalues = torch.cat([b.lam for b in self.blocks])  # block by block, for scalar priors
        kron_one_tensor = all(b.tensors == 1 for b in self.blocks if len(b.bases) == 2)
        #: the prior structures :meth:`Laplace.optimize_prior_precision` may search
        self.prior_structures = ("scalar", "layerwise") if kron_one_tensor else ("scalar",)
        if all(len(b.bases) == 0 for b in self.blocks):
            self.prior_structures += ("diag",)

    def __repr__(self) -> str:
        return f"KronPosterior({self.kind!r}, {len(self.blocks)} blocks, P={self.size})"

    # -- one block at (s, prior) -------------------------------------------------------------------
    def _block_prior(self, block, prior):
        """The prior on ``block``: 0-d (constant on it), ``(m,)`` (a diagonal block, or a dense block that
        then needs Cholesky), or an error for a Kronecker block."""
        if prior.dim() == 0:
            return prior
        pb = prior[block.where]
        if not block.bases:
            return pb
        flat = pb.detach()
        if bool((flat == flat[0]).all()):
            return pb[0]
        if len(block.bases) == 1:
            return pb
        raise InvalidInputError(
            f"the {self.kind} Laplace posterior takes one prior precision per Kronecker block, but block "
            f"{block.key!r} was given {int(torch.unique(flat).numel())} different values (min {float(flat.min()):.4g}, "
            f"max {float(flat.max()):.4g}); give a number or one value per parameter tensor"
            + (" with structure_options={'separate_bias': True} (the default)" if block.tensors > 1 else "")
            + ", or use structure='diag' or 'full' for per-parameter priors")

    def _solve_form(self, block, s, prior):
        """``("eig", d)`` with ``d = s lam + tau`` in the block's eigenbasis, or ``("chol", L)`` for a dense
        block with a prior that is not constant on it."""
        tau = self._block_prior(block, prior)
        if len(block.bases) == 1 and tau.dim() == 1:
            Q = block.bases[0]
            M = s * ((Q * block.lam) @ Q.T) + torch.diag(tau)
            L, info = torch.linalg.cholesky_ex((M + M.T) / 2)
            if int(info) != 0:
                raise _not_pd(self.kind, float(torch.linalg.eigvalsh(M.detach())[0]))
            return "chol", L
        d = s * block.lam + tau
        low = float(d.detach().min())
        if low <= 0:
            raise _not_pd(self.kind, low)
        return "eig", d

    # -- the protocol ------------------------------------------------------------------------------
    def check_prior(self, prior: torch.Tensor) -> None:
        """Refuse a prior this structure cannot represent (see the module docstring)."""
        for block in self.blocks:
            self._block_prior(block, prior)

    def logdet(self, s, prior):
        if prior.dim() == 0:
            d = s * self.eigenvalues + prior
            low = float(d.detach().min())
            if low <= 0:
                raise _not_pd(self.kind, low)
            return d.log().sum()
        total = 0.0
        for block in self.blocks:
            how, F = self._solve_form(block, s, prior)
            total = total + (F.log().sum() if how == "eig" else 2 * F.diagonal().log().sum())
        return total

    def inv_matmat(self, s, prior, V):
        out = torch.zeros_like(V)
        for block in self.blocks:
            how, F = self._solve_form(block, s, prior)
            Vb = V[block.where]
            if how == "chol":
                out[block.where] = torch.cholesky_solve(Vb, F)
            else:
                out[block.where] = _from_eigenbasis(block.bases, _to_eigenbasis(block.bases, Vb) / F[:, None])
        return out

    def sample(self, s, prior, n, generator):
        lam = self.eigenvalues
        Z = torch.randn(self.size, n, dtype=lam.dtype, device=lam.device, generator=generator)
        out = torch.zeros_like(Z)
        for block in self.blocks:
            how, F = self._solve_form(block, s, prior)
            Zb = Z[block.where]
            if how == "chol":
                out[block.where] = torch.linalg.solve_triangular(F.T, Zb, upper=True)
            else:
                out[block.where] = _from_eigenbasis(block.bases, Zb / F.sqrt()[:, None])
        return out.T

    def precision(self, s, prior):
        """``Lambda`` as a :class:`~hessian_core.kfac.FactoredBlockOperator` (its ``inverse()`` is the exact
        posterior covariance, its ``logdet()`` the log-determinant)."""
        from ..kfac import DiagonalOperator, EigenOperator, FactoredBlockOperator, KroneckerEigenOperator

        s, prior = float(s), prior.detach()
        budget = self.operator.budget
        blocks = []
        for block, (idx, _) in zip(self.blocks, self.operator.blocks):
            how, F = self._solve_form(block, s, prior)
            if how == "chol":
                op = EigenOperator.from_matrix(F @ F.T, budget=budget, name=block.key)
            elif len(block.bases) == 2:
                QG, QA = block.bases
                op = KroneckerEigenOperator(QG, QA, F.reshape(QG.shape[0], QA.shape[0]), budget=budget,
                                            name=block.key)
            elif len(block.bases) == 1:
                op = EigenOperator(block.bases[0], F, budget=budget, name=block.key)
            else:
                op = DiagonalOperator(F, budget=budget, name=block.key)
            blocks.append((idx, op))
        return FactoredBlockOperator(blocks, self.size, params=self.params, keys=[b.key for b in self.blocks])


class _Block:
    """One block: its key, positions (a slice when contiguous), eigenbasis factors ``(Q_G, Q_A)``, ``(Q,)``
    or ``()`` (identity), eigenvalues ``lam`` (flat, in the order of the eigenbasis) and the number of
    parameter tensors it spans."""

    __slots__ = ("key", "where", "bases", "lam", "tensors")

    def __init__(self, key, where, bases, lam, tensors):
        self.key, self.where, self.bases, self.lam, self.tensors = key, where, bases, lam, tensors


def _to_eigenbasis(bases, V: torch.Tensor) -> torch.Tensor:
    """``Q^T V`` for ``V`` ``(m, k)``; with ``Q = Q_G ⊗ Q_A`` and row-major ``(d_G, d_A)`` columns,
    ``(Q_G ⊗ Q_A)^T vec(X) = vec(Q_G^T X Q_A)``."""
    if len(bases) == 2:
        QG, QA = bases
        k = V.shape[1]
        X = V.T.reshape(k, QG.shape[0], QA.shape[0])
        return (QG.T @ X @ QA).reshape(k, -1).T
    if len(bases) == 1:
        return bases[0].T @ V
    return V


def _from_eigenbasis(bases, Y: torch.Tensor) -> torch.Tensor:
    """``Q Y`` (the inverse of :func:`_to_eigenbasis`)."""
    if len(bases) == 2:
        QG, QA = bases
        k = Y.shape[1]
        X = Y.T.reshape(k, QG.shape[0], QA.shape[0])
        return (QG @ X @ QA.T).reshape(k, -1).T
    if len(bases) == 1:
        return bases[0] @ Y
    return Y


def _as_slice(idx: torch.Tensor):
    n = idx.numel()
    if n and int(idx[-1]) - int(idx[0]) == n - 1 and bool((idx.diff() == 1).all()):
        return slice(int(idx[0]), int(idx[0]) + n)
    return idx


def check_options(kind: str, curvature: str, **options) -> str:
    """Validate ``structure_options`` for ``structure=kind`` with ``curvature`` (before any pass over the
    data); returns KFAC's ``type``: ``"exact"`` for ``"ggn"`` (or ``"mc"``, the Fisher, if asked),
    ``"empirical"`` for ``"ef"``."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(f"structure_options for structure={kind!r} are KFAC's {list(OPTIONS)}; got {unknown} "
                                "(objective options such as seed or memory_budget go to Laplace itself)")
    if curvature == "hessian":
        raise InvalidInputError(f"structure={kind!r} approximates the GGN (or the Fisher), not the Hessian: use "
                                "curvature='ggn' or 'ef', or structure='full'/'diag' for the exact Hessian")
    allowed = ("empirical",) if curvature == "ef" else ("exact", "mc")
    kfac_type = options.get("type", allowed[0])
    if kfac_type not in allowed:
        raise InvalidInputError(f"structure_options type={kfac_type!r} does not approximate curvature={curvature!r} "
                                f"(use {' or '.join(map(repr, allowed))}; type='empirical' is curvature='ef')")
    return kfac_type


def build(kind: str, objective, curvature: str, **options) -> KronPosterior:
    """``KFACOperator`` (``kind="kron"``) or ``EKFACOperator`` (``"ekfac"``) of ``objective`` with
    ``options`` (KFAC's, :data:`OPTIONS`; see :func:`check_options`)."""
    from ..kfac import EKFACOperator, KFACOperator

    kfac_type = check_options(kind, curvature, **options)
    options = {k: v for k, v in options.items() if k != "type"}
    cls = KFACOperator if kind == "kron" else EKFACOperator
    try:
        K = cls(objective, type=kfac_type, **options)
    except InvalidInputError as e:
        if "uncovered=" in str(e):
            raise InvalidInputError(f"{e} (to a Laplace approximation: structure_options="
                                    "{'uncovered': 'exact'})") from None
        raise
    return KronPosterior(K, kind)
