"""Argument validation shared by every entry point, operator, spectral routine and optimizer.

Each check returns the value it accepted (converted where that is lossless, e.g. a numpy integer to
``int``) or raises :class:`~hessian_core.errors.InvalidInputError` naming the argument, what it must be and
what was given. Booleans are never accepted as numbers (``True`` is not a count or a damping).
"""

from __future__ import annotations

import math
import numbers

from .errors import InvalidInputError


def _is_bool(value) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def check_int(value, name: str, least: int | None = 1, *, most: int | None = None, even: bool = False,
              why: str = "") -> int:
    """An integer ``least <= value <= most`` (bounds optional; even when asked)."""
    ok = not _is_bool(value) and isinstance(value, numbers.Integral)
    if ok:
        value = int(value)
        ok = ((least is None or value >= least) and (most is None or value <= most)
              and not (even and value % 2))
    if not ok:
        kind = "an even int" if even else "an int"
        bounds = "".join([f" >= {least}" if least is not None else "", f" and <= {most}" if most is not None else ""])
        raise InvalidInputError(f"{name} must be {kind}{bounds}{why}, got {value!r}")
    return value


def check_optional_int(value, name: str, least: int | None = 1, **kw) -> int | None:
    """``None`` or :func:`check_int`."""
    return None if value is None else check_int(value, name, least, **kw)


def check_real(value, name: str, *, positive: bool = False, nonnegative: bool = False, finite: bool = True,
               at_most: float | None = None, why: str = "") -> float:
    """A real number (``float`` returned); ``positive``: ``> 0``; ``nonnegative``: ``>= 0``; ``finite``."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        if hasattr(value, "numel") and value.numel() == 1 and not value.is_complex():
            value = value.item()  # a one-element real tensor
        else:
            raise InvalidInputError(f"{name} must be a real number{why}, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise InvalidInputError(f"{name} must be a finite number{why}, got {value}")
    if positive and not value > 0:
        raise InvalidInputError(f"{name} must be > 0{why}, got {value}")
    if nonnegative and not value >= 0:
        raise InvalidInputError(f"{name} must be >= 0{why}, got {value}")
    if at_most is not None and value > at_most:
        raise InvalidInputError(f"{name} must be <= {at_most}{why}, got {value}")
    return value


def check_optional_real(value, name: str, **kw) -> float | None:
    """``None`` or :func:`check_real`."""
    return None if value is None else check_real(value, name, **kw)


def check_choice(value, name: str, choices) -> str:
    """One of ``choices`` (strings), compared exactly."""
    if not isinstance(value, str) or value not in choices:
        raise InvalidInputError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """``True`` or ``False`` (also numpy's bool)."""
    if not _is_bool(value):
        raise InvalidInputError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_optional_bool(value, name: str) -> bool | None:
    """``None`` or :func:`check_bool`."""
    return None if value is None else check_bool(value, name)


def check_seed(value, name: str = "seed") -> int | None:
    """``None`` (draw one) or an int."""
    return None if value is None else check_int(value, name, None)


def check_options(options, allowed, where: str) -> None:
    """Every key of ``options`` (keyword arguments passed on as ``**options``) is one of ``allowed``; else an
    error naming the unknown one, the closest allowed name and the full list (instead of Python's
    ``TypeError`` about some inner ``__init__``)."""
    import difflib

    allowed = sorted(set(allowed))
    for key in options:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidInputError(f"{where}: unknown option {key!r}{hint}; the options are {', '.join(allowed)}")
