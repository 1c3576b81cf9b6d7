"""Exact Hessian of the loss with respect to the parameters, as a matrix-free operator."""

from __future__ import annotations

import contextlib

import torch
from torch.func import grad, jvp, vjp

from ..arguments import check_bool, check_choice
from ..diagnosis import unsupported
from ..errors import InvalidInputError
from ..sample_slices import output_numel, plan, sliced_apply
from . import self_check as _check
from .autograd_products import hessian_products, transforms_unsupported
from .curvature import CurvatureOperator

STRATEGIES = ("auto", "structured", "generic")


class HessianOperator(CurvatureOperator):
    """Exact Hessian ``H = d^2 L / d theta^2`` of the globally normalized loss (see :mod:`..objective`).

    Products are reverse-over-reverse: one forward and backward per batch builds ``grad`` with its graph
    (``vjp(grad(loss))``), and every chunk of vectors is one vmapped double-backward through it. Since
    ``H`` is symmetric, ``vjp`` of the gradient is ``H v``. Reverse-over-reverse needs only double
    backward, which every op has. Blocks of many vectors first try forward-over-reverse
    (``jvp(grad(loss))``, vmapped, as ``torch.func.hessian``), often faster through convolutions; where an
    op has no forward-mode derivative (or the self-check finds it disagreeing) the operator keeps to
    reverse-over-reverse. Models that ``torch.func`` cannot run (old-style autograd Functions, packed
    sequences) use plain ``torch.autograd`` double backward (:mod:`.autograd_products`).

    ``self_check=True`` (default): on the first batch, two products check ``u^T H w = w^T H u`` and one
    compares forward-over-reverse with reverse-over-reverse (:mod:`.self_check`); a model whose PyTorch
    second derivatives are not symmetric is refused with its modules named.

    A batch whose product would exceed the memory budget is processed in slices of samples, exactly, for
    the losses of :mod:`hessian_core.loss_hessians` (:mod:`hessian_core.sample_slices`).

    ``to_dense()`` and ``diagonal()`` pick a strategy (``strategy=``): ``"auto"`` (default) uses the
    structured path of :mod:`hessian_core.structured` when the model allows it and the generic chunked
    products otherwise (also when the structured path fails on this model); ``"generic"`` always uses the
    products; ``"structured"`` raises :class:`~hessian_core.errors.InvalidInputError` when the structured
    path does not apply. :meth:`plan` says which paths apply to this model, which ran, and why.
    """

    kind = "Hessian"

    def __init__(self, model, loss_fn=None, data=None, *, strategy: str = "auto", chunk_size: int | None = None,
                 self_check: bool = True, **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.strategy = check_choice(strategy, "strategy", STRATEGIES)
        self.self_check = check_bool(self_check, "self_check")
        #: False once forward-over-reverse failed on this model (blocks then use reverse-over-reverse)
        self.forward_over_reverse_ok = True
        #: why forward-over-reverse is not used (None while it is)
        self.forward_over_reverse_note: str | None = None
        #: "torch.func" (vmapped transforms) or "autograd" (plain double backward, for models torch.func rejects)
        self.engine = "torch.func"
        self.engine_note: str | None = None
        #: the self-check's result on the first batch (None before it ran)
        self.check_report: str | None = None
        #: whether forward-over-reverse was compared with reverse-over-reverse (before its first use)
        self.forward_checked = False
        #: the path the last to_dense()/diagonal() took: "structured" or "generic" (None before); plan() says why
        self.last_strategy: str | None = None

    def _options(self) -> dict:
        return {**super()._options(), "strategy": self.strategy, "self_check": self.self_check}

    def with_params(self, params):
        """The same operator for a subset of the parameters (a diagonal block). The self-check runs once, on
        all parameters (a block alone can be numerically zero: the bias before a train-mode BatchNorm), and
        the block inherits its verdict."""
        child = super().with_params(params)
        if self.self_check:
            self._check_now()
            child.check_report = f"{self.check_report} (on all {self.size} parameters)"
            child.forward_over_reverse_ok, child.forward_over_reverse_note = (
                self.forward_over_reverse_ok, self.forward_over_reverse_note)
            child.forward_checked = self.forward_checked
            child.engine, child.engine_note = self.engine, self.engine_note
        return child

    def _check_now(self):
        """Run the self-check on the first batch, if it has not run yet."""
        if self.check_report is not None:
            return
        o = self.objective
        o.validate()
        with contextlib.closing(o.contexts()) as batches:
            ctx = next(batches)
            try:
                self._prepare(ctx)
            except (RuntimeError, NotImplementedError) as e:
                if isinstance(e, torch.OutOfMemoryError):
                    raise
                o._abort_peers()
                raise unsupported(o, ctx, e, "Hessian (self-check)") from e
            except Exception:
                o._abort_peers()
                raise

    def plan(self) -> dict:
        from ..structured import dense_plan, diagonal_plan

        o = self.objective
        random = o.train_mode or o.validate().random
        if self.engine == "autograd":
            blocks = "plain autograd double backward, one vector at a time"
        elif self.forward_over_reverse_ok and not random:
            blocks = "forward-over-reverse (vmapped jvp of the gradient), else reverse-over-reverse"
        else:
            blocks = "reverse-over-reverse (vmapped double backward)"
        dense, why_dense = dense_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        diag, why_diag = diagonal_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        out = {
            **super().plan(),
            "engine": self.engine + (f" ({self.engine_note})" if self.engine_note else ""),
            "products": {"one vector": "reverse-over-reverse (double backward)", "blocks": blocks},
            "dense": ("structured: " if dense else "generic chunked products: ") + why_dense,
            "diagonal": ("structured: " if diag else "generic unit-vector products: ") + why_diag,
            "last dense or diagonal": self.last_strategy or "none yet",
            "self-check": (self.check_report or "on the first batch") if self.self_check else "off (self_check=False)",
        }
        if self.forward_over_reverse_note:
            out["forward-over-reverse"] = self.forward_over_reverse_note
        if "structured" in o.notes:
            out["structured fallback"] = o.notes["structured"]
        return out

    def _prepare(self, ctx):
        # A batch whose product would exceed the budget goes in exact slices of samples (standard losses).
        item = self.itemsize
        A, S = self.objective.validate().activation_numel, output_numel(self.objective)
        slices = plan(self, ctx, item * (3 * A + 4 * S), self.budget)
        if slices:
            return sliced_apply(self, ctx, self._prepare_whole, slices)
        return self._prepare_whole(ctx)

    def _prepare_whole(self, ctx):
        current = {}

        def build():
            if self.engine == "autograd":
                current["products"] = _AutogradProducts(hessian_products(ctx, self.params))
            else:
                current["products"] = _FuncProducts(self, ctx)

        def run(method, V):
            if not current:
                build()
            try:
                return getattr(current["products"], method)(V)
            except (RuntimeError, NotImplementedError) as e:
                if self.engine == "autograd" or not transforms_unsupported(e):
                    raise
                self.engine = "autograd"
                self.engine_note = "torch.func cannot run this model: " + str(e).strip().splitlines()[0][:120]
                build()
                return getattr(current["products"], method)(V)

        if self.self_check and self.check_report is None:
            self.check_report = _check.check_symmetry(self, lambda V: run("reverse", V), "Hessian")

        def per_parameter(V):  # one vector, answered per parameter (for sums over sample slices)
            if not current:
                build()
            products = current["products"]
            if isinstance(products, _FuncProducts):
                return products.per_parameter(V)
            return [t[..., 0] for t in self.params.unflatten(products.reverse(V))]

        def apply(V):
            return run("apply", V)

        apply.per_parameter = per_parameter  # for sums over sample slices (hessian_core.sample_slices)
        return apply

    def _check_forward(self, forward, reverse):
        """Forward-over-reverse against reverse-over-reverse on one probe, before forward-over-reverse is used
        for the first time (a wrong nested forward-mode derivative is then never used)."""
        self.forward_checked = True
        tol = _check.tolerance(self.dtype)
        known = _check.remembered(self, "forward-over-reverse")
        if tol is None or known is not None:
            self.check_report += "; forward-over-reverse " + (known or "unchecked")
            return
        u = _check.probes(self.params, 1)
        try:
            diff = _check.relative_difference(forward(u), reverse(u))
        except (RuntimeError, NotImplementedError) as e:
            self._no_forward_over_reverse("no forward-mode derivative here: " + str(e).strip().splitlines()[0])
            return
        if diff > tol:
            self._no_forward_over_reverse(
                f"disagreed with reverse-over-reverse by {diff:.1e} (relative) in the self-check: PyTorch's nested "
                "forward-mode derivative is wrong here; reverse-over-reverse is used")
        else:
            self.check_report += f"; forward-over-reverse agrees ({diff:.1e})"
            _check.remember(self, "forward-over-reverse", f"agrees ({diff:.1e})")

    def _no_forward_over_reverse(self, why: str):
        self.forward_over_reverse_ok = False
        self.forward_over_reverse_note = why[:200]

    # -- dense results: structured when possible -----------------------------------------------------
    def _structured(self, fn, what: str):
        if self.strategy == "generic":
            return None
        result = fn(self.objective)
        if result is None and self.strategy == "structured":
            raise InvalidInputError(
                f"strategy='structured': the {what} of this model cannot use the structured path (it needs an "
                "nn.Sequential of Linear layers -- for the diagonal also conv and pooling layers -- with "
                "elementwise activations, and a loss that sums over samples); use strategy='auto' or 'generic'"
            )
        return result

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian: structured (Kronecker blocks, one GEMM per layer pair) for Linear
        chains, else chunked vmapped products; memory checked against the budget either way."""
        from ..structured import structured_dense

        P = self.size
        self._dense_check(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        H = self._structured(structured_dense, "dense Hessian")
        self.last_strategy = "generic" if H is None else "structured"
        if H is None:
            return super().to_dense()
        self.num_matvecs += P
        return H

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)``: one Hessian backpropagation per batch for Linear chains and Sequentials
        with convolutions (:mod:`hessian_core.structured`), else products with unit vectors."""
        from ..structured import structured_diagonal

        d = self._structured(structured_diagonal, "Hessian diagonal")
        self.last_strategy = "generic" if d is None else "structured"
        if d is None:
            return super().diagonal()
        self.num_matvecs += self.size
        return d


class _FuncProducts:
    """Batch ``ctx``'s Hessian products through ``torch.func``: ``reverse`` (vmapped double backward through
    one graph), ``forward`` (vmapped forward-over-reverse) and ``apply`` (the operator's choice)."""

    def __init__(self, op: HessianOperator, ctx):
        self.op, self.ctx = op, ctx
        self.primals = op.params.primals()
        self.graph = []  # vjp of the gradient, built on first use (one forward and backward with graph)

    def _vjp(self):  # called outside vmap, so the graph belongs to no vmap level
        if not self.graph:
            self.graph.append(vjp(grad(self.ctx.loss), self.primals)[1])
        return self.graph[0]

    def per_parameter(self, V) -> list:
        """One vector ``(P, 1)``: a plain double backward, no vmap overhead; the product per parameter."""
        return list(self._vjp()(tuple(t[..., 0] for t in self.op.params.unflatten(V)))[0])

    def reverse(self, V):
        if V.shape[1] == 1:  # (flatten_list: the peak is the flat result and one parameter, not two copies)
            return self.op.params.flatten_list(self.per_parameter(V))[:, None]
        vjp_fn = self._vjp()
        return self.op._batched(lambda t: vjp_fn(t)[0], V)

    def forward(self, V):
        return self.op._batched(lambda t: jvp(grad(self.ctx.loss), (self.primals,), (t,))[1], V)

    def apply(self, V):
        op = self.op
        random = op.objective.train_mode or op.objective.validate().random
        kept = op._reuse_depth > 0 and bool(self.graph)
        if V.shape[1] > 1 and op.forward_over_reverse_ok and not random and not kept:
            # Many vectors (dense, diagonal): forward-over-reverse is often faster through convolutions. Not
            # for random forwards: each chunk reruns the forward, and the draws must stay those of the one
            # reverse-mode graph. Not once that graph is kept (inside reuse()): a double backward through it
            # needs no forward.
            if op.self_check and not op.forward_checked and op.check_report is not None:
                op._check_forward(self.forward, self.reverse)
                if not op.forward_over_reverse_ok:
                    return self.reverse(V)
            try:
                return self.forward(V)
            except (RuntimeError, NotImplementedError) as e:
                op._no_forward_over_reverse("no forward-mode derivative here: " + str(e).strip().splitlines()[0])
                op.vmap_ok = True
        return self.reverse(V)


class _AutogradProducts:
    def __init__(self, apply):
        self.reverse = self.apply = apply

    def forward(self, V):
        raise NotImplementedError("no forward-over-reverse without torch.func")
