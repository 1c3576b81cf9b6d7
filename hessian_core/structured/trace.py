"""Record the torch operations of one forward pass as a graph of nodes, for the structured strategies.

The model runs once, on the batch, under a ``TorchFunctionMode`` that sees every call into torch
(``F.linear``, ``F.conv2d``, ``Tensor.reshape``, ``x + y`` ...) at the level the model wrote it; calls
made inside a recorded call are not seen. Python control flow runs for real, so any ``nn.Module`` (a
residual block, a custom ``forward``, the MATLAB bridge's networks) is traced as it computes this batch;
the batch is traced again each time, so a branch that depends on the data is the one this batch takes.

Every tensor is a :class:`Value`: a differentiated parameter, an input, or the output of a call. A value
*depends* on the parameters (``dep``) when a floating-point output was computed with gradients enabled
from an input that depends on them (what autograd would differentiate: ``detach``, ``torch.no_grad`` and
integer results stop it), and carries *data* (``data``: its leading dimension indexes samples) when it was
computed from the inputs. Only calls whose output depends on the parameters become :class:`Node` objects;
everything else is a constant of the Hessian and kept as the tensor it is.

Refused (:class:`~.chain.NotApplicable`, so the caller uses the generic path): turning a value that
depends on the parameters into a Python number (``item``, ``float``), which would hide its derivative;
writing in place into a parameter or with ``out=``; calls that return several tensors that depend on the
parameters. In-place calls on other values are recorded as their out-of-place versions.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode

from .chain import NotApplicable

_TO_NUMBER = {"item", "tolist", "__float__", "__int__", "__index__", "numpy", "__array__", "__complex__",
              "__reduce_ex__"}
_DETACH = {"detach", "detach_", "data"}
_INPLACE_DUNDER = {"__iadd__": operator.add, "__isub__": operator.sub, "__imul__": operator.mul,
                   "__itruediv__": operator.truediv}


@dataclass
class Ref:
    """A tensor argument of a recorded call: index of its :class:`Value`."""

    index: int


@dataclass
class Value:
    """One tensor of the trace. ``tensor`` is its value in this forward pass (never written afterwards)."""

    tensor: torch.Tensor
    dep: bool  # depends on the differentiated parameters
    data: bool  # computed from the inputs: leading dimension = samples
    node: int | None = None  # index of the producing Node, None for parameters, inputs and constants
    param: int | None = None  # ParamSpec index, for the parameters themselves


def leaves(x):
    """The leaves of nested tuples, lists and dicts (a call's arguments), depth first."""
    if isinstance(x, (tuple, list)):
        for t in x:
            yield from leaves(t)
    elif isinstance(x, dict):
        for t in x.values():
            yield from leaves(t)
    else:
        yield x


def call_leaves(node):
    """The leaves of a recorded call's positional and then keyword arguments."""
    yield from leaves(node.args)
    yield from leaves(node.kwargs)


@dataclass
class Node:
    """One call whose output depends on the parameters: ``func(*args, **kwargs)`` with :class:`Ref` in
    place of traced tensors. ``inputs``: the Values it reads that depend on the parameters."""

    func: object
    args: tuple
    kwargs: dict
    out: int
    inputs: list[int] = field(default_factory=list)
    name: str = ""  # the call's name (a property's own name for ``x.T``, ``x.data``)

    def call(self, lookup):
        """``func`` with every :class:`Ref` replaced by ``lookup(index)``."""
        return self.func(*_fill(self.args, lookup), **_fill(self.kwargs, lookup))

    def replace(self, **changes) -> Node:
        return Node(**{"func": self.func, "args": self.args, "kwargs": self.kwargs, "out": self.out,
                       "inputs": self.inputs, "name": self.name, **changes})


class Trace:
    """Values and nodes of one forward pass, in execution order; ``output`` is the model output's Value."""

    def __init__(self):
        self.values: list[Value] = []
        self.nodes: list[Node] = []
        self.output: int | None = None
        self._ids: dict[int, int] = {}

    def add(self, tensor, dep, data, node=None, param=None) -> int:
        self.values.append(Value(tensor, dep, data, node, param))
        self._ids[id(tensor)] = len(self.values) - 1
        return len(self.values) - 1

    def index_of(self, tensor) -> int | None:
        i = self._ids.get(id(tensor))
        return i if i is not None and self.values[i].tensor is tensor else None


def _fill(x, lookup):
    if isinstance(x, Ref):
        return lookup(x.index)
    if isinstance(x, tuple):
        return tuple(_fill(t, lookup) for t in x)
    if isinstance(x, list):
        return [_fill(t, lookup) for t in x]
    if isinstance(x, dict):
        return {k: _fill(v, lookup) for k, v in x.items()}
    return x


class _Recorder(TorchFunctionMode):
    def __init__(self, trace: Trace):
        super().__init__()
        self.trace = trace

    def _template(self, x, refs: list[int]):
        if isinstance(x, torch.Tensor):
            i = self.trace.index_of(x)
            if i is None:
                return x
            refs.append(i)
            return Ref(i)
        if isinstance(x, tuple):
            return tuple(self._template(t, refs) for t in x)
        if isinstance(x, list):
            return [self._template(t, refs) for t in x]
        if isinstance(x, dict):
            return {k: self._template(v, refs) for k, v in x.items()}
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        refs: list[int] = []
        targs = self._template(args, refs)
        tkwargs = self._template(kwargs, refs)
        values = self.trace.values
        name = _name_of(func)
        dep_in = [i for i in refs if values[i].dep]
        data_in = any(values[i].data for i in refs)
        if not dep_in and not data_in:  # constants: nothing to record
            out = func(*args, **kwargs)
            if any(t.requires_grad for t in _tensors(out)):
                _check_autograd_agrees(values, refs, args, kwargs, name, {id(values[i].tensor) for i in refs})
            return out
        if dep_in and name in _TO_NUMBER:
            raise NotApplicable(f"the forward turns a value that depends on the parameters into a number ({name})")
        if "out" in kwargs and kwargs["out"] is not None:
            raise NotApplicable(f"{name}(out=...)")
        traced = {id(values[i].tensor) for i in refs}  # (before an in-place call replaces a value's tensor)
        replay, rkwargs = func, tkwargs
        inplace = _is_inplace(func, name, kwargs)
        if inplace:
            target = self.trace.index_of(args[0]) if args and isinstance(args[0], torch.Tensor) else None
            if target is not None and values[target].param is not None:
                raise NotApplicable(f"the forward writes into a parameter in place ({name})")
            replay, rkwargs = _out_of_place(func, name, tkwargs)
            if target is not None and args and values[target].tensor is args[0]:
                # the value written over keeps a copy of itself: the trace never changes afterwards
                values[target].tensor = args[0].clone()
        out = func(*args, **kwargs)
        grad_on = torch.is_grad_enabled()
        if any(t.requires_grad for t in _tensors(out)):  # a result autograd differentiates: from traced values?
            _check_autograd_agrees(values, refs, args, kwargs, name, traced)
        if isinstance(out, torch.Tensor):
            dep = bool(dep_in) and grad_on and out.is_floating_point() and name not in _DETACH
            data = data_in and out.dim() > 0
            if dep:
                index = self.trace.add(out, True, data, node=len(self.trace.nodes))
                self.trace.nodes.append(Node(replay, targs, rkwargs, index, sorted(set(dep_in)), name))
            else:
                self.trace.add(out, False, data)
            return out
        if isinstance(out, (tuple, list)) and any(isinstance(t, torch.Tensor) for t in out):
            if dep_in and grad_on and any(isinstance(t, torch.Tensor) and t.is_floating_point() for t in out):
                raise NotApplicable(f"{name} returns several tensors that depend on the parameters")
            for t in out:
                if isinstance(t, torch.Tensor):
                    self.trace.add(t, False, data_in and t.dim() > 0)
        return out


def _check_autograd_agrees(values, refs, args, kwargs, name, traced: set) -> None:
    """Autograd (the parameters require grad while tracing) and the trace must agree on what depends on the
    parameters: a tensor the trace does not know, or knows as a constant, that autograd says depends on them
    was made by something the recorder did not see (a custom ``autograd.Function``, whose derivative is its
    own backward rather than its forward's ops, or a call that bypasses ``__torch_function__``). ``traced``:
    ids of the tensors of ``refs`` as the call received them."""
    for i in set(refs):
        v = values[i]
        if not v.dep and v.tensor.requires_grad and v.param is None:
            raise NotApplicable(f"{name} reads a value autograd differentiates that the trace holds as a constant "
                                "(made by a custom autograd.Function or another call the trace cannot see)")
    for t in _tensors((args, kwargs)):
        if t.requires_grad and id(t) not in traced:
            raise NotApplicable(f"{name} reads a tensor that depends on the parameters but was not traced (made by "
                                "a custom autograd.Function or another call the trace cannot see)")


def _tensors(x):
    return (t for t in leaves(x) if isinstance(t, torch.Tensor))


def _name_of(func) -> str:
    name = getattr(func, "__name__", "") or ""
    if name == "__get__":  # a property: x.T, x.mT, x.data
        return getattr(getattr(func, "__self__", None), "__name__", "") or name
    return name


def _is_inplace(func, name: str, kwargs) -> bool:
    if kwargs.get("inplace") is True:
        return True
    if name in _INPLACE_DUNDER or name == "__setitem__":
        return True
    return name.endswith("_") and not name.startswith("_")


def _out_of_place(func, name: str, tkwargs):
    if tkwargs.get("inplace") is True:
        return func, {**tkwargs, "inplace": False}
    if name in _INPLACE_DUNDER:
        return _INPLACE_DUNDER[name], tkwargs
    base = getattr(torch.Tensor, name[:-1], None) if name.endswith("_") else None
    if base is None:
        raise NotApplicable(f"in-place {name} on a value that depends on the parameters")
    return base, tkwargs


def trace_forward(objective, ctx, primals) -> tuple[Trace, list[torch.Tensor]]:
    """Run ``objective``'s model on batch ``ctx`` once and record it. Returns the trace and the parameter
    tensors used (aliases of ``primals``: Value ``i`` is parameter ``i``)."""
    trace = Trace()
    # The parameters require grad while tracing, so that autograd can confirm what the trace records as
    # depending on them (:func:`_check_autograd_agrees`); every value is detached afterwards.
    params = [p.detach().requires_grad_(True) for p in primals]
    for i, p in enumerate(params):
        trace.add(p, True, False, param=i)
    inputs = ctx.inputs
    for t in (inputs if isinstance(inputs, (tuple, list)) else (inputs,)):
        if isinstance(t, torch.Tensor):
            trace.add(t, False, t.dim() > 0)
    with torch.enable_grad(), _Recorder(trace):
        out = objective.forward(tuple(params), inputs, seed=objective.seed_of(ctx.index))
    if not isinstance(out, torch.Tensor):
        raise NotApplicable("the model output is not one tensor")
    index = trace.index_of(out)
    if index is None or not trace.values[index].dep or not trace.values[index].data:
        raise NotApplicable("the model output does not depend on both the inputs and the parameters")
    trace.output = index
    for v in trace.values:
        v.tensor = v.tensor.detach()
    trace._ids = {id(v.tensor): i for i, v in enumerate(trace.values)}
    return trace, [trace.values[i].tensor for i in range(len(params))]
