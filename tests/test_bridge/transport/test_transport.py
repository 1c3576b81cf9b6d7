"""The Python side of the MATLAB transports, without Octave: the .mat codec, the matfile runner, the
environment report, and the dlgradient fallback driven through a mocked engine.

Independent references: hand-written float64 torch models differentiated with
torch.autograd.functional.hessian, and dense numpy eigen/linear solvers.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
from matlab_requests import request_file as _request

from bridge.transport import check, codec, fallback, matfile
from hessian_core.errors import InvalidInputError, MemoryBudgetError, NonFiniteError


class RecordingApi:
    """Stands in for bridge.api: records what arrives and returns a result with every kind of value."""

    def __init__(self):
        self.calls = []

    def hessian(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return {"matrix": np.eye(2), "vector": np.arange(3.0), "cells": [np.ones((2, 1)), 5.0],
                "flag": True, "nothing": None, "name": "x", "tensor": torch.ones(2, dtype=torch.float64)}

    def eigs(self, *args, **kwargs):
        raise InvalidInputError("k must be at most P")


def test_decode_restores_matlab_shapes_lists_and_options(tmp_path):
    path, W, b, X, T = _request(tmp_path)
    raw = scipy.io.loadmat(path, simplify_cells=True)
    assert raw["X"].shape == (3,)  # what simplify_cells does to a 3x1 array in a 1x1 cell
    name, args, kwargs = codec.decode(raw)
    spec, x, t, v = args
    assert name == "hessian"
    assert x.shape == (3, 1) and np.array_equal(x, X)  # batch of one keeps its B dimension
    assert t.shape == (2, 1) and v.shape == (2, 1) and np.array_equal(v, b)
    assert spec["Learnables"]["Layer"] == ["fc"] and spec["Learnables"]["Parameter"] == ["Weights"]
    assert np.array_equal(spec["Learnables"]["Value"][0], W)
    assert isinstance(spec["Layers"], list) and spec["Layers"][0]["Name"] == "in"
    # '' and [] become absent (API defaults), integral numbers int, others float
    assert kwargs == {"x_format": "CB", "loss": "mse", "k": 3, "lr": 0.5}
    assert isinstance(kwargs["k"], int)


def test_decode_multi_gives_lists(tmp_path):
    path, _W, _b, X, _T = _request(tmp_path, multi=True)
    _, (_, xs, ts, _), _ = codec.decode(scipy.io.loadmat(path, simplify_cells=True))
    assert isinstance(xs, list) and len(xs) == 2 and len(ts) == 2
    assert np.array_equal(xs[1], 2 * X) and xs[1].shape == (3, 1)


def test_decode_rejects_foreign_requests():
    with pytest.raises(codec.RequestError, match="Format"):
        codec.decode({"Format": "other/2", "Function": "hessian"})
    with pytest.raises(codec.RequestError, match="Function"):
        codec.decode({"Format": codec.REQUEST_FORMAT, "Function": "__import__"})
    with pytest.raises(codec.RequestError, match="values arrived"):
        codec.restore(np.zeros(5), [2.0, 3.0], "X")


def test_matfile_run_round_trip_with_recording_api(tmp_path):
    path, W, b, X, T = _request(tmp_path)
    api = RecordingApi()
    assert matfile.run(path, tmp_path / "resp.mat", api=api)
    (args, kwargs), = api.calls
    assert args[1].shape == (3, 1) and args[3].shape == (2, 1)
    resp = scipy.io.loadmat(tmp_path / "resp.mat", simplify_cells=False, squeeze_me=False)
    assert resp["Ok"].item()
    res = resp["Result"][0, 0]
    assert np.array_equal(res["matrix"], np.eye(2))
    assert res["vector"].shape == (3, 1)  # 1-D -> column
    assert res["cells"].shape == (1, 2) and res["cells"][0, 0].shape == (2, 1)
    assert res["nothing"].size == 0 and res["name"][0] == "x"
    assert res["tensor"].shape == (2, 1)


def test_matfile_run_reports_python_errors_with_identifiers(tmp_path):
    path, *_ = _request(tmp_path, fn="eigs")
    assert not matfile.run(path, tmp_path / "resp.mat", api=RecordingApi())
    err = scipy.io.loadmat(tmp_path / "resp.mat", simplify_cells=True)["Error"]
    assert err["Identifier"] == "hessiancore:invalidInput"
    assert "k must be at most P" in err["Message"] and err["Type"] == "InvalidInputError"
    assert "Traceback" in err["Traceback"]


@pytest.mark.parametrize("exc, ident", [
    (InvalidInputError("x"), "hessiancore:invalidInput"),
    (MemoryBudgetError("x"), "hessiancore:memoryBudget"),
    (NonFiniteError("x"), "hessiancore:nonFinite"),
    (ValueError("x"), "hessiancore:invalidInput"),
    (ModuleNotFoundError("torch"), "hessiancore:setup"),
    (RuntimeError("x"), "hessiancore:python"),
    (codec.RequestError("x"), "hessiancore:request"),
])
def test_error_identifiers(exc, ident):
    assert codec.error_identifier(exc) == ident
    assert re.fullmatch(r"hessiancore:[a-z][A-Za-z]*", ident)  # a valid MATLAB identifier


def test_matfile_main_usage_and_unwritable_response(tmp_path):
    assert matfile.main([]) == 2
    path, *_ = _request(tmp_path)
    assert matfile.main([str(path), str(tmp_path / "no" / "such" / "dir" / "resp.mat")]) == 2


def test_check_report_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "bridge.transport.check"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    report = dict(line.split("=", 1) for line in out.splitlines())
    assert report["python"] == ".".join(map(str, sys.version_info[:3]))
    assert report["bridge"] == "ok" and report["torch"] == torch.__version__
    assert check.report()["numpy"] == np.__version__


# -- the dlgradient fallback, driven through a mocked engine ---------------------------------------------
def _net_loss(theta, X, T):
    """fc(3->4) tanh fc(4->2), half-MSE over observations; theta = [W1(:); b1; W2(:); b2] column-major."""
    W1 = theta[:12].reshape(3, 4).T
    b1 = theta[12:16].reshape(4, 1)
    W2 = theta[16:24].reshape(4, 2).T
    b2 = theta[24:26].reshape(2, 1)
    Y = W2 @ torch.tanh(W1 @ X + b1) + b2
    return ((Y - T) ** 2).sum() / (2 * X.shape[1])


class MockEngine:
    """The eval/workspace protocol of EngineHvp, answered by torch: hcFallbackHvp of one minibatch is the
    Hessian of that minibatch's own (mean) loss times v, and its number of observations."""

    def __init__(self, theta, batches):
        self.theta, self.batches = theta, batches
        self.workspace = {}
        self.log = []

    def eval(self, code, nargout=0):
        self.log.append(code)
        if code.startswith("hcOut__"):  # the output layer's class, for the default loss
            self.workspace["hcOut__"] = "nnet.cnn.layer.FullyConnectedLayer"
            return
        if code.startswith("hcP__"):
            self.workspace.update(hcP__=float(self.theta.numel()), hcIsCell__=1.0, hcNB__=float(len(self.batches)))
            return
        m = re.fullmatch(r"\[hcHv__, hcN__\] = hcFallbackHvp\(net, X\{(\d+)\}, T\{(\d+)\}, 'mse', hcV__\);", code)
        if m:
            X, T = self.batches[int(m.group(1)) - 1]
            v = torch.as_tensor(np.asarray(self.workspace["hcV__"]).reshape(-1))
            _, hv = torch.autograd.functional.hvp(lambda th: _net_loss(th, X, T), self.theta, v)
            self.workspace.update(hcHv__=hv.numpy().reshape(-1, 1), hcN__=float(X.shape[1]))
            return
        assert code.startswith("clear("), code


