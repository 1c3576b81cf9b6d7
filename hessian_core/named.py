"""Per-parameter and per-layer results that know their names: :class:`NamedTensors` and :class:`HessianBlocks`.

Both are lists (so code that iterates, indexes by position, unpacks or concatenates them keeps working)
that can also be indexed by name (``diag["0.weight"]``, ``blocks["2"]``) and iterated as pairs
(``.items()``).
"""

from __future__ import annotations

import math

import torch

from .errors import InvalidInputError


class NamedTensors(list):
    """A list of tensors with a name each: ``x[i]`` by position, ``x["name"]`` by name, ``x.names``,
    ``x.items()``, ``x.to_dict()``."""

    def __init__(self, tensors, names):
        tensors, names = list(tensors), [str(n) for n in names]
        if len(tensors) != len(names):
            raise InvalidInputError(f"{len(tensors)} tensors but {len(names)} names")
        super().__init__(tensors)
        self.names = names

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return super().__getitem__(self.names.index(key))
            except ValueError:
                raise KeyError(f"{key!r} is not one of {self.names}") from None
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self.names)

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return list(zip(self.names, self))

    def to_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.items())

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n!r}: {tuple(t.shape)}" for n, t in self.items())
        return f"{type(self).__name__}({shapes})"


class HessianBlocks(NamedTensors):
    """Exact diagonal blocks of the Hessian, one ``(p_g, p_g)`` tensor per group, labelled by group name
    (a module path with ``groups="module"``, a parameter name with ``groups=None``; ``""`` is the root
    module). ``params[name]`` lists the parameter names of each block, in the order of its rows.

    :meth:`summary` gives the curvature per block (size, trace, Frobenius norm, extreme eigenvalues) and
    :meth:`table` the same as printable text.
    """

    def __init__(self, blocks, names, params):
        super().__init__(blocks, names)
        self.params = dict(zip(self.names, (list(p) for p in params)))

    def summary(self) -> dict[str, dict]:
        """``{name: {"size", "trace", "frobenius", "min_eigenvalue", "max_eigenvalue"}}`` (eigenvalues of the
        symmetric block by ``torch.linalg.eigvalsh``)."""
        out = {}
        for name, B in self.items():
            lam = torch.linalg.eigvalsh((B + B.T) / 2) if B.numel() else torch.zeros(1, dtype=B.dtype)
            out[name] = {"size": B.shape[0], "trace": float(B.trace()), "frobenius": float(torch.linalg.norm(B)),
                         "min_eigenvalue": float(lam[0]), "max_eigenvalue": float(lam[-1])}
        return out

    def table(self) -> str:
        """:meth:`summary` as an aligned text table, one row per block."""
        rows = self.summary()
        width = max([len("block")] + [len(_label(n)) for n in rows])
        head = f"{'block':{width}s} {'size':>6s} {'trace':>11s} {'||B||_F':>11s} {'min eig':>11s} {'max eig':>11s}"
        lines = [head]
        for n, r in rows.items():
            lines.append(f"{_label(n):{width}s} {r['size']:6d} {r['trace']:11.4e} {r['frobenius']:11.4e} "
                         f"{r['min_eigenvalue']:11.4e} {r['max_eigenvalue']:11.4e}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        parts = ", ".join(f"{_label(n)!r}: {t.shape[0]}x{t.shape[1]}" for n, t in self.items())
        total = sum(t.numel() for t in self)
        return f"HessianBlocks({len(self)} blocks: {parts}; {total} numbers)"


def named_unflatten(params):
    """``v (P,) -> NamedTensors`` shaped like the parameters of ``params`` (a ParamSpec), or ``None``."""
    if params is None:
        return None
    return lambda v: NamedTensors(params.unflatten(v), params.names)


def _label(name: str) -> str:
    return name if name else "(root)"


def format_float(x) -> str:
    """A number for a repr: 6 significant digits, ``nan``/``inf`` as such."""
    x = float(x)
    return f"{x:.6g}" if math.isfinite(x) else str(x)
