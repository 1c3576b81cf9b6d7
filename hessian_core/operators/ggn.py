"""Generalized Gauss-Newton ``G = J^T H_L J``."""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vjp
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..arguments import check_bool
from ..errors import InvalidInputError
from . import self_check as _check
from .autograd_products import ggn_products, transforms_unsupported
from .curvature import CurvatureOperator


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix ``G = sum_b w_b J_b^T H_b J_b / W``.

    ``J_b`` is the Jacobian of the model outputs with respect to the parameters on batch ``b`` and
    ``H_b`` the Hessian of ``loss_fn(outputs, targets)`` with respect to the outputs; same normalization
    as the Hessian. Positive semi-definite when the loss is convex in the outputs (MSE, cross-entropy);
    equals the Hessian for models linear in the parameters. ``J v`` is forward mode through the model
    (where an op has no forward-mode derivative, the double-vjp ``d/du (J^T u) v`` in reverse mode),
    ``H_b`` reverse-over-reverse through the loss, ``J^T`` reverse mode.

    Outputs may be a tensor or any nesting of tuples, lists and dicts (Hugging Face style): the GGN is
    that of the loss as a function of all floating-point tensors among them together (so a loss of a
    predicted mean and variance, or of two or three embeddings, has its cross terms); other entries
    (integer tensors, ``None``, numbers) are constants. ``self_check=True`` checks ``u^T G w = w^T G u``
    on the first batch (two products).
    """

    kind = "GGN"

    def __init__(self, model, loss_fn=None, data=None, *, chunk_size: int | None = None, self_check: bool = True,
                 **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.self_check = check_bool(self_check, "self_check")
        #: how J v is computed: "forward mode", or "reverse mode (double vjp)" where forward mode is missing
        self.jvp_mode = "forward mode"
        self.jvp_note: str | None = None
        #: "torch.func" or "autograd" (plain double backward, for models torch.func rejects)
        self.engine = "torch.func"
        self.check_report: str | None = None

    def _options(self) -> dict:
        return {**super()._options(), "self_check": self.self_check}

    def plan(self) -> dict:
        out = {**super().plan(), "engine": self.engine,
               "J v": self.jvp_mode + (f" ({self.jvp_note})" if self.jvp_note else ""),
               "self-check": (self.check_report or "on the first batch") if self.self_check else "off"}
        return out

    def _prepare(self, ctx):
        current = {}

        def build():
            if self.engine == "autograd":
                current["apply"] = ggn_products(ctx, self.params, split_outputs)
            else:
                current["apply"] = generic_products(self, ctx)

        def apply(V):
            try:
                if not current:
                    build()
                return current["apply"](V)
            except (RuntimeError, NotImplementedError) as e:
                if self.engine == "autograd" or not transforms_unsupported(e):
                    raise
                self.engine = "autograd"
                self.jvp_mode = "reverse mode (double vjp, plain autograd)"
                build()
                return current["apply"](V)

        if self.self_check and self.check_report is None:
            self.check_report = _check.check_symmetry(self, apply, "GGN")
        return apply

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
