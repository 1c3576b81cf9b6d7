"""Functional entry points: dense Hessian, Hessian-vector product, exact diagonal and diagonal blocks.

All take ``(model, loss_fn, data)`` and the options below. Results follow the parameter order of
:class:`~hessian_core.params.ParamSpec`: the parameters with ``requires_grad=True``, in
``model.parameters()`` order (tied ones once), each flattened row-major.

Options: :data:`OPTIONS` below, also listed in each function's docstring.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import torch

from .errors import InvalidInputError
from .memory import check_fits
from .named import HessianBlocks, NamedTensors
from .operators import HessianOperator

GROUPINGS = ("module", "parameter")

#: The keyword options of every function here (those of :class:`~hessian_core.objective.Objective` and of
#: :class:`~hessian_core.operators.HessianOperator`), appended to each function's docstring.
OPTIONS = """Options (keyword arguments; an unknown one is an error naming the options):

* ``reduction``: ``"mean"`` or ``"sum"``, how ``loss_fn`` combines a batch (default: ``loss_fn.reduction``,
  else ``"mean"``); over many batches a ``"mean"`` loss is normalized by the total count, once.
* ``count_fn``: ``count_fn(inputs, targets) -> number``, what a ``"mean"`` loss averages over (masked
  tokens, ``ignore_index``); default the leading dimension of the targets.
* ``params``: a subset of the parameters (tensors or names); default all that require grad.
* ``train_mode``: evaluate in train mode (BatchNorm batch statistics, dropout masks fixed per batch by
  ``seed``); default ``False`` (eval mode).
* ``seed``: seed of the random draws of a random forward, per batch (default 0).
* ``memory_budget``: bytes, or a string like ``"2GB"`` (default: half the free memory); every allocation
  sized by the problem is checked against it first.
* ``progress``: tqdm bars for long work (``None``: only on a terminal).
* ``distributed``: reduce over the ranks of ``torch.distributed`` (``None``: when a process group exists).
* ``strategy``: ``"auto"`` (structured dense/diagonal paths for Linear chains when they apply),
  ``"structured"`` (required) or ``"generic"`` (chunked vmapped products).
* ``chunk_size``: vectors per batched product (default from the memory budget).
* ``self_check``: on the first batch, check the symmetry of the products and forward- against reverse-mode
  derivatives, refusing by name a model whose PyTorch derivatives are wrong (default ``True``).
"""


def lists_options(fn):
    """Append :data:`OPTIONS` to ``fn``'s docstring, so that ``help(fn)`` shows them."""
    fn.__doc__ = fn.__doc__.rstrip() + "\n\n" + textwrap.indent(OPTIONS, "    ")
    return fn


@lists_options
def hessian(model, loss_fn, data, **options) -> torch.Tensor:
    """Exact Hessian ``(P, P)`` of the loss over ``data`` w.r.t. the parameters that require grad.

    Raises :class:`~hessian_core.errors.MemoryBudgetError` (with the size) when ``P x P`` does not fit.
    """
    return HessianOperator(model, loss_fn, data, **options).to_dense()


@lists_options
def hvp(model, loss_fn, data, v, **options) -> torch.Tensor:
    """Hessian-vector product ``(P,)``; ``v`` flat ``(P,)`` or a list shaped like the parameters (real,
    finite)."""
    op = HessianOperator(model, loss_fn, data, **options)
    v = op.params.as_flat(v)
    if v.dim() != 1:
        raise InvalidInputError(f"v must be one vector of shape ({op.params.numel},), got {tuple(v.shape)}; "
                                "use HessianOperator(...).matmat for several")
    return op.matvec(v)


