"""Turning a PyTorch error inside a curvature computation into an error that names what failed and where.

When a product fails inside PyTorch (an operation without a second derivative, without forward mode or
without a vmap rule, an autograd Function differentiable only once), :func:`unsupported` reads the
operation's name from the message and runs the batch's forward once more, recording which modules call it
(``torch.utils.module_tracker`` and a dispatch mode), or walks the autograd graph for custom autograd
Functions. The result is an :class:`~hessian_core.errors.InvalidInputError` naming the operation, the
modules, and what to do; PyTorch's own message is kept as the cause. Diagnosis is best effort: if it fails
itself, the error still says what PyTorch reported.
"""

from __future__ import annotations

import re

import torch

from .errors import InvalidInputError

#: What to do about ops without a double backward or forward mode in torch 2.13 that hessian_core could not
#: replace (:mod:`hessian_core.composites` replaces hardsigmoid, embedding_bag, weight norm, rrelu, the margin
#: losses and CTC where the model calls them through torch.nn / torch.nn.functional;
#: :mod:`hessian_core.second_order_kernels` selects attention kernels with every derivative).
FIXES = {
    "hardsigmoid": "write it as F.relu6(x + 3) / 6",
    "multi_margin_loss": "write the margin loss with clamp/relu, e.g. (margin - x[range(n), y, None] + x).clamp(min=0)",
    "multilabel_margin_loss": "write the loss with clamp/relu from its formula",
    "embedding_bag": "use F.embedding followed by a sum (or mean) over each bag",
    "_pdist": "write the distances out: ((x[:, None] - x[None]) ** 2).sum(-1).sqrt() (not differentiable twice "
              "where two points coincide)",
    "_cdist": "write the distances out: ((a[:, None] - b[None]) ** 2).sum(-1).sqrt() (not differentiable twice "
              "where two points coincide)",
    "ctc_loss": "call it as nn.CTCLoss / F.ctc_loss inside the model or loss given to hessian_core (replaced there)",
    "_weight_norm_interface": "write the weight norm out (g * v / v.norm(dim=..., keepdim=True)); its fused double "
                              "backward is also wrong",
    "_transformer_encoder_layer_fwd": "call the layer inside hessian_core (the fused path is switched off there)",
    "_native_multi_head_attention": "call the layer inside hessian_core (the fused path is switched off there)",
    "scaled_dot_product": "call the model inside hessian_core (the math backend is selected there), or wrap your "
                          "own code in torch.nn.attention.sdpa_kernel(SDPBackend.MATH)",
    "rrelu_with_noise": "use nn.RReLU in eval mode (a fixed slope) or nn.LeakyReLU",
}

#: (pattern with the operation's name as group 1, what is missing)
_PATTERNS = (
    (r"derivative for (?:aten::)?'?([\w.]+?)'? is not implemented", "second derivative"),
    (r"forward AD with ([\w.]+) that does not support it", "forward-mode derivative"),
    (r"vmap: we do not yet support (?:aten::)?([\w.]+)", "vmap rule"),
    (r"(autograd\.Function) with functorch transforms", "torch.func support (an old-style autograd.Function)"),
    (r"(once_differentiable)", "second derivative (an autograd.Function marked @once_differentiable)"),
)


def parse(message: str) -> tuple[str | None, str | None]:
    """``(operation, what is missing)`` read from a PyTorch error message, or ``(None, None)``."""
    for pattern, missing in _PATTERNS:
        m = re.search(pattern, message)
        if m:
            op = m.group(1)
            op = op.split("::")[-1].split(".")[0]
            return op, missing
    return None, None


def unsupported(objective, ctx, error: BaseException, what: str | None) -> InvalidInputError:
    """The clear error for ``error``, raised while computing ``what`` on batch ``ctx`` of ``objective``."""
    message = str(error)
    op, missing = parse(message)
    where = ""
    try:
        if op in ("autograd", "once_differentiable"):
            functions = custom_functions(objective, ctx, once=op == "once_differentiable")
            if functions:
                where = f": autograd.Function {', '.join(functions)}"
        elif op:
            modules = modules_calling(objective, ctx, op)
            if modules:
                where = f" in {', '.join(modules)}"
    except Exception:  # noqa: BLE001 - diagnosis is best effort; the error below still stands
        pass
    subject = f"operation '{op}'" if op and op not in ("autograd", "once_differentiable") else "an operation"
    lack = f"{subject}{where} has no {missing} in PyTorch" if missing else f"PyTorch failed{where}"
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    fix = fix_for(op)
    instead = (f"To fix: {fix}." if fix else "Replace that part by an equivalent written with differentiable "
               "torch operations (or, for an autograd.Function, give it a differentiable backward).")
    return InvalidInputError(
        f"cannot compute the {what or 'curvature'} of this model on batch {ctx.index}: {lack}. {instead} "
        f"PyTorch said: {type(error).__name__}: {first}")


def fix_for(op: str | None) -> str | None:
    """What to do about operation ``op`` (:data:`FIXES`), or ``None`` when nothing specific is known."""
    if not op:
        return None
    return next((fix for key, fix in FIXES.items() if key in op), None)


def modules_calling(objective, ctx, op: str) -> list[str]:
    """``"'name' (Type)"`` of the innermost modules whose forward calls aten operation ``op`` (its forward
    or backward kernel: ``_pdist_backward`` is found where ``_pdist_forward`` runs)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    found: set[str] = set()
    tracker = ModuleTracker()
    stem = _stem(op)

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if _stem(func._schema.name.split("::")[-1]) == stem and tracker.parents:
                found.add(max(tracker.parents, key=len))
            return func(*args, **(kwargs or {}))

    # With gradients on, as in the failed computation (attention takes another kernel without them).
    leaves = tuple(p.detach().requires_grad_() for p in objective.params.primals())
    with torch.enable_grad(), tracker, Record():
        objective.forward(leaves, ctx.inputs, seed=objective.seed_of(ctx.index))
    root = type(objective.model).__name__
    out = []
    for name in sorted(found):
        path = name[len(root) + 1:] if name.startswith(root + ".") else ""
        try:
            kind = type(objective.model.get_submodule(path)).__name__
        except AttributeError:
            kind = "?"
        out.append(f"'{path or 'the model'}' ({kind})")
    return out


def _stem(op: str) -> str:
    for suffix in ("_backward", "_forward", "_"):
        op = op.removesuffix(suffix)
    return op


def custom_functions(objective, ctx, once: bool = False) -> list[str]:
    """Names of the custom autograd Functions in the graph of batch ``ctx``'s loss (those whose backward
    is ``@once_differentiable``, with ``once=True``)."""
    leaves = tuple(p.detach().requires_grad_() for p in objective.params.primals())
    with torch.enable_grad():
        loss = ctx.loss(leaves)
    return functions_in_graph(loss, once)


def functions_in_graph(tensor: torch.Tensor, once: bool = False) -> list[str]:
    """Names of the custom autograd Functions ``tensor``'s graph goes through (``once=True``: only those
    whose backward is ``@once_differentiable``)."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        cls = getattr(node, "_forward_cls", None)
        if cls is not None and (not once or hasattr(cls.backward, "__wrapped__")):
            names.add(cls.__name__)
        stack += [n for n, _ in node.next_functions]
    return sorted(names)
