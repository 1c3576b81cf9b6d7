"""``python -m bridge.transport.check``: what ``hessiancoreSetup`` needs to know about this Python.

Prints ``key=value`` lines (one per line, values without newlines): ``python`` (X.Y.Z),
``executable``, ``numpy``, ``scipy``, ``torch`` (version, or ``missing``), ``bridge`` (``ok`` when
:mod:`bridge.api` imports, else the error), ``bridge_path`` (where it was imported from). Exit status 0
whenever it could print, even if something is missing: the setup function reads the report and says
what to fix.
"""

from __future__ import annotations

import importlib
import platform
import sys


def report() -> dict[str, str]:
    out = {"python": platform.python_version(), "executable": sys.executable}
    for mod in ("numpy", "scipy", "torch"):
        try:
            out[mod] = str(importlib.import_module(mod).__version__)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out[mod] = f"missing ({type(exc).__name__}: {exc})"
    try:
        api = importlib.import_module("bridge.api")
        out["bridge"] = "ok"
        out["bridge_path"] = str(api.__file__)
    except Exception as exc:  # noqa: BLE001
        out["bridge"] = f"{type(exc).__name__}: {exc}"
        out["bridge_path"] = ""
    return {k: " ".join(str(v).split()) for k, v in out.items()}


def main() -> int:
    for key, value in report().items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
