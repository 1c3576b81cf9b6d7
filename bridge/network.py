"""A network spec -> a torch ``nn.Module`` whose parameters ARE the Learnables, in table order.

Every Learnables row is one 1-D ``nn.Parameter`` holding ``Value(:)`` (MATLAB's column-major vector),
registered in table order in one ``ParameterList``. The core's parameter order is therefore the
Learnables order and its row-major flatten of each 1-D parameter is exactly ``Value(:)``: every Hessian
row, vector and eigenvector is in MATLAB's ordering with no permutation anywhere. The forward pass
reshapes each parameter back to its MATLAB shape (column-major) and hands it to the layer translators.

The graph follows ``Connections`` ('layer/in2' destinations); without connections the layers are a series.
Inference semantics (dlnetwork ``predict``): batch normalization uses the trained statistics, dropout is off.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hessian_core.errors import InvalidInputError

from .layers import Act, InputTranslator, translator_for
from .layout import column_major
from .spec import NetworkSpec, normalize_spec


class MatlabNetwork(nn.Module):
    """The translated network. ``forward(x)`` takes ``x`` in the torch layout of ``input_format`` (a
    canonical dlarray format, set before use) and returns the output in the torch layout of
    :attr:`output_format` (known after one forward)."""

    def __init__(self, spec, dtype: torch.dtype = torch.float64):
        super().__init__()
        spec = normalize_spec(spec)
        self.spec: NetworkSpec = spec
        learn: dict[str, dict[str, np.ndarray]] = {lay.name: {} for lay in spec.layers}
        for r in spec.learnables:
            if r.parameter in learn[r.layer]:
                raise InvalidInputError(f"spec.Learnables has two rows for {r.layer}/{r.parameter}")
            learn[r.layer][r.parameter] = r.value
        state: dict[str, dict[str, np.ndarray]] = {lay.name: {} for lay in spec.layers}
        for r in spec.state:
            state[r.layer][r.parameter] = r.value
        self.translators = {lay.name: translator_for(lay)(lay, learn[lay.name], state[lay.name])
                            for lay in spec.layers}

        # Parameters: one per Learnables row, Value(:) column-major, in table order.
        self.row_shapes = [self.translators[r.layer].shapes[r.parameter] for r in spec.learnables]
        self.learnables = nn.ParameterList([
            nn.Parameter(torch.tensor(r.value.reshape(-1, order="F"), dtype=dtype)) for r in spec.learnables
        ])
        self._rows = {(r.layer, r.parameter): i for i, r in enumerate(spec.learnables)}
        self._consts: dict[str, list[tuple[str, str]]] = {}
        for li, lay in enumerate(spec.layers):
            keys = []
            for key, arr in self.translators[lay.name].consts.items():
                buf = f"const{li}_{key}"
                self.register_buffer(buf, torch.tensor(arr, dtype=dtype))
                keys.append((key, buf))
            self._consts[lay.name] = keys
        self._build_graph()
        self.input_format: str | None = None
        self.output_format: str | None = None

    # -- graph -------------------------------------------------------------------------------------
    def _build_graph(self):
        spec = self.spec
        names = [lay.name for lay in spec.layers]
        sources: dict[str, dict[int, str]] = {n: {} for n in names}
        if spec.connections:
            for src, dst in spec.connections:
                s_layer, _, s_port = src.partition("/")
                d_layer, _, d_port = dst.partition("/")
                for n, what in ((s_layer, src), (d_layer, dst)):
                    if n not in sources:
                        raise InvalidInputError(f"spec.Connections: '{what}' names no layer of the spec")
                if s_port not in ("", "out"):
                    raise InvalidInputError(f"spec.Connections: output '{src}' (layers with several outputs "
                                            "are not supported)")
                port = _port(d_port, dst)
                if port in sources[d_layer]:
                    raise InvalidInputError(f"spec.Connections: input '{dst}' is connected twice")
                sources[d_layer][port] = s_layer
        else:
            for a, b in zip(names[:-1], names[1:]):
                sources[b][0] = a
        inputs = [n.split("/")[0] for n in spec.input_names] or [
            n for n in names if isinstance(self.translators[n], InputTranslator)]
        if len(inputs) != 1:
            raise InvalidInputError(f"the bridge supports networks with exactly one input layer, found {inputs}")
        self.input_layer = inputs[0]
        if not isinstance(self.translators[self.input_layer], InputTranslator):
            sources[self.input_layer] = {}  # a network without an input layer: data enters here
        for n in names:
            if n == self.input_layer:
                continue
            need = self.translators[n].num_inputs
            have = sorted(sources[n])
            if have != list(range(need)):
                lay = spec.layer(n)
                raise InvalidInputError(
                    f"layer '{n}' ({lay.short_class}) needs {need} connected input(s), has "
                    f"{['in' + str(p + 1) for p in have] or 'none'}")
        consumers = {s for srcs in sources.values() for s in srcs.values()}
        outputs = [n.split("/")[0] for n in spec.output_names] or [n for n in names if n not in consumers]
        if len(outputs) != 1:
            raise InvalidInputError(f"the bridge supports networks with exactly one output, found {outputs}")
        self.output_layer = outputs[0]
        self.sources = {n: [sources[n][p] for p in sorted(sources[n])] for n in names}
        # Topological order (Kahn), keeping the spec's order among ready layers.
        order, done = [], set()
        while len(order) < len(names):
            ready = [n for n in names if n not in done and all(s in done for s in self.sources[n])]
            if not ready:
                raise InvalidInputError(
                    f"spec.Connections has a cycle through {sorted(set(names) - done)}")
            order.append(ready[0])
            done.add(ready[0])
        self.order = order

    # -- forward -----------------------------------------------------------------------------------
    def learnable_values(self) -> list[torch.Tensor]:
        """Each Learnables row as a MATLAB-shaped tensor (a column-major view of its parameter)."""
        return [column_major(p, shape) for p, shape in zip(self.learnables, self.row_shapes)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_format is None:
            raise InvalidInputError("set MatlabNetwork.input_format (the canonical dlarray format of x) first")
        values = self.learnable_values()
        acts: dict[str, Act] = {}
        for n in self.order:
            tr = self.translators[n]
            xs = [acts[s] for s in self.sources[n]] if n != self.input_layer else [Act(x, self.input_format)]
            p = {par: values[self._rows[(n, par)]] for par in tr.learnable_names}
            c = {key: getattr(self, buf) for key, buf in self._consts[n]}
            acts[n] = tr.forward(xs, p, c)
        out = acts[self.output_layer]
        self.output_format = out.fmt
        return out.data

    # -- description -------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, int]]:
        """(Layer, Parameter, numel) per Learnables row, in table order."""
        return [(r.layer, r.parameter, int(np.prod(s))) for r, s in zip(self.spec.learnables, self.row_shapes)]

    def to_matlab_values(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat (P,) or (P, k) result -> one array per Learnables row in its MATLAB shape (column-major)
        (with a trailing k dimension for (P, k))."""
        out, a = [], 0
        for shape in self.row_shapes:
            n = int(np.prod(shape))
            part = flat[a:a + n]
            tail = part.shape[1:]
            out.append(part.reshape(tuple(shape) + tail, order="F"))
            a += n
        return out


def _port(text: str, where: str) -> int:
    if text in ("", "in"):
        return 0
    if text.startswith("in") and text[2:].isdigit() and int(text[2:]) >= 1:
        return int(text[2:]) - 1
    raise InvalidInputError(f"spec.Connections: destination '{where}' is not 'layer', 'layer/in' or 'layer/inK'")
