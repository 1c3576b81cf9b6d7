"""Generalized Gauss-Newton ``G = J^T H_L J``."""

from __future__ import annotations

import torch
from torch.func import grad, jvp, vjp

from ..arguments import check_optional_int
from ..errors import InvalidInputError
from ..loss_hessians import output_hessian, recognized, select_output
from ..sample_slices import output_numel, plan, sliced_apply
from .curvature import CurvatureOperator


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix ``G = sum_b w_b J_b^T H_b J_b / W``.

    ``J_b`` is the Jacobian of the model outputs with respect to the parameters on batch ``b`` and
    ``H_b`` the Hessian of ``loss_fn(outputs, targets)`` with respect to the outputs; same normalization
    as the Hessian. Positive semi-definite when the loss is convex in the outputs (MSE, cross-entropy);
    equals the Hessian for models linear in the parameters. ``J v`` is forward mode through the model,
    ``J^T`` reverse mode. ``H_b`` is in closed form for the standard losses (:mod:`hessian_core.
    loss_hessians`: cross-entropy, MSE, BCE, :class:`~hessian_core.losses.CausalLMLoss`), so a product is one
    JVP and one VJP and never forms the loss's graph or a ``C x C`` matrix; other losses are differentiated
    twice by autograd (reverse-over-reverse through the loss only).

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
                 chunk_size: int | None = None, **objective_options):
        super().__init__(model, loss_fn, data, chunk_size=chunk_size, **objective_options)
        self.mc_samples = check_optional_int(mc_samples, "mc_samples")
        if self.mc_samples is not None:
            self.kind = "MC Fisher"
            if not recognized(self.objective.loss_fn):
                raise InvalidInputError(
                    f"mc_samples needs a loss whose likelihood hessian_core knows (nn.CrossEntropyLoss, "
                    f"nn.BCEWithLogitsLoss, nn.MSELoss, CausalLMLoss), got {type(self.objective.loss_fn).__name__}; "
                    "use mc_samples=None for the exact GGN")

    def _options(self) -> dict:
        return {**super()._options(), "mc_samples": self.mc_samples}

    def __repr__(self) -> str:
        base = super().__repr__()
        return base if self.mc_samples is None else f"{base[:-1]}, mc_samples={self.mc_samples})"

    def plan(self) -> dict:
        closed = recognized(self.objective.loss_fn)
        return {**super().plan(),
                "loss Hessian": ("closed form (one JVP and one VJP per product)" if closed
                                 else "autograd through the loss (reverse-over-reverse)"),
                "mc_samples": self.mc_samples}

    def _prepare(self, ctx):
        if recognized(self.objective.loss_fn):
            slices = self._slices(ctx)
            if slices:
                return sliced_apply(self, ctx, lambda sub: closed_form_products(self, sub), slices)
        lean = closed_form_products(self, ctx)
        if lean is not None:
            return lean
        primals = self.params.primals()
        outputs, model_vjp = vjp(ctx.outputs, primals)
        _, loss_hvp = vjp(grad(ctx.loss_of_outputs), outputs.detach())

        def ggnvp(tangents):
            _, jv = jvp(ctx.outputs, (primals,), (tangents,))
            return model_vjp(loss_hvp(jv)[0])[0]

        return lambda V: self._batched(ggnvp, V)


    def _slices(self, ctx):
        """Sample slices for batch ``ctx`` when one product over it would need more than about 1.25 times a
        gradient (forward graph ``A`` plus two output-sized tensors ``S``; a product needs ``A + 4 S``) and
        more than 64 MiB, or more than the budget."""
        item = self.itemsize
        A, S = self.objective.validate().activation_numel, output_numel(self.objective)
        # below 64 MiB memory does not matter, and a product over slices cannot keep its graph in reuse()
        target = min(self.budget, max(int(1.25 * item * (A + 2 * S)), 64 * 2**20))
        return plan(self, ctx, item * (A + 4 * S), target)


def closed_form_products(op: GGNOperator, ctx):
    """``apply(V)`` for batch ``ctx`` with the loss Hessian in closed form, or ``None`` when the loss is not
    one :mod:`hessian_core.loss_hessians` knows (or not exactly on this batch).

    Memory: the forward graph of the model (as a gradient keeps it) and, per vector, two output-sized
    tensors (the JVP's primal output and tangent, which the loss Hessian overwrites); the softmax is formed
    per chunk of positions."""
    obj = op.objective
    if not recognized(obj.loss_fn):
        return None
    primals = op.params.primals()

    def output(params):
        return select_output(obj.loss_fn, ctx.outputs(params))

    out, pullback = vjp(output, primals)
    generator = None
    if op.mc_samples is not None:
        generator = torch.Generator(device=out.device)
        # fixed per batch (and slice of it), apart from dropout's draws
        generator.manual_seed(obj.batch_seed(ctx.index) + 7_919 * (1 + getattr(ctx, "first_row", 0)))
    H = output_hessian(obj.loss_fn, out.detach(), ctx.targets, mc_samples=op.mc_samples, generator=generator)
    if H is None:
        return None
    del out  # each product brings the output again (the JVP's primal): none is kept between products

    def ggnvp(tangents):
        out, jv = jvp(output, (primals,), (tangents,))
        jv = H.apply_(jv, out)  # in place: the product's only output-sized tensors are out and jv
        del out
        return pullback(jv)[0]

    def per_parameter(V):
        """One vector ``(P, 1)`` -> the product as a list of parameter-shaped tensors (no vmap, whose batching
        rules cost more than they save for one vector)."""
        return list(ggnvp(tuple(t[..., 0] for t in op.params.unflatten(V))))

    def apply(V):
        if V.shape[1] == 1:
            return op.params.flatten_list(per_parameter(V))[:, None]
        return op._batched(ggnvp, V)

    apply.per_parameter = per_parameter  # for sums over sample slices (hessian_core.sample_slices)
    return apply
