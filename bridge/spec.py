"""Normalize a network spec ('hessiancore.network/1', see docs/bridge.md) from any carrier.

A spec reaches Python as a plain dict (Engine API, ``py.``), as ``scipy.io.loadmat(path,
simplify_cells=True)`` output, as oct2py ``Struct``/``Cell`` objects, with numeric values as numpy arrays,
``matlab.double``-like objects (``.size`` plus column-major ``_data`` / ``noncomplex()``), memoryviews,
``array.array`` or Python scalars. :func:`normalize_spec` turns all of these into one
:class:`NetworkSpec` of plain Python/numpy values, and fails with errors naming the layer and field.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field

import numpy as np

from hessian_core.errors import InvalidInputError

FORMAT = "hessiancore.network/1"


# -- carriers -> plain values ------------------------------------------------------------------------
def to_array(value, where: str) -> np.ndarray:
    """Any numeric carrier -> float64 ndarray with MATLAB's subscript semantics (``A[i, j] = A(i+1, j+1)``)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            if value.size == 1:
                return to_array(value.reshape(-1)[0], where)
            raise InvalidInputError(f"{where}: expected a numeric array, got a cell array of {value.size} elements")
        if value.dtype.kind not in "biuf":
            raise InvalidInputError(f"{where}: expected a real numeric array, got dtype {value.dtype}")
        return value.astype(np.float64)
    if isinstance(value, (complex, np.complexfloating)):
        raise InvalidInputError(f"{where}: complex values are not supported")
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return np.asarray(float(value), dtype=np.float64)
    size = getattr(value, "size", None)
    if isinstance(size, tuple) and (hasattr(value, "_data") or hasattr(value, "noncomplex")):
        # matlab.double & co: flat data in column-major order plus the MATLAB size.
        if getattr(value, "_is_complex", False):
            raise InvalidInputError(f"{where}: complex MATLAB arrays are not supported")
        flat = value._data if hasattr(value, "_data") else value.noncomplex()
        data = np.asarray(flat, dtype=np.float64).reshape(-1)
        if data.size != int(np.prod(size)):
            raise InvalidInputError(f"{where}: MATLAB array of size {size} holds {data.size} values")
        return data.reshape(size, order="F")
    if isinstance(value, (memoryview, array.array)):
        # np.asarray honours the buffer's strides: a MATLAB N-D memoryview keeps subscript semantics.
        return to_array(np.asarray(value), where)
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch tensor
        return to_array(value.detach().cpu().numpy(), where)
    if isinstance(value, (list, tuple)):
        try:
            return to_array(np.asarray(value, dtype=np.float64), where)
        except (TypeError, ValueError):
            pass
    raise InvalidInputError(f"{where}: expected a numeric array, got {type(value).__name__}")


def is_missing(value) -> bool:
    """True for absent/empty values: None, [], {}, empty arrays, ''."""
    if value is None:
        return True
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) == 0
    if isinstance(value, np.ndarray):
        return value.size == 0
    size = getattr(value, "size", None)
    if isinstance(size, tuple):
        return int(np.prod(size)) == 0
    return False


def to_str(value, where: str) -> str:
    """char / string scalar (str, bytes, numpy str, 1-element cell) -> str."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return to_str(value.reshape(-1)[0], where)
        if value.dtype.kind == "U" and value.ndim == 1:
            return "".join(value.tolist())
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return to_str(value[0], where)
    raise InvalidInputError(f"{where}: expected a character vector, got {type(value).__name__}")


def to_cell(value, where: str) -> list:
    """A MATLAB cell vector (list, oct2py Cell, object ndarray) -> list, in MATLAB linear order.

    A carrier that simplified a 1x1 cell to its content (loadmat ``simplify_cells``) gives a one-element list.
    """
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return list(value.reshape(-1, order="F"))
        if value.dtype.kind == "U":
            return [str(s) for s in value.reshape(-1, order="F")]
        if value.size == 0:
            return []
    return [value]


def to_str_list(value, where: str) -> list[str]:
    """cellstr / string array / single char -> list of str."""
    if isinstance(value, str):
        return [value]
    return [to_str(v, f"{where}{{{i + 1}}}") for i, v in enumerate(to_cell(value, where))]


def to_struct(value, where: str) -> dict:
    """A scalar struct (dict, oct2py Struct, 1-element struct array/cell) -> dict."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return to_struct(value[0], where)
    if isinstance(value, np.ndarray) and value.size == 1:
        item = value.reshape(-1)[0]
        if isinstance(item, dict):
            return dict(item)
        if value.dtype.names:  # numpy record from loadmat without simplify_cells
            return {n: value[n].reshape(-1)[0] for n in value.dtype.names}
    if hasattr(value, "_fieldnames"):  # scipy.io.matlab mat_struct (struct_as_record=False)
        return {n: getattr(value, n) for n in value._fieldnames}
    raise InvalidInputError(
        f"{where}: expected a scalar struct, got {type(value).__name__}"
        + (" (a struct array: the spec uses cells of scalar structs)" if isinstance(value, np.ndarray) else "")
    )


