"""Which parameters are differentiated, and the one flatten/unflatten between them and flat vectors.

Order: the parameters that require grad, in ``model.parameters()`` order (tied parameters once, as
``named_parameters`` yields them), each flattened row-major (``tensor.reshape(-1)``). A flat vector has
shape ``(P,)``; a block of ``k`` vectors has shape ``(P, k)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch._utils import _flatten_dense_tensors

from .errors import InvalidInputError


class ParamSpec:
    """The differentiated parameters of a model: names, shapes, offsets into the flat vector.

    Args:
        model: the module.
        params: optional subset, as parameter tensors of ``model`` or their names. Default: every
            parameter with ``requires_grad=True``. Order is always the model's order.
    """

    def __init__(self, model: nn.Module, params: Iterable[torch.Tensor | str] | None = None):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if params is not None:
            wanted = list(params)
            by_id = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
            names = set()
            for w in wanted:
                if isinstance(w, str):
                    names.add(w)
                elif isinstance(w, torch.Tensor) and id(w) in by_id:
                    names.add(by_id[id(w)])
                else:
                    raise InvalidInputError(
                        f"params: {type(w).__name__} is not a parameter (or parameter name) of the model"
                    )
            canonical = {id(p): n for n, p in model.named_parameters()}
            all_named = dict(model.named_parameters(remove_duplicate=False))
            unknown = names - set(all_named)
            if unknown:
                raise InvalidInputError(f"params: no parameter named {sorted(unknown)} in the model")
            keep = {canonical[id(all_named[n])] for n in names}
            named = [(n, p) for n, p in model.named_parameters() if n in keep]
            frozen = [n for n, p in named if not p.requires_grad]
            if frozen:
                raise InvalidInputError(f"params: {frozen} have requires_grad=False (frozen)")
        if not named:
            raise InvalidInputError(
                "the model has no parameter with requires_grad=True: there is nothing to differentiate"
            )
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) > 1 or len(devices) > 1:
            raise InvalidInputError(
                f"parameters must share one dtype and device, got dtypes {sorted(map(str, dtypes))} "
                f"and devices {sorted(map(str, devices))}; cast the model with model.to(...) first"
            )
        if not next(iter(dtypes)).is_floating_point:
            raise InvalidInputError(f"parameters must be floating point, got {next(iter(dtypes))}")
        self.names: list[str] = [n for n, _ in named]
        self.tensors: list[torch.Tensor] = [p for _, p in named]
        self.shapes: list[torch.Size] = [p.shape for _, p in named]
        self.numels: list[int] = [p.numel() for _, p in named]
        self.offsets: list[int] = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.numel: int = self.offsets[-1]
        self.dtype: torch.dtype = next(iter(dtypes))
        self.device: torch.device = next(iter(devices))

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"ParamSpec(P={self.numel}, {len(self)} tensors, dtype={self.dtype}, device={self.device})"

    @property
    def slices(self) -> list[slice]:
        """Slice of each parameter in the flat vector."""
        return [slice(a, b) for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def primals(self) -> tuple[torch.Tensor, ...]:
        """Detached views of the current parameter values (no copy, never written to)."""
        return tuple(p.detach() for p in self.tensors)

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """Param-shaped tensors -> flat ``(P,)``; with a trailing batch dim ``(*shape, k)`` -> ``(P, k)``."""
        tensors = list(tensors)
        if len(tensors) != len(self):
            raise InvalidInputError(f"expected {len(self)} tensors (one per parameter), got {len(tensors)}")
        batched = tensors[0].dim() == len(self.shapes[0]) + 1
        out = []
        for t, shape, name in zip(tensors, self.shapes, self.names):
            want = tuple(shape) + ((t.shape[-1],) if batched else ())
            if tuple(t.shape) != want:
                raise InvalidInputError(f"tensor for parameter '{name}' has shape {tuple(t.shape)}, expected {want}")
            out.append(t.reshape(-1, t.shape[-1]) if batched else t.reshape(-1))
        return torch.cat(out, dim=0)

    @staticmethod
    def concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(P,)``: param-shaped tensors (in order, shapes already right) end to end, differentiably, in one
        call (``torch._utils._flatten_dense_tensors``, which DDP uses) rather than a reshape per tensor: on a
        small model's product the per-tensor calls cost more than the arithmetic."""
        return _flatten_dense_tensors(list(tensors))

    def flatten_list(self, tensors: list) -> torch.Tensor:
        """:meth:`flatten` of a list of ``(*shape)`` tensors that it empties as it copies them, so that the
        peak is the flat result and one tensor, not two copies of every parameter."""
        out = torch.empty(self.numel, dtype=tensors[0].dtype, device=tensors[0].device)
        for i, s in enumerate(self.slices):
            t, tensors[i] = tensors[i], None
            out[s] = t.reshape(-1)
            del t
        return out

    def unflatten(self, vec: torch.Tensor) -> list[torch.Tensor]:
        """Flat ``(P,)`` -> list of param-shaped tensors; ``(P, k)`` -> list of ``(*shape, k)``."""
        if vec.shape[0] != self.numel or vec.dim() not in (1, 2):
            raise InvalidInputError(
                f"expected a vector of shape ({self.numel},) or ({self.numel}, k), got {tuple(vec.shape)}")
        tail = tuple(vec.shape[1:])
        return [vec[s].reshape(*shape, *tail) for s, shape in zip(self.slices, self.shapes)]

    def as_flat(self, v, name: str = "v") -> torch.Tensor:
        """Accept a flat vector/matrix or a list shaped like the params; return ``(P,)`` or ``(P, k)``
        on the parameters' device and dtype. Complex, meta-device and non-finite input is refused by name
        (a cast would silently drop an imaginary part; NaN would later be blamed on the data)."""
        if isinstance(v, (list, tuple)):
            v = self.flatten([_real_tensor(t, name) for t in v])
        else:
            v = _real_tensor(v, name)
        if v.dim() not in (1, 2) or v.shape[0] != self.numel:
            raise InvalidInputError(
                f"{name} has shape {tuple(v.shape)}; expected ({self.numel},) or ({self.numel}, k) "
                f"for the {self.numel} parameters, or a list of {len(self)} param-shaped tensors"
            )
        if v.dtype != self.dtype or v.device != self.device:
            v = v.to(device=self.device, dtype=self.dtype)
        if v.numel() and not math.isfinite(float(v.sum())) and not bool(torch.isfinite(v).all()):
            raise InvalidInputError(f"{name} has NaN or Inf entries")
        return v

    def positions_of(self, other: ParamSpec) -> torch.Tensor:
        """Flat indices into this spec's vector of every entry of ``other``'s vector (``other`` must be a
        subset of these parameters, e.g. from ``params=``): ``v_full[spec.positions_of(sub)] = v_sub``."""
        where = {id(t): s for t, s in zip(self.tensors, self.slices)}
        missing = [n for n, t in zip(other.names, other.tensors) if id(t) not in where]
        if missing:
            raise InvalidInputError(f"parameters {missing} are not among these {len(self)} parameters")
        return torch.cat([torch.arange(where[id(t)].start, where[id(t)].stop) for t in other.tensors])

    def index_of(self, flat_index: int) -> tuple[str, tuple[int, ...]]:
        """(parameter name, multi-index within it) of a flat index, for labels."""
        if not 0 <= flat_index < self.numel:
            raise IndexError(f"flat index {flat_index} out of range for P={self.numel}")
        for name, shape, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:]):
            if flat_index < b:
                idx = torch.unravel_index(torch.tensor(flat_index - a), shape) if len(shape) else ()
                return name, tuple(int(i) for i in idx)
        raise AssertionError("unreachable")


