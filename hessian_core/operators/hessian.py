"""Exact Hessian of the loss with respect to the parameters, as a matrix-free operator."""

from __future__ import annotations

import contextlib

import torch
from torch.func import grad, jvp

from ..arguments import check_bool, check_choice
from ..diagnosis import unsupported
from ..errors import InvalidInputError
from ..sample_slices import output_numel, plan, sliced_apply
from . import self_check as _check
from .autograd_products import transforms_unsupported, twice_differentiable
from .curvature import CurvatureOperator, Products

STRATEGIES = ("auto", "structured", "generic")
#: models up to this many parameters keep their gradient also as one flat tensor in a product's graph
FLAT_GRADIENT_NUMEL = 2**16


class HessianOperator(CurvatureOperator):
    """Exact Hessian ``H = d^2 L / d theta^2`` of the globally normalized loss (see :mod:`..objective`).

    Products are reverse-over-reverse: one forward and backward per batch builds the gradient with its graph
    (plain autograd), and each vector is one double backward through it (``H v = d(g . v)/d theta``); a
    block of vectors goes through the same graph one column at a time or all at once (autograd's batched
    gradients), whichever was measured faster for this model (:attr:`block_mode`). Reverse-over-reverse
    needs only double backward, which every op has; a graph through an ``autograd.Function`` marked
    ``@once_differentiable`` is refused (its second derivative would be dropped). Dense results (many
    vectors) first try forward-over-reverse (``jvp(grad(loss))``, vmapped, as ``torch.func.hessian``), often
    faster through convolutions; where an op has no forward-mode derivative (or the self-check finds it
    disagreeing) the operator keeps to reverse-over-reverse, and for models ``torch.func`` cannot run
    (old-style autograd Functions, packed sequences) to plain autograd (``engine == "autograd"``).

    ``self_check=True`` (default): on the first batch, two products check ``u^T H w = w^T H u`` and one
    compares forward-over-reverse with reverse-over-reverse before its first use (:mod:`.self_check`); a
    model whose PyTorch second derivatives are not symmetric is refused with its modules named.

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
        #: why block products go one vector at a time (a batching rule PyTorch lacks), for plan()
        self.batched_note: str | None = None
        #: "torch.func" (forward-over-reverse transforms for dense columns) or "autograd" (plain autograd only,
        #: for models torch.func rejects); products of one vector or a block are plain autograd either way
        self.engine = "torch.func"
        self.engine_note: str | None = None
        #: the self-check's result on the first batch (None before it ran)
        self.check_report: str | None = None
        #: whether forward-over-reverse was compared with reverse-over-reverse (before its first use)
        self.forward_checked = False
        #: whether a graph of this operator was checked for @once_differentiable Functions
        self.graph_checked = False
        self._product_bytes: int | None = None  # estimate of one product over a whole batch (bytes)
        #: the path the last to_dense()/diagonal() took: "structured" or "generic" (None before); plan() says why
        self.last_strategy: str | None = None
        #: which computation that was ("Linear chain", "graph (per sample, ...)", "square-root factors",
        #: "generic products"), and why the structured one did not run when it did not
        self.last_path: str | None = None

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
            columns = "plain autograd double backward through the batch's graph"
        elif self.forward_over_reverse_ok and not random:
            columns = "forward-over-reverse (vmapped jvp of the gradient), else reverse-over-reverse"
        else:
            columns = "reverse-over-reverse (batched double backward)"
        dense, why_dense = dense_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        diag, why_diag = diagonal_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        out = {
            **super().plan(),
            "engine": self.engine + (f" ({self.engine_note})" if self.engine_note else ""),
            "products": {"one vector": "a double backward through the batch's graph (plain autograd)",
                         "blocks (matmat)": self._block_plan(),
                         "block size for eigsh and the estimators": self.block_size(),
                         "dense columns": f"{columns}, {self.chunk_size()} at a time"},
            "dense": ("structured: " if dense else "generic chunked products: ") + why_dense,
            "diagonal": ("structured: " if diag else "generic unit-vector products: ") + why_diag,
            "last dense or diagonal": self.last_path or "none yet",
            "self-check": (self.check_report or "on the first batch") if self.self_check else "off (self_check=False)",
        }
        if self.forward_over_reverse_note:
            out["forward-over-reverse"] = self.forward_over_reverse_note
        if self.batched_note:
            out["batched products"] = self.batched_note
        if "structured" in o.notes:
            out["structured fallback"] = o.notes["structured"]
        return out

    def _prepare(self, ctx):
        # A batch whose product would exceed the budget goes in exact slices of samples (standard losses).
        if self._product_bytes is None:  # from the first batch's probe: fixed for the operator
            A, S = self.objective.validate().activation_numel, output_numel(self.objective)
            self._product_bytes = self.itemsize * (3 * A + 4 * S)
        slices = plan(self, ctx, self._product_bytes, self.budget)
        if slices:
            return sliced_apply(self, ctx, self._prepare_whole, slices)
        return self._prepare_whole(ctx)

    def _prepare_whole(self, ctx) -> Products:
        random = self.objective.train_mode or self.objective.validate().random
        kept = []  # (leaves, gradient with its graph, indices of the gradient parts that depend on theta)

        def ready():  # one forward and backward with graph, plain autograd (no transform overhead)
            if not kept:
                # The model's own parameters when they can be differentiated as they are (Objective.forward
                # then calls the model directly; autograd.grad never writes .grad), else detached aliases.
                own = self.params.tensors
                leaves = tuple(own) if self.objective._own(own) else tuple(
                    p.detach().requires_grad_(True) for p in own)
                with torch.enable_grad():
                    loss = ctx.loss(leaves)
                    if not self.graph_checked:  # once per operator: a graph walk
                        twice_differentiable(loss)
                        self.graph_checked = True
                    grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
                    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
                    # small models: the gradient also as one flat tensor in the graph, so that a product takes
                    # the flat vector as it is (splitting it into per-parameter views costs more than the
                    # product's arithmetic there; the copy is at most FLAT_GRADIENT_NUMEL elements)
                    flat = (self.params.concat(grads)
                            if len(used) == len(grads) and self.size <= FLAT_GRADIENT_NUMEL else None)
                kept.append((leaves, grads, used, flat))
            return kept[0]

        def parts_of(v):  # H v per parameter: one double backward through the kept graph
            leaves, grads, used, flat = ready()
            if not used:
                return [torch.zeros_like(t) for t in leaves]
            if flat is not None:
                hv = torch.autograd.grad(flat, leaves, v, retain_graph=True, allow_unused=True)
            else:
                parts = v.split(self.params.numels)
                hv = torch.autograd.grad([grads[i] for i in used], leaves,
                                         [parts[i].view(leaves[i].shape) for i in used], retain_graph=True,
                                         allow_unused=True)
            return [h if h is not None else torch.zeros_like(t) for h, t in zip(hv, leaves)]

        def one(v):
            return self.params.concat(parts_of(v))

        def batched(V):  # every column through the kept graph at once (autograd's batched gradients)
            leaves, grads, used, _ = ready()
            if not used:
                return torch.zeros_like(V)
            parts = self._tangents(V)
            hv = torch.autograd.grad([grads[i] for i in used], leaves, [parts[i] for i in used],
                                     retain_graph=True, allow_unused=True, is_grads_batched=True)
            k = V.shape[1]
            return self._flat_columns([h if h is not None else t.new_zeros((k, *t.shape)) for h, t in zip(hv, leaves)])

        def loop(V):
            return torch.stack([one(V[:, j]) for j in range(V.shape[1])], dim=1)

        def reverse(V):  # several columns through the kept graph: batched where autograd can, else a loop
            if V.shape[1] == 1:
                return one(V[:, 0])[:, None]
            if self.vmap_ok:
                try:
                    return batched(V)
                except (RuntimeError, NotImplementedError) as e:
                    out = loop(V)  # raises the error of one product, if any (then it is not batching's)
                    # The same answer, only slower: said in plan() (a warning here was noise on every
                    # GroupNorm model, whose batching rule PyTorch lacks).
                    self.batched_note = f"batched double backward failed ({str(e).splitlines()[0]}); one at a time"
                    self.vmap_ok = False
                    return out
            return loop(V)

        def forward(V):
            primals = self.params.primals()
            return self._batched(lambda t: jvp(grad(ctx.loss), (primals,), (t,))[1], V)

        def block(V):  # many columns (dense results): forward-over-reverse where it works, else reverse
            if V.shape[1] > 1 and self.engine == "torch.func" and self.forward_over_reverse_ok and not random:
                # Forward-over-reverse is often faster through convolutions. Not for random forwards: each
                # chunk reruns the forward, and the draws must stay those of the one reverse-mode graph.
                if self.self_check and not self.forward_checked and self.check_report is not None:
                    self._check_forward(forward, reverse)
                if self.forward_over_reverse_ok and self.engine == "torch.func":
                    try:
                        return forward(V)
                    except (RuntimeError, NotImplementedError) as e:
                        self._forward_failed(e)
                        self.vmap_ok = True
            return reverse(V)

        if self.self_check and self.check_report is None:
            self.check_report = _check.check_symmetry(self, loop, "Hessian")
        return Products(block=block, one=one, batched=batched, ready=ready,
                        per_parameter=lambda V: parts_of(V[:, 0]))

    def _forward_failed(self, e: BaseException) -> None:
        """Forward-over-reverse raised ``e``: torch.func cannot run the model at all (plain autograd from now
        on), or some op has no forward-mode derivative (reverse-over-reverse for dense columns)."""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if transforms_unsupported(e):
            self.engine = "autograd"
            self.engine_note = "torch.func cannot run this model: " + first[:120]
        self._no_forward_over_reverse("no forward-mode derivative here: " + first)

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
            self._forward_failed(e)
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
        """The structured result of ``fn`` (an Outcome), or ``None``; records which path ran."""
        if self.strategy == "generic":
            self.last_strategy, self.last_path = "generic", "generic products (strategy='generic')"
            return None
        notes = self.objective.notes
        notes.pop("structured", None)  # (a structured path that fails records why there)
        result = fn(self.objective, force=self.strategy == "structured")
        if result.value is None:
            if "structured" in notes:
                notes["structured"] += "; the generic path ran instead"
            if self.strategy == "structured":
                raise InvalidInputError(
                    f"strategy='structured': the {what} of this model cannot use the structured path "
                    f"({result.path}); use strategy='auto' or 'generic'")
            self.last_strategy, self.last_path = "generic", f"generic products (structured: {result.path})"
            return None
        if "structured" in notes:
            notes["structured"] += f"; {result.path} ran instead"
        self.last_strategy, self.last_path = "structured", f"structured: {result.path}"
        return result.value

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian: structured (Kronecker blocks for Linear chains, second-order
        propagation through traced graphs) where that applies and pays, else chunked products; memory checked
        against the budget either way."""
        from ..structured import structured_dense

        P = self.size
        self._dense_check(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        H = self._structured(structured_dense, "dense Hessian")
        if H is None:
            return super().to_dense()
        self.num_matvecs += P
        return H

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)``: Hessian backpropagation for Linear chains, square-root factors for
        Sequentials with convolutions, the graph engine for traced models (:mod:`hessian_core.structured`),
        else products with unit vectors."""
        from ..structured import structured_diagonal

        d = self._structured(structured_diagonal, "Hessian diagonal")
        if d is None:
            return super().diagonal()
        self.num_matvecs += self.size
        return d
