"""Which layers Kronecker-factored curvature covers, where their parameters sit, and their inputs as rows.

A covered layer is an ``nn.Linear`` or an ``nn.Conv2d`` (``groups=1``, zero padding) with at least one of
its parameters differentiated. Its weight, flattened row-major as torch stores it, is a matrix
``(d_out, d_in)`` (``d_in = in_channels * kh * kw`` for a convolution); the curvature of that matrix is
approximated by ``G ⊗ A`` in this order (``torch.kron(G, A)``): ``A`` over the input (column) index, ``G``
over the output (row) index. In the column-stacking convention of the papers this is ``A ⊗ G``.

Each layer gives one or two *blocks* of the block-diagonal approximation:

* weight and bias together (``separate_bias=False``): the matrix ``[W | b]`` of shape ``(d_out, d_in + 1)``
  with inputs augmented by a constant 1 (Martens & Grosse's homogeneous coordinates);
* otherwise a weight block ``(d_out, d_in)`` and a bias block ``(d_out, 1)`` whose input factor is 1.

The rows of a layer are its inputs as ``(B, S, D)``: ``B`` samples, ``S`` positions that share the weight
(1 for a Linear on ``(B, d_in)``; the middle dimensions of a Linear on ``(B, ..., d_in)``; the output
pixels of a convolution, as unfolded patches) and ``D = d_in`` features. Gradients with respect to the
layer output are arranged the same way, ``(B, S, d_out)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

#: layers with a Kronecker-factored block
SUPPORTED = (nn.Linear, nn.Conv2d)


@dataclass
class Block:
    """One diagonal block: ``key`` (``"fc"``, ``"fc.weight"``, ``"fc.bias"``), the flat positions of its
    entries in the order of the ``(d_out, d_A)`` matrix (row-major), and ``input_factor``: ``"plain"``
    (``A`` over the inputs), ``"augmented"`` (inputs and a 1: weight and bias together) or ``"one"`` (a
    bias alone, ``A = [[1]]``)."""

    key: str
    layer: str
    positions: torch.Tensor
    input_factor: str
    d_out: int
    d_in: int

    @property
    def d_A(self) -> int:
        return {"plain": self.d_in, "augmented": self.d_in + 1, "one": 1}[self.input_factor]


@dataclass
class Layer:
    """A covered layer: module name, module, its weight/bias flat positions (``None`` when that parameter
    is not differentiated) and the blocks it contributes."""

    name: str
    module: nn.Module
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    d_in: int
    d_out: int
    blocks: list[Block] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "Conv2d" if isinstance(self.module, nn.Conv2d) else "Linear"

    @property
    def needs_inputs(self) -> bool:
        return self.weight is not None

    def input_factor(self) -> str | None:
        """How this layer's ``A`` is formed: ``"augmented"``, ``"plain"``, or ``None`` (bias only)."""
        kinds = {b.input_factor for b in self.blocks}
        return "augmented" if "augmented" in kinds else ("plain" if "plain" in kinds else None)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input ``x`` as rows ``(B, S, d_in)`` (unfolded patches for a convolution)."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            if x.dim() != 4:
                raise InvalidInputError(
                    f"KFAC: layer '{self.name}' (Conv2d) got an input of shape {tuple(x.shape)}; it needs a batch "
                    "(B, C, H, W) whose first dimension is the sample")
            patches = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=_conv_padding(self.name, m),
                               stride=m.stride)
            return patches.transpose(1, 2)
        if x.dim() < 2:
            raise InvalidInputError(
                f"KFAC: layer '{self.name}' (Linear) got an input of shape {tuple(x.shape)}; it needs a batch "
                "(B, ..., in_features) whose first dimension is the sample")
        return x.reshape(x.shape[0], -1, x.shape[-1])

    def output_rows(self, g: torch.Tensor) -> torch.Tensor:
        """Gradients w.r.t. the layer output, ``(k, B, *out)`` -> ``(k, B, S, d_out)``."""
        if isinstance(self.module, nn.Conv2d):
            return g.flatten(3).transpose(2, 3)
        return g.reshape(g.shape[0], g.shape[1], -1, g.shape[-1])


