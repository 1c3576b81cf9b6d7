"""The one operator abstraction: a symmetric P x P curvature matrix of an :class:`Objective`, applied
batch by batch and normalized globally.

Subclasses implement :meth:`CurvatureOperator._apply`: the product of one batch's curvature (of the
loss as ``loss_fn`` reduces it on that batch) with a block of vectors ``V`` of shape ``(P, k)``.
Everything else (chunking by the memory budget, accumulation over batches, normalization, scipy export,
dense materialization, exact diagonal) is here, once.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.func import vmap

from ..errors import InvalidInputError
from ..memory import check_fits, chunk_size
from ..objective import Objective


class CurvatureOperator:
    """Symmetric ``(P, P)`` curvature of ``loss_fn(model(inputs), targets)`` over ``data``.

    Constructed as ``Op(model, loss_fn, data, **options)`` with the options of :class:`Objective`
    (``reduction``, ``count_fn``, ``params``, ``train_mode``, ``seed``, ``memory_budget``,
    ``progress``) plus ``chunk_size`` (vectors per batched product; default from the memory budget).
    Or ``Op.from_objective(objective)``.

    Vectors are flat ``(P,)`` in the order of :class:`~hessian_core.params.ParamSpec`, blocks ``(P, k)``;
    ``matvec`` also accepts a list of param-shaped tensors and then answers in the same form.
    """

    #: short name used in messages and progress bars
    kind = "curvature"

    def __init__(self, model, loss_fn, data, *, chunk_size: int | None = None, **objective_options):
        self._init(Objective(model, loss_fn, data, **objective_options), chunk_size)

    @classmethod
    def from_objective(cls, objective: Objective, chunk_size: int | None = None):
        op = object.__new__(cls)
        op._init(objective, chunk_size)
        return op

    def _init(self, objective: Objective, chunk: int | None):
        self.objective = objective
        self.params = objective.params
        self._chunk = chunk
        self._vmap_ok = True
        objective.validate()

    # -- description -------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.params.numel, self.params.numel)

    @property
    def dtype(self) -> torch.dtype:
        return self.params.dtype

    @property
    def device(self) -> torch.device:
        return self.params.device

    def __repr__(self) -> str:
        o = self.objective
        return (f"{type(self).__name__}(P={self.params.numel}, reduction={o.reduction!r}, "
                f"batches={'?' if o.batches.length is None else o.batches.length}, dtype={self.dtype}, "
                f"train_mode={o.train_mode})")

    def with_params(self, params):
        """The same operator restricted to a subset of parameters (a diagonal block of this one)."""
        return type(self).from_objective(self.objective.with_params(params), self._chunk)

    # -- products ----------------------------------------------------------------------------------
    def chunk_size(self, reserved: int = 0) -> int:
        """Vectors per batched product, within the budget left after ``reserved`` bytes. The working set
        is also kept below ``max(size of H, 64 MiB)``: larger chunks are no faster (measured on CNNs, where
        16 columns at a time are as fast as 512) and only raise the peak memory."""
        per_col = self.objective.bytes_per_column()
        item = torch.empty((), dtype=self.dtype).element_size()
        cap = max(self.params.numel ** 2 * item, 64 * 2**20)
        left = max(min(self.objective.budget - reserved, cap), per_col)
        return chunk_size(self.params.numel, per_col, left, self._chunk)

    def matvec(self, v):
        """``A v`` for a flat ``(P,)`` vector (or a list of param-shaped tensors, answered likewise)."""
        as_list = isinstance(v, (list, tuple))
        flat = self.params.as_flat(v)
        if flat.dim() != 1:
            raise InvalidInputError(
                f"matvec takes a vector of shape ({self.params.numel},), got {tuple(flat.shape)}; use matmat")
        out = self.matmat(flat[:, None])[:, 0]
        return self.params.unflatten(out) if as_list else out

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``A V`` for ``V`` of shape ``(P, k)``."""
        V = self.params.as_flat(V, "V")
        if V.dim() == 1:
            V = V[:, None]
        P, k = V.shape
        out = torch.zeros(P, k, dtype=self.dtype, device=self.device)
        step = self.chunk_size()

        def contribution(ctx, acc, w):
            apply = self._prepared(ctx)
            for a in range(0, k, step):
                acc[:, a:a + step].add_(apply(V[:, a:a + step]), alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=self._per_sample,
                                         desc=f"{self.kind} products")

    def __matmul__(self, other):
        other_t = torch.as_tensor(other)
        return self.matvec(other_t) if other_t.dim() == 1 else self.matmat(other_t)

    def to_scipy(self, dtype=np.float64):
        """A ``scipy.sparse.linalg.LinearOperator`` over numpy arrays (float64 by default)."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x):
            x = np.asarray(x)
            t = torch.as_tensor(x.reshape(x.shape[0], -1), dtype=self.dtype, device=self.device)
            y = self.matmat(t).cpu().numpy().astype(dtype, copy=False)
            return y.reshape(x.shape)

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mv, rmatmat=mv, dtype=dtype)

    # -- dense results -----------------------------------------------------------------------------
    def _dense_check(self, nbytes: int, what: str):
        check_fits(nbytes, self.objective.budget, what,
                   f"the matrix-free {type(self).__name__} (matvec/matmat/to_scipy), hessian_blocks, "
                   "hessian_diagonal or eigsh")

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` matrix, computed in chunks of columns within the memory budget."""
        P = self.params.numel
        item = torch.empty((), dtype=self.dtype).element_size()
        self._dense_check(P * P * item, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        out = torch.zeros(P, P, dtype=self.dtype, device=self.device)
        step = self.chunk_size(reserved=P * P * item)

        def contribution(ctx, acc, w):
            apply = self._prepared(ctx)
            for a in range(0, P, step):
                b = min(a + step, P)
                acc[:, a:b].add_(apply(_unit_columns(P, a, b, self.dtype, self.device)), alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=self._per_sample,
                                         desc=f"dense {self.kind}")

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)`` from products with unit vectors (memory ``O(P * chunk)``)."""
        P = self.params.numel
        out = torch.zeros(P, dtype=self.dtype, device=self.device)
        step = self.chunk_size()

        def contribution(ctx, acc, w):
            apply = self._prepared(ctx)
            for a in range(0, P, step):
                b = min(a + step, P)
                cols = apply(_unit_columns(P, a, b, self.dtype, self.device))
                acc[a:b].add_(cols[torch.arange(a, b), torch.arange(b - a)], alpha=w)

        return self.objective.accumulate(contribution, out, per_sample=self._per_sample,
                                         desc=f"{self.kind} diagonal")

    # -- per batch ---------------------------------------------------------------------------------
    _per_sample = False

    def _prepared(self, ctx):
        """``_prepare(ctx)``, kept between calls when the data is one batch: CG and Lanczos ask for one
        product at a time, and rebuilding the forward/backward graph each time costs several times the
        product itself. Invalidated when any parameter or data tensor changes (torch version counters,
        bumped by every in-place update such as an optimizer step)."""
        if self.objective.batches.length != 1:
            return self._prepare(ctx)
        key = (_versions(self.params.tensors), _versions(ctx.inputs), _versions(ctx.targets))
        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] != key:
            self._cache = cached = (key, self._prepare(ctx))
        return cached[1]

    def _prepare(self, ctx):
        """Return ``apply(V)``: batch ``ctx``'s curvature (of the loss as ``loss_fn`` reduces the batch)
        times ``V`` of shape ``(P, k)``. Work shared by all vectors (forward, backward) is done here once."""
        raise NotImplementedError

    def _batched(self, fn, V: torch.Tensor) -> torch.Tensor:
        """Apply ``fn`` (tangent tuple -> tuple, one vector) to every column of ``V`` with ``vmap``; fall
        back to a loop for models that vmap rejects (the first failure is reported once as a warning)."""
        tangents = self._tangents(V)
        if self._vmap_ok:
            try:
                return self._flat_columns(vmap(fn, randomness="same")(tangents))
            except (RuntimeError, NotImplementedError) as e:
                msg = str(e).lower()
                if "vmap" not in msg and "batch" not in msg:
                    raise
                warnings.warn(f"{type(self).__name__}: vmap failed ({str(e).splitlines()[0]}); "
                              "falling back to one product at a time", RuntimeWarning, stacklevel=3)
                self._vmap_ok = False
        cols = [self.params.flatten(fn(tuple(t[j] for t in tangents))) for j in range(V.shape[1])]
        return torch.stack(cols, dim=1)

    # -- helpers for subclasses --------------------------------------------------------------------
    def _tangents(self, V: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(P, k)`` -> tuple of ``(k, *shape)`` tangents (batch dimension first, for vmap)."""
        return tuple(t.movedim(-1, 0) for t in self.params.unflatten(V))

    def _flat_columns(self, parts) -> torch.Tensor:
        """tuple of ``(k, *shape)`` -> ``(P, k)``."""
        k = parts[0].shape[0]
        return torch.cat([p.reshape(k, -1) for p in parts], dim=1).T


def _versions(x) -> tuple:
    """Identity and in-place version of every tensor in ``x`` (a tensor or a nested tuple/list)."""
    if isinstance(x, torch.Tensor):
        return ((id(x), x._version),)
    if isinstance(x, (tuple, list)):
        return tuple(v for t in x for v in _versions(t))
    return ()


def _unit_columns(P: int, a: int, b: int, dtype, device) -> torch.Tensor:
    E = torch.zeros(P, b - a, dtype=dtype, device=device)
    E[torch.arange(a, b), torch.arange(b - a)] = 1
    return E


