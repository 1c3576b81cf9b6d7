"""Lazy access to the MATLAB Engine API for Python (``matlabengine``, an optional extra).

``matlabengine`` builds against a local MATLAB install and cannot be installed without one, so it is
imported only when a session actually starts or connects, with an error that says so when it is missing.
"""

from __future__ import annotations

from hessian_core.errors import HessianCoreError, InvalidInputError


class MatlabNotAvailableError(HessianCoreError, ImportError):
    """The MATLAB Engine API for Python cannot be imported."""


class MatlabCallError(HessianCoreError, RuntimeError):
    """A MATLAB statement run by the bridge failed; the message carries MATLAB's."""


def import_engine():
    """``matlab.engine``, or a clear error when it is not installed."""
    try:
        import matlab.engine
    except ImportError as e:
        raise MatlabNotAvailableError(
            "the MATLAB Engine API for Python (module matlab.engine) is not available: "
            "pip install hessiancore[matlab] needs a MATLAB install (matlabengine builds against it; pick the "
            "matlabengine version of your MATLAB release). Alternatively pass MatlabSession(engine=...) or "
            f"engine_factory=... (e.g. the Octave-backed engine). ({e})"
        ) from e
    return matlab.engine


def start(option: str = "-nodesktop"):
    """A new MATLAB process (``matlab.engine.start_matlab``)."""
    return import_engine().start_matlab(option)


def connect(name: str | bool | None = None):
    """Connect to a shared MATLAB session (``matlab.engine.shareEngine`` in MATLAB).

    ``name``: a session name, or ``True``/``None`` for the first shared session (MATLAB's own rule is to
    start one when none is shared)."""
    me = import_engine()
    if name is None or name is True:
        return me.connect_matlab()
    if not isinstance(name, str):
        raise InvalidInputError(f"connect must be a session name (str) or True, got {type(name).__name__}")
    try:
        return me.connect_matlab(name)
    except me.EngineError as e:
        shared = list(me.find_matlab())
        raise InvalidInputError(
            f"no shared MATLAB session named {name!r} (shared sessions: {shared or 'none'}); run "
            f"matlab.engine.shareEngine('{name}') in MATLAB first"
        ) from e