# -- layers ------------------------------------------------------------------------------------------
class LayerSpec:
    """One layer of the spec: ``name``, ``cls`` (MATLAB class, e.g. 'nnet.cnn.layer.ReLULayer'),
    and typed accessors for its properties that raise errors naming the layer and the field."""

    def __init__(self, props: dict, index: int):
        where = f"Layers{{{index + 1}}}"
        if "Name" not in props or "Class" not in props:
            missing = [k for k in ("Name", "Class") if k not in props]
            raise InvalidInputError(f"spec {where} lacks field(s) {missing}")
        self.props = props
        self.index = index
        self.name = to_str(props["Name"], f"{where}.Name")
        self.cls = to_str(props["Class"], f"layer '{self.name}': Class")
        #: The properties its translator declares (set by the translator); reading another one is a bug.
        self.readable: frozenset[str] | None = None

    def _declared(self, key: str) -> str:
        if self.readable is not None and key not in self.readable:
            raise RuntimeError(f"the translator of {self.short_class} reads '{key}', which is not in its "
                               "`properties` (bridge/layers): declare it, then regenerate hcLayerProperties.m")
        return key

    @property
    def short_class(self) -> str:
        return self.cls.rsplit(".", 1)[-1]

    def where(self, key: str) -> str:
        return f"layer '{self.name}' ({self.short_class}), field {key}"

    def has(self, key: str) -> bool:
        self._declared(key)
        return key in self.props and not is_missing(self.props[key])

    def array(self, key: str, default=None) -> np.ndarray:
        self._declared(key)
        if not self.has(key):
            if default is None:
                raise InvalidInputError(f"{self.where(key)} is missing")
            return np.asarray(default, dtype=np.float64)
        return to_array(self.props[key], self.where(key))

    def number(self, key: str, default=None) -> float:
        a = self.array(key, default)
        if a.size != 1:
            raise InvalidInputError(f"{self.where(key)} must be a scalar, got size {a.shape}")
        return float(a.reshape(-1)[0])

    def integer(self, key: str, default=None) -> int:
        x = self.number(key, default)
        if x != int(x):
            raise InvalidInputError(f"{self.where(key)} must be an integer, got {x}")
        return int(x)

    def ints(self, key: str, n: int, default=None) -> tuple[int, ...]:
        """A size-like property: a scalar (repeated n times) or n integers."""
        a = self.array(key, default).reshape(-1)
        if a.size == 1:
            a = np.repeat(a, n)
        if a.size != n or np.any(a != np.round(a)):
            raise InvalidInputError(f"{self.where(key)} must be {n} integers (or one), got {a.tolist()}")
        return tuple(int(v) for v in a)

    def text(self, key: str, default: str | None = None) -> str:
        self._declared(key)
        if not self.has(key):
            if default is None:
                raise InvalidInputError(f"{self.where(key)} is missing")
            return default
        return to_str(self.props[key], self.where(key))

    def is_text(self, key: str) -> bool:
        v = self.props.get(self._declared(key))
        return isinstance(v, (str, bytes, np.str_)) or (isinstance(v, np.ndarray) and v.dtype.kind == "U")


# -- the whole spec ----------------------------------------------------------------------------------
@dataclass
class Row:
    """One row of the Learnables (or State) table; ``value`` in its MATLAB shape (subscript semantics)."""

    layer: str
    parameter: str
    value: np.ndarray


