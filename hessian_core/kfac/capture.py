"""One batch through the model with the covered layers observed: their inputs, and the gradients of
output-curvature columns with respect to their outputs.

Forward hooks (removed on exit, also on errors) record each covered layer's input as rows ``(B, S, d_in)``
and add a zero leaf ``z`` to its output (``output + z``, the same values), so that backpropagating a
cotangent of the model output to ``z`` gives the gradient w.r.t. that layer's output, for all layers in
one backward and without touching the parameters (they enter detached). The parameters are never written
and no ``.grad`` is set.
"""

from __future__ import annotations

import torch

from ..data import shape_str
from ..errors import InvalidInputError


class LayerCapture:
    """Context manager: hooks on ``layers`` recording inputs (``inputs=True``) and output leaves."""

    def __init__(self, layers, inputs: bool = True):
        self.layers = layers
        self.want_inputs = inputs
        self.rows: dict[str, torch.Tensor] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self):
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
        return False

    def _hook(self, layer):
        def hook(module, args, output):
            if layer.name in self.leaves:
                raise InvalidInputError(
                    f"KFAC: layer '{layer.name}' ({layer.kind}) is called more than once in one forward; its "
                    "curvature is then not one Kronecker product. Leave its parameters out (params=...) or use "
                    "uncovered='exact'")
            if not args or not isinstance(args[0], torch.Tensor):
                raise InvalidInputError(f"KFAC: layer '{layer.name}' was called without a positional input tensor")
            if self.want_inputs and layer.needs_inputs:
                x = args[0].detach()
                rows = layer.rows(x)
                # a copy when the rows share the input's memory: the forward may still write into it
                self.rows[layer.name] = rows.clone() if rows.data_ptr() == x.data_ptr() else rows
            z = torch.zeros_like(output, requires_grad=True)
            self.leaves[layer.name] = z
            return output + z

        return hook


def forward_batch(objective, ctx, layers, inputs: bool = True):
    """Run batch ``ctx`` through the model with the layers observed: ``(outputs f, capture)``."""
    primals = objective.params.primals()
    with torch.enable_grad(), LayerCapture(layers, inputs) as cap:
        f = objective.forward(primals, ctx.inputs, seed=objective.seed_of(ctx.index))
    if not isinstance(f, torch.Tensor) or f.dim() < 1:
        raise InvalidInputError(f"KFAC needs model outputs that are one tensor (B, ...) with the samples first, "
                                f"got {shape_str(f)}")
    B = f.shape[0]
    for name, rows in cap.rows.items():
        if rows.shape[0] != B:
            raise InvalidInputError(
                f"KFAC: layer '{name}' sees inputs with leading dimension {rows.shape[0]}, but the model output has "
                f"{B} samples; KFAC needs the sample dimension first in every covered layer (batch_first)")
    return f, cap


class Backprop:
    """Gradients of cotangent columns of ``f`` w.r.t. the captured layer outputs, vectorized over columns
    (``is_grads_batched``) and one at a time for models whose backward vmap rejects."""

    def __init__(self):
        self.batched_ok = True

    def __call__(self, f: torch.Tensor, cap: LayerCapture, layers, U: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{layer name: (k, B, S, d_out)}`` for columns ``U`` of shape ``(k, *f.shape)``."""
        names = [layer.name for layer in layers if layer.name in cap.leaves]
        leaves = [cap.leaves[n] for n in names]
        if not leaves:
            return {}
        if not f.requires_grad:
            grads = [None] * len(leaves)
        else:
            grads = None
            if self.batched_ok and U.shape[0] > 1:
                try:
                    grads = torch.autograd.grad(f, leaves, grad_outputs=U, is_grads_batched=True, retain_graph=True,
                                                allow_unused=True)
                except (RuntimeError, NotImplementedError):
                    self.batched_ok = False
            if grads is None:
                per = [torch.autograd.grad(f, leaves, grad_outputs=u, retain_graph=True, allow_unused=True)
                       for u in U]
                grads = [None if per[0][i] is None else torch.stack([p[i] for p in per]) for i in range(len(leaves))]
        by_name = {layer.name: layer for layer in layers}
        out = {}
        for n, z, g in zip(names, leaves, grads):
            if g is None:
                g = torch.zeros((U.shape[0], *z.shape), dtype=z.dtype, device=z.device)
            out[n] = by_name[n].output_rows(g.detach())
        return out


def column_chunk(objective, r: int) -> int:
    """Columns backpropagated at once within the memory budget (a few copies of the activations each)."""
    per = objective.bytes_per_column()
    return int(max(1, min(r, objective.budget // (4 * max(per, 1)), 256)))
