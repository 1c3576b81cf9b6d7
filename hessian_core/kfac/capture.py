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


def forward_batch(objective, ctx, layers, inputs: bool = True, verify: bool = False):
    """Run batch ``ctx`` through the model with the layers observed: ``(outputs f, capture)``. With
    ``verify=True`` the parameters enter the graph too (``cap.primals``), for :func:`verify_capture`."""
    primals = objective.params.primals()
    if verify:
        primals = tuple(p.detach().requires_grad_(True) for p in primals)
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
    cap.primals = primals if verify else None
    return f, cap


def verify_capture(objective, f: torch.Tensor, cap: LayerCapture, layers, grads: dict, U: torch.Tensor) -> None:
    """Self-check on a fixed random combination ``u`` of the columns ``U`` whose gradients ``grads`` are: the
    gradient of ``<f, u>`` w.r.t. each covered weight and bias by
    autograd through the model must equal the one assembled from the layer's captured inputs and output
    gradients (``sum_{n,s} g a^T``, ``sum_{n,s} g``). They differ when a parameter is also used outside its
    layer's call (a custom forward, a parent calling ``F.linear`` on it, ``nn.MultiheadAttention``'s
    ``out_proj``): KFAC's factors would then describe something else, so this raises, naming the layer."""
    spec = objective.params
    index = {id(t): i for i, t in enumerate(spec.tensors)}
    r = torch.randn(U.shape[0], generator=torch.Generator().manual_seed(0), dtype=U.dtype).to(U.device)
    u = torch.tensordot(r, U, dims=1)
    checks = []  # (layer, which, assembled or None, primal)
    for layer in layers:
        m = layer.module
        g = grads.get(layer.name)
        for which, p in (("weight", m.weight if layer.weight is not None else None),
                         ("bias", m.bias if layer.bias is not None else None)):
            if p is None:
                continue
            if g is None:
                mine = None
            elif which == "weight":
                rows = cap.rows.get(layer.name)
                mine = None if rows is None else torch.einsum("j,jnso,nsi->oi", r, g, rows)
            else:
                mine = torch.tensordot(r, g, dims=1).sum((0, 1))
            checks.append((layer, which, mine, cap.primals[index[id(p)]]))
    if not checks:
        return
    auto = torch.autograd.grad(f, [c[3] for c in checks], grad_outputs=u, retain_graph=True, allow_unused=True)
    eps = torch.finfo(f.dtype).eps
    for (layer, which, mine, p), a in zip(checks, auto):
        a = torch.zeros_like(p) if a is None else a
        a = a.reshape(a.shape[0], -1) if which == "weight" else a
        scale = float(a.abs().max()) if a.numel() else 0.0
        if mine is None:
            if scale > 0:
                raise InvalidInputError(
                    f"KFAC: the {which} of layer '{layer.name}' ({layer.kind}) is used in the forward, but the layer "
                    "is not called (a parent module uses its parameters directly, as nn.MultiheadAttention does "
                    "with out_proj); leave it out (params=...) or use uncovered='exact'")
            continue
        diff = float((mine - a).abs().max())
        if diff > 1e4 * eps * max(scale, float(mine.abs().max()), 1e-300):
            raise InvalidInputError(
                f"KFAC: the gradient of the {which} of layer '{layer.name}' ({layer.kind}) assembled from the layer's "
                f"inputs and output gradients differs from autograd's (max difference {diff:.3g} of {scale:.3g}): "
                "its parameters are also used outside its call (a custom forward, tied or reused weights). "
                "Leave it out (params=...) or use uncovered='exact'")


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
