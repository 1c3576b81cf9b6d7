"""An engine with the interface of ``matlab.engine``'s ``MatlabEngine``, backed by GNU Octave (oct2py).

It lets :class:`bridge.MatlabSession` -- and anything else written against the MATLAB Engine API --
run against a real interpreter where MATLAB is not installed (tests, CI)::

    from bridge.octave_engine import start_octave
    eng = start_octave(test_doubles=True)          # Octave with matlab/ (and tests/octave/) on the path
    eng.eval("net = dlnetwork([featureInputLayer(3) fullyConnectedLayer(2)]);", nargout=0)
    spec = eng.dlnetworkToSpec(eng.workspace["net"])      # objects stay in Octave, as opaque handles
    H = eng.dlhessian(eng.workspace["net"], X, T, "DataFormat", "CB", "TargetFormat", "CB")

Interface (as ``matlab.engine``):

* ``eng.<function>(*args, nargout=1, stdout=None, stderr=None, background=False)``; name-value pairs are
  positional; ``nargout=0`` returns None, ``nargout>1`` a tuple; ``background=True`` a future with
  ``result(timeout=None)``, ``done()``, ``cancel()`` (the call itself runs at once: Octave is serial).
* ``eng.eval(code, nargout=0, stdout=None, stderr=None)``.
* ``eng.workspace[name]`` get/set in the base workspace; a missing name raises ``NameError``.
* Octave errors raise :class:`MatlabExecutionError` (the message carries Octave's).
* ``eng.quit()`` / ``eng.exit()``.

Conversions follow the Engine API where it matters to callers: a scalar struct comes back as ``dict``, a
cell vector as ``list``, char as ``str``, a 1x1 number as ``float``; other numeric arrays as numpy arrays
with MATLAB's shape (``np.asarray(matlab.double)`` gives the same on recent releases). MATLAB objects
(``dlnetwork``, ``dlarray``, tables) never cross: they stay in Octave and an opaque
:class:`OctaveObject` stands for them, which can be passed back as an argument, like ``matlab.object``.
Going in, Python lists become cells, dicts structs, numpy arrays numeric arrays.
"""

from __future__ import annotations

import io
import itertools
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class MatlabExecutionError(RuntimeError):
    """An error raised by the interpreter while running a call (``matlab.engine.MatlabExecutionError``)."""


class OctaveObject:
    """Opaque handle to an Octave/MATLAB object kept in the interpreter (like ``matlab.object``)."""

    def __init__(self, engine: OctaveEngine, var: str, cls: str):
        self._engine = engine
        self._var = var
        self.class_name = cls

    def __repr__(self) -> str:
        return f"<OctaveObject {self.class_name} at {self._var}>"


class FutureResult:
    """What ``background=True`` returns; the call already ran (Octave runs one statement at a time)."""

    def __init__(self, fn):
        try:
            self._value, self._error = fn(), None
        except Exception as e:  # noqa: BLE001 - re-raised by result()
            self._value, self._error = None, e

    def result(self, timeout=None):
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False


class Workspace:
    """``eng.workspace``: the interpreter's base workspace as a mapping."""

    def __init__(self, engine: OctaveEngine):
        self._engine = engine

    def __getitem__(self, name: str):
        eng = self._engine
        if not eng._exists(name):
            raise NameError(f"'{name}' is not a variable in the Octave workspace")
        return eng._fetch(name)

    def __setitem__(self, name: str, value) -> None:
        self._engine._store(name, value)

    def __contains__(self, name: str) -> bool:
        return self._engine._exists(name)


