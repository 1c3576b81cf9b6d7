"""``python -m bridge.matlab_path``: print the folder of the MATLAB toolbox to add to MATLAB's path.

The toolbox (dlhessian, dlhvp, ..., hessiancoreSetup) ships inside this Python package as
``bridge/toolbox`` (``pip install hessiancore``); in a source checkout it is the repository's ``matlab/``
folder. ``--setup`` prints the two MATLAB commands that use it with this very Python::

    addpath('/.../site-packages/bridge/toolbox'); hessiancoreSetup('Python', '/.../bin/python')
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def toolbox_folder() -> Path:
    """The installed toolbox (bridge/toolbox), else the checkout's matlab/ folder."""
    for folder in (_HERE / "toolbox", _HERE.parent / "matlab"):
        if (folder / "dlhessian.m").is_file():
            return folder
    raise FileNotFoundError("the MATLAB toolbox is not installed with this package (no bridge/toolbox) and no "
                            "checkout's matlab/ folder is next to it: reinstall with pip install hessiancore")


def _quote(text: str) -> str:
    return text.replace("'", "''")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--setup"]):
        print("usage: python -m bridge.matlab_path [--setup]", file=sys.stderr)
        return 2
    try:
        folder = toolbox_folder()
    except FileNotFoundError as exc:
        print(f"hessiancore: {exc}", file=sys.stderr)
        return 1
    if argv == ["--setup"]:
        print(f"addpath('{_quote(str(folder))}'); hessiancoreSetup('Python', '{_quote(sys.executable)}')")
    else:
        print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
