"""A fake ``matlab`` package for tests (the real one needs a MATLAB install), faithful where the bridge cares.

Array types (``matlab.double``, ``matlab.single``, ``matlab.int64``, ``matlab.logical`` ...) as in
mathworks/matlab-engine-for-python: ``matlab.double(initializer=None, size=None, is_complex=False)``; a
nested-sequence initializer is read row by row (``[[1, 2, 3], [4, 5, 6]]`` is 2 x 3), a flat initializer
with ``size`` is read COLUMN-MAJOR; ``.size`` is the MATLAB size tuple (trailing singleton dimensions past
the second dropped, as MATLAB does); ``_data`` is the flat column-major ``array.array``; ``noncomplex()``
returns it; ``toarray()`` a copy of it; ``A[i][j]`` subscripts; ``np.asarray(A)`` works (R2022a+ behaviour).
``matlab.object`` is an opaque MATLAB object handle (dlnetwork, dlarray).
"""

from __future__ import annotations

import array as _array

import numpy as _np

__all__ = ["double", "single", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "logical", "object"]


def _msize(shape) -> tuple:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return (1, 1)
    if len(shape) == 1:
        return (1, shape[0])
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


class _MLArray:
    _typecode = "d"
    _npdtype = _np.float64

    def __init__(self, initializer=None, size=None, is_complex=False):
        if is_complex:
            raise TypeError("complex arrays are not supported by this fake")
        if initializer is None:
            flat = _np.zeros(int(_np.prod(size)) if size is not None else 0)
            shape = tuple(size) if size is not None else (0, 0)
        else:
            a = _np.asarray(initializer, dtype=self._npdtype)
            if size is not None:
                if a.size != int(_np.prod(size)):
                    raise ValueError("initializer must have the number of elements given by size")
                flat, shape = a.reshape(-1), tuple(size)  # flat initializer + size: column-major
            else:
                flat, shape = a.reshape(-1, order="F"), _msize(a.shape)
        self._size = _msize(shape)
        self._data = _array.array(self._typecode, _np.asarray(flat, dtype=self._npdtype).tolist())

    @property
    def size(self) -> tuple:
        return self._size

    def _nd(self) -> _np.ndarray:
        return _np.asarray(self._data, dtype=self._npdtype).reshape(self._size, order="F")

    def noncomplex(self):
        return self._data

    def toarray(self):
        return _array.array(self._typecode, self._data)

    def __array__(self, dtype=None, copy=None):
        a = self._nd()
        return a if dtype is None else a.astype(dtype)

    def __len__(self):
        return self._size[0]

    def __getitem__(self, i):
        nd = self._nd()
        if nd.ndim == 2 and nd.shape[0] == 1 and isinstance(i, int) and i != 0:
            raise IndexError("index out of range")
        return nd[i].tolist()

    def __eq__(self, other):
        return isinstance(other, _MLArray) and other._size == self._size and list(other._data) == list(self._data)

    def __repr__(self):
        return f"matlab.{type(self).__name__}({self._nd().tolist()}, size={self._size})"


class double(_MLArray):  # noqa: N801 - MATLAB's names
    _typecode, _npdtype = "d", _np.float64


class single(_MLArray):  # noqa: N801
    _typecode, _npdtype = "f", _np.float32


class int8(_MLArray):  # noqa: N801
    _typecode, _npdtype = "b", _np.int8


class int16(_MLArray):  # noqa: N801
    _typecode, _npdtype = "h", _np.int16


class int32(_MLArray):  # noqa: N801
    _typecode, _npdtype = "i", _np.int32


class int64(_MLArray):  # noqa: N801
    _typecode, _npdtype = "q", _np.int64


class uint8(_MLArray):  # noqa: N801
    _typecode, _npdtype = "B", _np.uint8


class uint16(_MLArray):  # noqa: N801
    _typecode, _npdtype = "H", _np.uint16


class uint32(_MLArray):  # noqa: N801
    _typecode, _npdtype = "I", _np.uint32


class uint64(_MLArray):  # noqa: N801
    _typecode, _npdtype = "Q", _np.uint64


class logical(_MLArray):  # noqa: N801
    _typecode, _npdtype = "b", _np.bool_

    def __init__(self, initializer=None, size=None, is_complex=False):
        super().__init__(initializer, size, is_complex)
        self._data = _array.array("b", [int(bool(v)) for v in self._data])


class object:  # noqa: N801 - an opaque handle to a MATLAB object, as matlab.object
    def __init__(self, handle):
        self._handle = handle

    def __repr__(self):
        return f"<matlab.object {type(self._handle).__name__}>"