class OctaveEngine:
    """See the module docstring. ``octave``: an existing ``oct2py.Oct2Py`` (else one is started);
    ``paths``: folders to put on the Octave path (default: this checkout's ``matlab/``)."""

    _ids = itertools.count()

    def __init__(self, octave=None, paths=None, *, test_doubles: bool = False):
        if octave is None:
            try:
                from oct2py import Oct2Py
            except ImportError as e:
                raise ImportError("the Octave engine needs oct2py: pip install oct2py (and GNU Octave)") from e
            octave = Oct2Py()
        self._oc = octave
        self.workspace = Workspace(self)
        folders = [REPO_ROOT / "matlab"] if paths is None else [Path(p) for p in paths]
        if test_doubles:
            folders.append(REPO_ROOT / "tests" / "octave")
        for folder in folders:
            self._oc.eval(f"addpath('{_quote(os.fspath(folder))}');")

    # -- matlab.engine interface ---------------------------------------------------------------------
    def eval(self, code: str, nargout: int = 0, stdout=None, stderr=None, background: bool = False):
        if nargout not in (0, None):
            raise MatlabExecutionError("eval with nargout > 0 is not supported by the Octave engine; "
                                       "assign to a variable and read eng.workspace[...] instead")
        if background:
            return FutureResult(lambda: self.eval(code, 0, stdout, stderr))
        self._run(code, stdout)
        return None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, nargout: int = 1, stdout=None, stderr=None, background: bool = False):
            if background:
                return FutureResult(lambda: self._call(name, args, nargout, stdout))
            return self._call(name, args, nargout, stdout)

        call.__name__ = name
        return call

    def quit(self) -> None:
        self._oc.exit()

    exit = quit

    # -- machinery -----------------------------------------------------------------------------------
    def _run(self, code: str, stdout=None) -> None:
        from oct2py import Oct2PyError

        out = stdout if stdout is not None else sys.stdout
        try:
            self._oc.eval(code, nout=0, stream_handler=lambda line: out.write(line + "\n"))
        except Oct2PyError as e:
            raise MatlabExecutionError(_clean(str(e))) from e

    def _exists(self, name: str) -> bool:
        if not name.isidentifier():
            return False
        return bool(self._oc.eval(f"exist('{name}', 'var') == 1;", nout=1, stream_handler=_discard))

    def _fetch(self, expr_var: str):
        """A workspace variable as a Python value; objects stay behind an :class:`OctaveObject`."""
        is_obj = bool(self._oc.eval(f"isobject({expr_var}) || isa({expr_var}, 'dlarray');", nout=1,
                                    stream_handler=_discard))
        if is_obj:
            var = f"hcEngineObj{next(self._ids)}__"
            self._run(f"{var} = {expr_var};", io.StringIO())
            cls = self._oc.eval(f"class({var});", nout=1, stream_handler=_discard)
            return OctaveObject(self, var, str(cls))
        return _from_octave(self._oc.pull(expr_var))

    def _store(self, name: str, value) -> None:
        if isinstance(value, OctaveObject):
            self._run(f"{name} = {value._var};", io.StringIO())
        else:
            self._oc.push(name, _to_octave(value))

    def _call(self, name: str, args, nargout: int, stdout):
        n = next(self._ids)
        names = [f"hcEngineArg{n}_{i}__" for i in range(len(args))]
        outs = [f"hcEngineOut{n}_{i}__" for i in range(nargout or 0)]
        try:
            for var, arg in zip(names, args):
                self._store(var, arg)
            lhs = f"[{', '.join(outs)}] = " if outs else ""
            self._run(f"{lhs}{name}({', '.join(names)});", stdout)
            values = [self._fetch(o) for o in outs]
        finally:
            temps = names + outs
            if temps:
                self._oc.eval("clear(" + ", ".join(f"'{t}'" for t in temps) + ");", nout=0,
                              stream_handler=_discard)
        if not outs:
            return None
        return values[0] if len(values) == 1 else tuple(values)


def start_octave(test_doubles: bool = False, paths=None) -> OctaveEngine:
    """A new Octave-backed engine (``matlab.engine.start_matlab`` for Octave)."""
    return OctaveEngine(paths=paths, test_doubles=test_doubles)


def _discard(_line: str) -> None:
    pass


def _quote(s: str) -> str:
    return s.replace("'", "''")


def _clean(message: str) -> str:
    return message.replace("Octave evaluation error:\n", "").strip()


def _to_octave(value):
    import numpy as np

    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        out = np.empty((1, len(value)), dtype=object)  # oct2py sends object arrays as cells
        for i, v in enumerate(value):
            out[0, i] = _to_octave(v)
        return out
    if isinstance(value, dict):
        from oct2py import Struct

        return Struct({k: _to_octave(v) for k, v in value.items()})
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.reshape(1, -1)  # MATLAB has no 1-D arrays; the Engine makes them 1xN
    return value


def _from_octave(value):
    import numpy as np
    from oct2py import Cell, Struct

    if isinstance(value, Struct) or (isinstance(value, dict)):
        return {k: _from_octave(v) for k, v in value.items()}
    if isinstance(value, Cell) or (isinstance(value, np.ndarray) and value.dtype == object):
        return [_from_octave(v) for v in np.asarray(value, dtype=object).reshape(-1, order="F")]
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        return "".join(value.reshape(-1).tolist())
    return value
