"""What each recorded call is, for second-order propagation: its *rule*.

Rules (see :mod:`.graph_engine` for what each one contributes):

* ``"linear"``: linear (or piecewise linear) in the values that depend on the parameters -- reshapes and
  views, indexing, sums and means, concatenation, padding, pooling, ReLU-like activations, dropout in eval
  mode, products with constants. Tangents pass through; no curvature of its own.
* ``"elementwise"``: a smooth function applied entry by entry (tanh, sigmoid, GELU, SiLU, exp, ...): its
  curvature is ``diag(g * f'')``.
* ``"bilinear"``: ``F.linear`` / ``F.conv1d/2d/3d`` / ``F.batch_norm`` in eval mode: affine in the data,
  linear in a weight that is a view of a parameter; curvature only between the two.
* ``"general"``: any other per-sample function torch.func can differentiate twice (LayerNorm, RMSNorm,
  GroupNorm, softmax over features, products of two values that depend on the parameters, ...).
* ``"coupled"``: a function that mixes the samples of a batch (BatchNorm with batch statistics, softmax
  over the batch dimension): exact too, but then the whole batch is one unit.
* ``"view"``: the same for values computed from the parameters alone (``W.t()``, ``reshape``): index maps.

Anything else is ``None`` and the structured path does not apply.
"""

from __future__ import annotations

import torch

VIEWS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "permute", "transpose", "t",
         "contiguous", "clone", "expand", "expand_as", "__getitem__", "narrow", "select", "movedim", "moveaxis",
         "swapaxes", "swapdims", "view_as", "reshape_as", "ravel", "T", "mT", "unbind_copy", "squeeze_copy"}
LINEAR = VIEWS | {
    "add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "neg", "__neg__", "__pos__", "positive", "sum",
    "mean", "cat", "concat", "concatenate", "stack", "hstack", "vstack", "pad", "max_pool1d", "max_pool2d",
    "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "relu", "relu6",
    "leaky_relu", "hardtanh", "threshold", "abs", "clamp", "clip", "hardshrink", "softshrink", "hardsigmoid",
    "flip", "roll", "repeat", "tile", "pixel_shuffle", "pixel_unshuffle", "interpolate", "upsample",
    "upsample_nearest", "channel_shuffle", "identity", "maximum", "minimum", "amax", "amin", "max", "min",
}
ELEMENTWISE = {
    "tanh", "sigmoid", "exp", "expm1", "exp2", "log", "log1p", "log2", "log10", "sin", "cos", "tan", "sinh", "cosh",
    "asinh", "atan", "sqrt", "rsqrt", "square", "reciprocal", "erf", "erfc", "gelu", "silu", "softplus", "elu",
    "selu", "celu", "mish", "logsigmoid", "softsign", "tanhshrink", "hardswish",
}
GENERAL = {"layer_norm", "rms_norm", "group_norm", "instance_norm", "normalize", "prelu", "glu",
           "cosine_similarity", "pairwise_distance", "local_response_norm"}
SOFTMAX = {"softmax", "log_softmax", "softmin"}
PRODUCTS = {"mul", "__mul__", "__rmul__", "div", "__truediv__", "__rtruediv__", "true_divide", "pow", "__pow__",
            "__rpow__", "matmul", "__matmul__", "mm", "bmm", "einsum"}
DROPOUT = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout"}
LAYERS = {"linear": "linear", "conv1d": "conv", "conv2d": "conv", "conv3d": "conv"}


def arg(node, pos: int, name: str, default=None):
    """Argument ``name`` of a recorded call (given at position ``pos`` or by keyword)."""
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def classify(node, values) -> str | None:
    """The rule of ``node`` (see the module docstring), or ``None`` when it has none."""
    from .trace import Ref

    name = node.name
    out = values[node.out]
    if not out.data:  # computed from the parameters alone
        return "view" if name in VIEWS else None
    if name in DROPOUT:
        training = arg(node, 2, "training", True)
        p = arg(node, 1, "p", 0.5)
        return "linear" if (not training or p == 0) else None
    if name in LAYERS or name == "batch_norm":
        weight = arg(node, 1 if name != "batch_norm" else 3, "weight")
        if name == "batch_norm":
            training = arg(node, 5, "training", False)
            running = arg(node, 1, "running_mean") is not None and arg(node, 2, "running_var") is not None
            if training or not running:
                return "coupled"
        w_dep = isinstance(weight, Ref) and values[weight.index].dep
        if w_dep and values[weight.index].data:
            return "general"  # a weight computed from the data: not a layer
        x = node.args[0] if node.args else node.kwargs.get("input")
        x_dep = isinstance(x, Ref) and values[x.index].dep
        if not w_dep:
            return "linear"  # constant weight: affine in x, parameters only in the bias
        return "bilinear" if x_dep else "source"
    if name == "embedding":
        return "source" if _embedding_plain(node) else None
    if name in ELEMENTWISE:
        return "elementwise" if len(node.inputs) == 1 and _only_dep_tensor(node, values) else "general"
    if name in LINEAR:
        if name in ("sum", "mean", "amax", "amin", "max", "min") and _reduces_batch(node):
            return "coupled"
        return "linear"
    if name in PRODUCTS:
        return _product_rule(node, values, name)
    if name in SOFTMAX:
        dim = arg(node, 1, "dim")
        return "coupled" if dim in (None, 0, -len(out.tensor.shape)) else "general"
    if name in GENERAL:
        return "general"
    return None


