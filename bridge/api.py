"""Entry points for MATLAB: curvature of a dlnetwork's loss, in Learnables order, as numpy float64.

Every function takes the network spec (docs/bridge.md, "The network spec"; any carrier: :mod:`bridge.spec`), the
data ``X`` and targets ``T`` as numeric arrays in the dlarray's own dimension order (``x_format``,
``t_format``; ``t_format`` defaults to the network output's format), or as LISTS of minibatches (a MATLAB
cell array): the result is then over all of them with exact global normalization. Options shared by all:

* ``loss`` / ``loss_options``: a MATLAB loss name and its MATLAB options (:mod:`bridge.losses`); without
  ``loss``, 'crossentropy' when the network ends in a softmaxLayer, else 'mse' (:func:`~bridge.losses.default_loss`);
* ``dtype``: ``"float64"`` (default, also "double") or ``"float32"`` ("single"); results are float64;
* ``output``: ``"matrix"`` (flat, row ``r`` = Learnables row/linear index given by :func:`index_map`) or
  ``"learnables"`` (per Learnables row, each in its MATLAB shape: for ``table`` output);
* ``memory_budget`` (bytes or "2GB") and ``progress`` (tqdm bars), passed to the core.

Ordering: row ``r`` of every vector and matrix is ``Value{i}(k)`` of Learnables row ``i``, rows in table
order, ``k`` the column-major linear index -- exactly ``[Value{1}(:); Value{2}(:); ...]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hessian_core.errors import InvalidInputError, MemoryBudgetError, NonFiniteError
from hessian_core.functional import hessian_blocks
from hessian_core.memory import format_bytes, resolve_budget
from hessian_core.objective import Objective
from hessian_core.operators import HessianOperator

from .layout import channel_dim_of, matlab_size, matlab_to_torch
from .layout import index_map as _index_map
from .losses import MatlabLoss, default_loss
from .network import MatlabNetwork
from .spec import to_array, to_cell

_DTYPES = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "single": torch.float32}
_OPTIONS = ("x_format", "t_format", "loss", "loss_options", "dtype", "output", "memory_budget", "progress")


@dataclass
class Problem:
    """A translated network, its MATLAB loss and the minibatches in torch layout, ready for the core."""

    model: MatlabNetwork
    loss: MatlabLoss
    data: list
    core_options: dict
    output: str

    def objective(self) -> Objective:
        return Objective(self.model, self.loss, self.data, **self.core_options)

    def operator(self) -> HessianOperator:
        return HessianOperator(self.objective())

    def shaped(self, flat: np.ndarray):
        """A flat (P,) / (P, k) result in the requested output form."""
        return self.model.to_matlab_values(flat) if self.output == "learnables" else flat


def prepare(spec, X, T, *, x_format: str = "CB", t_format: str | None = None, loss: str | None = None,
            loss_options: dict | None = None, dtype: str = "float64", output: str = "matrix",
            memory_budget=None, progress: bool | None = None) -> Problem:
    """Translate the spec, convert the data, and bind the loss (shared by every entry point)."""
    if str(dtype).lower() not in _DTYPES:
        raise InvalidInputError(f"dtype must be 'float64'/'double' or 'float32'/'single', got {dtype!r}")
    if output not in ("matrix", "learnables"):
        raise InvalidInputError(f"output must be 'matrix' or 'learnables', got {output!r}")
    tdtype = _DTYPES[str(dtype).lower()]
    model = MatlabNetwork(spec, dtype=tdtype)
    xs, ts = _minibatches(X, "X"), _minibatches(T, "T")
    if len(xs) != len(ts):
        raise InvalidInputError(f"X has {len(xs)} minibatches but T has {len(ts)}")
    xt = [matlab_to_torch(to_array(x, f"X{{{i + 1}}}"), x_format, f"X{{{i + 1}}}", tdtype) for i, x in enumerate(xs)]
    canon = {c for _, c in xt}
    if len(canon) != 1:
        raise InvalidInputError(f"the minibatches of X have different formats {sorted(canon)}")
    model.input_format = canon.pop()
    with torch.no_grad():
        model(xt[0][0])
    out_fmt = model.output_format
    data = []
    for i, ((x, _), t) in enumerate(zip(xt, ts)):
        tt, tc = matlab_to_torch(to_array(t, f"T{{{i + 1}}}"), t_format or out_fmt, f"T{{{i + 1}}}",
                                 tdtype)
        if tc != out_fmt:
            raise InvalidInputError(f"T has format {tc!r} but the network output has format {out_fmt!r}")
        if x.shape[0] != tt.shape[0]:
            raise InvalidInputError(f"minibatch {i + 1}: X has {x.shape[0]} observations, T has {tt.shape[0]}")
        data.append((x, tt))
    out_layer = model.spec.layer(model.output_layer)
    mloss = MatlabLoss(default_loss(out_layer.cls) if loss is None else loss, loss_options, out_fmt)
    out_name = f"layer '{out_layer.name}', {out_layer.short_class}"
    with torch.no_grad():  # one forward per minibatch: the targets' size, and probabilities, before any work
        for i, (x, tt) in enumerate(data):
            Y = model(x)
            _check_target_size(mloss, Y, tt, out_fmt, out_name, i)
            mloss.check_outputs(Y, out_name)
    core = {"reduction": mloss.reduction, "count_fn": mloss.count, "memory_budget": memory_budget,
            "progress": progress}
    return Problem(model, mloss, data, core, output)


def _check_target_size(mloss: MatlabLoss, Y: torch.Tensor, T: torch.Tensor, fmt: str, output: str, i: int) -> None:
    """T of minibatch ``i`` (0-based) must have the network output's size (size 1 along C for
    'index-crossentropy'); the error gives both sizes in MATLAB's order and the minibatch 1-based."""
    expected = list(Y.shape)
    if mloss.name == "index-crossentropy":
        expected[channel_dim_of(fmt)] = 1
    if list(T.shape) == expected:
        return
    need = ("one class index per observation (size 1 along 'C')" if mloss.name == "index-crossentropy"
            else "the size of the output")
    raise InvalidInputError(
        f"minibatch {i + 1}: T has size {matlab_size(T.shape, fmt)} but the network output ({output}) has size "
        f"{matlab_size(Y.shape, fmt)} (format {fmt!r}); for the loss {mloss.name!r} T must have {need}")


