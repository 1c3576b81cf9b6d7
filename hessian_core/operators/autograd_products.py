"""Curvature products by plain ``torch.autograd`` (no ``torch.func`` transform), one vector at a time.

The GGN operator uses ``torch.func`` (vmapped, composable). A few models cannot run under its transforms
although ordinary autograd differentiates them twice: old-style ``autograd.Function`` subclasses (a
``forward(ctx, ...)`` without ``setup_context``), kernels that read raw data pointers (an LSTM on a
``PackedSequence``), saved-tensor hooks. For those it switches to :func:`ggn_products` (and :meth:`plan`
says so): the same mathematics, a double backward per vector. (The Hessian's products are plain autograd
always: :class:`~hessian_core.operators.hessian.HessianOperator`.) :func:`twice_differentiable` refuses a
graph through ``@once_differentiable`` Functions, whose second derivative autograd would drop.
"""

from __future__ import annotations

import torch

from ..diagnosis import functions_in_graph
from ..errors import InvalidInputError


def transforms_unsupported(error: BaseException) -> bool:
    """Whether ``error`` says that ``torch.func`` cannot run this model (plain autograd may)."""
    text = str(error)
    return any(s in text for s in (
        "autograd.Function with functorch transforms", "don't yet support saved tensor hooks",
        "Cannot access data pointer of Tensor that doesn't have storage"))


def _leaves(spec):
    return tuple(p.detach().requires_grad_() for p in spec.primals())


def twice_differentiable(tensor):
    """Refuse a graph through ``@once_differentiable`` Functions: autograd would silently drop their second
    derivative (their gradient is a constant to it)."""
    once = functions_in_graph(tensor, once=True)
    if once:
        raise InvalidInputError(
            f"autograd.Function {', '.join(once)} is marked @once_differentiable: PyTorch has no second "
            "derivative through it, so the curvature of this model cannot be computed. Give it a backward "
            "written with differentiable torch operations (without @once_differentiable)")


def _grad(outputs, inputs, cotangents):
    """``sum_i cotangents_i^T d outputs_i / d inputs`` keeping the graph; zeros for unconnected inputs."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None and o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    got = torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs], retain_graph=True,
                              create_graph=torch.is_grad_enabled(), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


def ggn_products(ctx, spec, split):
    """``apply(V) = J_b^T H_b J_b V``; ``split(outputs) -> (floating leaves, rebuild)`` as in
    :mod:`hessian_core.operators.ggn`. ``J v`` is the double-vjp ``d/du (J^T u) v`` (no forward mode)."""
    leaves = _leaves(spec)
    with torch.enable_grad():
        outputs, rebuild = split(ctx.outputs(leaves))
        for o in outputs:
            twice_differentiable(o)
        z = tuple(o.detach().requires_grad_() for o in outputs)
        loss = ctx.loss_of_outputs(rebuild(z))
        twice_differentiable(loss)
        gz = _grad([loss], z, [torch.ones_like(loss)])
        u = tuple(torch.zeros_like(o, requires_grad=True) for o in outputs)
        jtu = _grad(outputs, leaves, u)

    def apply(V):
        cols = []
        for j in range(V.shape[1]):
            with torch.no_grad():
                jv = _grad(jtu, u, spec.unflatten(V[:, j]))
                hjv = _grad(gz, z, jv)
                cols.append(spec.flatten(_grad(outputs, leaves, hjv)))
        return torch.stack(cols, dim=1)

    return apply
