"""dlarray format strings <-> torch layouts, MATLAB column-major flattening, and the Learnables index map.

A formatted dlarray stores its dimensions in the order S..., C, B, T (MATLAB permutes on construction;
https://www.mathworks.com/help/deeplearning/ref/dlarray.html). The bridge accepts raw arrays with any
order of the labels and permutes them; torch layouts used inside the translated network:

=============  ==============================  ================================
canonical      torch tensor                    MATLAB example
=============  ==============================  ================================
``CB``         ``(B, C)``                      features x observations
``S..SCB``     ``(B, C, S1, ..., Sk)``         'SSCB' = height x width x C x B
``CBT``        ``(B, T, C)``                   sequences (batch first)
=============  ==============================  ================================
"""

from __future__ import annotations

import numpy as np
import torch

from hessian_core.errors import InvalidInputError

_ORDER = {"S": 0, "C": 1, "B": 2, "T": 3}


def canonical(fmt: str, what: str = "format") -> str:
    """Validate a dlarray format and return its labels in dlarray order (S..., C, B, T)."""
    if not isinstance(fmt, str) or not fmt:
        raise InvalidInputError(f"{what} must be a dlarray format string such as 'CB', 'SSCB' or 'CBT', got {fmt!r}")
    fmt = fmt.upper()
    bad = sorted(set(fmt) - set(_ORDER))
    if bad:
        raise InvalidInputError(
            f"{what} {fmt!r} has label(s) {bad}; supported labels are S, C, B, T ('U' dimensions are not supported)"
        )
    for label in "CBT":
        if fmt.count(label) > 1:
            raise InvalidInputError(f"{what} {fmt!r} has more than one '{label}' dimension")
    if "C" not in fmt or "B" not in fmt:
        raise InvalidInputError(f"{what} {fmt!r} needs a 'C' (channel) and a 'B' (batch) dimension")
    if "T" in fmt and "S" in fmt:
        raise InvalidInputError(f"{what} {fmt!r}: spatial sequences (S and T together) are not supported")
    return "".join(sorted(fmt, key=lambda c: _ORDER[c]))


def channel_dim_of(canon: str) -> int:
    """Torch dim of C: (B, C, S...) -> 1, (B, C) -> 1, (B, T, C) -> 2."""
    return 2 if "T" in canon else 1


def n_spatial(canon: str) -> int:
    return canon.count("S")


def _torch_axes(canon: str) -> list[int]:
    """Axes of the canonical MATLAB array in torch layout order."""
    k = n_spatial(canon)
    if "T" in canon:
        return [1, 2, 0]  # C B T -> B T C
    return [k + 1, k] + list(range(k))  # S.. C B -> B C S..


def matlab_to_torch(arr, fmt: str, what: str = "X", dtype=torch.float64) -> tuple[torch.Tensor, str]:
    """A numeric array in the order of ``fmt`` -> (tensor in torch layout, canonical format).

    MATLAB drops trailing singleton dimensions (a 'SSCB' batch of one arrives H x W x C): they are restored.
    """
    canon = canonical(fmt, f"{what} format")
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim < len(fmt):
        a = a.reshape(a.shape + (1,) * (len(fmt) - a.ndim))
    elif a.ndim > len(fmt):
        if any(s != 1 for s in a.shape[len(fmt):]):
            raise InvalidInputError(f"{what} has {a.ndim} dimensions {a.shape} but its format {fmt!r} has {len(fmt)}")
        a = a.reshape(a.shape[:len(fmt)])
    order = sorted(range(len(fmt)), key=lambda i: _ORDER[fmt.upper()[i]])  # stable: S dims keep their order
    a = np.transpose(a, order)
    t = torch.from_numpy(np.ascontiguousarray(np.transpose(a, _torch_axes(canon)))).to(dtype)
    return t, canon


def torch_to_matlab(t: torch.Tensor, canon: str) -> np.ndarray:
    """Inverse of :func:`matlab_to_torch` for a canonical format: torch layout -> MATLAB dimension order."""
    inv = np.argsort(_torch_axes(canon))
    return np.transpose(t.detach().cpu().numpy(), inv)


def matlab_size(shape, canon: str) -> str:
    """A torch-layout shape of an array in canonical format ``canon`` as MATLAB writes its size: '2x4'."""
    inv = np.argsort(_torch_axes(canon))
    return "x".join(str(int(shape[i])) for i in inv)


def flatten_column_major(x: torch.Tensor, canon: str) -> torch.Tensor:
    """(B, C, S1..Sk) -> (B, S1*..*Sk*C) in MATLAB's column-major order over S1..Sk, C (S1 fastest).

    This is what flattenLayer does with spatial input, H x W x C x N -> (H*W*C) x N, a reshape of
    MATLAB's column-major storage (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.flattenlayer.html),
    and what fullyConnectedLayer does before its product
    (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.fullyconnectedlayer.html).
    """
    if "T" in canon or n_spatial(canon) == 0:
        return x
    k = n_spatial(canon)
    # Row-major flatten of (B, C, Sk, ..., S1) makes S1 the fastest index, then S2, ..., then C.
    return x.permute(0, 1, *range(k + 1, 1, -1)).reshape(x.shape[0], -1)


def matlab_dim_to_torch(dim: int, canon: str) -> int:
    """A 1-based MATLAB dimension of an array in canonical format -> the torch dimension."""
    if not 1 <= dim <= len(canon):
        raise InvalidInputError(f"dimension {dim} does not exist in format {canon!r}")
    return _torch_axes(canon).index(dim - 1)


def column_major(flat: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``reshape(Value(:), shape)`` in MATLAB: a column-major flat vector -> an array with MATLAB subscripts."""
    if len(shape) <= 1:
        return flat.reshape(shape)
    return flat.reshape(tuple(reversed(shape))).permute(*range(len(shape) - 1, -1, -1))


def index_map(entries) -> dict:
    """Row of every flat result -> (Layer, Parameter, 1-based linear index into ``Value``).

    ``entries``: ``(layer, parameter, numel)`` per Learnables row, in table order."""
    layer, parameter, index = [], [], []
    for name, par, n in entries:
        layer += [name] * n
        parameter += [par] * n
        index += list(range(1, n + 1))
    return {"layer": layer, "parameter": parameter, "index": index}