def _minibatches(X, what: str) -> list:
    """A single array -> [X]; a cell array / list of minibatches -> list."""
    if isinstance(X, (list, tuple)) or (isinstance(X, np.ndarray) and X.dtype == object):
        items = to_cell(X, what)
        if not items:
            raise InvalidInputError(f"{what} is an empty list of minibatches")
        return items
    if X is None:
        raise InvalidInputError(f"{what} is missing")
    return [X]


def _problem(spec, X, T, opts: dict) -> Problem:
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected option(s) {unknown}; options are {list(_OPTIONS)}")
    return prepare(spec, X, T, **opts)


_LARGEST_INT = 2 ** 53  # doubles count exactly up to here; beyond, a "count" from MATLAB is no count


def _as_int(value, what: str, least: int = 1) -> int:
    """Counts arrive from MATLAB as doubles (3.0): accept integral numbers."""
    try:
        f = float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) if np.size(value) == 1 else float("nan")
    except (TypeError, ValueError):
        f = float("nan")
    if not (f == f and abs(f) <= _LARGEST_INT and f == int(f) and f >= least) or isinstance(value, bool):
        raise InvalidInputError(f"{what} must be an integer from {least} to 2^53, got {value!r}")
    return int(f)


def _check_probes(pb: Problem, count: int, what: str) -> None:
    """Refuse, before any work, a request whose ``count`` probe vectors of P values would not fit the budget."""
    P = sum(n for _, _, n in pb.model.rows())
    budget = resolve_budget(pb.core_options.get("memory_budget"), torch.device("cpu"))
    need = 8 * P * count
    if need > budget:
        raise MemoryBudgetError(
            f"{count} probe vectors of P = {P} values ({what}) need {format_bytes(need)}, more than the memory "
            f"budget of {format_bytes(budget)}; lower {what}")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