def _conv_padding(name: str, m: nn.Conv2d):
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return 0
        pads = []
        for k, d in zip(m.kernel_size, m.dilation):
            total = d * (k - 1)
            if total % 2:
                raise InvalidInputError(
                    f"KFAC: layer '{name}' (Conv2d, padding='same') pads unequally on the two sides (kernel "
                    f"{m.kernel_size}, dilation {m.dilation}); use an odd kernel or explicit padding")
            pads.append(total // 2)
        return tuple(pads)
    return m.padding


def _check_conv(name: str, m: nn.Conv2d) -> None:
    if m.groups != 1:
        raise InvalidInputError(
            f"KFAC: layer '{name}' is a grouped convolution (groups={m.groups}), which has one Kronecker block "
            "per group; it is not covered. Leave its parameters out (params=...) or use uncovered='exact' / "
            "'diagonal' for them")
    if m.padding_mode != "zeros":
        raise InvalidInputError(
            f"KFAC: layer '{name}' (Conv2d) pads with padding_mode='{m.padding_mode}'; only zero padding is "
            "covered. Use uncovered='exact' / 'diagonal' for its parameters")
    _conv_padding(name, m)


def find_layers(model: nn.Module, spec, separate_bias: bool) -> tuple[list[Layer], list[str]]:
    """The covered layers of ``model`` among the differentiated parameters ``spec`` (a ParamSpec), with
    their blocks, and the names of the differentiated parameters outside any covered layer.

    Raises :class:`InvalidInputError` for a covered layer's parameter that another module uses too (tied
    weights: its curvature is not one Kronecker product) and for unsupported options of a covered layer."""
    where = {id(t): (name, torch.arange(s.start, s.stop)) for name, t, s in zip(spec.names, spec.tensors, spec.slices)}
    owners: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        for p in m._parameters.values():
            if p is not None and id(p) in where:
                owners.setdefault(id(p), []).append(f"'{mname or '<model>'}' ({type(m).__name__})")
    layers, covered = [], set()
    for mname, m in model.named_modules():
        if not isinstance(m, SUPPORTED):
            continue
        w = m.weight if id(m.weight) in where else None
        b = m.bias if m.bias is not None and id(m.bias) in where else None
        if w is None and b is None:
            continue
        for p in (w, b):
            if p is not None and len(set(owners[id(p)])) > 1:
                raise InvalidInputError(
                    f"KFAC: parameter '{where[id(p)][0]}' is shared by {', '.join(sorted(set(owners[id(p)])))}; "
                    "the curvature of a tied parameter is not one Kronecker product. Leave it out (params=...)")
        if isinstance(m, nn.Conv2d):
            _check_conv(mname, m)
            d_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            d_out = m.out_channels
        else:
            d_in, d_out = m.in_features, m.out_features
        layer = Layer(mname, m, where[id(w)][1] if w is not None else None,
                      where[id(b)][1] if b is not None else None, d_in, d_out)
        if w is not None and b is not None and not separate_bias:
            joint = torch.cat([layer.weight.reshape(d_out, d_in), layer.bias.reshape(d_out, 1)], dim=1)
            layer.blocks.append(Block(mname or "<model>", mname, joint.reshape(-1), "augmented", d_out, d_in))
        else:
            prefix = f"{mname}." if mname else ""
            if w is not None:
                layer.blocks.append(Block(f"{prefix}weight", mname, layer.weight, "plain", d_out, d_in))
            if b is not None:
                layer.blocks.append(Block(f"{prefix}bias", mname, layer.bias, "one", d_out, d_in))
        covered.update(id(p) for p in (w, b) if p is not None)
        layers.append(layer)
    uncovered = [n for n, t in zip(spec.names, spec.tensors) if id(t) not in covered]
    return layers, uncovered


def describe_uncovered(model: nn.Module, names: list[str]) -> str:
    """``"'norm.weight' (LayerNorm), ..."`` for an error message."""
    parts = []
    for n in names:
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        try:
            kind = type(model.get_submodule(owner)).__name__
        except AttributeError:
            kind = "?"
        parts.append(f"'{n}' ({kind})")
    return ", ".join(parts)
