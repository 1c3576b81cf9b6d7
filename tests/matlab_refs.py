"""Helpers for the bridge and MATLAB tests: hand-built specs and independent references written from MATLAB's formulas.

Nothing here imports the bridge's layout or layer code: parameters are unpacked from the flat vector with
numpy's own column-major index arithmetic, data is indexed in MATLAB order, and the references loop over
MATLAB subscripts where a layer's indexing convention is the point of the test.
"""

from __future__ import annotations

import numpy as np
import torch

FORMAT = "hessiancore.network/1"
NNET = "nnet.cnn.layer."


def layer(name, cls, **props):
    return {"Name": name, "Class": NNET + cls, **props}


def make_spec(layers, learnables, connections=None, state=None, inputs=None, outputs=None):
    """A spec dict as the exporter makes it; ``learnables``: list of (layer, parameter, value)."""
    spec = {
        "Format": FORMAT,
        "Layers": layers,
        "Connections": {"Source": [s for s, _ in connections], "Destination": [d for _, d in connections]}
        if connections else [],
        "InputNames": inputs or [layers[0]["Name"]],
        "OutputNames": outputs or [layers[-1]["Name"]],
        "Learnables": {"Layer": [r[0] for r in learnables], "Parameter": [r[1] for r in learnables],
                       "Value": [np.asarray(r[2], dtype=np.float64) for r in learnables]},
    }
    if state:
        spec["State"] = {"Layer": [r[0] for r in state], "Parameter": [r[1] for r in state],
                         "Value": [np.asarray(r[2], dtype=np.float64) for r in state]}
    return spec


def theta_of(learnables) -> torch.Tensor:
    """[Value{1}(:); Value{2}(:); ...] (column-major), the documented ordering."""
    return torch.tensor(np.concatenate([np.asarray(v, dtype=np.float64).flatten(order="F") for _, _, v in learnables]))


def unpack(theta: torch.Tensor, learnables) -> list[torch.Tensor]:
    """Flat theta -> MATLAB-shaped tensors, via index arrays from numpy's column-major arithmetic."""
    out, a = [], 0
    for _, _, v in learnables:
        shape = np.asarray(v).shape
        n = int(np.prod(shape))
        idx = torch.as_tensor(np.arange(n).reshape(shape, order="F"))  # idx[i, j, ...] = linear index (0-based)
        out.append(theta[a + idx])
        a += n
    return out


def ref_hessian(f, learnables) -> np.ndarray:
    return torch.autograd.functional.hessian(f, theta_of(learnables), vectorize=True).numpy()


def half_mse(Y, T, n_obs):
    return ((Y - T) ** 2).sum() / (2 * n_obs)


def fc(W, b, x):
    """MATLAB fullyConnected on a C x B matrix: W * x + b."""
    return W @ x + b.reshape(-1, 1)


def conv2d_loops(X, W, bias, stride=(1, 1), dilation=(1, 1), pad=(0, 0, 0, 0), pad_value=0.0):
    """MATLAB convolution2d by explicit subscripts on X (H x W x C x B) and W (FH x FW x C x NF), cross-
    correlation; pad = [top bottom left right]. Returns Hout x Wout x NF x B."""
    H, Wd, C, B = X.shape
    FH, FW, _, NF = W.shape
    t, bt, lf, r = pad
    Xp = torch.full((H + t + bt, Wd + lf + r, C, B), float(pad_value), dtype=X.dtype)
    Xp[t:t + H, lf:lf + Wd] = X
    eh, ew = (FH - 1) * dilation[0] + 1, (FW - 1) * dilation[1] + 1
    Ho = (H + t + bt - eh) // stride[0] + 1
    Wo = (Wd + lf + r - ew) // stride[1] + 1
    rows = []
    for i in range(Ho):
        cols = []
        for j in range(Wo):
            acc = bias.reshape(-1, 1).expand(NF, B).clone()
            for u in range(FH):
                for v in range(FW):
                    patch = Xp[i * stride[0] + u * dilation[0], j * stride[1] + v * dilation[1]]  # C x B
                    acc = acc + W[u, v].T @ patch  # NF x B
            cols.append(acc)
        rows.append(torch.stack(cols))
    return torch.stack(rows)  # Ho x Wo x NF x B


def flatten_cm(Y):
    """MATLAB Y(:, :, :, b) flattened column-major per observation: S1 x S2 x C x B -> (S1*S2*C) x B."""
    S1, S2, C, B = Y.shape
    idx = np.arange(S1 * S2 * C).reshape((S1, S2, C), order="F")
    out = [None] * (S1 * S2 * C)
    for i in range(S1):
        for j in range(S2):
            for c in range(C):
                out[idx[i, j, c]] = Y[i, j, c]
    return torch.stack(out)
