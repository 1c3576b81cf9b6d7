"""A fake ``matlab.engine`` for tests, mirroring mathworks/matlab-engine-for-python's behaviour:

* ``start_matlab(option="-nodesktop", background=False)``, ``find_matlab()``, ``connect_matlab(name=None,
  background=False)`` (``EngineError`` for an unknown name; no name and no shared session starts one);
* ``eng.<fn>(*args, nargout=1, background=False, stdout=None, stderr=None)``: any other keyword argument is
  a ``TypeError`` (name-value pairs must be passed positionally); ``nargout`` must be an int >= 0;
* ``eng.eval(code, nargout=0)``, ``eng.workspace[name]`` get (``NameError`` if missing) / set (assignin base);
* conversions Python -> MATLAB: float -> double, int -> int64 (!), bool -> logical, str -> char,
  dict -> struct, list/tuple -> cell, matlab arrays and buffers (numpy) -> numeric arrays, None -> TypeError;
  MATLAB -> Python: scalar double/single -> float, scalar int -> int, scalar logical -> bool, char -> str,
  struct -> dict, cell vector -> list, other numeric -> matlab.double/single/int64/logical, objects ->
  ``matlab.object``;
* errors in MATLAB code raise ``MatlabExecutionError``; a terminated engine ``RejectedExecutionError``.

Tests reach the fake process through ``eng._process`` (a :class:`_backend.FakeMatlab`) to set up objects.
"""

from __future__ import annotations

import io

import numpy as np

import matlab

from . import _backend
from ._backend import Dlarray, Dlnetwork, FakeMatlab, MArray, MatlabError, MCell


class MatlabExecutionError(Exception):
    pass


class RejectedExecutionError(Exception):
    pass


class EngineError(Exception):
    pass


class CancelledError(Exception):
    pass


class InterruptedError(Exception):  # noqa: A001 - the real package defines this name
    pass


class TimeoutError(Exception):  # noqa: A001
    pass


_SHARED: dict[str, FakeMatlab] = {}


def share_engine(name: str, process: FakeMatlab | None = None) -> FakeMatlab:
    """Test helper: what ``matlab.engine.shareEngine(name)`` does in a running MATLAB."""
    _SHARED[name] = process or FakeMatlab()
    return _SHARED[name]


def start_matlab(option="-nodesktop", background=False):
    eng = MatlabEngine(FakeMatlab())
    return FutureResult(eng) if background else eng


def find_matlab():
    return tuple(_SHARED)


def connect_matlab(name=None, background=False):
    if name is None:
        process = next(iter(_SHARED.values()), None) or FakeMatlab()
    elif name in _SHARED:
        process = _SHARED[name]
    else:
        raise EngineError(f"Unable to connect to MATLAB session '{name}'.")
    eng = MatlabEngine(process)
    return FutureResult(eng) if background else eng


class FutureResult:
    def __init__(self, value):
        self._value = value

    def result(self, timeout=None):
        return self._value

    def done(self):
        return True

    def cancel(self):
        return False