def _real_tensor(x, name: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    if t.is_complex():
        raise InvalidInputError(f"{name} is complex ({t.dtype}); curvature products take real vectors")
    if t.is_meta:
        raise InvalidInputError(f"{name} is on the meta device and has no values; pass a real tensor")
    if not t.dtype.is_floating_point:
        if t.dtype == torch.bool:
            raise InvalidInputError(f"{name} is a bool tensor; pass a floating-point vector")
        t = t.to(torch.float64)
    return t


class ParamHolder(nn.Module):
    """A module whose parameters are exactly the given tensors (in that order, the same objects), so that
    plain tensors (an optimizer's parameters) get :class:`ParamSpec`'s flatten/unflatten."""

    def __init__(self, tensors: Iterable[torch.Tensor]):
        super().__init__()
        for i, t in enumerate(tensors):
            if not isinstance(t, torch.Tensor):
                raise InvalidInputError(f"parameter {i} is a {type(t).__name__}, not a tensor")
            # Direct assignment keeps the caller's tensor object (register_parameter insists on nn.Parameter,
            # torch.optim accepts any leaf tensor).
            self._parameters[str(i)] = t


def spec_of(params: Iterable[torch.Tensor] | ParamSpec) -> ParamSpec:
    """:class:`ParamSpec` of a list of tensors (order kept), or a ParamSpec as it is."""
    if isinstance(params, ParamSpec):
        return params
    tensors = list(params)
    if not tensors:
        raise InvalidInputError("no parameters given")
    return ParamSpec(ParamHolder(tensors))
