"""Request decoding and response encoding of the ``.mat`` protocol (format ``hessiancore.request/1``).

A request, as MATLAB's ``hcRequest`` writes it (one ``-v7`` file, one variable per field):

============  =============================================================================
Format        ``'hessiancore.request/1'``
Function      name of the :mod:`bridge.api` entry point (``'hessian'``, ``'eigs'``, ...)
Spec          the network spec (``dlnetworkToSpec``)
X, T          1xM cells of numeric arrays (minibatches)
Multi         true when the user gave cell arrays (the API then receives lists)
Args          1xA cell of positional arguments after ``T`` (e.g. ``v`` of ``hvp``)
Options       struct of keyword arguments (``x_format``, ``loss``, ``k``, ...)
Sizes         struct ``X``, ``T``, ``Args``, ``Learnables``, ``State``: the full MATLAB size of every
              array above, because ``loadmat(..., simplify_cells=True)`` squeezes singleton dimensions
              (a bias ``4x1`` arrives as ``(4,)``, a batch of one ``3x1`` as ``(3,)``) and turns 1x1 cells
              into their content
============  =============================================================================

A response has ``Ok`` (logical), ``Result`` (the API's return value, see :func:`encode`) and ``Error``
(``Identifier``, ``Message``, ``Type``, ``Traceback``; MATLAB raises ``error(Identifier, Message)``).
"""

from __future__ import annotations

import traceback

import numpy as np

from ..entrypoints import API_FUNCTIONS as FUNCTIONS
from ..identifiers import RequestError, error_identifier, matlab_error

REQUEST_FORMAT = "hessiancore.request/1"
#: Integral doubles up to this size become Python ints (beyond it a float stays a float: 1e300 is no count).
_EXACT_INT = 2 ** 53


def cells(value) -> list:
    """A MATLAB cell as ``loadmat(simplify_cells=True)`` returns it -> list (a 1x1 cell arrives as its content)."""
    if isinstance(value, list):
        return value
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.reshape(-1, order="F"))
    return [value]


def _shape(size) -> tuple[int, ...]:
    return tuple(int(s) for s in np.atleast_1d(np.asarray(size, dtype=np.float64)))


def restore(value, size, where: str):
    """A numeric array squeezed by ``loadmat`` back to its MATLAB ``size`` (only singleton dims differ)."""
    shape = _shape(size)
    a = np.asarray(value)
    if a.dtype == bool:
        a = a.astype(np.float64)
    if a.size != int(np.prod(shape)):
        raise RequestError(f"{where}: {a.size} values arrived for MATLAB size {list(shape)}")
    # Squeezing removed singleton dimensions only, so a plain reshape re-inserts them in place.
    return a.reshape(shape)


def _restore_all(values, sizes, where: str) -> list:
    values, sizes = cells(values), cells(sizes)
    if len(values) == 1 and len(sizes) > 1 and np.asarray(sizes[0]).ndim == 0:
        sizes = [np.asarray(sizes)]  # one size vector read as a list of numbers
    if len(values) != len(sizes):
        raise RequestError(f"{where}: {len(values)} arrays but {len(sizes)} sizes")
    return [restore(v, s, f"{where}{{{i + 1}}}") for i, (v, s) in enumerate(zip(values, sizes))]


def _empty(value) -> bool:
    return value is None or (isinstance(value, (str, dict, list)) and len(value) == 0) or (
        isinstance(value, np.ndarray) and value.size == 0)


def _option(value):
    """A keyword argument as Python wants it: '' / [] -> None, integral floats (up to 2^53) -> int, 1-element
    arrays -> scalar."""
    if _empty(value):
        return None
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype != object:
        value = value.reshape(-1)[0]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def decode(raw: dict) -> tuple[str, tuple, dict]:
    """A loaded request -> ``(function name, positional args, keyword args)`` for :mod:`bridge.api`."""
    fmt = raw.get("Format")
    if fmt != REQUEST_FORMAT:
        raise RequestError(f"request Format is {fmt!r}, expected {REQUEST_FORMAT!r}: "
                           "the MATLAB toolbox and the Python bridge have different versions")
    name = raw.get("Function")
    if name not in FUNCTIONS:
        raise RequestError(f"request Function {name!r} is not one of {list(FUNCTIONS)}")
    sizes = raw.get("Sizes") or {}
    spec = dict(raw["Spec"])
    for table in ("Learnables", "State"):
        if isinstance(spec.get(table), dict) and not _empty(spec[table].get("Value")):
            rows = dict(spec[table])
            rows["Value"] = _restore_all(rows["Value"], sizes.get(table), f"Spec.{table}.Value")
            rows["Layer"], rows["Parameter"] = cells(rows["Layer"]), cells(rows["Parameter"])
            spec[table] = rows
    if not isinstance(spec.get("Layers"), list):
        spec["Layers"] = cells(spec.get("Layers"))
    X = _restore_all(raw["X"], sizes.get("X"), "X")
    T = _restore_all(raw["T"], sizes.get("T"), "T")
    if not bool(np.asarray(raw.get("Multi", False))):
        X, T = X[0], T[0]
    args = _restore_all(raw.get("Args"), sizes.get("Args"), "Args") if not _empty(raw.get("Args")) else []
    options = {k: _option(v) for k, v in (raw.get("Options") or {}).items()}
    options = {k: v for k, v in options.items() if v is not None}
    if name in ("index_map",):
        return name, (spec,), {}
    if name == "predict":
        return name, (spec, X), {k: v for k, v in options.items() if k in ("x_format", "dtype")}
    return name, (spec, X, T, *args), options


def encode(value):
    """A Python result -> values ``scipy.io.savemat`` writes as MATLAB expects them.

    Arrays become float64 (torch tensors included; 1-D -> column), lists/tuples 1xN cells, dicts structs,
    None ``[]``, bools logical, numbers double, strings char.
    """
    if value is None:
        return np.zeros((0, 0))
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        out = np.empty((1, len(value)), dtype=object)
        for i, v in enumerate(value):
            out[0, i] = encode(v)
        return out
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, np.number)):
        return float(value)
    a = np.asarray(value)
    if a.dtype.kind in "biuf":
        a = a.astype(np.float64)
        return a.reshape(-1, 1) if a.ndim == 1 else a
    if a.dtype.kind == "U":
        return encode(a.tolist())
    raise TypeError(f"cannot send a {type(value).__name__} to MATLAB")


def error_response(exc: BaseException, function: str | None = None) -> dict:
    """The response for a failed call: MATLAB identifier and message from :mod:`bridge.identifiers`."""
    ident, message = matlab_error(exc, function)
    return {"Ok": False, "Result": np.zeros((0, 0)),
            "Error": {"Identifier": ident, "Message": message, "Type": type(exc).__name__,
                      "Traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}}


def ok_response(result) -> dict:
    return {"Ok": True, "Result": encode(result),
            "Error": {"Identifier": "", "Message": "", "Type": "", "Traceback": ""}}


__all__ = ["REQUEST_FORMAT", "FUNCTIONS", "RequestError", "decode", "encode", "restore", "cells", "error_identifier",
           "error_response", "ok_response"]
