"""Curvature operators of an :class:`~hessian_core.objective.Objective`: a symmetric ``P x P`` matrix applied
batch by batch and normalized globally.

Subclasses implement :meth:`CurvatureOperator._prepare`: for one batch, a function ``apply(V)`` giving the
product of that batch's curvature (of the loss as ``loss_fn`` reduces it on that batch) with a block
``V`` of shape ``(P, k)``. Chunking by the memory budget, accumulation over batches, normalization,
dense results and the exact diagonal are here, once.

Products are always those of a freshly built operator. Work shared between products (the forward and
backward graph of a one-batch objective) is kept only inside :meth:`~LinearOperator.reuse`, a scope in
which nothing changes the model or the data: hessian_core's routines open it around their loops. A
graph kept there is still dropped when a parameter, buffer or data tensor is replaced or written in place
through autograd (version counters); writes through ``.data`` bypass those counters, so do not make them
inside the scope.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import vmap

from .. import distributed
from ..arguments import check_optional_int, check_options
from ..data import tensor_versions as _versions
from ..errors import InvalidInputError
from ..memory import chunk_size as _chunk_size
from ..memory import format_bytes
from ..objective import OBJECTIVE_OPTIONS, Objective, keyword_options
from .base import LinearOperator, unit_columns

#: vmapped block products may always use this much working memory (beyond that, at most about twice one
#: product's): small models gain most from batching, and their products are small
BLOCK_WORK_BYTES = 4 * 2**20


@dataclass
class Products:
    """One batch's curvature products (what :meth:`CurvatureOperator._prepare` returns).

    ``block(V)``: ``(P, k) -> (P, k)``, the fastest per column for many columns (dense results).
    ``one(v)``: ``(P,) -> (P,)`` through a graph kept for this batch (a plain double backward), and
    ``batched(V)``: all columns of ``V`` through that same graph at once; given both, ``matmat`` measures
    which is faster per column for this model (:attr:`CurvatureOperator.block_mode`).
    ``ready()`` builds the kept graph (so that a measurement times the products alone).
    ``per_parameter(V)``: one column ``(P, 1)`` -> the product as a list of parameter-shaped tensors (what
    :mod:`hessian_core.sample_slices` sums over slices in place). ``add_into(acc, V, w)``: ``acc += w * (this
    batch's curvature) V`` for one column, ``acc`` a ``(P,)`` view (sample slices: without a running sum)."""

    block: Callable
    one: Callable | None = None
    batched: Callable | None = None
    ready: Callable | None = None
    per_parameter: Callable | None = None
    add_into: Callable | None = None

    def __call__(self, V):
        return self.block(V)


def _tensors(x) -> list:
    """The tensors of ``x`` (a tensor or a nested tuple/list), in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    return []


def as_products(prepared) -> Products:
    """``prepared`` as :class:`Products`: a plain ``apply(V)`` is the block product (with ``add_into``, when
    it has one: sums over sample slices)."""
    if isinstance(prepared, Products):
        return prepared
    return Products(prepared, add_into=getattr(prepared, "add_into", None))


class CurvatureOperator(LinearOperator):
    """Symmetric ``(P, P)`` curvature of ``loss_fn(model(inputs), targets)`` over ``data``.

    Constructed as ``Op(model, loss_fn, data, **options)`` with the options of :class:`Objective`
    (``reduction``, ``count_fn``, ``params``, ``train_mode``, ``seed``, ``memory_budget``, ``progress``,
    ``distributed``) plus ``chunk_size`` (vectors per batched product; default from the memory budget);
    or ``Op(objective)`` for an :class:`Objective` built already.

    Vectors are flat ``(P,)`` in the order of :class:`~hessian_core.params.ParamSpec`, blocks ``(P, k)``;
    ``matvec`` also accepts a list of param-shaped tensors and then answers in the same form.
    """

    kind = "curvature"
    #: terms that are sums over samples already (the empirical Fisher): weight 1 per batch
    per_sample = False

    def __init__(self, model, loss_fn=None, data=None, *, chunk_size: int | None = None, **objective_options):
        if isinstance(model, Objective):
            if loss_fn is not None or data is not None or objective_options:
                raise InvalidInputError(
                    f"{type(self).__name__}(objective) takes no loss_fn, data or objective options; they are the "
                    "objective's")
            objective = model
        else:
            check_options(objective_options, OBJECTIVE_OPTIONS + keyword_options(type(self), LinearOperator),
                          type(self).__name__)
            objective = Objective(model, loss_fn, data, **objective_options)
        spec = objective.params
        super().__init__(spec.numel, spec.dtype, spec.device, params=spec, budget=objective.budget,
                         progress=objective.progress)
        self.objective = objective
        self.chunk = check_optional_int(chunk_size, "chunk_size")
        #: False once vmap failed on this model (products then go one vector at a time)
        self.vmap_ok = True
        #: how ``matmat`` applies several columns: ``"loop"`` (one double backward each, through one kept graph)
        #: or ``"vmap"`` (batches of columns at once); measured on the first block product (``None`` before)
        self.block_mode: str | None = "vmap" if self.chunk is not None else None
        #: time per column of the loop over that of the batched products, as measured (``None`` before)
        self.block_speedup: float | None = None
        self._reuse_depth = 0
        # (versions, products, copies of the values) of a one-batch objective, inside reuse()
        self._kept: tuple | None = None
        objective.validate()

    @classmethod
    def from_objective(cls, objective: Objective, **options):
        """``cls(objective, **options)``."""
        return cls(objective, **options)

    def _options(self) -> dict:
        """Constructor options of this operator besides the objective (for :meth:`with_params`)."""
        return {"chunk_size": self.chunk}

    def with_params(self, params):
        """The same operator restricted to a subset of parameters (a diagonal block of this one)."""
        return type(self)(self.objective.with_params(params), **self._options())

    # -- description -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        o = self.objective
        n = o.batches.length
        return (f"{type(self).__name__}(P={self.size}, reduction={o.reduction!r}, batches={'?' if n is None else n}, "
                f"dtype={self.dtype}, train_mode={o.train_mode})")

    def plan(self) -> dict:
        o = self.objective
        probe = o.validate()
        return {
            **super().plan(),
            "curvature": self.kind,
            "batches": o.batches.length,
            "reduction": o.reduction,
            "budget": f"{format_bytes(self.budget)} ({o.budget_source})",
            "chunk_size": self.chunk_size(),
            "vmap": self.vmap_ok,
            "block products": self._block_plan(),
            "graph reuse": ("inside reuse() (one batch)" if o.batches.length == 1
                            else "none (several batches: each product passes over the data)"),
            "random forward": (f"draws fixed per batch from seed={o.seed}" if (o.train_mode or probe.random)
                               else "deterministic"),
            "copies": [w for w, on in (("buffers", o.train_mode or probe.mutates_buffers),
                                       ("inputs", probe.mutates_inputs)) if on],
            "composites": dict(o.substitutions),  # operations hessian_core.composites computes instead
        }

    # -- products ----------------------------------------------------------------------------------
    def chunk_size(self, reserved: int = 0) -> int:
        """Vectors per batched product, within the budget left after ``reserved`` bytes. The working set
        is also kept below ``max(size of H, 64 MiB)``: larger chunks are no faster (measured on CNNs, where
        16 columns at a time are as fast as 512) and only raise the peak memory."""
        per_col = self.objective.bytes_per_column()
        cap = max(self.size ** 2 * self.itemsize, 64 * 2**20)
        left = max(min(self.budget - reserved, cap), per_col)
        return _chunk_size(self.size, per_col, left, self.chunk)

    def dense_columns(self, reserved: int) -> int:
        return self.chunk_size(reserved)

    def block_columns(self) -> int:
        """Columns per batched product in ``matmat``: what the budget allows (:meth:`chunk_size`), and a working
        set of at most ``max(BLOCK_WORK_BYTES, 2 x one product's)``, so that a block never needs much more
        memory than the products one at a time."""
        if self.chunk is not None:
            return self.chunk
        per_col = self.objective.bytes_per_column()
        return int(max(1, min(self.chunk_size(), max(BLOCK_WORK_BYTES, 2 * per_col) // per_col)))

    def block_size(self) -> int:
        """How many vectors a routine should hand to one ``matmat`` for speed: the batched block when it was
        measured faster than the loop, else 1 (Lanczos, estimators and solvers need fewer products with
        smaller blocks, and a block costs as much as its columns one by one)."""
        return self.block_columns() if self.block_mode == "vmap" else 1

    def preferred_block(self, k: int, cost: float = 1.0) -> int:
        """``k`` when batched products were measured more than ``cost`` times faster per column than the loop
        (measured now on the first batch, with ``k`` random vectors, if not yet), else 1."""
        if k < 2:
            return 1
        if self.block_mode is None:
            self._measure_now(k)
        pays = self.block_mode == "vmap" and (self.block_speedup or 1.0) > cost
        # measured on each rank: all of them must take the same block size (a collective when distributed)
        return k if not distributed.any_rank(self.objective, not pays) else 1

    def _measure_now(self, k: int) -> None:
        gen = torch.Generator(device=self.device).manual_seed(0)
        V = torch.randn(self.size, min(k, self.block_columns()) + 1, generator=gen, dtype=self.dtype,
                        device=self.device)
        acc = torch.zeros_like(V)
        with contextlib.closing(self.objective.contexts()) as batches:
            prod = as_products(self._prepared(next(batches)))
            if prod.one is None or prod.batched is None or V.shape[1] < 3:
                self.block_mode = self.block_mode or ("vmap" if prod.one is None else "loop")
                return
            self._measure(prod, V, acc, 1.0, V.shape[1] - 1)

    def _block_plan(self) -> str:
        if self.block_mode is None:
            return f"not measured yet (batches of up to {self.block_columns()} columns, or a loop)"
        gain = "" if self.block_speedup is None else f"; measured {self.block_speedup:.2f}x the loop's speed"
        if self.block_mode == "vmap":
            return f"batched, {self.block_columns()} columns at a time{gain}"
        return f"a loop of double backwards through one graph per batch{gain}"

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        k = V.shape[1]
        out = torch.zeros(self.size, k, dtype=self.dtype, device=self.device)

        def contribution(ctx, acc, w):
            self._products_into(as_products(self._prepared(ctx)), V, acc, w)

        return self.objective.accumulate(contribution, out, per_sample=self.per_sample,
                                         desc=f"{self.kind} products")

    def _products_into(self, prod: Products, V: torch.Tensor, acc: torch.Tensor, w: float) -> None:
        """``acc += w * (this batch's curvature) V``: one column through the kept graph, several by the
        faster of a loop and batches (measured once per operator on the first block)."""
        k = V.shape[1]
        if k == 1 and prod.add_into is not None:  # sample slices added straight into the accumulator
            prod.add_into(acc[:, 0], V, w)
            return
        if prod.one is None:
            step = self.chunk_size()
            for a in range(0, k, step):
                acc[:, a:a + step].add_(prod.block(V[:, a:a + step]), alpha=w)
            return
        if k == 1:
            acc.squeeze(1).add_(prod.one(V.squeeze(1)), alpha=w)
            return
        step = self.block_columns()
        start = 0
        if self.block_mode is None:
            if step < 2 or prod.batched is None:
                self.block_mode = "loop"
            else:
                start = self._measure(prod, V, acc, w, step)
        if self.block_mode == "vmap":
            for a in range(start, k, step):
                try:
                    acc[:, a:a + step].add_(prod.batched(V[:, a:a + step]), alpha=w)
                except (RuntimeError, NotImplementedError):
                    self.block_mode = "loop"  # a batching rule is missing for this model
                    start = a
                    break
            else:
                return
        for j in range(start, k):
            acc[:, j].add_(prod.one(V[:, j]), alpha=w)

    def _measure(self, prod: Products, V, acc, w, step: int) -> int:
        """Time one column through the loop and the next ``step`` batched; keep the faster per column."""
        if prod.ready is not None:
            prod.ready()
        k = V.shape[1]
        t0 = _now(self.device)
        acc[:, 0].add_(prod.one(V[:, 0]), alpha=w)
        t1 = _now(self.device)
        b = min(k, 1 + step)
        try:
            acc[:, 1:b].add_(prod.batched(V[:, 1:b]), alpha=w)
        except (RuntimeError, NotImplementedError):
            self.block_mode = "loop"
            return 1
        t2 = _now(self.device)
        per_loop, per_block = t1 - t0, (t2 - t1) / (b - 1)
        self.block_speedup = per_loop / max(per_block, 1e-12)
        self.block_mode = "vmap" if per_block < per_loop else "loop"
        return b

    @contextlib.contextmanager
    def reuse(self):
        self._reuse_depth += 1
        try:
            yield self
        finally:
            self._reuse_depth -= 1
            if self._reuse_depth == 0:
                self._kept = None

    # -- dense results -----------------------------------------------------------------------------
    def _dense_check(self, nbytes: int, what: str):
        self.check_fits(nbytes, what, f"the matrix-free {type(self).__name__} (matvec/matmat/to_scipy), "
                        "hessian_blocks, hessian_diagonal or eigsh")

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` matrix, computed in chunks of columns within the memory budget."""
        P = self.size
        self._dense_check(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} matrix ({self.dtype}, "
                          f"{format_bytes(P * P * self.itemsize)})")
        out = torch.zeros(P, P, dtype=self.dtype, device=self.device)
        step = self.chunk_size(reserved=P * P * self.itemsize)

        def contribution(ctx, acc, w):
            apply = as_products(self._prepare(ctx)).block
            for a in range(0, P, step):
                b = min(a + step, P)
                acc[:, a:b].add_(apply(unit_columns(P, a, b, self.dtype, self.device)), alpha=w)

        out = self.objective.accumulate(contribution, out, per_sample=self.per_sample, desc=f"dense {self.kind}")
        self.num_matvecs += P
        return out

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)`` from products with unit vectors (memory ``O(P * chunk)``)."""
        P = self.size
        out = torch.zeros(P, dtype=self.dtype, device=self.device)
        step = self.chunk_size()

        def contribution(ctx, acc, w):
            apply = as_products(self._prepare(ctx)).block
            for a in range(0, P, step):
                b = min(a + step, P)
                cols = apply(unit_columns(P, a, b, self.dtype, self.device))
                acc[a:b].add_(cols[torch.arange(a, b), torch.arange(b - a)], alpha=w)

        out = self.objective.accumulate(contribution, out, per_sample=self.per_sample, desc=f"{self.kind} diagonal")
        self.num_matvecs += P
        return out

    # -- per batch ---------------------------------------------------------------------------------
    def _prepared(self, ctx):
        """``_prepare(ctx)``, kept inside :meth:`reuse` when the data is one batch (Lanczos and CG ask for
        one product at a time, and rebuilding the graph each time costs several times the product itself).
        A kept graph is dropped when a parameter, buffer or data tensor was replaced or changed in place
        (identity, storage and version of each) or holds other values (writes through ``.data``)."""
        if self._reuse_depth == 0 or self.objective.batches.length != 1:
            return self._prepare(ctx)
        model = self.objective.model
        state = [*model.parameters(), *model.buffers(), *_tensors(ctx.inputs), *_tensors(ctx.targets)]
        key = _versions(state)
        # A write through ``.data`` (``p.data.mul_(2)``) bumps no version counter: the values are compared too,
        # against a copy taken with the graph (O(P + batch) per product, against the product's O(N P)).
        if (self._kept is None or self._kept[0] != key
                or not all(torch.equal(a, b) for a, b in zip(state, self._kept[2]))):
            self._kept = None  # the old graph goes before the new one is built
            self.check_fits(sum(t.numel() * t.element_size() for t in state),
                            "the copy of the parameters, buffers and batch that reuse() compares between products",
                            "products outside reuse() (each builds its own graph)")
            self._kept = (key, self._prepare(ctx), [t.detach().clone() for t in state])
        return self._kept[1]

    def _prepare(self, ctx):
        """Return ``apply(V)``: batch ``ctx``'s curvature (of the loss as ``loss_fn`` reduces the batch)
        times ``V`` of shape ``(P, k)``. Work shared by all vectors (forward, backward) is done here once."""
        raise NotImplementedError

    def _batched(self, fn, V: torch.Tensor) -> torch.Tensor:
        """Apply ``fn`` (tangent tuple -> tuple, one vector) to every column of ``V`` with ``vmap``; fall
        back to a loop for models that vmap rejects (the first failure is reported once as a warning). When
        one vector at a time fails too, the failure is not vmap's: that error is raised."""
        tangents = self._tangents(V)
        if self.vmap_ok and V.shape[1] > 1:  # (one vector: a direct call, without vmap's overhead)
            try:
                return self._flat_columns(vmap(fn, randomness="same")(tangents))
            except (RuntimeError, NotImplementedError) as e:
                out = self._columns(fn, tangents, V.shape[1])  # raises the error of one product, if any
                warnings.warn(f"{type(self).__name__}: vmap failed ({str(e).splitlines()[0]}); "
                              "falling back to one product at a time", RuntimeWarning, stacklevel=3)
                self.vmap_ok = False
                return out
        return self._columns(fn, tangents, V.shape[1])

    def _columns(self, fn, tangents, k: int) -> torch.Tensor:
        return torch.stack([self.params.flatten(fn(tuple(t[j] for t in tangents))) for j in range(k)], dim=1)

    # -- helpers for subclasses --------------------------------------------------------------------
    def _tangents(self, V: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(P, k)`` -> tuple of ``(k, *shape)`` tangents (batch dimension first, for vmap)."""
        return tuple(t.movedim(-1, 0) for t in self.params.unflatten(V))

    def _flat_columns(self, parts) -> torch.Tensor:
        """tuple of ``(k, *shape)`` -> ``(P, k)``."""
        k = parts[0].shape[0]
        return torch.cat([p.reshape(k, -1) for p in parts], dim=1).T




def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
