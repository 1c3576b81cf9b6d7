"""Exact Hessian diagonal of a ``Sequential`` with convolutions, by backpropagating per-sample square-root
factors of the Hessian (as BackPACK's ``DiagHessian``, but with any per-sample loss and many batches).

Accepted: an ``nn.Sequential`` (nested ones flattened, ``forward`` not overridden, no hooks) of
``Linear``/``Conv1d``/``Conv2d``/``Conv3d`` (exact types), ``BatchNorm1d/2d/3d`` in eval mode, max/average
pooling, ``Flatten`` and elementwise activations (see :mod:`.chain`); every differentiated parameter belongs
to one of these layers, once.

Per sample ``n``, the Hessian of the loss with respect to the output of module ``k`` is kept as a sum of
signed outer products ``sum_j sign_j s_j s_j^T`` (factor columns ``s_j``). It starts from the eigen-
decomposition of the loss's per-sample output Hessian; a module maps every column back with its
input-Jacobian transpose (``vjp``, vmapped over columns); an elementwise activation adds the residual
``diag(s'' * g)`` as one new column per unit (``g`` the gradient at its output). A Linear or conv layer is
linear in its parameters, so its diagonal is ``sum_n sum_j sign_j (J_theta^T s_j)^2``: squared per-sample
parameter gradients of the factor columns.

Linear, 2-D convolutions (and 1-D ones as 2-D) and BatchNorm have closed forms for both steps (the columns
mapped back by the layer's own input gradient, the squared parameter gradients from ``unfold``); any other
module goes through ``torch.func`` (vjp, vmapped over columns and samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from .chain import NotApplicable, _elementwise, _flatten_ok, _has_hooks, sequential_modules
from .chain_batch import elementwise_derivatives, known_loss_derivatives, output_derivatives

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d) + BATCHNORMS
LINEAR_MAPS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
#: activations whose second derivative is zero (almost everywhere): no residual columns
PIECEWISE_LINEAR = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.Hardtanh, nn.Identity, nn.Dropout, nn.AlphaDropout)


def parse_modules(objective) -> list[tuple[nn.Module, dict[str, int]]] | None:
    """``[(module, {attribute: ParamSpec index})]`` for a supported Sequential, else ``None``."""
    modules = sequential_modules(objective.model)
    if modules is None:
        return None
    position = {id(t): i for i, t in enumerate(objective.params.tensors)}
    seen: set[int] = set()
    out, found = [], 0
    for m in modules:
        if _has_hooks(m):
            return None
        if type(m) in BATCHNORMS and (objective.train_mode or m.running_mean is None or m.running_var is None):
            return None  # batch statistics couple the samples
        if type(m) in PARAMETRIC:
            where = {}
            for attr, t in m._parameters.items():
                if t is None:
                    continue
                if id(t) in seen:
                    return None
                seen.add(id(t))
                if id(t) in position:
                    where[attr] = position[id(t)]
                    found += 1
            out.append((m, where))
        elif type(m) in LINEAR_MAPS or _flatten_ok(m) or _elementwise(m, objective.train_mode):
            out.append((m, {}))
        else:
            return None
    return out if found == len(objective.params) else None


def _loss_factor(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``D_n = sum_j sign_j s_j s_j^T``: columns ``(N, C, C)`` (column index second), signs ``(N, C)``."""
    lam, Q = torch.linalg.eigh(D)
    return (Q * lam.abs().sqrt()[:, None, :]).transpose(1, 2), torch.sign(lam)


def _param_squares(m, x, S, sign, attrs) -> dict:
    """``sum_n sum_j sign[n, j] * (J_theta(x_n)^T S[n, j])^2`` for the parameters ``attrs`` of ``m``
    (``x`` ``(n, ...)`` its input, ``S`` ``(n, c, ...)`` factor columns at its output, ``sign`` ``(n, c)``)."""
    n, c = S.shape[:2]
    t = type(m)
    if t is nn.Linear and x.dim() == 2:
        s2 = torch.bmm(sign[:, None, :], S * S)[:, 0]  # (n, h)
        out = {"weight": lambda: s2.T @ (x * x), "bias": lambda: s2.sum(0)}
        return {a: out[a]() for a in attrs}
    if t in BATCHNORMS:
        Sc = S.reshape(n, c, m.num_features, -1)
        out = {}
        if "weight" in attrs:
            xhat = (x - _channel(m.running_mean, x)) * torch.rsqrt(_channel(m.running_var, x) + m.eps)
            gw = (Sc * xhat.reshape(n, 1, m.num_features, -1)).sum(-1)
            out["weight"] = torch.einsum("nc,nck->k", sign, gw * gw)
        if "bias" in attrs:
            gb = Sc.sum(-1)
            out["bias"] = torch.einsum("nc,nck->k", sign, gb * gb)
        return out
    unfolded = _unfold(m, x)
    if unfolded is not None:
        U = unfolded  # (n, C k, L)
        out_ch = m.out_channels
        So = S.reshape(n, c * out_ch, -1)  # (n, c O, L)
        signs = sign.reshape(1, n * c)
        out = {}
        if "weight" in attrs:
            G = torch.bmm(So, U.transpose(1, 2))  # per-sample gradients of every column (n, c O, C k)
            out["weight"] = (signs @ G.square_().reshape(n * c, -1)).reshape(m.weight.shape)
        if "bias" in attrs:
            out["bias"] = (signs @ So.sum(-1).square_().reshape(n * c, out_ch))[0]
        return out
    params = {a: getattr(m, a).detach() for a in attrs}

    def per_sample(xn, Sn, sn):
        _, pullback = vjp(lambda p: functional_call(m, p, (xn[None],), strict=False)[0], params)
        g = vmap(pullback)(Sn)[0]
        return {a: torch.tensordot(sn, g[a] ** 2, dims=1) for a in attrs}

    return {a: v.sum(0) for a, v in vmap(per_sample)(x, S, sign).items()}


