"""Recognize models the structured strategies can handle: a chain of ``nn.Linear`` layers with
elementwise activations between them.

Accepted: an ``nn.Sequential`` (nested ones are flattened) whose ``forward`` is not overridden, made of
``nn.Flatten`` / parameter-free elementwise modules before the first ``Linear``, ``nn.Linear`` layers
(exact type, with or without bias), elementwise activations (exact types from :data:`ELEMENTWISE`,
``Identity``, and ``Dropout`` in eval mode) between them, and elementwise modules after the last one
(those are folded into the loss). Every differentiated parameter must be the weight or bias of one of the
chain's ``Linear`` layers, each used once (no tied weights), and no hooks may be registered.
Anything else returns ``None`` and the caller uses the generic path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules import module as _module_globals

#: activations that act elementwise, by exact type (a subclass may override ``forward``)
ELEMENTWISE = (
    nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardtanh, nn.ReLU6, nn.Hardsigmoid, nn.Hardswish, nn.Softsign, nn.Tanhshrink,
    nn.LogSigmoid, nn.Identity,
)
_DROPOUT = (nn.Dropout, nn.AlphaDropout)


class NotApplicable(Exception):  # noqa: N818 - internal signal, never reaches the user
    """The structured path does not apply to this model, loss or batch; use the generic path."""


@dataclass
class ChainLayer:
    """One ``Linear`` layer, the elementwise modules that follow it, and where its parameters sit."""

    module: nn.Linear
    after: list[nn.Module]
    weight_index: int | None  # position of the weight in the ParamSpec, None if not differentiated
    bias_index: int | None

    @property
    def selected(self) -> bool:
        return self.weight_index is not None or self.bias_index is not None


@dataclass
class Chain:
    """``prefix`` modules, then ``layers``; the last layer's ``after`` modules are folded into the loss."""

    prefix: list[nn.Module]
    layers: list[ChainLayer] = field(default_factory=list)


def _flatten_sequential(module: nn.Module, out: list[nn.Module]) -> bool:
    if type(module).forward is not nn.Sequential.forward or _has_hooks(module):
        return False
    for child in module.children():
        if isinstance(child, nn.Sequential):
            if not _flatten_sequential(child, out):
                return False
        else:
            out.append(child)
    return True


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None))


def _global_hooks() -> bool:
    return bool(getattr(_module_globals, "_global_forward_hooks", None)
                or getattr(_module_globals, "_global_forward_pre_hooks", None))


def _elementwise(m: nn.Module, train_mode: bool) -> bool:
    if type(m) in _DROPOUT:
        return not train_mode or m.p == 0
    return type(m) in ELEMENTWISE and not any(True for _ in m.parameters())


def _flatten_ok(m: nn.Module) -> bool:
    return type(m) is nn.Flatten and m.start_dim == 1 and m.end_dim == -1


def sequential_modules(model: nn.Module) -> list[nn.Module] | None:
    """The leaf modules of an ``nn.Sequential`` (nested ones flattened), or ``None`` when ``model`` is not
    one or global module hooks could change what it computes."""
    if not isinstance(model, nn.Sequential) or _global_hooks():
        return None
    modules: list[nn.Module] = []
    return modules if _flatten_sequential(model, modules) else None


def parse_chain(objective) -> Chain | None:
    """The :class:`Chain` of ``objective.model``, or ``None`` when the model is not such a chain."""
    modules = sequential_modules(objective.model)
    if modules is None:
        return None
    chain = Chain(prefix=[])
    for m in modules:
        if _has_hooks(m):
            return None
        if type(m) is nn.Linear:
            chain.layers.append(ChainLayer(m, [], None, None))
        elif _elementwise(m, objective.train_mode) or (not chain.layers and _flatten_ok(m)):
            (chain.layers[-1].after if chain.layers else chain.prefix).append(m)
        else:
            return None
    if not chain.layers:
        return None
    return chain if _locate_params(objective, chain) else None


def _locate_params(objective, chain: Chain) -> bool:
    """Fill in where each layer's parameters sit in the ParamSpec; False if tied or outside the chain."""
    spec = objective.params
    position = {id(t): i for i, t in enumerate(spec.tensors)}
    seen: set[int] = set()
    found = 0
    last = -1
    for layer in chain.layers:
        for attr in ("weight", "bias"):
            t = getattr(layer.module, attr)
            if t is None:
                continue
            if id(t) in seen:
                return False  # the same tensor in two layers: tied weights
            seen.add(id(t))
            i = position.get(id(t))
            if i is not None:
                if i <= last:
                    return False  # parameter order differs from execution order
                last = i
                found += 1
            setattr(layer, f"{attr}_index", i)
    return found == len(spec) and all(isinstance(t, torch.Tensor) for t in spec.tensors)
