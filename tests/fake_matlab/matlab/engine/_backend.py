"""The fake MATLAB process behind the fake engine: a workspace of MATLAB values, a tiny statement
interpreter for ``eval`` (``name = f(args);``, ``f(args);``, ``X{i}``, 'char', numbers), the handful of
MATLAB functions the bridge calls, and fake ``dlnetwork`` / ``dlarray`` objects.

MATLAB values here: numeric arrays are :class:`MArray` (ndarray with MATLAB subscript semantics plus a
class name), char is ``str``, a cell vector is :class:`MCell`, a scalar struct is ``dict``, objects are
:class:`Dlnetwork` / :class:`Dlarray`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


class MatlabError(Exception):
    """An error raised by MATLAB code (becomes MatlabExecutionError in the engine)."""


@dataclass
class MArray:
    data: np.ndarray  # MATLAB subscripts: data[i, j] = A(i+1, j+1)
    cls: str = "double"

    def __post_init__(self):
        d = np.asarray(self.data)
        if d.ndim < 2:
            d = d.reshape((1, -1) if d.ndim == 1 else (1, 1))
        while d.ndim > 2 and d.shape[-1] == 1:  # MATLAB drops trailing singleton dimensions
            d = d.reshape(d.shape[:-1])
        self.data = d


@dataclass
class MCell:
    items: list


@dataclass
class Dlarray:
    """A formatted dlarray: data stored in dlarray order (S..., C, B, T), as MATLAB permutes it."""

    data: np.ndarray
    fmt: str

    @staticmethod
    def create(raw: np.ndarray, fmt: str) -> Dlarray:
        order = sorted(range(len(fmt)), key=lambda i: "SCBTU".index(fmt[i]))
        raw = np.asarray(raw, dtype=np.float64)
        raw = raw.reshape(raw.shape + (1,) * (len(fmt) - raw.ndim))
        return Dlarray(np.transpose(raw, order), "".join(fmt[i] for i in order))


@dataclass
class Dlnetwork:
    """What dlnetworkToSpec reads: layer property structs, connections and the Learnables/State tables."""

    layers: list  # list of dicts (Name, Class, properties)
    learn_layer: list
    learn_param: list
    learn_value: list  # MArray, class double or single
    connections: list = field(default_factory=list)  # (source, destination)
    state: list = field(default_factory=list)  # (layer, parameter, MArray)
    input_names: list = field(default_factory=list)
    output_names: list = field(default_factory=list)


# -- the MATLAB functions ----------------------------------------------------------------------------
def _cellstr(names):
    return MCell(list(names))


def dlnetworkToSpec(net):  # noqa: N802 - MATLAB name
    if not isinstance(net, Dlnetwork):
        raise MatlabError("dlnetworkToSpec: input must be a dlnetwork object.")
    layers = MCell([{k: _to_m(v) for k, v in lay.items()} for lay in net.layers])
    conn = {"Source": _cellstr(s for s, _ in net.connections), "Destination": _cellstr(d for _, d in net.connections)}
    return {
        "Format": "hessiancore.network/1",
        "Layers": layers,
        "Connections": conn,
        "InputNames": _cellstr(net.input_names),
        "OutputNames": _cellstr(net.output_names),
        "Learnables": {"Layer": _cellstr(net.learn_layer), "Parameter": _cellstr(net.learn_param),
                       # the exporter casts to double (single Learnables are common)
                       "Value": MCell([MArray(v.data.astype(np.float64)) for v in net.learn_value])},
        "State": {"Layer": _cellstr(r[0] for r in net.state), "Parameter": _cellstr(r[1] for r in net.state),
                  "Value": MCell([r[2] for r in net.state])},
    }


def updateLearnables(net, values):  # noqa: N802
    if not isinstance(net, Dlnetwork) or not isinstance(values, MCell):
        raise MatlabError("updateLearnables: expected a dlnetwork and a cell array of values.")
    if len(values.items) != len(net.learn_value):
        raise MatlabError(f"updateLearnables: expected {len(net.learn_value)} values, got {len(values.items)}.")
    new = []
    for i, (old, v) in enumerate(zip(net.learn_value, values.items)):
        if not isinstance(v, MArray) or v.cls not in ("double", "single"):
            raise MatlabError(f"updateLearnables: value {i + 1} must be a floating-point array.")
        if tuple(v.data.shape) != tuple(old.data.shape):
            raise MatlabError(f"updateLearnables: value {i + 1} has size {v.data.shape}, expected {old.data.shape}.")
        new.append(MArray(v.data.astype(np.float32 if old.cls == "single" else np.float64), old.cls))
    return Dlnetwork(net.layers, net.learn_layer, net.learn_param, new, net.connections, net.state,
                     net.input_names, net.output_names)


def _extractdata(x):
    if not isinstance(x, Dlarray):
        raise MatlabError("Check for incorrect argument data type in call to function 'extractdata'.")
    return MArray(x.data.copy())


def _dims(x):
    if not isinstance(x, Dlarray):
        raise MatlabError("Check for incorrect argument data type in call to function 'dims'.")
    return x.fmt


def _double(x):
    if not isinstance(x, MArray):
        raise MatlabError(f"Conversion to double from {type(x).__name__} is not possible.")
    return MArray(x.data.astype(np.float64), "double")


def _gather(x):
    return x


def _isa(x, name):
    kinds = {"dlarray": Dlarray, "dlnetwork": Dlnetwork, "cell": MCell, "struct": dict}
    return MArray(np.array(isinstance(x, kinds.get(name, ())) or (isinstance(x, MArray) and x.cls == name)),
                  "logical")


def _iscell(x):
    return MArray(np.array(isinstance(x, MCell)), "logical")


def _numel(x):
    n = len(x.items) if isinstance(x, MCell) else (x.data.size if isinstance(x, (MArray, Dlarray)) else 1)
    return MArray(np.array(float(n)))


def _to_m(v):
    """Python test literal -> MATLAB value (for building fake networks)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)) and v and all(isinstance(s, str) for s in v):
        return MCell(list(v))
    return MArray(np.asarray(v, dtype=np.float64))


