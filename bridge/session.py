"""``MatlabSession``: drive MATLAB from Python through the Engine API (or any engine with its interface).

Tables and dlarrays cannot cross the Engine, so everything moves as plain values:

* pull a network: ``eval("hcSpec__ = dlnetworkToSpec(net);")`` then ``workspace['hcSpec__']`` (a dict);
* pull data: ``double(gather(extractdata(X)))`` and ``dims(X)`` for a dlarray (plain arrays as they are);
  a cell array of minibatches element by element (``X{i}``);
* push learnables: ``workspace['hcValues__'] = [matlab.double, ...]`` (a Python list becomes a cell) then
  ``eval("net = updateLearnables(net, hcValues__);")``.

Only ``eng.eval(code, nargout=0)`` and ``eng.workspace[...]`` are used, so an injected engine (e.g. the
Octave-backed one) needs nothing else. Workspace temporaries are named ``hc*__`` and cleared afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from hessian_core.errors import InvalidInputError

from . import api
from .engine import MatlabCallError
from .spec import to_array, to_str

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")


def check_variable_name(name: str, what: str) -> str:
    """``name`` if it is a valid MATLAB variable name (letter first, at most 63 characters), else an error."""
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise InvalidInputError(f"{what} must be a MATLAB variable name, got {name!r}")
    return name


def to_matlab_double(a: np.ndarray):
    """numpy (MATLAB shape) -> ``matlab.double`` from the column-major data and the size (works on every
    Engine release, unlike passing buffers)."""
    try:
        from matlab import double
    except ImportError:
        # No Engine API: our own matlab/ folder of .m files can make `matlab` importable as an empty
        # namespace package when running from the repository root.
        return to_numpy_array(a)

    a = _at_least_2d(a)
    return double(a.reshape(-1, order="F").tolist(), size=tuple(int(s) for s in a.shape))


def to_numpy_array(a: np.ndarray) -> np.ndarray:
    """numpy (MATLAB shape) as a Fortran-ordered float64 array, for engines that take numpy (Octave's)."""
    return np.asfortranarray(_at_least_2d(a))


def _at_least_2d(a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape((-1, 1)) if a.ndim < 2 else a


def default_array_converter(engine) -> Callable:
    """``matlab.double`` for the MATLAB Engine (its objects come from the ``matlab`` package), numpy otherwise."""
    return to_matlab_double if type(engine).__module__.split(".")[0] == "matlab" else to_numpy_array


class MatlabSession:
    """A MATLAB workspace to pull dlnetworks and data from and push updated learnables to.

    Args:
        engine: an engine object (``matlab.engine.MatlabEngine`` or one with ``eval(code, nargout=0)``
            and ``workspace[...]``).
        engine_factory: called once, lazily, to make the engine (e.g. the Octave-backed engine).
        connect: connect to a shared MATLAB session (a name, or ``True`` for the first one) instead of
            starting a new MATLAB; without engine/factory/connect a new MATLAB is started on first use.
        array_converter: numpy (MATLAB shape) -> engine array for pushes (default: ``matlab.double`` for the
            MATLAB Engine, numpy for other engines; :func:`default_array_converter`).
    """

    def __init__(self, engine=None, engine_factory: Callable | None = None, connect=None, *,
                 array_converter: Callable | None = None):
        if engine is not None and engine_factory is not None:
            raise InvalidInputError("give engine or engine_factory, not both")
        self._engine = engine
        self._factory = engine_factory
        self._connect = connect
        self._converter = array_converter
        self._owned = False  # True when this session made the engine (and so may quit it)

    # -- engine --------------------------------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            if self._factory is not None:
                self._engine = self._factory()
            else:
                from . import engine as _engine

                self._engine = _engine.connect(self._connect) if self._connect else _engine.start()
            self._owned = not self._connect
        return self._engine

    def close(self) -> None:
        """Quit the engine if this session made it (an injected or connected one is left running)."""
        if self._owned and self._engine is not None and hasattr(self._engine, "quit"):
            self._engine.quit()
        if self._owned:
            self._engine = None
        self._owned = False

    def eval(self, code: str) -> None:
        """Run MATLAB code; a MATLAB error becomes :class:`~bridge.engine.MatlabCallError`."""
        try:
            self.engine.eval(code, nargout=0)
        except Exception as e:  # noqa: BLE001 - engine-specific error types (MatlabExecutionError, ...)
            raise MatlabCallError(f"MATLAB failed running `{code}`: {type(e).__name__}: {e}") from e

    def get(self, name: str):
        try:
            return self.engine.workspace[name]
        except NameError as e:
            raise InvalidInputError(f"the MATLAB workspace has no variable '{name}'") from e

    def _clear(self, *names: str) -> None:
        self.eval("clear(" + ", ".join(f"'{n}'" for n in names) + ");")

    # -- pulling -------------------------------------------------------------------------------------
    def pull_spec(self, net: str = "net") -> dict:
        """The network spec of the dlnetwork in workspace variable ``net`` (``dlnetworkToSpec``)."""
        check_variable_name(net, "net")
        self.eval(f"hcSpec__ = dlnetworkToSpec({net});")
        try:
            return self.get("hcSpec__")
        finally:
            self._clear("hcSpec__")

    def pull_data(self, name: str) -> tuple:
        """``(data, format)`` of workspace variable ``name``: a dlarray (its data in dlarray order and
        ``dims``), a plain array (format ''), or a cell array of minibatches (a list of arrays, one format)."""
        check_variable_name(name, "data variable")
        self.eval(f"hcIsCell__ = iscell({name});")
        try:
            if not bool(self.get("hcIsCell__")):
                return self._pull_one(name)
            self.eval(f"hcN__ = numel({name});")
            n = int(self.get("hcN__"))
            parts = [self._pull_one(f"{name}{{{i}}}") for i in range(1, n + 1)]
        finally:
            self._clear("hcIsCell__", "hcN__", "hcData__", "hcFmt__", "hcIsDl__")
        fmts = {f for _, f in parts}
        if len(fmts) > 1:
            raise InvalidInputError(f"the minibatches in '{name}' have different formats {sorted(fmts)}")
        return [d for d, _ in parts], fmts.pop() if fmts else ""

    def _pull_one(self, expr: str) -> tuple[np.ndarray, str]:
        self.eval(f"hcIsDl__ = isa({expr}, 'dlarray');")
        if bool(self.get("hcIsDl__")):
            self.eval(f"hcData__ = double(gather(extractdata({expr})));")
            self.eval(f"hcFmt__ = dims({expr});")
            fmt = self.get("hcFmt__")
            fmt = to_str(fmt, f"dims({expr})") if fmt not in (None, [], "") else ""
        else:
            self.eval(f"hcData__ = double(gather({expr}));")
            fmt = ""
        return to_array(self.get("hcData__"), expr), fmt

    # -- pushing -------------------------------------------------------------------------------------
    def push_learnables(self, values: list, net: str = "net") -> None:
        """Set the dlnetwork's Learnables values (one array per row, MATLAB shapes) with ``updateLearnables``."""
        check_variable_name(net, "net")
        convert = self._converter or default_array_converter(self.engine)
        self.engine.workspace["hcValues__"] = [convert(np.asarray(v, dtype=np.float64)) for v in values]
        try:
            self.eval(f"{net} = updateLearnables({net}, hcValues__);")
        finally:
            self._clear("hcValues__")

    # -- computing -----------------------------------------------------------------------------------
    def _inputs(self, net, X, T, opts):
        spec = self.pull_spec(net)
        x, xf = self.pull_data(X)
        t, tf = self.pull_data(T)
        for key, got, var in (("x_format", xf, X), ("t_format", tf, T)):
            given = opts.get(key)
            if given and got and given.upper() != got.upper():
                raise InvalidInputError(f"{key}={given!r} but '{var}' is a dlarray with format {got!r}")
            if got and not given:
                opts[key] = got
        if not opts.get("x_format"):
            raise InvalidInputError(f"'{X}' is not a formatted dlarray: pass x_format= (e.g. 'CB', 'SSCB', 'CBT')")
        return spec, x, t, opts

    def _run(self, fn, net, X, T, *args, **opts):
        spec, x, t, opts = self._inputs(net, X, T, dict(opts))
        return fn(spec, x, t, *args, **opts)

    def hessian(self, net="net", X="X", T="T", **opts):
        return self._run(api.hessian, net, X, T, **opts)

    def hvp(self, v, net="net", X="X", T="T", **opts):
        return self._run(api.hvp, net, X, T, v, **opts)

    def diagonal(self, net="net", X="X", T="T", **opts):
        return self._run(api.diagonal, net, X, T, **opts)

    def blocks(self, net="net", X="X", T="T", **opts):
        return self._run(api.blocks, net, X, T, **opts)

    def eigs(self, net="net", X="X", T="T", k=6, which="LA", **opts):
        return self._run(api.eigs, net, X, T, k, which, **opts)

    def trace(self, net="net", X="X", T="T", num_matvecs=100, method="hutch++", seed=None, **opts):
        return self._run(api.trace, net, X, T, num_matvecs, method, seed, **opts)

    def loss_value(self, net="net", X="X", T="T", **opts):
        return self._run(api.loss_value, net, X, T, **opts)

    def index_map(self, net="net"):
        return api.index_map(self.pull_spec(net))

    def newton_update(self, net="net", X="X", T="T", damping=1e-3, lr=1.0, push=True, **opts) -> dict:
        """One damped Newton step on the workspace network; with ``push`` the new Learnables are written
        back into ``net`` in the MATLAB workspace (nothing else in the network changes)."""
        result = self._run(api.newton_update, net, X, T, damping, lr, **opts)
        if push:
            self.push_learnables(result["values"], net)
        return result