# -- entry points ---------------------------------------------------------------------------------------
def hessian(spec, X, T, **opts):
    """Exact Hessian ``(P, P)`` of the MATLAB loss w.r.t. ``[Value{1}(:); ...; Value{N}(:)]``.

    ``output="learnables"``: nested list ``blocks[i][j]`` of shape ``(numel_i, numel_j)``."""
    pb = _problem(spec, X, T, opts)
    H = _np(pb.operator().to_dense())
    if pb.output == "learnables":
        cuts = np.cumsum([0] + [n for _, _, n in pb.model.rows()])
        return [[H[a:b, c:d] for c, d in zip(cuts[:-1], cuts[1:])] for a, b in zip(cuts[:-1], cuts[1:])]
    return H


def hvp(spec, X, T, v, **opts):
    """``H v`` ``(P,)``; ``v`` flat ``(P,)`` or a list with one array per Learnables row (MATLAB shapes)."""
    pb = _problem(spec, X, T, opts)
    flat = flat_vector(pb.model, v)
    out = pb.operator().matvec(torch.as_tensor(flat, dtype=pb.model.learnables[0].dtype))
    return pb.shaped(_np(out))


def flat_vector(model: MatlabNetwork, v, what: str = "v") -> np.ndarray:
    """``v`` as a flat (P,) float64 vector in Learnables order (per-row arrays flattened column-major)."""
    rows = model.rows()
    P = sum(n for _, _, n in rows)
    if isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.dtype == object):
        parts = to_cell(v, what)
        if len(parts) != len(rows):
            raise InvalidInputError(f"{what} has {len(parts)} arrays; expected one per Learnables row ({len(rows)})")
        flat = []
        for i, (part, (lay, par, n)) in enumerate(zip(parts, rows)):
            a = to_array(part, f"{what}{{{i + 1}}} ({lay}/{par})").reshape(-1, order="F")
            if a.size != n:
                raise InvalidInputError(f"{what}{{{i + 1}}} ({lay}/{par}) has {a.size} elements, expected {n}")
            flat.append(a)
        out = np.concatenate(flat)
    else:
        out = to_array(v, what).reshape(-1, order="F")
        if out.size != P:
            raise InvalidInputError(f"{what} has {out.size} elements; the network has P = {P} learnable values")
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(f"{what} contains NaN or Inf")
    return out


def diagonal(spec, X, T, **opts):
    """Exact Hessian diagonal ``(P,)`` (not an estimate)."""
    pb = _problem(spec, X, T, opts)
    return pb.shaped(_np(pb.operator().diagonal()))


def blocks(spec, X, T, **opts) -> list:
    """Exact diagonal blocks, one ``(numel_i, numel_i)`` matrix per Learnables row."""
    pb = _problem(spec, X, T, opts)
    return [_np(b) for b in hessian_blocks(pb.model, pb.loss, pb.data, groups=None, **pb.core_options)]


def eigs(spec, X, T, k: int = 6, which: str = "LA", **opts) -> dict:
    """``k`` Hessian eigenpairs: ``dict(values=(k,), vectors=(P, k), residuals=(k,))``, values in
    ascending order (as ``hessian_core.eigsh``), ``residuals[i] = ||H v_i - values[i] v_i||``.
    ``output="learnables"``: ``vectors`` is a list per Learnables row of arrays ``MATLAB shape x k``."""
    k = _as_int(k, "k")
    pb = _problem(spec, X, T, opts)
    _check_probes(pb, k, "K")
    from hessian_core.spectral import eigsh

    res = eigsh(pb.operator(), k=k, which=which, progress=opts.get("progress"))
    values, vectors, residuals = _np(res.values), _np(res.vectors), _np(res.residuals)
    return {"values": values, "vectors": pb.shaped(vectors), "residuals": residuals}


def trace(spec, X, T, num_matvecs: int = 100, method: str = "hutch++", seed: int | None = None, **opts) -> dict:
    """Randomized trace estimate of the Hessian: ``dict(trace=, stderr=, num_matvecs=)``."""
    pb = _problem(spec, X, T, opts)
    from hessian_core.spectral import trace as core_trace

    seed = None if seed is None or np.size(seed) == 0 else _as_int(seed, "seed", least=0)
    m = _as_int(num_matvecs, "num_matvecs")
    _check_probes(pb, m, "num_matvecs")
    res = core_trace(pb.operator(), num_matvecs=m, method=str(method), seed=seed)
    return {"trace": float(res.estimate), "stderr": float(res.stderr), "num_matvecs": int(res.num_matvecs)}


