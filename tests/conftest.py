import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(name="fake_matlab")
def fake_matlab_fixture(monkeypatch):
    """Put the fake ``matlab`` package on sys.path (tests only, never installed)."""
    path = os.path.join(os.path.dirname(__file__), "fake_matlab")
    monkeypatch.syspath_prepend(path)
    for mod in [m for m in sys.modules if m == "matlab" or m.startswith("matlab.")]:
        monkeypatch.delitem(sys.modules, mod)
    import matlab.engine

    yield matlab.engine
    for mod in [m for m in sys.modules if m == "matlab" or m.startswith("matlab.")]:
        del sys.modules[mod]
