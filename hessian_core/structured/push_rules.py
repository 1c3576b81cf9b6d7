"""Closed-form tangent maps of the most common calls, for :mod:`.graph_engine`.

``push(node, rule, var, lookup, T)`` returns the tangent of the call's output for tangent columns ``T``
(``(K, n, ...)`` for a data input, ``(K, ...)`` for a value computed from the parameters) of its input
``var``, or ``None`` when there is no closed form (then a vmapped ``torch.func.jvp`` computes it). Each is the
call's own linearization written with the call itself where it is linear in ``var``: ``F.linear`` and
convolutions in their input (without the bias), BatchNorm in eval mode, and elementwise functions
(``T * f'(x)``). They skip the per-call cost of forward-mode transforms, which dominates on small models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import grad

from .ops import arg
from .trace import Ref

_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}


def _is(x, var) -> bool:
    return isinstance(x, Ref) and x.index == var


def push(node, rule: str, var: int, lookup, T: torch.Tensor, call) -> torch.Tensor | None:
    """See the module docstring; ``call(z)`` evaluates the node with ``z`` in place of ``var``."""
    name = node.name
    x = node.args[0] if node.args else node.kwargs.get("input")
    if name == "linear" and _is(x, var) and not _is(arg(node, 1, "weight"), var) \
            and not _is(arg(node, 2, "bias"), var):
        return F.linear(T, lookup(arg(node, 1, "weight").index) if isinstance(arg(node, 1, "weight"), Ref)
                        else arg(node, 1, "weight"))
    if name in _CONV and _is(x, var) and not _is(arg(node, 1, "weight"), var):
        w = arg(node, 1, "weight")
        w = lookup(w.index) if isinstance(w, Ref) else w
        K, n = T.shape[:2]
        args = [node.args[i] if len(node.args) > i else None for i in range(3, 7)]
        names = ("stride", "padding", "dilation", "groups")
        kw = {k: (a if a is not None else node.kwargs[k]) for k, a in zip(names, args)
              if a is not None or k in node.kwargs}
        out = _CONV[name](T.reshape(K * n, *T.shape[2:]), w, None, **kw)
        return out.reshape(K, n, *out.shape[1:])
    if name == "batch_norm" and _is(x, var) and rule == "bilinear":
        w, rv = arg(node, 3, "weight"), arg(node, 2, "running_var")
        w = lookup(w.index) if isinstance(w, Ref) else w
        eps = arg(node, 7, "eps", 1e-5)
        scale = torch.rsqrt(rv + eps) if w is None else w * torch.rsqrt(rv + eps)
        return T * scale.reshape((1, 1, -1) + (1,) * (T.dim() - 3))
    if rule == "elementwise" and _is(x, var):
        d1 = grad(lambda u: call(u).sum())(lookup(var))
        return T * d1
    return None


def weight_gradients(node, T: torch.Tensor, g: torch.Tensor, lookup) -> torch.Tensor | None:
    """Per-sample gradients with respect to the weight of ``<g_n, f(t, W) - f(0, W)>`` for every input
    column ``t = T[k, n]``: ``(n, K, *weight)``, the curvature between a layer's weight and its input (see
    :meth:`~.graph_engine.BatchGraph._bilinear`); ``None`` when there is no closed form here."""
    name = node.name
    K, n = T.shape[:2]
    if name == "linear":
        Tn = T.transpose(0, 1).reshape(n, K, -1, T.shape[-1])  # (n, K, tokens, d)
        gn = g.reshape(n, -1, g.shape[-1])  # (n, tokens, h)
        return torch.einsum("nti,nktb->nkib", gn, Tn)
    if name == "batch_norm":
        rv, eps = arg(node, 2, "running_var"), arg(node, 7, "eps", 1e-5)
        C = rv.shape[0]
        prod = (T.reshape(K, n, C, -1) * g.reshape(1, n, C, -1)).sum(-1)  # (K, n, C)
        return (prod * torch.rsqrt(rv + eps)).transpose(0, 1)
    if name in ("conv1d", "conv2d"):
        w = arg(node, 1, "weight")
        w = lookup(w.index) if isinstance(w, Ref) else w
        stride, padding = arg(node, 3, "stride", 1), arg(node, 4, "padding", 0)
        dilation, groups = arg(node, 5, "dilation", 1), arg(node, 6, "groups", 1)
        if groups != 1 or isinstance(padding, str):
            return None
        if name == "conv1d":
            T = T.unsqueeze(-2)
            kernel = (1, w.shape[-1])
            stride, padding, dilation = (1, _one(stride)), (0, _one(padding)), (1, _one(dilation))
        else:
            kernel = tuple(w.shape[-2:])
        U = F.unfold(T.reshape(K * n, *T.shape[2:]), kernel, dilation=dilation, padding=padding, stride=stride)
        U = U.reshape(K, n, U.shape[1], U.shape[2]).permute(1, 3, 0, 2).reshape(n, U.shape[2], -1)  # (n, L, K q)
        G = torch.bmm(g.reshape(n, g.shape[1], -1), U)  # (n, O, K q)
        return G.reshape(n, w.shape[0], K, -1).transpose(1, 2).reshape(n, K, *w.shape)
    return None


def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v
