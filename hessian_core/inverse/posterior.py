"""Structures of the Laplace posterior precision ``Lambda = s * C + diag(prior)``.

``C`` is the curvature of the objective at the MAP (Hessian, GGN or empirical Fisher of the normalized loss),
``s`` the factor to the negative log likelihood (:mod:`.likelihood`) and ``prior`` the prior precision: a
0-d tensor (scalar, ``prior * I``) or a ``(P,)`` tensor (diagonal). Both may require grad: every method is
differentiable in them (the marginal likelihood is optimized through autograd).

The protocol every structure follows (``"full"`` and ``"diag"`` here, ``"kron"`` and ``"ekfac"`` in
:mod:`.kron_posterior`; register a builder of your own with :func:`register_structure`):

* ``size`` (``P``) and ``kind`` (a name for messages);
* ``logdet(s, prior) -> 0-d tensor``: ``log det Lambda`` (raise :class:`~hessian_core.errors.InvalidInputError`
  when ``Lambda`` is not positive definite);
* ``inv_matmat(s, prior, V) -> (P, k)``: ``Lambda^{-1} V`` for ``V`` of shape ``(P, k)``;
* ``sample(s, prior, n, generator) -> (n, P)``: draws of ``N(0, Lambda^{-1})``;
* ``precision(s, prior) -> LinearOperator``: ``Lambda`` as an operator (for :func:`~hessian_core.inverse.solve`);
* optionally ``prepare_many()``: many evaluations (prior optimization) follow;
* optionally ``check_prior(prior)``: refuse a prior the structure cannot represent (called when it is set),
  and ``prior_structures``: the structures ``optimize_prior_precision`` may search (default all).

A builder is ``builder(objective, curvature, **structure_options) -> structure`` with ``curvature`` one of
``"ggn"``, ``"hessian"``, ``"ef"``; ``structure_options`` are passed only when the user gives some. A
builder may have ``builder.validate(curvature, **structure_options)``, called before any pass over the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import InvalidInputError
from ..operators import DenseOperator, FunctionOperator
from .curvature_matrices import dense_curvature, diagonal_curvature
from .factor import check_dense_fits

CURVATURES = ("ggn", "hessian", "ef")


def _not_pd(kind: str, smallest: float) -> InvalidInputError:
    return InvalidInputError(
        f"the {kind} posterior precision is not positive definite (smallest eigenvalue {smallest:.6g}): the curvature "
        "is indefinite at these parameters (not a minimum, or the exact Hessian); use curvature='ggn' (positive "
        "semi-definite) or a larger prior precision")


def _scalar(prior: torch.Tensor) -> bool:
    return prior.dim() == 0


class FullPosterior:
    """Dense ``C`` ``(P, P)``. Quantities for one ``(s, prior)`` come from a Cholesky factor (``P^3 / 3``); once
    :meth:`prepare_many` was called (by the prior optimization, which evaluates many priors) a scalar prior uses
    ``C``'s eigendecomposition instead (``O(P^3)`` once, then ``O(P)`` per evidence, ``O(P^2)`` per sample)."""

    kind = "full"

    def __init__(self, C: torch.Tensor, budget: int):
        self.C = (C + C.T) / 2
        self.size = C.shape[0]
        self.budget = budget
        self._eig = None

    def prepare_many(self) -> None:
        """Many evaluations with scalar priors follow: compute the eigendecomposition now."""
        self.eig()

    def _use_eig(self, prior) -> bool:
        return _scalar(prior) and self._eig is not None

    def eig(self):
        if self._eig is None:
            check_dense_fits(self.size, self.C.dtype, self.budget, 3, "the eigendecomposition of the curvature",
                             "structure='diag'")
            self._eig = torch.linalg.eigh(self.C)
        return self._eig

    def _cholesky(self, s, prior):
        Lam = s * self.C + (torch.diag(prior) if prior.dim() else prior * torch.eye(
            self.size, dtype=self.C.dtype, device=self.C.device))
        L, info = torch.linalg.cholesky_ex(Lam)
        if int(info) != 0:
            raise _not_pd(self.kind, float(torch.linalg.eigvalsh(Lam.detach())[0]))
        return L

    def _spectrum(self, s, prior):
        lam, V = self.eig()
        d = s * lam + prior
        if float(d.detach().min()) <= 0:
            raise _not_pd(self.kind, float(d.detach().min()))
        return d, V

    def logdet(self, s, prior):
        if self._use_eig(prior):
            return self._spectrum(s, prior)[0].log().sum()
        return 2 * self._cholesky(s, prior).diagonal().log().sum()

    def inv_matmat(self, s, prior, V):
        if self._use_eig(prior):
            d, Q = self._spectrum(s, prior)
            return Q @ ((Q.T @ V) / d[:, None])
        return torch.cholesky_solve(V, self._cholesky(s, prior))

    def sample(self, s, prior, n, generator):
        Z = torch.randn(self.size, n, dtype=self.C.dtype, device=self.C.device, generator=generator)
        if self._use_eig(prior):
            d, Q = self._spectrum(s, prior)
            return (Q @ (Z / d.sqrt()[:, None])).T
        L = self._cholesky(s, prior)
        return torch.linalg.solve_triangular(L.T, Z, upper=True).T

    def precision(self, s, prior):
        return DenseOperator(float(s) * self.C + torch.diag(prior.detach().expand(self.size)))


