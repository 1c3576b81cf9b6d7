"""Data contract: one ``(inputs, targets)`` batch, or an iterable of them (list, DataLoader...).

``inputs`` is a tensor (the model is called as ``model(inputs)``) or a tuple/list of tensors
(``model(*inputs)``). ``targets`` is a tensor. Floating tensors are cast to the parameters' dtype and
everything is moved to their device; the caller's tensors are never modified.

Determinism contract: curvature operators pass over the data many times (once per product), so every
pass must present the same data. A fixed list of tensor pairs always does (and when the caller changes
those tensors in place, the next product sees the new values). Any other iterable (a ``DataLoader``, a
generator materialized once is fixed) is fingerprinted on every pass by :class:`PassFingerprints`; a pass
that differs from the first (``shuffle=True`` with ``drop_last=True``, random augmentation, a changing
number of batches) raises :class:`~hessian_core.errors.InvalidInputError` saying what changed.
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
        if isinstance(data, Batches):
            self._source, self.fixed = data._source, data.fixed
            return
        if data is None:
            raise InvalidInputError("data is None; pass (inputs, targets) or an iterable of such pairs")
        if _is_array(data) or (isinstance(data, (tuple, list)) and len(data) == 2
                               and (_is_array(data[0]) or _is_array(data[1]))):
            raise InvalidInputError(
                "data holds numpy arrays; pass torch tensors, e.g. (torch.from_numpy(X), torch.from_numpy(y))")
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

        #: True when every pass yields the same tensors by construction (no fingerprints needed)
        self.fixed = isinstance(self._source, (list, tuple)) and all(is_single_batch(b) for b in self._source)

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


class ConvertedBatches:
    """The batches of fixed data on the parameters' device and dtype, converted once: batch ``i`` is converted
    again only when its tensors were replaced or changed (identity, storage and version; for a converted
    copy also the values, since a write through ``.data`` bumps no version), so every pass sees the same
    tensors (a float32 batch fed to a float64 model is not copied on every product, and work kept for it,
    such as a graph, stays valid)."""

    def __init__(self):
        self._kept: dict[int, tuple] = {}

    def get(self, index: int, x, y, device: torch.device, dtype: torch.dtype):
        key = (id(x), id(y), tensor_versions(x), tensor_versions(y))
        kept = self._kept.get(index)
        if kept is not None and kept[0] == key and _same_values(kept[3], x) and _same_values(kept[4], y):
            return kept[1], kept[2]
        cx, cy = to_device(x, device, dtype), to_device(y, device, dtype)
        # the sources too (their ids stay theirs while kept), and a copy of those that were converted
        self._kept[index] = (key, cx, cy, _source_copy(x, cx), _source_copy(y, cy), x, y)
        return cx, cy


def _source_copy(source, converted):
    """A copy of the tensors of ``source`` that ``converted`` does not alias (``None`` where it does: a
    tensor used as it is always holds its current values)."""
    if isinstance(source, torch.Tensor):
        return None if converted is source else source.detach().clone()
    if isinstance(source, (tuple, list)):
        return tuple(_source_copy(s, c) for s, c in zip(source, converted))
    return None


def _same_values(copy, source) -> bool:
    if copy is None:
        return True
    if isinstance(copy, torch.Tensor):
        return torch.equal(copy, source)
    return all(_same_values(c, s) for c, s in zip(copy, source))


def tensor_versions(x) -> tuple:
    """Identity, storage and in-place version of every tensor in ``x`` (a tensor or a nested tuple/list):
    equal fingerprints mean no tensor was replaced or changed in place in between."""
    if isinstance(x, torch.Tensor):
        return ((id(x), 0 if x.is_meta else x.data_ptr(), x._version),)
    if isinstance(x, (tuple, list)):
        return tuple(v for t in x for v in tensor_versions(t))
    return ()


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


def _is_array(x) -> bool:
    return type(x).__module__ == "numpy" and type(x).__name__ == "ndarray"


def _tensors(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _tensors(item)]
    if isinstance(x, dict):
        return [t for item in x.values() for t in _tensors(item)]
    return []


class PassFingerprints:
    """Fingerprints of the data seen in one pass, compared with those of the first complete pass.

    Per sample ``n`` and data tensor ``t`` (inputs and targets, split along dim 0), ``f_n = w . t_n`` with a
    fixed pseudo-random ``w`` of the sample's shape (sensitive to any change of values or positions inside
    a sample, e.g. a random flip). ``order_free=True`` (eval mode: the objective is a sum over samples)
    compares over the whole pass ``sum_n f_n``, ``sum_n f_n^2`` and the pairing ``sum_n f_n g_n`` of inputs
    and targets, so any batching or order of the same samples passes; ``order_free=False`` (train mode:
    batch statistics couple the samples of a batch) compares every batch in order.
    """

    def __init__(self, order_free: bool):
        self.order_free = order_free
        self.first: list | None = None
        self._current: list = []
        self._weights: dict = {}

    def start(self) -> None:
        self._current = []

    def add(self, index: int, inputs, targets) -> None:
        feats = [self._features(t) for t in _tensors(inputs) + _tensors(targets)]
        n = {f.shape[0] for f in feats}
        row = [float(len(feats))]
        for f in feats:
            row += [float(f.sum()), float(f.square().sum()), float(f.abs().sum())]
        if len(n) == 1 and len(feats) > 1:
            row.append(float((feats[0] * feats[-1]).sum()))
        shapes = tuple(tuple(t.shape[1:]) for t in _tensors(inputs) + _tensors(targets))
        if self.first is not None and not self.order_free:
            self._compare_batch(index, shapes, row)
        self._current.append((shapes, row))

    def finish(self) -> None:
        """End of a complete pass: record it (first pass) or compare it with the first."""
        if self.first is None:
            self.first = self._current
            return
        if len(self._current) != len(self.first) and not self.order_free:
            raise self._error(f"this pass yielded {len(self._current)} batches, the first {len(self.first)}")
        if self.order_free:
            now, then = _totals(self._current), _totals(self.first)
            if now.keys() != then.keys() or not all(_close(now[k], then[k]) for k in now):
                raise self._error("the samples differ from those of the first pass")

    def _compare_batch(self, index: int, shapes, row) -> None:
        if index >= len(self.first):
            raise self._error(f"batch {index} did not exist in the first pass ({len(self.first)} batches)")
        shapes0, row0 = self.first[index]
        if shapes0 != shapes or not _close(row, row0):
            raise self._error(f"batch {index} differs from batch {index} of the first pass")

    def _features(self, t: torch.Tensor) -> torch.Tensor:
        x = t.detach()
        if x.dim() == 0:
            x = x.reshape(1)
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        key = (x.shape[1], x.device)
        w = self._weights.get(key)
        if w is None:
            gen = torch.Generator(device="cpu").manual_seed(12345 + x.shape[1])
            w = torch.rand(x.shape[1], generator=gen, dtype=torch.float64).add_(0.5).to(x.device)
            self._weights[key] = w
        return x @ w

    @staticmethod
    def _error(what: str) -> InvalidInputError:
        return InvalidInputError(
            f"the data changed between two passes over it ({what}). Curvature operators pass over the data "
            "once per product and need the same samples every time: use a DataLoader with shuffle=False (or "
            "drop_last=False), no random augmentation, or a fixed list of (inputs, targets) batches. If you "
            "changed the data on purpose, build a new operator."
        )


def _totals(passes) -> dict:
    """Rows summed per sample shape (batches of sequences of different lengths are totalled apart)."""
    out: dict = {}
    for shapes, row in passes:
        key = (shapes, len(row))
        out[key] = [x + y for x, y in zip(out[key], row)] if key in out else list(row)
    return out


def _close(a, b) -> bool:
    if len(a) != len(b):
        return False
    scale = max((abs(x) for x in a), default=0.0) + max((abs(x) for x in b), default=0.0)
    return all(abs(x - y) <= 1e-9 * scale for x, y in zip(a, b))