def _channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over ``x`` ``(n, C, ...)``."""
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


def _plain_conv(m) -> bool:
    return (type(m) in (nn.Conv1d, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))


def _unfold(m, x):
    """The patches of a plain 1-D or 2-D convolution's input, ``(n, C k, L)``, or ``None``."""
    if not _plain_conv(m):
        return None
    if type(m) is nn.Conv1d:
        return F.unfold(x[:, :, None, :], (1, m.kernel_size[0]), dilation=(1, m.dilation[0]),
                        padding=(0, m.padding[0]), stride=(1, m.stride[0]))
    return F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)


def _pool_indices(m, x):
    """``(output, argmax indices)`` of a plain max pooling (no ceil mode or dilation), else ``None``."""
    if type(m) not in (nn.MaxPool1d, nn.MaxPool2d) or m.ceil_mode or m.dilation not in (1, (1,), (1, 1)):
        return None
    pool = F.max_pool2d if type(m) is nn.MaxPool2d else F.max_pool1d
    return pool(x, m.kernel_size, m.stride, m.padding, return_indices=True)


def _max_pool_pullback(m, x, S, idx):
    """Each column's entries back to the argmax positions of its pooling windows, summed where overlapping
    windows share one (``max_unpool`` would keep only one of them)."""
    n, c = S.shape[:2]
    flat = S.reshape(n, c, x.shape[1], -1)
    index = idx.reshape(n, 1, x.shape[1], -1).expand_as(flat)
    out = S.new_zeros(n, c, x.shape[1], x[0, 0].numel())
    return out.scatter_add_(3, index, flat).reshape(n, c, *x.shape[1:])


def _derivatives(m, x):
    """``f'`` and ``f''`` of an elementwise module at ``x`` (``f''`` is ``None`` where it vanishes)."""
    if type(m) is nn.ReLU:
        return (x > 0).to(x.dtype), None
    if type(m) in PIECEWISE_LINEAR:
        return elementwise_derivatives([m], x)[0], None
    return elementwise_derivatives([m], x)


def _pullback(m, x, S, d1=None, idx=None):
    """Columns ``S`` ``(n, c, *out)`` at ``m``'s output mapped back to its input: ``(n, c, *in)``."""
    n, c = S.shape[:2]
    t = type(m)
    if t is nn.Linear:
        return S @ m.weight.detach()
    if t in BATCHNORMS:
        scale = m.weight.detach() if m.weight is not None else torch.ones_like(m.running_var)
        return S * _channel(scale * torch.rsqrt(m.running_var + m.eps), S[0])
    if d1 is not None:  # elementwise
        return S * d1[:, None]
    if _flatten_ok(m):
        return S.reshape(n, c, *x.shape[1:])
    if idx is not None:
        return _max_pool_pullback(m, x, S, idx)
    if _plain_conv(m):
        flat = S.reshape(n * c, *S.shape[2:])
        shape = (n * c,) + tuple(x.shape[1:])
        grad_input = torch.nn.grad.conv1d_input if t is nn.Conv1d else torch.nn.grad.conv2d_input
        return grad_input(shape, m.weight.detach(), flat, m.stride, m.padding, m.dilation, m.groups).reshape(
            n, c, *x.shape[1:])
    _, pb = vjp(m, x)
    return vmap(lambda s: pb(s)[0], in_dims=1, out_dims=1)(S)


