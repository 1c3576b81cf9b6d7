"""Request files laid out as MATLAB's hcRequest writes them, for the transport and worker tests."""

from __future__ import annotations

import numpy as np
import scipy.io

from bridge.transport import codec


def _cell(*items):
    out = np.empty((1, len(items)), dtype=object)
    for i, it in enumerate(items):
        out[0, i] = it
    return out


def request_file(tmp_path, *, multi=False, fn="hessian"):
    """A request file laid out as MATLAB's hcRequest writes it (one variable per field, cells, sizes)."""
    W = np.arange(6.0).reshape(2, 3)
    b = np.array([[1.0], [2.0]])
    X = np.arange(3.0).reshape(3, 1)  # a batch of one observation: 3x1 'CB'
    T = np.array([[0.5], [0.25]])
    spec = {"Format": "hessiancore.network/1",
            "Layers": _cell({"Name": "in", "Class": "nnet.cnn.layer.FeatureInputLayer", "InputSize": 3.0}),
            "Learnables": {"Layer": _cell("fc"), "Parameter": _cell("Weights"), "Value": _cell(W)},
            "State": {"Layer": _cell(), "Parameter": _cell(), "Value": _cell()}}
    xs, ts = (_cell(X, 2 * X), _cell(T, T)) if multi else (_cell(X), _cell(T))
    sizes = {"X": _cell(*[np.array([3.0, 1.0])] * (2 if multi else 1)),
             "T": _cell(*[np.array([2.0, 1.0])] * (2 if multi else 1)),
             "Args": _cell(np.array([2.0, 1.0])), "Learnables": _cell(np.array([2.0, 3.0])), "State": _cell()}
    raw = {"Format": codec.REQUEST_FORMAT, "Function": fn, "Spec": spec, "X": xs, "T": ts, "Multi": multi,
           "Args": _cell(b), "Sizes": sizes,
           "Options": {"x_format": "CB", "t_format": "", "loss": "mse", "memory_budget": np.zeros((0, 0)),
                       "k": 3.0, "lr": 0.5}}
    path = tmp_path / "req.mat"
    scipy.io.savemat(path, raw, format="5")
    return path, W, b, X, T
