"""One GNU Octave session (oct2py, through bridge.octave_engine) with the toolbox and the test doubles on
its path, and a request worker thread answering its 'server' transport: for the Octave test modules.

Octave missing: skipped locally, FAILS when the environment variable CI is set.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading

import numpy as np
import pytest
import torch

from bridge.octave_engine import OctaveEngine
from bridge.transport import matfile


def octave_engine() -> OctaveEngine:
    why = None
    if shutil.which("octave-cli") is None and shutil.which("octave") is None:
        why = "GNU Octave is not installed"
    else:
        try:
            return OctaveEngine(test_doubles=True)
        except Exception as e:  # noqa: BLE001 - reported below
            why = f"Octave could not be started through oct2py: {type(e).__name__}: {e}"
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: the MATLAB toolbox tests must run)")
    pytest.skip(why)


def session(folder):
    """Generator for a module fixture: the engine, with a worker thread serving ``folder``."""
    e = octave_engine()
    stop = threading.Event()
    worker = threading.Thread(target=matfile.serve, args=(folder,), kwargs={"stop": stop}, daemon=True)
    worker.start()
    e.eval(f"setenv('HESSIANCORE_PYTHON', '{sys.executable}'); setenv('HESSIANCORE_TRANSPORT', 'server'); "
           f"setenv('HESSIANCORE_SERVERFOLDER', '{folder}'); setenv('HESSIANCORE_SERVERTIMEOUT', '300');")
    while not (folder / "ready").exists() and worker.is_alive():
        threading.Event().wait(0.01)
    yield e
    stop.set()
    worker.join(timeout=10)
    e.quit()


def error_of(eng, call: str) -> tuple[str, str]:
    """(identifier, message) of the error ``call`` raises in Octave ('' when none)."""
    eng.eval(f"try, {call}; hcId = ''; hcMsg = ''; catch hcErr, hcId = hcErr.identifier; hcMsg = hcErr.message; end")
    return eng.workspace["hcId"], eng.workspace["hcMsg"]


def colmajor(theta, shape):
    """reshape(theta, shape) in MATLAB (column-major) for 1-D and 2-D shapes."""
    return theta.reshape(shape[::-1]).T if len(shape) == 2 else theta.reshape(shape)


def learnables(spec):
    """theta = [Value{1}(:); Value{2}(:); ...] (float64 torch) and the MATLAB shapes, from an exported spec."""
    values = [np.asarray(v, dtype=np.float64) for v in spec["Learnables"]["Value"]]
    values = [v.reshape(1, 1) if v.ndim == 0 else v for v in values]
    theta = torch.as_tensor(np.concatenate([v.reshape(-1, order="F") for v in values]))
    return theta, [v.shape for v in values]


def unpack(theta, shapes):
    out, i = [], 0
    for s in shapes:
        n = int(np.prod(s))
        out.append(colmajor(theta[i:i + n], s) if len(s) <= 2 else
                   theta[i:i + n].reshape(tuple(reversed(s))).permute(*reversed(range(len(s)))))
        i += n
    return out