def add_batch_diagonal(out: torch.Tensor, objective, modules, ctx, weight: float, work_bytes: int,
                       ggn: bool = False) -> None:
    """``out += weight * diag(this batch's Hessian)``, ``out`` flat ``(P,)`` in ParamSpec order. Samples are
    processed in slices so that the factor columns stay within ``work_bytes``. ``ggn=True``: the diagonal of
    the generalized Gauss-Newton ``J^T H_L J`` instead (the same recursion without the activations'
    residual columns, which are the Hessian's terms beyond the GGN)."""
    x = ctx.inputs
    if not isinstance(x, torch.Tensor):
        raise NotApplicable("inputs are not one tensor")
    inputs, indices = [], []
    with torch.no_grad():
        for m, _ in modules:
            inputs.append(x)
            pooled = _pool_indices(m, x)  # max pooling: keep where each maximum came from
            indices.append(None if pooled is None else pooled[1])
            if pooled is not None:
                x = pooled[0]
            else:  # an in-place activation would overwrite the input kept for its derivatives
                x = m(x.clone()) if getattr(m, "inplace", False) else m(x)
        # The modules act on each sample alone (eval mode), so the model's own output for the first sample
        # checks the chain (guards against anything the parse missed) at a fraction of a second forward.
        first = inputs[0][:1]
        expected = objective.forward(objective.params.primals(), first, seed=objective.seed_of(ctx.index))
        if not isinstance(expected, torch.Tensor) or expected.shape != x[:1].shape or not torch.allclose(
                x[:1], expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max().clamp_min(1))):
            raise NotApplicable("the module chain does not reproduce the model output")
    shape = x.shape
    g, D = output_derivatives(lambda o: ctx.loss_of_outputs(o.reshape(shape)), x.reshape(shape[0], -1),
                              known=(objective.loss_fn, ctx.targets) if x.dim() == 2 else None)
    lowest = min(k for k, (_, where) in enumerate(modules) if where)
    # factor columns per sample: the loss's, plus one per unit of every curving elementwise module above `lowest`
    columns = D.shape[1] + (0 if ggn else sum(inputs[k][0].numel() for k in range(lowest + 1, len(modules))
                                              if _curves(modules[k][0])))
    factor = _known_factor(objective.loss_fn, x, ctx.targets, D)
    widest = max(t[0].numel() for t in inputs + [x])
    per_sample = 3 * out.element_size() * columns * widest
    step = max(1, work_bytes // per_sample)
    # no_grad: the pullbacks through the modules' own parameters would attach the result to their graph
    # (torch.func's transforms compute their derivatives regardless of an outer no_grad)
    with torch.no_grad():
        for a in range(0, shape[0], step):
            sl = slice(a, a + step)
            _backprop(out, objective.params, modules, [t[sl] for t in inputs], g.reshape(shape)[sl], D[sl],
                      lowest, weight, None if factor is None else (factor[0][sl], factor[1][sl]),
                      [None if i is None else i[sl] for i in indices], ggn)


def _is_elementwise(m) -> bool:
    return type(m) not in PARAMETRIC and type(m) not in LINEAR_MAPS and not _flatten_ok(m)


def _curves(m) -> bool:
    """An elementwise module with a nonzero second derivative (it adds residual columns)."""
    return _is_elementwise(m) and type(m) not in PIECEWISE_LINEAR


def _known_factor(loss_fn, out, targets, D):
    """Square-root factors of the output Hessian without an eigendecomposition, where a closed form exists:
    cross-entropy ``D = S S^T`` with ``S = (diag(sqrt p) - p sqrt(p)^T) / sqrt(N)`` (``p`` the softmax, read off
    ``D``'s diagonal plus ``p p^T``; all signs +), MSE ``sqrt(2 / (N C)) I``; else ``None``."""
    if out.dim() != 2 or D.shape[1] != out.shape[1]:
        return None
    if type(loss_fn) is nn.CrossEntropyLoss and known_loss_derivatives(loss_fn, out, targets) is not None:
        n = out.shape[0]
        scale = 1.0 / n if loss_fn.reduction == "mean" else 1.0
        p = torch.softmax(out, dim=1)
        root = p.sqrt()
        S = (torch.diag_embed(root) - p[:, :, None] * root[:, None, :]) * scale ** 0.5  # columns: S[n, :, j]
        return S.transpose(1, 2), torch.ones_like(p)
    return None


def _backprop(out, spec, modules, inputs, g, D, lowest, weight, factor=None, indices=None, ggn=False) -> None:
    S, sign = _loss_factor(D) if factor is None else factor
    factors = [(S.reshape(g.shape[0], -1, *g.shape[1:]), sign)]
    # the gradient is carried down only as far as an activation still needs it for its residual columns
    # (the GGN has none)
    deepest = len(modules) if ggn else min((k for k in range(lowest + 1, len(modules)) if _curves(modules[k][0])),
                                           default=len(modules))
    for k in range(len(modules) - 1, lowest - 1, -1):
        m, where = modules[k]
        xin = inputs[k]
        for Sf, sf in factors if where else ():
            squares = _param_squares(m, xin, Sf, sf, list(where))
            for attr, index in where.items():
                out[spec.offsets[index]:spec.offsets[index + 1]].add_(squares[attr].reshape(-1), alpha=weight)
        if k == lowest:
            break
        d1 = d2 = None
        if _is_elementwise(m):
            d1, d2 = _derivatives(m, xin)
        idx = indices[k] if indices is not None else None
        factors = [(_pullback(m, xin, Sf, d1, idx), sf) for Sf, sf in factors]
        g_out = g
        if deepest <= k - 1:  # a curving activation below still needs the gradient at its output
            g = _pullback(m, xin, g_out[:, None], d1, idx)[:, 0]
        if d2 is not None and not ggn:
            r = (d2 * g_out).reshape(xin.shape[0], -1)
            if bool((r != 0).any()):
                F_ = r.shape[1]
                cols = torch.diag_embed(r.abs().sqrt()).reshape(xin.shape[0], F_, *xin.shape[1:])
                factors.append((cols, torch.sign(r)))
