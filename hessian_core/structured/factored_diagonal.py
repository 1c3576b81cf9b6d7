"""Exact Hessian diagonal of a ``Sequential`` with convolutions, by backpropagating per-sample square-root
factors of the Hessian (as BackPACK's ``DiagHessian``, but with any per-sample loss and many batches).

Accepted: an ``nn.Sequential`` (nested ones flattened, ``forward`` not overridden, no hooks) of
``Linear``/``Conv1d``/``Conv2d``/``Conv3d`` (exact types), max/average pooling, ``Flatten`` and elementwise
activations (see :mod:`.chain`); every differentiated parameter belongs to a Linear or conv layer, once.

Per sample ``n``, the Hessian of the loss with respect to the output of module ``k`` is kept as a sum of
signed outer products ``sum_j sign_j s_j s_j^T`` (factor columns ``s_j``). It starts from the eigen-
decomposition of the loss's per-sample output Hessian; a module maps every column back with its
input-Jacobian transpose (``vjp``, vmapped over columns); an elementwise activation adds the residual
``diag(s'' * g)`` as one new column per unit (``g`` the gradient at its output). A Linear or conv layer is
linear in its parameters, so its diagonal is ``sum_n sum_j sign_j (J_theta^T s_j)^2``: squared per-sample
parameter gradients of the factor columns.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vjp, vmap

from .chain import NotApplicable, _elementwise, _flatten_ok, _has_hooks, sequential_modules
from .chain_batch import elementwise_derivatives, output_derivatives

PARAMETRIC = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
LINEAR_MAPS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)


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


def _param_squares(m, x, S, sign, attrs):
    """``sum_n sum_j sign[n, j] * (J_theta(x_n)^T S[n, j])^2`` for the parameters ``attrs`` of ``m``."""
    params = {a: getattr(m, a).detach() for a in attrs}

    def per_sample(xn, Sn, sn):
        _, pullback = vjp(lambda p: functional_call(m, p, (xn[None],), strict=False)[0], params)
        g = vmap(pullback)(Sn)[0]
        return {a: torch.tensordot(sn, g[a] ** 2, dims=1) for a in attrs}

    return {a: v.sum(0) for a, v in vmap(per_sample)(x, S, sign).items()}


def add_batch_diagonal(out: torch.Tensor, objective, modules, ctx, weight: float, work_bytes: int) -> None:
    """``out += weight * diag(this batch's Hessian)``, ``out`` flat ``(P,)`` in ParamSpec order. Samples are
    processed in slices so that the factor columns stay within ``work_bytes``."""
    x = ctx.inputs
    if not isinstance(x, torch.Tensor):
        raise NotApplicable("inputs are not one tensor")
    inputs = []
    with torch.no_grad():
        for m, _ in modules:
            inputs.append(x)
            x = m(x)
        expected = ctx.outputs(objective.params.primals())
        if not isinstance(expected, torch.Tensor) or expected.shape != x.shape or not torch.allclose(
                x, expected, rtol=1e-6, atol=1e-8 * float(expected.abs().max().clamp_min(1))):
            raise NotApplicable("the module chain does not reproduce the model output")
    shape = x.shape
    g, D = output_derivatives(lambda o: ctx.loss_of_outputs(o.reshape(shape)), x.reshape(shape[0], -1))
    lowest = min(k for k, (_, where) in enumerate(modules) if where)
    # factor columns per sample: the loss's, plus one per unit of every elementwise module above `lowest`
    columns = D.shape[1] + sum(inputs[k][0].numel() for k in range(lowest + 1, len(modules))
                               if _is_elementwise(modules[k][0]))
    widest = max(t[0].numel() for t in inputs + [x])
    per_sample = 3 * out.element_size() * columns * widest
    step = max(1, work_bytes // per_sample)
    # no_grad: the pullbacks through the modules' own parameters would attach the result to their graph
    # (torch.func's transforms compute their derivatives regardless of an outer no_grad)
    with torch.no_grad():
        for a in range(0, shape[0], step):
            sl = slice(a, a + step)
            _backprop(out, objective.params, modules, [t[sl] for t in inputs], g.reshape(shape)[sl], D[sl],
                      lowest, weight)


def _is_elementwise(m) -> bool:
    return type(m) not in PARAMETRIC and type(m) not in LINEAR_MAPS and not _flatten_ok(m)


def _backprop(out, spec, modules, inputs, g, D, lowest, weight) -> None:
    S, sign = _loss_factor(D)
    factors = [(S.reshape(g.shape[0], -1, *g.shape[1:]), sign)]
    for k in range(len(modules) - 1, lowest - 1, -1):
        m, where = modules[k]
        xin = inputs[k]
        for attr, index in where.items():
            for Sf, sf in factors:
                sq = _param_squares(m, xin, Sf, sf, [attr])[attr]
                out[spec.offsets[index]:spec.offsets[index + 1]].add_(sq.reshape(-1), alpha=weight)
        if k == lowest:
            break
        _, pullback = vjp(m, xin)
        factors = [(vmap(lambda s, pb=pullback: pb(s)[0], in_dims=1, out_dims=1)(Sf), sf) for Sf, sf in factors]
        g_out = g
        g = pullback(g_out)[0]
        if _is_elementwise(m):
            _, d2 = elementwise_derivatives([m], xin)
            r = (d2 * g_out).reshape(xin.shape[0], -1)
            if bool((r != 0).any()):
                F = r.shape[1]
                cols = torch.diag_embed(r.abs().sqrt()).reshape(xin.shape[0], F, *xin.shape[1:])
                factors.append((cols, torch.sign(r)))