def resolve_groups(spec, groups) -> tuple[list[str], list[list[str]]]:
    """``(labels, groups of parameter names)`` for :func:`hessian_blocks`'s ``groups`` argument."""
    names = list(spec.names)
    if groups is None or groups == "parameter":
        return names, [[n] for n in names]
    if isinstance(groups, str):
        if groups != "module":
            raise InvalidInputError(
                f"groups={groups!r} is not understood; use groups='module' (one block per module: weight and "
                "bias together), 'parameter' or None (one block per parameter tensor), or a list/dict of groups "
                "of parameter or module names")
        by_module: dict[str, list[str]] = {}
        for n in names:
            by_module.setdefault(n.rsplit(".", 1)[0] if "." in n else "", []).append(n)
        return list(by_module), list(by_module.values())
    if isinstance(groups, Mapping):
        labels, members = [str(k) for k in groups], list(groups.values())
    elif isinstance(groups, Sequence):
        labels, members = None, list(groups)
    else:
        raise InvalidInputError(f"groups must be None, 'module', 'parameter', a list or a dict of groups, "
                                f"got {type(groups).__name__}")
    if not members:
        raise InvalidInputError("groups is empty; give at least one group")
    by_id = {id(t): n for n, t in zip(names, spec.tensors)}
    out = []
    for g in members:
        g = [g] if isinstance(g, (str, torch.Tensor)) else list(g)
        resolved: list[str] = []
        for item in g:
            resolved += _names_of(item, names, by_id)
        if not resolved:
            raise InvalidInputError(f"group {g!r} holds no parameter")
        out.append([n for n in names if n in set(resolved)])  # parameter order inside a group
    if labels is None:
        labels = ["+".join(_common_label(g)) for g in out]
    return labels, out


def _names_of(item, names: list[str], by_id: dict) -> list[str]:
    """Parameter names of ``item``: a parameter name, a module name (all its parameters) or a tensor."""
    if isinstance(item, torch.Tensor):
        if id(item) not in by_id:
            raise InvalidInputError("a tensor in groups is not one of the differentiated parameters")
        return [by_id[id(item)]]
    if not isinstance(item, str):
        raise InvalidInputError(f"a group holds parameter names, module names or tensors, not {type(item).__name__}")
    if item in names:
        return [item]
    inside = [n for n in names if n.startswith(item + ".")] if item else list(names)
    if not inside:
        raise InvalidInputError(f"{item!r} names no parameter or module with differentiated parameters; the "
                                f"parameters are {names}")
    return inside


def _common_label(group: list[str]) -> list[str]:
    """Module names when a group is made of whole modules' parameters, else parameter names."""
    modules = sorted({n.rsplit(".", 1)[0] for n in group if "." in n})
    return modules if len(modules) == 1 and all(n.startswith(modules[0] + ".") for n in group) else group


@lists_options
def hessian_blocks(model, loss_fn, data, groups: Sequence | Mapping | str | None = None, **options) -> HessianBlocks:
    """Exact diagonal blocks of the Hessian, labelled.

    Args:
        groups: ``None`` or ``"parameter"`` (one block per parameter tensor, in parameter order),
            ``"module"`` (one block per module: weight and bias together), a list of groups or a dict
            ``{label: group}``; a group is a parameter name, a module name (all its parameters), a tensor,
            or a list of those. A block's rows follow the parameter order inside its group.
        **options: see below.

    Returns:
        :class:`~hessian_core.named.HessianBlocks`: a list of ``(p_g, p_g)`` tensors (as before) that is
        also indexed by label (``blocks["0"]``, the module path or parameter name), with ``.names``,
        ``.params`` (the parameters of each block), ``.summary()`` (trace, Frobenius norm, extreme
        eigenvalues per block) and ``.table()``. Memory is the sum of the block sizes, checked against the
        budget before anything is computed.
    """
    op = HessianOperator(model, loss_fn, data, **options)
    labels, gs = resolve_groups(op.params, groups)
    subs = [op.with_params(g) for g in gs]
    item = torch.empty((), dtype=op.dtype).element_size()
    check_fits(sum(s.params.numel ** 2 for s in subs) * item, op.objective.budget,
               f"the diagonal blocks ({', '.join(str(s.params.numel) for s in subs)} rows)",
               "hessian_diagonal or the matrix-free HessianOperator")
    return HessianBlocks([s.to_dense() for s in subs], labels, gs)


@lists_options
def hessian_diagonal(model, loss_fn, data, **options) -> NamedTensors:
    """Exact diagonal of the Hessian (not an estimate), as tensors shaped like the parameters: a list in
    parameter order that is also indexed by parameter name (``diag["0.weight"]``)."""
    op = HessianOperator(model, loss_fn, data, **options)
    return NamedTensors(op.params.unflatten(op.diagonal()), op.params.names)