class DiagPosterior:
    """Diagonal ``c`` ``(P,)``: ``Lambda = diag(s c + prior)``."""

    kind = "diagonal"

    def __init__(self, c: torch.Tensor):
        self.c = c
        self.size = c.shape[0]

    def _d(self, s, prior):
        d = s * self.c + prior
        if float(d.detach().min()) <= 0:
            raise _not_pd(self.kind, float(d.detach().min()))
        return d

    def logdet(self, s, prior):
        return self._d(s, prior).log().sum()

    def inv_matmat(self, s, prior, V):
        return V / self._d(s, prior)[:, None]

    def sample(self, s, prior, n, generator):
        Z = torch.randn(n, self.size, dtype=self.c.dtype, device=self.c.device, generator=generator)
        return Z / self._d(s, prior).sqrt()

    def precision(self, s, prior):
        d = self._d(float(s), prior.detach()).detach()
        return FunctionOperator(lambda V: d[:, None] * V, self.size, d.dtype, d.device, name="diagonal precision")


def build_full(objective, curvature: str) -> FullPosterior:
    """Dense curvature (:func:`.curvature.dense_curvature`; memory budget checked before anything of size
    ``P^2``)."""
    P = objective.params.numel
    check_dense_fits(P, objective.params.dtype, objective.budget, 2, "the full Laplace posterior precision",
                     "structure='diag' or 'last_layer'")
    return FullPosterior(dense_curvature(objective, curvature), objective.budget)


def build_diag(objective, curvature: str) -> DiagPosterior:
    """Exact diagonal of the curvature (:func:`.curvature.diagonal_curvature`)."""
    return DiagPosterior(diagonal_curvature(objective, curvature))


def build_kron(objective, curvature: str, **options):
    """KFAC (:mod:`.kron_posterior`; ``options``: KFAC's, from ``Laplace(structure_options=...)``)."""
    from .kron_posterior import build

    return build("kron", objective, curvature, **options)


def build_ekfac(objective, curvature: str, **options):
    """EKFAC (:mod:`.kron_posterior`)."""
    from .kron_posterior import build

    return build("ekfac", objective, curvature, **options)


def _kron_validator(kind: str):
    def validate(curvature: str, **options):
        from .kron_posterior import check_options

        check_options(kind, curvature, **options)
    return validate


build_kron.validate = _kron_validator("kron")
build_ekfac.validate = _kron_validator("ekfac")


#: name -> builder(objective, curvature, **structure_options); "last_layer" is "full" on the last layer's parameters
STRUCTURES: dict[str, Callable] = {"full": build_full, "diag": build_diag, "kron": build_kron, "ekfac": build_ekfac}


def register_structure(name: str, builder: Callable) -> None:
    """Make ``Laplace(..., structure=name)`` use ``builder(objective, curvature)`` (and the user's
    ``structure_options`` as keywords, when given), which returns an object following the protocol of this
    module's docstring."""
    if not isinstance(name, str) or not name or name == "last_layer":
        raise InvalidInputError(f"a structure needs a new name (not 'last_layer'), got {name!r}")
    if not callable(builder):
        raise InvalidInputError(f"builder must be callable as builder(objective, curvature), got {builder!r}")
    STRUCTURES[name] = builder


def gaussian_log_normalizer(P: int) -> float:
    """``P/2 log(2 pi)`` (cancels between the prior and the Laplace integral; kept for log densities)."""
    return 0.5 * P * math.log(2 * math.pi)
