"""Generalized Gauss-Newton ``G = J^T H_L J``."""

from __future__ import annotations

import torch
from torch.autograd.graph import get_gradient_edge
from torch.func import grad, jvp, vjp
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..arguments import check_bool, check_optional_int
from ..errors import InvalidInputError
from ..loss_hessians import output_hessian, recognized, select_output
from ..sample_slices import output_numel, plan, sliced_apply
from . import self_check as _check
from .autograd_products import ggn_products, transforms_unsupported
from .curvature import CurvatureOperator, Products


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix ``G = sum_b w_b J_b^T H_b J_b / W``.

    ``J_b`` is the Jacobian of the model outputs with respect to the parameters on batch ``b`` and
    ``H_b`` the Hessian of ``loss_fn(outputs, targets)`` with respect to the outputs; same normalization
    as the Hessian. Positive semi-definite when the loss is convex in the outputs (MSE, cross-entropy);
    equals the Hessian for models linear in the parameters. ``J v`` is forward mode through the model
    (where an op has no forward-mode derivative, the double-vjp ``d/du (J^T u) v`` in reverse mode),
    ``J^T`` reverse mode. ``H_b`` is in closed form for the standard losses (:mod:`hessian_core.
    loss_hessians`: cross-entropy, MSE, BCE, :class:`~hessian_core.losses.CausalLMLoss`), so a product is one
    JVP and one VJP and never forms the loss's graph or a ``C x C`` matrix; other losses are differentiated
    twice by autograd (reverse-over-reverse through the loss only).

    Outputs may be a tensor or any nesting of tuples, lists and dicts (Hugging Face style): the GGN is
    that of the loss as a function of all floating-point tensors among them together (so a loss of a
    predicted mean and variance, or of two or three embeddings, has its cross terms); other entries
    (integer tensors, ``None``, numbers) are constants. ``self_check=True`` checks ``u^T G w = w^T G u``
    on the first batch (two products).

    Memory: a product keeps the model's forward graph (as a gradient does) and two output-sized tensors per
    vector. Where that would exceed about 1.25 times a gradient's footprint and 64 MiB (language models,
    whose output is vocabulary-sized) or the memory budget, the batch is processed in slices of samples, each
    weighted exactly (:mod:`hessian_core.sample_slices`), so the peak stays near a gradient's.

    ``mc_samples=k``: the Monte-Carlo Fisher instead, ``J^T (a / k sum_j g_j g_j^T) J`` with ``g_j`` the
    output gradient of the loss at ``k`` targets drawn per output position from the model's predictive
    distribution (an unbiased estimate of ``G`` for cross-entropy, BCE with logits and MSE), drawn once per
    batch from ``seed`` so the operator is one fixed symmetric matrix.
    """

    kind = "GGN"

    def __init__(self, model, loss_fn=None, data=None, *, mc_samples: int | None = None,
                 chunk_size: int | None = None, self_check: bool = True, **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.self_check = check_bool(self_check, "self_check")
        self.mc_samples = check_optional_int(mc_samples, "mc_samples")
        #: how J v is computed: "forward mode", or "reverse mode (double vjp)" where forward mode is missing
        self.jvp_mode = "forward mode"
        self.jvp_note: str | None = None
        #: "torch.func" or "autograd" (plain double backward, for models torch.func rejects)
        self.engine = "torch.func"
        self.check_report: str | None = None
        #: which computation the last ``diagonal()`` used (structured square-root factors or products)
        self.last_path: str | None = None
        #: the loss Hessian in closed form (recognized standard loss, forward mode available), else autograd
        self.closed_form = recognized(self.objective.loss_fn)
        if self.mc_samples is not None:
            self.kind = "MC Fisher"
            if not self.closed_form:
                raise InvalidInputError(
                    f"mc_samples needs a loss whose likelihood hessian_core knows (nn.CrossEntropyLoss, "
                    f"nn.BCEWithLogitsLoss, nn.MSELoss, CausalLMLoss), got {type(self.objective.loss_fn).__name__}; "
                    "use mc_samples=None for the exact GGN")

    def _options(self) -> dict:
        return {**super()._options(), "self_check": self.self_check, "mc_samples": self.mc_samples}

    def __repr__(self) -> str:
        base = super().__repr__()
        return base if self.mc_samples is None else f"{base[:-1]}, mc_samples={self.mc_samples})"

    def plan(self) -> dict:
        return {**super().plan(), "engine": self.engine,
                "J v": self.jvp_mode + (f" ({self.jvp_note})" if self.jvp_note else ""),
                "loss Hessian": ("closed form (one JVP and one VJP per product)" if self.closed_form
                                 else "autograd through the loss (reverse-over-reverse)"),
                "mc_samples": self.mc_samples, "last diagonal": self.last_path or "none yet",
                "self-check": (self.check_report or "on the first batch") if self.self_check else "off"}

    def diagonal(self) -> torch.Tensor:
        """Exact diagonal ``(P,)``: for a Sequential of Linear/conv/pooling layers and elementwise activations,
        square-root factors of the per-sample output Hessians backpropagated to each layer (one pass, as
        BackPACK's ``DiagGGNExact``); otherwise products with unit vectors. ``last_path`` says which."""
        if self.mc_samples is None:
            from ..structured.strategies import structured_ggn_diagonal

            result = structured_ggn_diagonal(self.objective)
            if result.value is not None:
                self.last_path = f"structured: {result.path}"
                self.num_matvecs += self.size
                return result.value
            self.last_path = f"products with unit vectors (structured: {result.path})"
        else:
            self.last_path = "products with unit vectors (a Monte Carlo GGN)"
        return super().diagonal()

    def _prepare(self, ctx):
        if self.closed_form and self.engine == "torch.func":
            slices = self._slices(ctx)
            if slices:
                return sliced_apply(self, ctx, self._prepare_whole, slices)
        return self._prepare_whole(ctx)

    def _prepare_whole(self, ctx):
        current = {}

        def build():
            current.clear()
            if self.engine == "autograd":
                current["apply"] = ggn_products(ctx, self.params, split_outputs)
            elif self.closed_form:
                current["apply"] = closed_form_products(self, ctx)
            if not current.get("apply"):
                current["apply"] = generic_products(self, ctx)

        def guarded(run):
            """``run(inner)`` with the current products; where the closed form or ``torch.func`` cannot run
            this model, the next computation that can (the failure comes before anything is written)."""
            try:
                if not current:
                    build()
                return run(current["apply"])
            except (RuntimeError, NotImplementedError) as e:
                if self.closed_form and self.engine == "torch.func" and not transforms_unsupported(e):
                    # the closed form's J v is forward mode: the generic path also has the reverse-mode one
                    if self.mc_samples is not None:
                        raise
                    self.closed_form = False
                    self.jvp_note = "closed form left: " + str(e).strip().splitlines()[0][:120]
                    build()
                    return run(current["apply"])
                if self.engine == "autograd" or not transforms_unsupported(e):
                    raise
                if self.mc_samples is not None:
                    raise
                self.engine = "autograd"
                self.closed_form = False
                self.jvp_mode = "reverse mode (double vjp, plain autograd)"
                build()
                return run(current["apply"])

        def apply(V):
            return guarded(lambda inner: inner(V))

        def add_into(acc, V, w):  # acc += w G V for one column, straight into acc where the products can
            def run(inner):
                if getattr(inner, "add_into", None) is not None:
                    inner.add_into(acc, V, w)
                else:
                    acc.add_(inner(V)[:, 0], alpha=w)
            guarded(run)

        def per_parameter(V):  # one vector, answered per parameter (for sums over sample slices)
            if not current:
                build()
            inner = current["apply"]
            if hasattr(inner, "per_parameter"):
                return inner.per_parameter(V)
            return [t[..., 0] for t in self.params.unflatten(apply(V))]

        if self.self_check and self.check_report is None:
            self.check_report = _check.check_symmetry(self, apply, "GGN")
        # one vector without vmap's overhead; blocks by the measured faster of a loop and vmap (matmat)
        return Products(block=apply, one=lambda v: apply(v[:, None])[:, 0], batched=apply,
                        per_parameter=per_parameter, add_into=add_into)

    def _slices(self, ctx):
        """Sample slices for batch ``ctx`` when one product over it would need more than about 1.25 times a
        gradient (forward graph ``A`` plus two output-sized tensors ``S``; a product needs ``A + 4 S``) and
        more than 64 MiB, or more than the budget."""
        item = self.itemsize
        A, S = self.objective.validate().activation_numel, output_numel(self.objective)
        # below 64 MiB memory does not matter, and a product over slices cannot keep its graph in reuse()
        target = min(self.budget, max(int(1.25 * item * (A + 2 * S)), 64 * 2**20))
        return plan(self, ctx, item * (A + 4 * S), target)


def generic_products(op: GGNOperator, ctx):
    """``apply(V)`` for batch ``ctx`` through ``torch.func``, for any loss and any output structure: the loss
    Hessian by reverse-over-reverse in the floating outputs together, ``J v`` in forward mode or, where an op
    has none, by the double vjp ``d/du (J^T u) v`` (reported in ``plan()["J v"]``)."""
    primals = op.params.primals()
    structure = []

    def outputs_of(params):
        leaves, rebuild = split_outputs(ctx.outputs(params))
        if not structure:
            structure.append(rebuild)
        return leaves

    outputs, model_vjp = vjp(outputs_of, primals)
    rebuild = structure[0]
    if not outputs:
        raise InvalidInputError("the GGN needs floating-point model outputs; this model returns none")
    _, loss_hvp = vjp(grad(lambda z: ctx.loss_of_outputs(rebuild(z))), tuple(o.detach() for o in outputs))
    reverse_jv = []  # the double-vjp J v, built on first need

    def jv(tangents):
        if op.jvp_mode == "forward mode":
            return jvp(outputs_of, (primals,), (tangents,))[1]
        return reverse_jv[0](tangents)[0]

    def ggnvp(tangents):
        return model_vjp(loss_hvp(jv(tangents))[0])[0]

    def reverse(V):
        if not reverse_jv:
            zeros = tuple(torch.zeros_like(o) for o in outputs)
            reverse_jv.append(vjp(lambda u: model_vjp(u)[0], zeros)[1])
        return op._batched(ggnvp, V)

    def apply(V):
        if op.jvp_mode != "forward mode":
            return reverse(V)
        try:
            return op._batched(ggnvp, V)
        except (RuntimeError, NotImplementedError) as e:
            if transforms_unsupported(e):
                raise
            op.jvp_mode = "reverse mode (double vjp)"
            op.jvp_note = "no forward-mode derivative: " + str(e).strip().splitlines()[0][:120]
            op.vmap_ok = True
            try:
                return reverse(V)
            except Exception:  # not forward mode's failure: the model fails in reverse mode too
                op.jvp_mode, op.jvp_note = "forward mode", None
                raise

    return apply


def split_outputs(out):
    """``(floating tensors of out, rebuild)``: ``rebuild(zs)`` puts tensors ``zs`` back in their places,
    every other entry of ``out`` (detached) as it was."""
    leaves, spec = tree_flatten(out)
    where = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    fixed = [t.detach() if isinstance(t, torch.Tensor) else t for t in leaves]

    def rebuild(zs):
        parts = list(fixed)
        for i, z in zip(where, zs):
            parts[i] = z
        return tree_unflatten(parts, spec)

    return tuple(leaves[i] for i in where), rebuild


def closed_form_products(op: GGNOperator, ctx):
    """``apply(V)`` for batch ``ctx`` with the loss Hessian in closed form, or ``None`` when the loss is not
    one :mod:`hessian_core.loss_hessians` knows (or not exactly on this batch).

    Memory: the forward graph of the model (as a gradient keeps it, but not its output) and, per vector, two
    output-sized tensors (the JVP's primal output and tangent, which the loss Hessian overwrites); the softmax
    is formed per chunk of positions. ``apply.add_into(acc, V, w)`` adds one column's product into ``acc``
    during the backward pass, parameter by parameter, with no product-sized tensor beside ``acc``."""
    obj = op.objective
    if not recognized(obj.loss_fn):
        return None
    primals = op.params.primals()

    def output(params):
        return select_output(obj.loss_fn, ctx.outputs(params))

    # J^T by plain autograd from leaves of our own (their .grad is never the user's): the graph is then held
    # by its output's edge, not by the output (vocabulary-sized for a language model), and one vector's
    # product can be accumulated by the backward pass straight into a caller's buffer
    leaves = tuple(p.requires_grad_() for p in op.params.primals())
    with torch.enable_grad():
        out = output(leaves)
    generator = None
    if op.mc_samples is not None:
        generator = torch.Generator(device=out.device)
        # fixed per batch (and slice of it), apart from dropout's draws
        generator.manual_seed(obj.batch_seed(ctx.index) + 7_919 * (1 + getattr(ctx, "first_row", 0)))
    H = output_hessian(obj.loss_fn, out.detach(), ctx.targets, mc_samples=op.mc_samples, generator=generator)
    if H is None:
        return None
    edge = get_gradient_edge(out) if out.requires_grad else None  # None: the output ignores the parameters
    # an output that is (a view of) a parameter has a tangent that is a view of the caller's vector, which the
    # loss Hessian would overwrite in place (decided here: inside vmap a tensor's storage cannot be read)
    aliased = any(out.untyped_storage().data_ptr() == p.untyped_storage().data_ptr() for p in leaves)
    del out  # each product brings the output again (the JVP's primal): none is kept between products

    def hjv(tangents):
        """``H J v`` for parameter-shaped ``tangents``: the product's only output-sized tensors are the JVP's
        primal and tangent, which the loss Hessian overwrites."""
        out, jv = jvp(output, (primals,), (tangents,))
        if aliased:
            jv = jv.clone()
        return H.apply_(jv, out)

    def pullback(u):
        if edge is None:
            return tuple(torch.zeros_like(p) for p in primals)
        got = torch.autograd.grad([edge], leaves, [u], retain_graph=True, allow_unused=True)
        return tuple(torch.zeros_like(p) if g is None else g for g, p in zip(got, primals))

    def ggnvp(tangents):
        return pullback(hjv(tangents))

    def per_parameter(V):
        """One vector ``(P, 1)`` -> the product as a list of parameter-shaped tensors (no vmap, whose batching
        rules cost more than they save for one vector)."""
        return list(ggnvp(tuple(t[..., 0] for t in op.params.unflatten(V))))

    def apply(V):
        if V.shape[1] == 1:
            return op.params.flatten_list(per_parameter(V))[:, None]
        return op._batched(ggnvp, V)

    def add_into(acc, V, w):
        """``acc += w G V`` for one column ``V`` ``(P, 1)``, ``acc`` ``(P,)``: the backward pass adds each
        parameter's part into ``acc`` as it comes (autograd accumulates into a ``.grad`` in place), so no
        parameter-sized product exists beside ``acc``."""
        u = hjv(tuple(t[..., 0] for t in op.params.unflatten(V))).mul_(w)
        if edge is None:
            return
        for leaf, where, shape in zip(leaves, op.params.slices, op.params.shapes):
            leaf.grad = acc[where].view(shape)
        try:
            with torch.no_grad():
                torch.autograd.backward([edge], [u], inputs=list(leaves), retain_graph=True)
        finally:
            for leaf in leaves:
                leaf.grad = None

    apply.per_parameter = per_parameter  # for sums over sample slices (hessian_core.sample_slices)
    apply.add_into = add_into
    return apply