# -- conversions -------------------------------------------------------------------------------------
def _to_matlab(v):
    if isinstance(v, matlab.object):
        return v._handle
    if isinstance(v, bool):
        return MArray(np.array(v), "logical")
    if isinstance(v, int):
        return MArray(np.array(v, dtype=np.int64), "int64")
    if isinstance(v, float):
        return MArray(np.array(v))
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return {str(k): _to_matlab(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return MCell([_to_matlab(x) for x in v])
    if isinstance(v, matlab._MLArray):
        cls = type(v).__name__
        return MArray(np.asarray(v), cls)
    if isinstance(v, (np.ndarray, memoryview)):
        a = np.asarray(v)
        cls = {"f": "double" if a.dtype == np.float64 else "single", "b": "logical", "i": "int64"}.get(a.dtype.kind)
        if cls is None:
            raise TypeError(f"unsupported Python data type: numpy array of {a.dtype}")
        return MArray(a.copy(), cls)
    raise TypeError(f"unsupported Python data type: {type(v).__name__}")


_PY_TYPES = {"double": matlab.double, "single": matlab.single, "int64": matlab.int64, "logical": matlab.logical}


def _to_python(v):
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        return {k: _to_python(x) for k, x in v.items()}
    if isinstance(v, MCell):
        return [_to_python(x) for x in v.items]
    if isinstance(v, MArray):
        if v.data.size == 1:
            x = v.data.reshape(-1)[0]
            return bool(x) if v.cls == "logical" else (int(x) if v.cls.startswith(("int", "uint")) else float(x))
        kind = _PY_TYPES.get(v.cls, matlab.double)
        return kind(v.data.reshape(-1, order="F").tolist(), size=v.data.shape)
    if isinstance(v, (Dlarray, Dlnetwork)):
        return matlab.object(v)
    raise TypeError(f"unsupported MATLAB data type: {type(v).__name__}")


# -- the engine --------------------------------------------------------------------------------------
class MatlabFunc:
    def __init__(self, eng, name):
        self._engine = eng
        self._name = name

    def __call__(self, *args, **kwargs):
        eng = self._engine
        eng._validate()
        nargout = kwargs.pop("nargout", 1)
        if not isinstance(nargout, int):
            raise TypeError(f"nargout must be an int, not {type(nargout).__name__}")
        if nargout < 0:
            raise ValueError("nargout cannot be less than zero")
        for key in ("stdout", "stderr"):
            stream = kwargs.pop(key, None)
            if stream is not None and not isinstance(stream, io.StringIO):
                raise TypeError(f"{key} must be io.StringIO")
        background = kwargs.pop("background", kwargs.pop("async", False))
        if kwargs:
            raise TypeError(f"{next(iter(kwargs))!r} is an invalid keyword argument for this function")
        margs = [_to_matlab(a) for a in args]
        try:
            if self._name == "eval":
                if len(margs) != 1 or not isinstance(margs[0], str):
                    raise MatlabError("eval: the input must be a character vector")
                out = eng._process.eval(margs[0])
                if nargout:
                    raise MatlabError("eval with nargout > 0 is not supported by the fake")
            else:
                out = eng._process.call(self._name, margs, nargout)
        except MatlabError as e:
            raise MatlabExecutionError(str(e)) from None
        result = None if nargout == 0 else _to_python(out)
        return FutureResult(result) if background else result


class MatlabWorkSpace:
    def __init__(self, eng):
        self._engine = eng

    def __getitem__(self, name):
        self._engine._validate()
        if not isinstance(name, str):
            raise TypeError("variable name must be a str")
        if name not in self._engine._process.ws:
            raise NameError(f"'{name}' does not exist in the MATLAB workspace")
        return _to_python(self._engine._process.ws[name])

    def __setitem__(self, name, value):
        self._engine._validate()
        if not isinstance(name, str):
            raise TypeError("variable name must be a str")
        self._engine._process.ws[name] = _to_matlab(value)


class MatlabEngine:
    def __init__(self, process: FakeMatlab):
        self.__dict__["_process"] = process
        self.__dict__["workspace"] = MatlabWorkSpace(self)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return MatlabFunc(self, name)

    def __setattr__(self, key, value):
        raise AttributeError("attributes cannot be added to MatlabEngine")

    def _validate(self):
        if not self._process.alive:
            raise RejectedExecutionError("MATLAB has terminated")

    def exit(self):
        self._process.alive = False

    quit = exit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.exit()


__all__ = ["start_matlab", "find_matlab", "connect_matlab", "share_engine", "MatlabEngine",
           "MatlabExecutionError", "RejectedExecutionError", "EngineError", "CancelledError",
           "InterruptedError", "TimeoutError", "FutureResult", "Dlarray", "Dlnetwork", "MArray", "MCell",
           "_backend"]