def _only_dep_tensor(node, values) -> bool:
    """The call reads exactly one tensor, the one that depends on the parameters (no tensor exponents ...)."""
    from .trace import Ref, call_leaves

    return sum(isinstance(x, (Ref, torch.Tensor)) for x in call_leaves(node)) == 1


def _reduces_batch(node) -> bool:
    dim = arg(node, 1, "dim")
    if dim is None:
        return True
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return any(d == 0 for d in dims)


def _product_rule(node, values, name) -> str:
    from .trace import Ref

    refs = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, Ref)]
    dep = [r for r in refs if values[r.index].dep]
    if name in ("div", "__truediv__", "true_divide"):
        den = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        if not (isinstance(den, Ref) and values[den.index].dep):
            return "linear"
        return "general"
    if name in ("pow", "__pow__"):
        exponent = node.args[1] if len(node.args) > 1 else node.kwargs.get("exponent")
        if isinstance(exponent, (int, float)) and len(dep) == 1:
            return "linear" if exponent == 1 else "elementwise"
        return "general"
    if name == "__rpow__":
        return "elementwise" if len(dep) == 1 and not any(isinstance(a, torch.Tensor) for a in node.args) \
            else "general"
    if len(dep) == 1 and len({r.index for r in refs}) <= 2:
        return "linear"
    return "general"


def _embedding_plain(node) -> bool:
    """``F.embedding`` without the options whose backward is not the gradient of the forward."""
    return (arg(node, 2, "padding_idx") is None and arg(node, 3, "max_norm") is None
            and not arg(node, 5, "scale_grad_by_freq", False))



# -- the normalizations written out in elementary ops ------------------------------------------------
# Their fused kernels' second derivatives under vmap are slow (decomposed in Python at every call) and, for
# layer_norm with a weight, wrong in torch 2.13 (torch.func.hessian of a LayerNorm net is asymmetric); the
# elementary ops' are fast and right. Same signatures as torch.nn.functional.
def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    centered = input - input.mean(dims, keepdim=True)
    out = centered * torch.rsqrt(centered.square().mean(dims, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    return out + bias if bias is not None else out


def _rms_norm(input, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(normalized_shape), 0))
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    out = input * torch.rsqrt(input.square().mean(dims, keepdim=True) + eps)
    return out * weight if weight is not None else out


def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    shape = input.shape
    x = input.reshape(shape[0], num_groups, -1)
    centered = x - x.mean(-1, keepdim=True)
    out = (centered * torch.rsqrt(centered.square().mean(-1, keepdim=True) + eps)).reshape(shape)
    affine = (1, -1) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = out * weight.reshape(affine)
    return out + bias.reshape(affine) if bias is not None else out


def _batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    affine = (1, -1) + (1,) * (input.dim() - 2)
    if training or running_mean is None or running_var is None:
        dims = (0,) + tuple(range(2, input.dim()))
        centered = input - input.mean(dims, keepdim=True)
        out = centered * torch.rsqrt(centered.square().mean(dims, keepdim=True) + eps)
    else:
        out = (input - running_mean.reshape(affine)) * torch.rsqrt(running_var.reshape(affine) + eps)
    if weight is not None:
        out = out * weight.reshape(affine)
    return out + bias.reshape(affine) if bias is not None else out


DECOMPOSITIONS = {"layer_norm": _layer_norm, "rms_norm": _rms_norm, "group_norm": _group_norm,
                  "batch_norm": _batch_norm}
