"""Exact Hessian of the loss with respect to the parameters, as a matrix-free operator."""

from __future__ import annotations

import warnings

import torch
from torch.func import grad, jvp

from ..arguments import check_choice
from ..errors import InvalidInputError
from .curvature import CurvatureOperator, Products

STRATEGIES = ("auto", "structured", "generic")


class HessianOperator(CurvatureOperator):
    """Exact Hessian ``H = d^2 L / d theta^2`` of the globally normalized loss (see :mod:`..objective`).

    Products are reverse-over-reverse: one forward and backward per batch builds the gradient with its graph
    (plain autograd), and each vector is one double backward through it (``H v = d(g . v)/d theta``); a
    block of vectors goes through the same graph one column at a time or all at once (autograd's batched
    gradients), whichever was measured faster for this model (:attr:`block_mode`). Reverse-over-reverse
    needs only double backward, which every op has. Dense results (many vectors) first try
    forward-over-reverse (``jvp(grad(loss))``, vmapped, as ``torch.func.hessian``), often faster through
    convolutions; it trips on some torch losses (e.g. ``MSELoss``), and then the operator keeps to
    reverse-over-reverse.

    ``to_dense()`` and ``diagonal()`` pick a strategy (``strategy=``): ``"auto"`` (default) uses the
    structured path of :mod:`hessian_core.structured` when the model allows it and the generic chunked
    products otherwise; ``"generic"`` always uses the products; ``"structured"`` raises
    :class:`~hessian_core.errors.InvalidInputError` when the structured path does not apply. :meth:`plan`
    says which path applies to this model and why.
    """

    kind = "Hessian"

    def __init__(self, model, loss_fn=None, data=None, *, strategy: str = "auto", chunk_size: int | None = None,
                 **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.strategy = check_choice(strategy, "strategy", STRATEGIES)
        #: False once forward-over-reverse failed on this model (blocks then use reverse-over-reverse)
        self.forward_over_reverse_ok = True
        #: the path the last to_dense()/diagonal() took: "structured" or "generic" (None before); plan() says why
        self.last_strategy: str | None = None
        #: which computation that was ("Linear chain", "graph (per sample, ...)", "square-root factors",
        #: "generic products"), and why the structured one did not run when it did not
        self.last_path: str | None = None

    def _options(self) -> dict:
        return {**super()._options(), "strategy": self.strategy}

    def plan(self) -> dict:
        from ..structured import dense_plan, diagonal_plan

        o = self.objective
        random = o.train_mode or o.validate().random
        columns = ("forward-over-reverse (vmapped jvp of the gradient), else reverse-over-reverse"
                   if self.forward_over_reverse_ok and not random else "reverse-over-reverse (batched double backward)")
        dense, why_dense = dense_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        diag, why_diag = diagonal_plan(o) if self.strategy != "generic" else (False, "strategy='generic'")
        return {
            **super().plan(),
            "products": {"one vector": "a double backward through the batch's graph (plain autograd)",
                         "blocks (matmat)": self._block_plan(),
                         "block size for eigsh and the estimators": self.block_size(),
                         "dense columns": f"{columns}, {self.chunk_size()} at a time"},
            "dense": ("structured: " if dense else "generic chunked products: ") + why_dense,
            "diagonal": ("structured: " if diag else "generic unit-vector products: ") + why_diag,
            "last dense or diagonal": self.last_path or "none yet",
        }

    def _prepare(self, ctx):
        primals = self.params.primals()
        random = self.objective.train_mode or self.objective.validate().random
        kept = []  # (leaves, gradient with its graph, indices of the gradient parts that depend on theta)

        def ready():  # one forward and backward with graph, plain autograd (no transform overhead)
            if not kept:
                # The model's own parameters when they can be differentiated as they are (Objective.forward
                # then calls the model directly; autograd.grad never writes .grad), else detached aliases.
                own = self.params.tensors
                leaves = tuple(own) if self.objective._own(own) else tuple(
                    p.detach().requires_grad_(True) for p in primals)
                with torch.enable_grad():
                    grads = torch.autograd.grad(ctx.loss(leaves), leaves, create_graph=True, allow_unused=True)
                kept.append((leaves, grads, [i for i, g in enumerate(grads) if g is not None and g.requires_grad]))
            return kept[0]

        def one(v):  # H v = d(g . v)/d theta: one double backward through the kept graph
            leaves, grads, used = ready()
            if not used:
                return torch.zeros_like(v)
            parts = v.split(self.params.numels)
            hv = torch.autograd.grad([grads[i] for i in used], leaves, [parts[i].view(leaves[i].shape) for i in used],
                                     retain_graph=True, allow_unused=True)
            return torch.cat([(h if h is not None else torch.zeros_like(t)).reshape(-1) for h, t in zip(hv, leaves)])

        def batched(V):  # every column through the kept graph at once (autograd's batched gradients)
            leaves, grads, used = ready()
            if not used:
                return torch.zeros_like(V)
            parts = self._tangents(V)
            hv = torch.autograd.grad([grads[i] for i in used], leaves, [parts[i] for i in used],
                                     retain_graph=True, allow_unused=True, is_grads_batched=True)
            k = V.shape[1]
            return self._flat_columns([h if h is not None else t.new_zeros((k, *t.shape)) for h, t in zip(hv, leaves)])

        def block(V):  # many columns (dense results): forward-over-reverse where it works, else batched
            if V.shape[1] == 1:
                return one(V[:, 0])[:, None]
            if self.forward_over_reverse_ok and not random:
                # Forward-over-reverse is often faster through convolutions; where an op lacks forward-mode
                # support (e.g. MSELoss's ZeroTensor in torch 2.13) it raises and this operator stays with
                # reverse-over-reverse. Not for random forwards: each chunk reruns the forward, and the draws
                # must stay those of the one reverse-mode graph.
                try:
                    return self._batched(lambda t: jvp(grad(ctx.loss), (primals,), (t,))[1], V)
                except (RuntimeError, NotImplementedError):
                    self.forward_over_reverse_ok = False
                    self.vmap_ok = True
            if self.vmap_ok:
                try:
                    return batched(V)
                except (RuntimeError, NotImplementedError) as e:
                    warnings.warn(f"{type(self).__name__}: batched double backward failed "
                                  f"({str(e).splitlines()[0]}); one product at a time", RuntimeWarning, stacklevel=3)
                    self.vmap_ok = False
            return torch.stack([one(V[:, j]) for j in range(V.shape[1])], dim=1)

        return Products(block=block, one=one, batched=batched, ready=ready)

    # -- dense results: structured when possible -----------------------------------------------------
    def _structured(self, fn, what: str):
        """The structured result of ``fn`` (an Outcome), or ``None``; records which path ran."""
        if self.strategy == "generic":
            self.last_strategy, self.last_path = "generic", "generic products (strategy='generic')"
            return None
        result = fn(self.objective, force=self.strategy == "structured")
        if result.value is None:
            if self.strategy == "structured":
                raise InvalidInputError(
                    f"strategy='structured': the {what} of this model cannot use the structured path "
                    f"({result.path}); use strategy='auto' or 'generic'")
            self.last_strategy, self.last_path = "generic", f"generic products (structured: {result.path})"
            return None
        self.last_strategy, self.last_path = "structured", f"structured: {result.path}"
        return result.value

    def to_dense(self) -> torch.Tensor:
        """The whole ``(P, P)`` Hessian: structured (Kronecker blocks, one GEMM per layer pair) for Linear
        chains, else chunked vmapped products; memory checked against the budget either way."""
        from ..structured import structured_dense

        P = self.size
        self._dense_check(P * P * self.itemsize, f"the dense {P} x {P} {self.kind} matrix ({self.dtype})")
        H = self._structured(structured_dense, "dense Hessian")
        if H is None:
            return super().to_dense()
        self.num_matvecs += P
        return H

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)``: one Hessian backpropagation per batch for Linear chains and Sequentials
        with convolutions (:mod:`hessian_core.structured`), else products with unit vectors."""
        from ..structured import structured_diagonal

        d = self._structured(structured_diagonal, "Hessian diagonal")
        if d is None:
            return super().diagonal()
        self.num_matvecs += self.size
        return d