def newton_update(spec, X, T, damping: float = 1e-3, lr: float = 1.0, method: str = "dense", **opts) -> dict:
    """One damped Newton step ``theta - lr (H + damping I)^{-1} g`` (``hessian_core.newton_step``).

    ``method="dense"``: the exact dense Hessian, Cholesky, or a shifted solve when ``H + damping I`` is
    indefinite (always a descent direction); ``"cg"``: matrix-free truncated CG. Returns
    ``dict(values=[new Value per Learnables row, MATLAB shape], loss_before=, loss_after=,
    predicted_change=, method=)``; the caller's spec is not modified.
    """
    from hessian_core.newton_step import newton_step

    damping, lr = _as_float(damping, "damping"), _as_float(lr, "lr")
    if not (np.isfinite(damping) and damping >= 0) or not (np.isfinite(lr) and lr > 0):
        raise InvalidInputError(f"damping must be >= 0 and lr > 0, got damping={damping}, lr={lr}")
    pb = _problem(spec, X, T, opts)
    # apply=True writes into our own translated copy of the network, never into anything of the caller's
    res = newton_step(pb.model, pb.loss, pb.data, lr=lr, damping=damping, method=str(method),
                      apply=True, **pb.core_options)
    new = torch.cat([p.detach().reshape(-1) for p in pb.model.learnables])
    after = f"after the step (lr = {lr:g}, damping = {damping:g}) "
    if not bool(torch.isfinite(new).all()):
        raise NonFiniteError(f"the new learnables {after}contain Inf or NaN: the step overflowed. Use a smaller "
                             "lr or a larger damping")
    try:
        loss_after = float(pb.objective().loss())
    except NonFiniteError:
        raise NonFiniteError(f"the loss {after}is not finite. Use a smaller lr or a larger damping") from None
    return {"values": pb.model.to_matlab_values(_np(new)), "loss_before": float(res.loss),
            "loss_after": loss_after, "predicted_change": float(res.predicted_change),
            "method": str(res.info.get("method", method))}


def plan(spec, X, T, **opts) -> dict:
    """How the dense Hessian, the diagonal and the products of this network are computed, and why
    (``HessianOperator.plan`` as text fields): translated fully connected and convolutional networks take the
    structured paths (``dense`` starts with ``"structured"``); ``budget`` says the memory budget used."""
    pb = _problem(spec, X, T, opts)
    info = pb.operator().plan()
    products = info["products"]
    return {"dense": info["dense"], "diagonal": info["diagonal"], "budget": info["budget"],
            "products": products["one vector"], "block_products": products["blocks (matmat)"],
            "parameters": int(info["size"])}


def _as_float(value, what: str) -> float:
    try:
        return float(np.asarray(value, dtype=np.float64).reshape(-1)[0]) if np.size(value) == 1 else float("nan")
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{what} must be a real number, got {value!r}") from None


def index_map(spec) -> dict:
    """Row -> Learnables (Layer, Parameter, 1-based linear index into Value): ``dict(layer=, parameter=, index=)``."""
    return _index_map(MatlabNetwork(spec).rows())


def loss_value(spec, X, T, **opts) -> float:
    """The MATLAB-defined loss over all minibatches (a check that the translation matches MATLAB)."""
    opts.pop("output", None)
    return _problem(spec, X, T, opts).objective().loss()


def predict(spec, X, *, x_format: str = "CB", dtype: str = "float64") -> tuple[np.ndarray, str]:
    """Network output for one minibatch in MATLAB dimension order and its format (like ``predict(net, X)``)."""
    from .layout import torch_to_matlab

    model = MatlabNetwork(spec, dtype=_DTYPES[str(dtype).lower()])
    x, canon = matlab_to_torch(to_array(X, "X"), x_format, "X", model.learnables[0].dtype)
    model.input_format = canon
    with torch.no_grad():
        y = model(x)
    return torch_to_matlab(y, model.output_format).astype(np.float64), model.output_format


__all__ = ["hessian", "hvp", "diagonal", "blocks", "eigs", "trace", "newton_update", "index_map", "loss_value",
           "predict", "plan", "prepare", "Problem"]
