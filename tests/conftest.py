import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# The tests use tiny models, for which a second intra-op thread only adds synchronization (on a busy 2-core
# machine a small conv backward took 30 us on one thread and 0.1 s on two).
torch.set_num_threads(1)


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
