"""Python's algorithms on Hessian-vector products computed by MATLAB itself (layers the translator lacks).

MATLAB's ``hcFallbackHvp(net, X, T, loss, v)`` returns ``H_b v`` for one minibatch by double
backpropagation (``dlgradient(..., 'EnableHigherDerivatives', true)``) and the minibatch's number of
observations ``n_b``. :func:`fallback_operator` wraps it as an operator of the core (a
:class:`hessian_core.operators.FunctionOperator`) of the globally normalized Hessian
``H = sum_b n_b H_b / sum_b n_b`` (MATLAB's mean losses average over observations, so this is the Hessian of
the loss over all minibatches together), which the core's algorithms take as they are: :func:`fallback_eigs`
(:func:`hessian_core.spectral.eigsh`), :func:`fallback_trace` (:func:`hessian_core.spectral.trace`),
:func:`fallback_solve` (scipy's CG on the damped operator).

The engine is a ``matlab.engine`` engine (or one with its interface); only ``eval(code, nargout=0)`` and
``workspace[...]`` are used, with the network and data as workspace variable names, like
:class:`bridge.MatlabSession`. Vectors follow dlhessian's order (Learnables rows, each column-major).
"""

from __future__ import annotations

import re

import numpy as np

from hessian_core.errors import InvalidInputError

from ..losses import default_loss
from ..session import check_variable_name

_LOSS = re.compile(r"[A-Za-z0-9_-]+")


def _column(a: np.ndarray):
    return np.asfortranarray(np.asarray(a, dtype=np.float64).reshape(-1, 1))


class EngineHvp:
    """``H v`` by MATLAB through ``engine``, globally normalized over the minibatches of ``X``/``T``.

    Args:
        engine: MATLAB (or Octave-backed) engine.
        net, X, T: workspace variable names of the dlnetwork and of the data (dlarrays, or cell arrays of
            minibatches).
        loss: a MATLAB loss name ('mse', 'crossentropy', 'l2loss', 'l1loss', 'huber'); None (the default) applies
            the toolbox's rule (:func:`bridge.losses.default_loss`): 'crossentropy' when the network's output
            layer is a softmaxLayer, else 'mse'.
        array_converter: numpy column -> what the engine takes (default: a Fortran-ordered column).
    """

    def __init__(self, engine, net: str = "net", X: str = "X", T: str = "T", loss: str | None = None,
                 array_converter=None):
        self.engine = engine
        self.net, self.X, self.T = (check_variable_name(v, what) for v, what in ((net, "net"), (X, "X"), (T, "T")))
        if loss is None:
            loss = default_loss(self._output_class())
        if not isinstance(loss, str) or not _LOSS.fullmatch(loss):
            raise InvalidInputError(f"loss must be a MATLAB loss name such as 'mse', got {loss!r}")
        self.loss = loss
        self.to_engine = array_converter or _column
        self.engine.eval(f"hcP__ = sum(cellfun(@numel, {self.net}.Learnables.Value)); "
                         f"hcIsCell__ = double(iscell({self.X})); hcNB__ = numel({self.X});", nargout=0)
        self.P = int(_scalar(self.engine.workspace["hcP__"]))
        cell = bool(_scalar(self.engine.workspace["hcIsCell__"]))
        nb = int(_scalar(self.engine.workspace["hcNB__"])) if cell else 1
        self._batches = [(f"{self.X}{{{b}}}", f"{self.T}{{{b}}}") for b in range(1, nb + 1)] if cell else \
            [(self.X, self.T)]
        self.engine.eval("clear('hcP__', 'hcIsCell__', 'hcNB__');", nargout=0)
        self.matvecs = 0

    def _output_class(self) -> str:
        """class() of the network's output layer (the layer named by OutputNames{1})."""
        n = self.net
        self.engine.eval(f"hcOut__ = ''; for hcK__ = 1:numel({n}.Layers), if strcmp({n}.Layers(hcK__).Name, "
                         f"{n}.OutputNames{{1}}), hcOut__ = class({n}.Layers(hcK__)); end, end", nargout=0)
        try:
            return str(self.engine.workspace["hcOut__"])
        finally:
            self.engine.eval("clear('hcOut__', 'hcK__');", nargout=0)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.size != self.P:
            raise InvalidInputError(f"v has {v.size} elements; the network has P = {self.P}")
        self.engine.workspace["hcV__"] = self.to_engine(v)
        total, acc = 0.0, np.zeros(self.P)
        try:
            for xb, tb in self._batches:
                self.engine.eval(f"[hcHv__, hcN__] = hcFallbackHvp({self.net}, {xb}, {tb}, '{self.loss}', hcV__);",
                                 nargout=0)
                n = float(_scalar(self.engine.workspace["hcN__"]))
                hv = np.asarray(self.engine.workspace["hcHv__"], dtype=np.float64).reshape(-1)
                acc += n * hv
                total += n
        finally:
            self.engine.eval("clear('hcV__', 'hcHv__', 'hcN__');", nargout=0)
        self.matvecs += 1
        return acc / total