@dataclass
class NetworkSpec:
    layers: list[LayerSpec]
    connections: list[tuple[str, str]]  # (source 'layer[/out]', destination 'layer[/inK]')
    input_names: list[str]
    output_names: list[str]
    learnables: list[Row]
    state: list[Row] = field(default_factory=list)

    def layer(self, name: str) -> LayerSpec:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise InvalidInputError(f"the spec has no layer named '{name}'")


def _rows(value, what: str) -> list[Row]:
    if is_missing(value):
        return []
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, dict) for r in value):
        table = {k: [r.get(k) for r in value] for k in ("Layer", "Parameter", "Value")}  # struct array as list
    else:
        table = to_struct(value, what)
    for key in ("Layer", "Parameter", "Value"):
        if key not in table:
            raise InvalidInputError(f"spec {what} lacks field {key}")
    layers = to_str_list(table["Layer"], f"{what}.Layer")
    params = to_str_list(table["Parameter"], f"{what}.Parameter")
    values = table["Value"]
    # A single row simplified by the carrier: Value is the array itself, not a cell of it.
    values = [values] if len(layers) == 1 and not _is_cell(values) else to_cell(values, f"{what}.Value")
    if not (len(layers) == len(params) == len(values)):
        raise InvalidInputError(
            f"spec {what}: Layer, Parameter and Value have {len(layers)}, {len(params)} and {len(values)} entries"
        )
    rows = []
    for i, (lay, par, val) in enumerate(zip(layers, params, values)):
        arr = to_array(val, f"{what}.Value{{{i + 1}}} ({lay}/{par})")
        if not np.all(np.isfinite(arr)):
            raise InvalidInputError(f"{what}.Value{{{i + 1}}} ({lay}/{par}) contains NaN or Inf")
        rows.append(Row(lay, par, arr))
    return rows


def _is_cell(value) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object)


def normalize_spec(spec) -> NetworkSpec:
    """Validate and normalize a network spec from any carrier (see the module docstring)."""
    if isinstance(spec, NetworkSpec):
        return spec
    top = to_struct(spec, "spec")
    fmt = to_str(top.get("Format", ""), "spec.Format") if not is_missing(top.get("Format")) else ""
    if fmt != FORMAT:
        raise InvalidInputError(
            f"spec.Format is {fmt!r}, expected {FORMAT!r}: export the network with dlnetworkToSpec(net)"
        )
    if is_missing(top.get("Layers")):
        raise InvalidInputError("spec.Layers is missing or empty")
    raw_layers = top["Layers"]
    raw_layers = [raw_layers] if isinstance(raw_layers, dict) else to_cell(raw_layers, "spec.Layers")
    layers = [LayerSpec(to_struct(v, f"spec.Layers{{{i + 1}}}"), i) for i, v in enumerate(raw_layers)]
    names = [lay.name for lay in layers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InvalidInputError(f"spec.Layers: duplicate layer names {dup}")

    connections: list[tuple[str, str]] = []
    if not is_missing(top.get("Connections")):
        conn = to_struct(top["Connections"], "spec.Connections")
        src = to_str_list(conn.get("Source"), "spec.Connections.Source")
        dst = to_str_list(conn.get("Destination"), "spec.Connections.Destination")
        if len(src) != len(dst):
            raise InvalidInputError(f"spec.Connections: {len(src)} Source but {len(dst)} Destination entries")
        connections = list(zip(src, dst))

    def names_of(key, default):
        return to_str_list(top[key], f"spec.{key}") if not is_missing(top.get(key)) else default

    input_names = names_of("InputNames", [])
    output_names = names_of("OutputNames", [])
    for key, lst in (("InputNames", input_names), ("OutputNames", output_names)):
        for n in lst:
            if n.split("/")[0] not in names:
                raise InvalidInputError(f"spec.{key} names '{n}', which is not a layer of the spec")
    learnables = _rows(top.get("Learnables"), "spec.Learnables")
    state = _rows(top.get("State"), "spec.State")
    for what, rows in (("Learnables", learnables), ("State", state)):
        for r in rows:
            if r.layer not in names:
                raise InvalidInputError(f"spec.{what} row {r.layer}/{r.parameter} names no layer of the spec")
    return NetworkSpec(layers, connections, input_names, output_names, learnables, state)
