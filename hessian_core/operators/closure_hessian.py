"""The Hessian of the loss a closure builds, as an operator.

Optimizers get a ``closure()`` that re-evaluates the model and returns the loss, not a
``(model, loss_fn, data)`` triple. :class:`ClosureHessianOperator` runs the closure once
(:class:`ClosureGraph`), keeps its graph, takes the gradient with ``create_graph=True`` and answers every
product ``H V`` by one batched double backward through that graph.

The graph holds the parameters' values at evaluation: products are only valid until the parameters are
changed in place (autograd then raises its "modified by an inplace operation" error).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..arguments import check_optional_int
from ..closure import evaluate_closure
from ..errors import InvalidInputError
from ..finite import check_finite
from ..memory import chunk_size as _chunk_size
from ..params import ParamHolder, ParamSpec, spec_of
from .base import LinearOperator, unit_columns


class ClosureGraph:
    """``closure()`` evaluated once with the graph of its gradient: ``loss`` (tensor), ``value`` (float),
    ``grads`` (per parameter tensor, by ``id``, with graph) for the parameters of ``spec``."""

    def __init__(self, closure: Callable, spec: ParamSpec):
        if not callable(closure):
            raise InvalidInputError(f"closure must be callable, got {type(closure).__name__}")
        loss, flat, grads = evaluate_closure(closure, spec, create_graph=True)
        self.spec = spec
        self.loss = loss
        self.value = float(loss.detach())
        self.grads = dict(zip(map(id, spec.tensors), grads))
        check_finite(loss.detach().reshape(1), "loss returned by the closure")
        check_finite(flat, "gradient of the closure's loss")


class ClosureHessianOperator(LinearOperator):
    """Exact Hessian ``(P, P)`` of the scalar a closure returns, w.r.t. ``params``, matrix-free.

    Args:
        closure: ``closure() -> loss`` (scalar tensor), evaluated once, here; or a :class:`ClosureGraph`
            evaluated already (``params`` then selects a subset of its parameters).
        params: the tensors to differentiate (order kept), or a :class:`ParamSpec`.
        memory_budget: bytes (or ``"2GB"``) for dense results and batched products; default half the free
            memory.
        chunk_size: vectors per batched double backward (default from the budget, at most 64).
        progress: tqdm bar for :meth:`to_dense` / :meth:`diagonal` (``None``: only on a terminal).

    After construction: ``loss`` (the loss tensor), ``value`` (its float) and ``grad`` (flat ``(P,)``).
    """

    kind = "closure Hessian"

    def __init__(self, closure, params, *, memory_budget=None, chunk_size: int | None = None,
                 progress: bool | None = None):
        if isinstance(closure, ClosureGraph):
            graph = closure
            spec = ParamSpec(ParamHolder(graph.spec.tensors), _tensors_of(graph.spec, params))
        else:
            spec = spec_of(params)
            graph = ClosureGraph(closure, spec)
        super().__init__(spec.numel, spec.dtype, spec.device, params=spec, budget=memory_budget, progress=progress)
        self.graph = graph
        self.loss = graph.loss
        self.value = graph.value
        self.grad = spec.flatten([graph.grads[id(t)].detach() for t in spec.tensors])
        self.chunk = check_optional_int(chunk_size, "chunk_size")
        #: False once a batched double backward failed (products then go one vector at a time)
        self.batched_ok = True

    def __repr__(self) -> str:
        return f"ClosureHessianOperator(P={self.size}, dtype={self.dtype}, loss={self.value:.6g})"

    def plan(self) -> dict:
        return {**super().plan(), "products": "double backward through the closure's graph, "
                + ("batched (is_grads_batched)" if self.batched_ok else "one vector at a time"),
                "chunk_size": self.chunk_size()}

    def with_params(self, params):
        """The diagonal block for a subset of the parameters (tensors or ``params.names``), same graph."""
        return ClosureHessianOperator(self.graph, params, memory_budget=self.budget, chunk_size=self.chunk,
                                      progress=self.progress)

    # -- products ----------------------------------------------------------------------------------
    def chunk_size(self, reserved: int = 0) -> int:
        per_col = 8 * self.itemsize * self.size  # tangent, product and autograd buffers; activations unknown
        left = max(self.budget - reserved, per_col)
        return _chunk_size(self.size, per_col, left, self.chunk, cap=64)

    def dense_columns(self, reserved: int) -> int:
        return self.chunk_size(reserved)

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        step = self.chunk_size()
        out = torch.cat([self._products(V[:, a:a + step]) for a in range(0, V.shape[1], step)], dim=1)
        check_finite(out, "Hessian-vector products of the closure's loss")
        return out

    def _products(self, V: torch.Tensor) -> torch.Tensor:
        """One batched double backward: ``(P, k) -> (P, k)``."""
        spec = self.params
        pieces = spec.unflatten(V)  # (*shape, k) each
        outs, gouts, ins = [], [], list(spec.tensors)
        for t, piece in zip(spec.tensors, pieces):
            g = self.graph.grads[id(t)]
            if g.requires_grad:  # a gradient without graph is constant: its Hessian rows are zero
                outs.append(g)
                gouts.append(piece.movedim(-1, 0))
        k = V.shape[1]
        if not outs:
            return torch.zeros_like(V)
        if self.batched_ok and k > 1:
            try:
                res = torch.autograd.grad(outs, ins, grad_outputs=gouts, retain_graph=True, allow_unused=True,
                                          is_grads_batched=True)
                return self._columns(res, k)
            except (RuntimeError, NotImplementedError) as e:
                if "inplace" in str(e):
                    raise
                warnings.warn(f"ClosureHessianOperator: batched double backward failed "
                              f"({str(e).splitlines()[0]}); falling back to one product at a time",
                              RuntimeWarning, stacklevel=3)
                self.batched_ok = False
        cols = []
        for j in range(k):
            res = torch.autograd.grad(outs, ins, grad_outputs=[go[j] for go in gouts], retain_graph=True,
                                      allow_unused=True)
            cols.append(self._columns(tuple(None if r is None else r[None] for r in res), 1))
        return torch.cat(cols, dim=1)

    def _columns(self, res, k: int) -> torch.Tensor:
        parts = [torch.zeros(k, t.numel(), dtype=self.dtype, device=self.device) if r is None
                 else r.reshape(k, -1) for r, t in zip(res, self.params.tensors)]
        return torch.cat(parts, dim=1).T.detach()

    # -- dense results -----------------------------------------------------------------------------
    def _column_blocks(self, desc: str):
        from tqdm.auto import tqdm

        P = self.size
        step = self.chunk_size(reserved=P * P * self.itemsize)
        bar = tqdm(range(0, P, step), desc=desc, leave=False,
                   disable=(not self.progress) if self.progress is not None else None)
        for a in bar:
            b = min(a + step, P)
            yield a, b, self._products(unit_columns(P, a, b, self.dtype, self.device))
        self.num_matvecs += P

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian, in chunks of columns, within the memory budget."""
        P = self.size
        self.check_fits(P * P * self.itemsize, f"the dense {P} x {P} Hessian ({self.dtype})",
                        "the matrix-free products (matvec/matmat) or a Newton-CG / Hessian-free method")
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for a, b, cols in self._column_blocks("dense Hessian"):
            out[:, a:b] = cols
        check_finite(out, "Hessian of the closure's loss")
        return out

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)`` from products with unit vectors."""
        out = torch.empty(self.size, dtype=self.dtype, device=self.device)
        for a, b, cols in self._column_blocks("Hessian diagonal"):
            out[a:b] = cols[torch.arange(a, b), torch.arange(b - a)]
        check_finite(out, "Hessian diagonal of the closure's loss")
        return out


def _tensors_of(spec: ParamSpec, params) -> list[torch.Tensor]:
    """``params`` (tensors of ``spec``, their names, or a ParamSpec of them) as tensors of ``spec``."""
    if isinstance(params, ParamSpec):
        params = params.tensors
    by_name = dict(zip(spec.names, spec.tensors))
    wanted = [by_name[w] if isinstance(w, str) and w in by_name else w for w in params]
    known = {id(t) for t in spec.tensors}
    unknown = [w for w in wanted if not isinstance(w, torch.Tensor) or id(w) not in known]
    if unknown:
        raise InvalidInputError(f"params: {len(unknown)} of the given are not parameters of this closure operator")
    return wanted
