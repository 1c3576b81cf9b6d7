"""What every layer translator is: MATLAB layer properties in, a torch function of MATLAB-shaped learnables out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hessian_core.errors import InvalidInputError

from ..layout import channel_dim_of as channel_dim
from ..spec import LayerSpec


@dataclass
class Act:
    """An activation: ``data`` in the torch layout of its canonical dlarray format ``fmt`` (see layout.py)."""

    data: torch.Tensor
    fmt: str


class Translator:
    """Base of the per-class translators.

    Subclasses list ``learnable_names`` (the Learnables rows the layer owns, by MATLAB parameter name),
    ``properties`` (the MATLAB properties they read) and
    implement ``setup(learn, state)`` (validate; record each learnable's MATLAB shape in ``self.shapes`` and
    every constant the forward needs, e.g. trained statistics, in ``self.consts`` as numpy arrays) and
    ``forward(xs, p, c) -> Act`` with ``xs`` the input activations in input order (in1, in2, ...),
    ``p`` the learnables as MATLAB-shaped tensors and ``c`` the constants as tensors.
    """

    learnable_names: tuple[str, ...] = ()
    #: The MATLAB layer properties the translator reads (besides Name and Class). The exporter
    #: (matlab/private/hcLayerProperties.m, generated from these) sends exactly these, and reading any other
    #: property is an error: one list, checked whenever a layer is translated.
    properties: tuple[str, ...] = ()
    num_inputs = 1

    def __init__(self, layer: LayerSpec, learn: dict[str, np.ndarray], state: dict[str, np.ndarray]):
        self.layer = layer
        layer.readable = frozenset(self.properties)
        self.name = layer.name
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.consts: dict[str, np.ndarray] = {}
        unknown = sorted(set(learn) - set(self.learnable_names))
        if unknown:
            raise self.error(f"Learnables rows {unknown} are not parameters of this layer "
                             f"(expected {list(self.learnable_names) or 'none'})")
        missing = [n for n in self.learnable_names if n not in learn]
        if missing:
            raise self.error(f"the spec's Learnables lack {missing}")
        self.setup(learn, state)

    # -- for subclasses ----------------------------------------------------------------------------
    def setup(self, learn: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        pass

    def forward(self, xs: list[Act], p: dict[str, torch.Tensor], c: dict[str, torch.Tensor]) -> Act:
        raise NotImplementedError

    def error(self, msg: str) -> InvalidInputError:
        return InvalidInputError(f"layer '{self.name}' ({self.layer.short_class}): {msg}")

    def expect(self, learn: dict, pname: str, shape: tuple) -> np.ndarray:
        """Check learnable ``pname`` against a MATLAB shape (``None`` = any size) and record its shape.

        MATLAB drops trailing singleton dimensions and loadmat may squeeze: the value is accepted when its
        non-singleton sizes match; it keeps the full declared shape (same column-major order)."""
        v = learn[pname]
        full = tuple(v.shape) + (1,) * max(0, len(shape) - v.ndim)
        if len(full) > len(shape):
            extra = full[len(shape):]
            if any(s != 1 for s in extra):
                raise self.error(f"{pname} has size {v.shape}, expected {_fmt_shape(shape)}")
            full = full[:len(shape)]
        ok = all(w is None or w == s for w, s in zip(shape, full))
        known = int(np.prod([s for s in shape if s is not None]))
        if not ok and shape.count(None) <= 1 and known > 0 and v.size % known == 0:
            # squeezed by the carrier (loadmat: a bias (n,), a 1 x In weight (In,)): same column-major data
            cand = tuple(v.size // known if s is None else s for s in shape)
            if _squeezed(cand) == _squeezed(tuple(v.shape)):
                full, ok = cand, True
        if not ok:
            raise self.error(f"{pname} has size {v.shape}, expected {_fmt_shape(shape)}")
        self.shapes[pname] = tuple(int(s) for s in full)
        return v.reshape(self.shapes[pname], order="F")

    def const(self, key: str, value) -> None:
        self.consts[key] = np.asarray(value, dtype=np.float64)

    def need_format(self, x: Act, *allowed: str) -> None:
        ok = any(x.fmt == a or (a == "S*CB" and x.fmt.endswith("CB") and "T" not in x.fmt and "S" in x.fmt)
                 for a in allowed)
        if not ok:
            raise self.error(f"input format {x.fmt!r} is not supported (supported: {', '.join(allowed)})")


def channel_view(v: torch.Tensor, fmt: str, ndim: int) -> torch.Tensor:
    """A per-channel vector (any MATLAB shape with C elements) shaped to broadcast over an activation."""
    shape = [1] * ndim
    shape[channel_dim(fmt)] = -1
    return v.reshape(shape)


def _squeezed(shape):
    return tuple(s for s in shape if s != 1)


def _fmt_shape(shape):
    return " x ".join("any" if s is None else str(s) for s in shape)
