"""Data contract: one ``(inputs, targets)`` batch, or an iterable of them (list, DataLoader...).

``inputs`` is a tensor (the model is called as ``model(inputs)``) or a tuple/list of tensors
(``model(*inputs)``). ``targets`` is a tensor. Floating tensors are cast to the parameters' dtype and
everything is moved to their device; the caller's tensors are never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from .errors import InvalidInputError


def is_single_batch(data) -> bool:
    """True for ``(inputs, targets)``: a pair whose second element is a tensor."""
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and isinstance(data[1], torch.Tensor)
        and (isinstance(data[0], torch.Tensor) or (
            isinstance(data[0], (tuple, list)) and all(isinstance(x, torch.Tensor) for x in data[0])))
    )


class Batches:
    """Re-iterable view of the data as ``(inputs, targets)`` pairs.

    A single batch becomes a one-element list; a one-shot iterator (a generator) is materialized once,
    because every curvature product passes over the data again. DataLoaders are re-iterated as they are.
    """

    def __init__(self, data):
        if data is None:
            raise InvalidInputError("data is None; pass (inputs, targets) or an iterable of such pairs")
        if is_single_batch(data):
            self._source = [tuple(data)]
        elif isinstance(data, torch.Tensor):
            raise InvalidInputError(
                "data is a single tensor; pass (inputs, targets), or a list/DataLoader of such pairs"
            )
        elif isinstance(data, Iterable):
            self._source = list(data) if isinstance(data, Iterator) else data
        else:
            raise InvalidInputError(
                f"data of type {type(data).__name__} is neither an (inputs, targets) pair nor an iterable of them"
            )

    def __iter__(self) -> Iterator[tuple]:
        n = 0
        for i, batch in enumerate(self._source):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise InvalidInputError(
                    f"batch {i} is a {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                    + "; each batch must be an (inputs, targets) pair"
                )
            n += 1
            yield batch[0], batch[1]
        if n == 0:
            raise InvalidInputError("data is empty: the loader yielded no batch")

    def __len__(self) -> int:
        return len(self._source)  # TypeError for sources without a length, as for any iterable

    @property
    def length(self) -> int | None:
        """Number of batches, or ``None`` for a source without a length (an IterableDataset loader)."""
        try:
            return len(self._source)
        except TypeError:
            return None


def to_device(x, device: torch.device, dtype: torch.dtype):
    """Move (and cast, if floating) a tensor or a tuple/list of tensors; non-tensors pass through."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point():
            return x.to(device=device, dtype=dtype)
        return x.to(device=device)
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(t, device, dtype) for t in x)
    return x


def leading_dim(x) -> int:
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            raise InvalidInputError("cannot count samples in a 0-d tensor; give count_fn=")
        return int(x.shape[0])
    if isinstance(x, (tuple, list)) and x:
        return leading_dim(x[0])
    raise InvalidInputError(f"cannot count samples in {type(x).__name__}; give count_fn=")


def shape_str(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(shape_str(t) for t in x) + ")"
    return type(x).__name__