class FakeMatlab:
    """One fake MATLAB process."""

    def __init__(self):
        self.ws: dict = {}
        self.log: list[str] = []
        self.alive = True
        self.functions = {
            "dlnetworkToSpec": dlnetworkToSpec, "updateLearnables": updateLearnables,
            "extractdata": _extractdata, "dims": _dims, "double": _double, "gather": _gather,
            "isa": _isa, "iscell": _iscell, "numel": _numel, "clear": self._clear,
            "sqrt": lambda x: MArray(np.sqrt(x.data)),
        }

    def _clear(self, *names):
        for n in names:
            self.ws.pop(n, None)

    # -- calling -----------------------------------------------------------------------------------
    def call(self, name: str, args: list, nargout: int):
        fn = self.functions.get(name)
        if fn is None:
            raise MatlabError(f"Undefined function '{name}' for input arguments of type "
                              f"'{_class_of(args[0]) if args else 'double'}'.")
        out = fn(*args)
        return out if nargout else None

    # -- eval --------------------------------------------------------------------------------------
    def eval(self, code: str):
        self.log.append(code)
        for stmt in _split(code):
            m = re.fullmatch(r"\s*([A-Za-z]\w*)\s*=\s*(.+?)\s*", stmt)
            if m and not stmt.strip().startswith(m.group(1) + "(") and "==" not in stmt:
                self.ws[m.group(1)] = self._expr(_Tokens(m.group(2)))
            else:
                self._expr(_Tokens(stmt), want=False)

    def _expr(self, tk: _Tokens, want: bool = True):
        value = self._term(tk, want)
        if not tk.done():
            raise SyntaxError(f"Parse error at '{tk.rest()}'")
        return value

    def _term(self, tk: _Tokens, want: bool = True):
        t = tk.next()
        if t.startswith("'"):
            return t[1:-1].replace("''", "'")
        if re.fullmatch(r"[0-9.]+(e[-+]?\d+)?", t):
            return MArray(np.array(float(t)))
        if not re.fullmatch(r"[A-Za-z]\w*", t):
            raise SyntaxError(f"Parse error at '{t}'")
        if tk.peek() == "(":
            tk.next()
            args = []
            while tk.peek() != ")":
                args.append(self._term(tk))
                if tk.peek() == ",":
                    tk.next()
            tk.next()
            if t in self.ws:  # indexing a variable with () is not needed by the bridge
                raise MatlabError(f"Indexing '{t}' with () is not supported by the fake")
            return self.call(t, args, 1 if want else 0)
        if t not in self.ws:
            raise MatlabError(f"Unrecognized function or variable '{t}'.")
        value = self.ws[t]
        if tk.peek() == "{":
            tk.next()
            idx = self._term(tk)
            if tk.next() != "}":
                raise SyntaxError("Parse error: expected '}'")
            if not isinstance(value, MCell):
                raise MatlabError("Brace indexing is not supported for variables of this type.")
            i = int(idx.data.reshape(-1)[0])
            if not 1 <= i <= len(value.items):
                raise MatlabError("Index exceeds the number of array elements. "
                                  f"Index must not exceed {len(value.items)}.")
            return value.items[i - 1]
        return value


def _class_of(v) -> str:
    if isinstance(v, MArray):
        return v.cls
    return {str: "char", dict: "struct", MCell: "cell", Dlarray: "dlarray", Dlnetwork: "dlnetwork"}.get(type(v), "?")


def _split(code: str) -> list[str]:
    out, cur, quote = [], "", False
    for ch in code:
        if ch == "'":
            quote = not quote
        if ch in ";\n" and not quote:
            if cur.strip():
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return out


class _Tokens:
    def __init__(self, text: str):
        self.toks = re.findall(r"'(?:[^']|'')*'|[A-Za-z]\w*|[0-9.]+(?:e[-+]?\d+)?|[(){},]|\S", text)
        self.i = 0

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise SyntaxError("Parse error: unexpected end of statement")
        self.i += 1
        return self.toks[self.i - 1]

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def rest(self) -> str:
        return " ".join(self.toks[self.i:])