def _scalar(x) -> float:
    return float(np.asarray(x, dtype=np.float64).reshape(-1)[0])


def fallback_operator(engine, net: str = "net", X: str = "X", T: str = "T", loss: str | None = None, **kwargs):
    """The Hessian as a :class:`hessian_core.operators.FunctionOperator` ``(P, P)`` of MATLAB's products (float64,
    CPU): an operator like every other of the core (composition, spectra, solvers, ``to_scipy()``)."""
    import torch

    from hessian_core.operators import FunctionOperator

    hvp = EngineHvp(engine, net, X, T, loss, **kwargs)

    def matmat(V: torch.Tensor) -> torch.Tensor:
        cols = V.detach().cpu().numpy().astype(np.float64)
        return torch.as_tensor(np.column_stack([hvp(cols[:, j]) for j in range(cols.shape[1])]))

    return FunctionOperator(matmat, hvp.P, torch.float64, "cpu", name="MATLAB dlgradient Hessian-vector products")


def fallback_eigs(engine, net="net", X="X", T="T", loss=None, k: int = 6, which: str = "LA", **eig_options) -> dict:
    """``k`` eigenpairs (thick-restart Lanczos of the core): ``dict(values, vectors, residuals, matvecs)``."""
    from hessian_core.spectral import eigsh

    op = fallback_operator(engine, net, X, T, loss)
    res = eigsh(op, k=k, which=which, **eig_options)
    return {"values": _np(res.values), "vectors": _np(res.vectors), "residuals": _np(res.residuals),
            "matvecs": op.num_matvecs}


def fallback_trace(engine, net="net", X="X", T="T", loss=None, num_matvecs: int = 100, method: str = "hutch++",
                   seed: int | None = None) -> dict:
    """Randomized trace estimate (the core's Hutch++/Hutchinson/XTrace): ``dict(trace, stderr, num_matvecs)``."""
    from hessian_core.spectral import trace

    res = trace(fallback_operator(engine, net, X, T, loss), num_matvecs=num_matvecs, method=method, seed=seed)
    return {"trace": float(res.estimate), "stderr": float(res.stderr), "num_matvecs": int(res.num_matvecs)}


def fallback_solve(engine, rhs, net="net", X="X", T="T", loss=None, damping: float = 1e-3, rtol: float = 1e-8,
                   maxiter: int | None = None) -> dict:
    """Solve ``(H + damping I) x = rhs`` by conjugate gradients (H + damping I must be positive definite):
    ``dict(x, info, matvecs)`` with scipy's ``info`` (0: converged)."""
    from scipy.sparse.linalg import cg

    from hessian_core.arguments import check_real
    from hessian_core.operators import IdentityOperator

    damping = check_real(damping, "damping", nonnegative=True)
    H = fallback_operator(engine, net, X, T, loss)
    A = H + damping * IdentityOperator(H)
    x, info = cg(A.to_scipy(), np.asarray(rhs, dtype=np.float64).reshape(-1), rtol=rtol, maxiter=maxiter)
    return {"x": x, "info": int(info), "matvecs": H.num_matvecs}


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if hasattr(t, "detach") else np.asarray(t, dtype=np.float64)