@pytest.fixture
def fallback_problem():
    g = torch.Generator().manual_seed(3)
    theta = torch.randn(26, generator=g, dtype=torch.float64)
    batches = [(torch.randn(3, n, generator=g, dtype=torch.float64), torch.randn(2, n, generator=g,
                                                                                  dtype=torch.float64))
               for n in (3, 5)]  # unequal minibatches
    X = torch.cat([b[0] for b in batches], 1)
    T = torch.cat([b[1] for b in batches], 1)
    H = torch.autograd.functional.hessian(lambda th: _net_loss(th, X, T), theta).numpy()
    return MockEngine(theta, batches), H


def test_fallback_operator_is_the_globally_normalized_hessian(fallback_problem):
    eng, H = fallback_problem
    op = fallback.fallback_operator(eng)
    V = np.random.default_rng(0).standard_normal((26, 3))
    HV = op.matmat(V)
    np.testing.assert_allclose(HV, H @ V, rtol=1e-10, atol=1e-12)
    # the equal-weight mean of the two minibatch Hessians is a different matrix: the weighting is tested
    per_batch = [torch.autograd.functional.hessian(lambda th, b=b: _net_loss(th, *b), eng.theta).numpy()
                 for b in eng.batches]
    assert not np.allclose(HV, (per_batch[0] + per_batch[1]) / 2 @ V, rtol=1e-3)
    assert sum("X{2}" in c for c in eng.log) == 3  # each product visited the second minibatch once


def test_fallback_eigs_trace_solve_match_dense(fallback_problem):
    eng, H = fallback_problem
    w, U = np.linalg.eigh(H)
    res = fallback.fallback_eigs(eng, k=2, which="LA")
    np.testing.assert_allclose(res["values"], w[-2:], rtol=1e-8, atol=1e-10)
    assert np.all(res["residuals"] < 1e-6)
    assert abs(abs(res["vectors"][:, -1] @ U[:, -1]) - 1) < 1e-8
    tr = fallback.fallback_trace(eng, num_matvecs=81, seed=0)  # Hutch++ sketch of 27 >= P: exact
    assert tr["trace"] == pytest.approx(np.trace(H), rel=1e-8)
    rhs = np.arange(26.0)
    damping = 1.0 - w[0] if w[0] < 0 else 1e-3
    sol = fallback.fallback_solve(eng, rhs, damping=damping, rtol=1e-12, maxiter=500)
    np.testing.assert_allclose(sol["x"], np.linalg.solve(H + damping * np.eye(26), rhs), rtol=1e-6, atol=1e-8)


def test_fallback_rejects_unsafe_names(fallback_problem):
    eng, _ = fallback_problem
    with pytest.raises(InvalidInputError, match="variable name"):
        fallback.fallback_operator(eng, net="net; delete('x')")
    with pytest.raises(InvalidInputError, match="loss"):
        fallback.fallback_operator(eng, loss="mse'); system('rm")


def test_serve_answers_dropped_requests_until_stop_file(tmp_path):
    import threading
    import time

    path, *_ = _request(tmp_path)
    folder = tmp_path / "server"
    api = RecordingApi()
    thread = threading.Thread(target=matfile.serve, args=(folder,), kwargs={"api": api, "poll": 0.005})
    thread.start()
    deadline = time.monotonic() + 30
    while not folder.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    path.replace(folder / "abc.request.mat")
    while not (folder / "abc.response.mat").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    (folder / "stop").touch()
    thread.join(timeout=30)
    assert not thread.is_alive() and len(api.calls) == 1
    assert scipy.io.loadmat(folder / "abc.response.mat", simplify_cells=True)["Ok"]
    assert not (folder / "abc.request.mat").exists()
