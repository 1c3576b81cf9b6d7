"""Memory budget: how much the engine may allocate, and the checks before every large allocation."""

from __future__ import annotations

import math
import numbers
import os
import re

import torch

from .errors import InvalidInputError, MemoryBudgetError

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` now: CUDA's free memory, or the host's MemAvailable."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def resolve_budget(budget, device: torch.device) -> int:
    """Budget in bytes. ``None``: half of what is free on the device now. Accepts a positive, finite
    int/float number of bytes or a string like ``"2GB"``, ``"512MiB"`` (booleans, ``inf`` and NaN are
    refused: a budget is a size, and an infinite one would disable every check)."""
    if budget is None:
        return available_bytes(device) // 2
    if isinstance(budget, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", budget)
        if not m or m.group(2).lower() not in _UNITS:
            raise InvalidInputError(f"memory_budget {budget!r} is not understood; use bytes or e.g. '2GB', '512MiB'")
        try:
            value = float(m.group(1)) * _UNITS[m.group(2).lower()]
        except ValueError:
            raise InvalidInputError(f"memory_budget {budget!r} is not understood; use bytes or e.g. '2GB'") from None
        if value >= 1:
            return int(value)
    elif (isinstance(budget, numbers.Real) and not isinstance(budget, bool) and type(budget).__name__ != "bool_"
          and math.isfinite(budget) and budget >= 1):
        return int(budget)
    raise InvalidInputError(
        f"memory_budget must be a positive, finite number of bytes or a string like '2GB', got {budget!r}")


def check_fits(nbytes: int, budget: int, what: str, instead: str) -> None:
    """Raise MemoryBudgetError naming the size of ``what`` and the alternative ``instead`` if it does not fit."""
    if nbytes > budget:
        raise MemoryBudgetError(
            f"{what} needs {format_bytes(nbytes)}, more than the memory budget of {format_bytes(budget)}. "
            f"Use {instead}, or raise memory_budget= if the machine really has the memory."
        )


def chunk_size(total: int, bytes_per_column: int, budget: int, requested: int | None = None,
               cap: int = 512) -> int:
    """How many columns (tangents) to process at once within ``budget``."""
    if requested is not None:
        if requested < 1:
            raise InvalidInputError(f"chunk_size must be >= 1, got {requested}")
        return min(requested, max(total, 1))
    k = budget // max(bytes_per_column, 1)
    return int(max(1, min(k, cap, max(total, 1))))
