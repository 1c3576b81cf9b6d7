"""Closed-form tangents and curvature of ``layer_norm`` and ``rms_norm``, for :mod:`.graph_engine`.

Both normalize each row ``x`` (the trailing ``normalized_shape`` entries, ``D`` of them) as ``xh = u * r`` with
``u = x - mean(x)`` (LayerNorm) or ``u = x`` (RMSNorm) and ``r = 1 / sqrt(mean(u^2) + eps)``, then scale by a
weight ``w`` and shift by a bias ``b`` (both optional, shared by every row). With ``P`` the centring
projection (the identity for RMSNorm), the adjoint ``g`` of the output and ``a = g * w``:

* tangent: ``d xh = r (P t - xh <xh, P t> / D)``, output tangent ``w * d xh`` (from ``x``), ``xh * t``
  (from ``w``), ``t`` (from ``b``);
* curvature of ``<g, y>``, along a tangent ``(t, s)`` of ``(x, w)`` with ``v = P t`` (``b`` has none):
  ``H_x = P [r^2 / D (3 <a, xh> <xh, v> xh / D - a <xh, v> - xh <a, v> - <a, xh> v)
  + r (g s - xh <g s, xh> / D)]`` and ``H_w = g * d xh`` (summed over the rows of a sample).

These replace vmapped reverse-over-reverse products through the decomposed normalization (a few dozen
small batched ops per call) by a handful of whole-tensor ones; they are checked against those products and
against finite differences of gradients in the tests. ``None`` wherever a case is outside them (a weight or
bias computed from the data, an input that is not per-sample), and then the generic products run.
"""

from __future__ import annotations

import math

import torch

from .ops import arg
from .trace import Ref

NORMS = {"layer_norm", "rms_norm"}


def _parts(node):
    """``(x, weight, bias, eps, centred, ndim)`` of a normalization call (``bias`` is ``None`` for RMSNorm)."""
    layer = node.name == "layer_norm"
    x = node.args[0] if node.args else node.kwargs.get("input")
    shape = arg(node, 1, "normalized_shape")
    ndim = 1 if isinstance(shape, int) else len(shape)
    weight = arg(node, 2, "weight")
    bias = arg(node, 3, "bias") if layer else None
    eps = arg(node, 4, "eps", 1e-5) if layer else arg(node, 3, "eps")
    return x, weight, bias, eps, layer, ndim


def _value(a, lookup):
    return lookup(a.index) if isinstance(a, Ref) else a


def _statistics(node, lookup):
    """``(xh, r, w, D, centred, shape)``: rows ``xh`` ``(..., D)``, ``r`` ``(..., 1)``, the weight flattened
    (or ``None``) and the input's shape."""
    x, weight, _, eps, centred, ndim = _parts(node)
    xv = _value(x, lookup)
    D = math.prod(xv.shape[xv.dim() - ndim:])
    rows = xv.reshape(*xv.shape[:xv.dim() - ndim], D)
    u = rows - rows.mean(-1, keepdim=True) if centred else rows
    if eps is None:  # torch's default for rms_norm
        eps = torch.finfo(rows.dtype).eps
    r = torch.rsqrt(u.square().mean(-1, keepdim=True) + eps)
    w = _value(weight, lookup)
    return u * r, r, (None if w is None else w.reshape(D)), D, centred, xv.shape


def _centre(t: torch.Tensor, centred: bool) -> torch.Tensor:
    return t - t.mean(-1, keepdim=True) if centred else t


def _d_xh(xh, r, v, D):
    """Tangent of ``xh`` along centred input columns ``v`` (``(K, ..., D)``)."""
    return r * (v - xh * ((xh * v).sum(-1, keepdim=True) / D))


def _role(node, var: int, data) -> str | None:
    """Which argument ``var`` is (``"x"``, ``"weight"``, ``"bias"``), or ``None`` outside the closed forms:
    only a per-sample input and a weight and bias shared by all samples (``data(i)``: per-sample value)."""
    x, weight, bias, *_ = _parts(node)
    if not isinstance(x, Ref) or not data(x.index):
        return None
    if any(isinstance(a, Ref) and data(a.index) for a in (weight, bias)):
        return None
    roles = [k for k, a in (("x", x), ("weight", weight), ("bias", bias)) if isinstance(a, Ref) and a.index == var]
    return roles[0] if len(roles) == 1 else None


def norm_push(node, var: int, lookup, T: torch.Tensor, data) -> torch.Tensor | None:
    """Output tangent of a normalization call for tangent columns ``T`` of its argument ``var`` (``(K, n,
    ...)`` for the input, ``(K, *normalized_shape)`` for the weight or bias); ``None`` outside the closed
    forms."""
    role = _role(node, var, data)
    if role is None:
        return None
    xh, r, w, D, centred, shape = _statistics(node, lookup)
    K = T.shape[0]
    if role == "x":
        out = _d_xh(xh, r, _centre(T.reshape(K, *xh.shape), centred), D)
        return (out if w is None else out * w).reshape(T.shape)
    T = T.reshape((K,) + (1,) * (xh.dim() - 1) + (D,))
    out = xh * T if role == "weight" else T.expand(K, *xh.shape)
    return out.reshape(K, *shape)


def norm_products(node, ins, padded, g: torch.Tensor, lookup, data, per_sample: bool):
    """Curvature products of ``<g, norm(x, w, b)>`` along ``K`` tangent columns (``padded``: one per variable
    in ``ins``, ``(K, n, ...)`` for the input, ``(K, *normalized_shape)`` for the weight and bias), per
    variable as ``(m, K, U)``: per sample (``m = n``, the weight's summed over the rows of a sample) or for the
    batch as one unit (``m = 1``, the weight's summed over the batch); ``None`` in place of a variable without
    curvature (the bias). ``None`` outside the closed forms."""
    roles = [_role(node, i, data) for i in ins]
    if any(role is None for role in roles):
        return None
    xh, r, w, D, centred, _ = _statistics(node, lookup)
    m = xh.shape[0] if per_sample else 1  # per sample, the input's leading dimension is the sample's
    G = g.reshape(xh.shape)
    K = padded[0].shape[0]
    T = dict(zip(roles, padded))
    out = {}
    v = _centre(T["x"].reshape(K, *xh.shape), centred) if "x" in T else None
    if v is not None:
        a = G if w is None else G * w
        xv = (xh * v).sum(-1, keepdim=True)
        av = (a * v).sum(-1, keepdim=True)
        ax = (a * xh).sum(-1, keepdim=True)
        Hx = (r * r / D) * (xh * (ax * xv * (3.0 / D) - av) - a * xv - ax * v)
        if "weight" in T:
            s = G * T["weight"].reshape((K,) + (1,) * (xh.dim() - 1) + (D,))
            Hx = Hx + r * (s - xh * ((s * xh).sum(-1, keepdim=True) / D))
            out["weight"] = (G * _d_xh(xh, r, v, D)).reshape(K, m, -1, D).sum(2)  # (K, m, D)
        out["x"] = _centre(Hx, centred)
    # None for the bias, or a weight without an input tangent: no curvature
    return tuple(None if out.get(role) is None else out[role].reshape(K, m, -1).transpose(0, 1) for role in roles)
