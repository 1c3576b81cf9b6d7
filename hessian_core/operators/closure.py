"""Hessian of a loss that a closure builds, as an operator with the interface of the core operators.

Optimizers get a ``closure()`` that re-evaluates the model and returns the loss, not a
``(model, loss_fn, data)`` triple. :class:`ClosureHessianOperator` runs the closure once, keeps its graph,
takes the gradient with ``create_graph=True`` and answers every product ``H V`` by one batched double
backward through that graph. It has the interface of
:class:`~hessian_core.operators.base.CurvatureOperator` (``shape``, ``dtype``, ``device``, ``params``,
``matvec``, ``matmat``, ``to_scipy``, ``to_dense``, ``diagonal``, ``with_params``) so CG and ``eigsh``
work on it alike; it has no ``objective`` (``None``): the closure is the objective.

Closures that call ``loss.backward()`` themselves (the usual ``torch.optim`` closure) are supported:
while the closure runs, :func:`keep_graph` makes every ``backward`` keep the graph (``retain_graph=True``)
so the second-order products can still use it; ``.grad`` is filled by the closure as it wrote it.

The graph holds the parameters' values at evaluation: products are only valid until the parameters are
changed in place (autograd then raises its "modified by an inplace operation" error).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import InvalidInputError
from ..memory import check_fits, chunk_size, resolve_budget
from ..objective import check_finite
from ..params import ParamSpec
from .base import CurvatureOperator, _unit_columns


class ParamHolder(nn.Module):
    """A module whose parameters are exactly the given tensors (in that order, same objects), so that
    plain optimizer parameters get the core's :class:`ParamSpec` flatten/unflatten."""

    def __init__(self, tensors: Iterable[torch.Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise InvalidInputError(f"parameter {i} is a {type(t).__name__}, not a tensor")
            # Direct assignment keeps the caller's tensor object (register_parameter insists on nn.Parameter,
            # torch.optim accepts any leaf tensor).
            self._parameters[str(i)] = t


def spec_of(params: Iterable[torch.Tensor] | ParamSpec) -> ParamSpec:
    """:class:`ParamSpec` of a list of tensors (order kept) or a ParamSpec as is."""
    if isinstance(params, ParamSpec):
        return params
    tensors = list(params)
    if not tensors:
        raise InvalidInputError("no parameters given")
    return ParamSpec(ParamHolder(tensors))


_BACKWARD_SIGNATURE = inspect.signature(torch.autograd.backward)


@contextlib.contextmanager
def keep_graph():
    """While active, ``tensor.backward()`` / ``torch.autograd.backward`` keep the graph
    (``retain_graph=True``), so that a closure which calls ``loss.backward()`` leaves a graph that the
    second derivatives can still traverse. Yields a list that counts the backward calls seen."""
    original = torch.autograd.backward
    calls: list[int] = []

    def backward(*args, **kwargs):
        bound = _BACKWARD_SIGNATURE.bind(*args, **kwargs)
        bound.arguments["retain_graph"] = True
        calls.append(1)
        return original(*bound.args, **bound.kwargs)

    torch.autograd.backward = backward
    try:
        yield calls
    finally:
        torch.autograd.backward = original


def evaluate_closure(closure: Callable, spec: ParamSpec, *, create_graph: bool = False):
    """Run ``closure()`` with autograd on and return ``(loss tensor, flat gradient (P,), per-tensor grads)``.

    With ``create_graph=True`` the per-tensor gradients keep their graph (for Hessian products).
    Raises :class:`InvalidInputError` when the closure does not return a scalar tensor of the parameters.
    """
    with torch.enable_grad(), keep_graph():
        loss = closure()
        loss = check_loss(loss)
        try:
            grads = torch.autograd.grad(loss, spec.tensors, create_graph=create_graph, allow_unused=True)
        except RuntimeError as e:
            if "second time" not in str(e):
                raise
            raise InvalidInputError(
                "the closure freed the loss's graph (torch.autograd.grad inside the closure does, unlike "
                "loss.backward()); return the loss without differentiating it, or use retain_graph=True there"
            ) from e
    grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(spec.tensors, grads))
    flat = spec.flatten([g.detach() for g in grads])
    return loss, flat, grads


def check_loss(loss) -> torch.Tensor:
    """The closure's return value as a scalar loss tensor with a graph, or a clear error."""
    if not isinstance(loss, torch.Tensor):
        raise InvalidInputError(
            f"the closure returned a {type(loss).__name__}; it must return the loss tensor itself "
            "(return loss, not loss.item())"
        )
    if loss.numel() != 1:
        raise InvalidInputError(
            f"the closure returned a tensor of shape {tuple(loss.shape)}; the loss must be a scalar")
    if not loss.requires_grad:
        raise InvalidInputError(
            "the closure's loss does not depend on the parameters through autograd (requires_grad=False): "
            "compute it from the parameters, outside torch.no_grad(), and do not .detach() it"
        )
    return loss.reshape(())


class ClosureHessianOperator(CurvatureOperator):
    """Exact Hessian ``(P, P)`` of the scalar a closure returns, w.r.t. ``params``, matrix-free.

    Args:
        closure: ``closure() -> loss`` (scalar tensor). Evaluated once, here.
        params: the tensors to differentiate (order kept), or a :class:`ParamSpec`.
        memory_budget: bytes (or ``"2GB"``) for dense results and batched products; default half the free
            memory.
        chunk_size: vectors per batched double backward (default from the budget, at most 64).
        progress: tqdm bar for :meth:`to_dense` / :meth:`diagonal` (``None``: only on a terminal).

    After construction: ``loss`` (the loss tensor), ``value`` (its float) and ``grad`` (flat ``(P,)``).
    """

    kind = "closure Hessian"

    def __init__(self, closure: Callable, params, *, memory_budget=None, chunk_size: int | None = None,
                 progress: bool | None = None):
        if not callable(closure):
            raise InvalidInputError(f"closure must be callable, got {type(closure).__name__}")
        spec = spec_of(params)
        loss, flat, grads = evaluate_closure(closure, spec, create_graph=True)
        grads_by_id = dict(zip(map(id, spec.tensors), grads))
        self._setup(spec, loss, flat, grads_by_id, memory_budget, chunk_size, progress)

    @classmethod
    def from_objective(cls, objective, chunk_size=None):
        raise InvalidInputError(
            "ClosureHessianOperator is built from a closure; for an Objective use HessianOperator")

    def _setup(self, spec, loss, flat, grads_by_id, budget, chunk, progress):
        self.objective = None
        self.params = spec
        self.loss = loss
        self.value = float(loss.detach())
        self.grad = flat
        self._grads = grads_by_id
        self.budget = resolve_budget(budget, spec.device)
        self._chunk = chunk
        self.progress = progress
        self._batched_ok = True
        check_finite(self.loss.detach().reshape(1), "loss returned by the closure")
        check_finite(flat, "gradient of the closure's loss")

    def __repr__(self) -> str:
        return f"ClosureHessianOperator(P={self.params.numel}, dtype={self.dtype}, loss={self.value:.6g})"

    def with_params(self, params):
        """The diagonal block for a subset of the parameters (tensors or ``params.names``), same graph."""
        by_name = dict(zip(self.params.names, self.params.tensors))
        wanted = [by_name[w] if isinstance(w, str) and w in by_name else w for w in params]
        spec = ParamSpec(ParamHolder(self.params.tensors), wanted)
        keep = {id(t) for t in spec.tensors}
        pairs = zip(self.params.slices, self.params.tensors)
        grad = torch.cat([self.grad[s] for s, t in pairs if id(t) in keep])
        sub = object.__new__(ClosureHessianOperator)
        sub._setup(spec, self.loss, grad, self._grads, self.budget, self._chunk, self.progress)
        return sub

    # -- products ----------------------------------------------------------------------------------
    def chunk_size(self, reserved: int = 0) -> int:
        item = torch.empty((), dtype=self.dtype).element_size()
        per_col = 8 * item * self.params.numel  # tangent, product and autograd buffers; activations unknown
        left = max(self.budget - reserved, per_col)
        return chunk_size(self.params.numel, per_col, left, self._chunk, cap=64)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for ``V`` of shape ``(P, k)``."""
        V = self.params.as_flat(V, "V")
        if V.dim() == 1:
            V = V[:, None]
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
            g = self._grads[id(t)]
            if g.requires_grad:  # a gradient without graph is constant: its Hessian rows are zero
                outs.append(g)
                gouts.append(piece.movedim(-1, 0))
        k = V.shape[1]
        if not outs:
            return torch.zeros_like(V)
        if self._batched_ok and k > 1:
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
                self._batched_ok = False
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

        P = self.params.numel
        step = self.chunk_size(reserved=P * P * torch.empty((), dtype=self.dtype).element_size())
        starts = range(0, P, step)
        bar = tqdm(starts, desc=desc, leave=False,
                   disable=(not self.progress) if self.progress is not None else None)
        for a in bar:
            b = min(a + step, P)
            yield a, b, self._products(_unit_columns(P, a, b, self.dtype, self.device))

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian, in chunks of columns, within the memory budget."""
        P = self.params.numel
        item = torch.empty((), dtype=self.dtype).element_size()
        check_fits(P * P * item, self.budget, f"the dense {P} x {P} Hessian ({self.dtype})",
                   "the matrix-free products (matvec/matmat) or a Newton-CG / Hessian-free method")
        out = torch.empty(P, P, dtype=self.dtype, device=self.device)
        for a, b, cols in self._column_blocks("dense Hessian"):
            out[:, a:b] = cols
        check_finite(out, "Hessian of the closure's loss")
        return out

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)`` from products with unit vectors."""
        out = torch.empty(self.params.numel, dtype=self.dtype, device=self.device)
        for a, b, cols in self._column_blocks("Hessian diagonal"):
            out[a:b] = cols[torch.arange(a, b), torch.arange(b - a)]
        check_finite(out, "Hessian diagonal of the closure's loss")
        return out
