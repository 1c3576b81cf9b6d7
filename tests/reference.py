"""Independent references for tests: written with plain torch autograd, sharing no code with the engine."""

from __future__ import annotations

import torch
from torch.func import functional_call


def flat_loss_fn(model, loss_fn, inputs, targets, names=None):
    """Loss of one full batch as a function of one flat parameter vector (row-major per tensor),
    over the parameters named (default: all requiring grad, in named_parameters order)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)]
    shapes = [(n, p.shape) for n, p in named]

    def f(theta):
        params, offset = {}, 0
        for n, shape in shapes:
            k = shape.numel()
            params[n] = theta[offset:offset + k].reshape(shape)
            offset += k
        return loss_fn(functional_call(model, params, (inputs,)), targets)

    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])
    return f, theta0


def autograd_hessian(model, loss_fn, inputs, targets, names=None):
    """float64-friendly reference: torch.autograd.functional.hessian on the full batch."""
    f, theta0 = flat_loss_fn(model, loss_fn, inputs, targets, names)
    return torch.autograd.functional.hessian(f, theta0)


def loop_hessian(model, loss_fn, inputs, targets):
    """The per-element double-backward loop users write today."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(inputs), targets)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.cat([x.reshape(-1) for x in grads])
    rows = [torch.cat([r.reshape(-1) for r in torch.autograd.grad(g[i], params, retain_graph=True)])
            for i in range(g.numel())]
    return torch.stack(rows)


def spectrum_matrix(values, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.as_tensor(values, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=torch.float64))
    return Q @ torch.diag(values) @ Q.T


def func_hessian(model, loss_fn, inputs, targets):
    """torch.func.hessian (forward-over-reverse, vmapped) on the full batch, as users call it."""
    f, theta0 = flat_loss_fn(model, loss_fn, inputs, targets)
    return torch.func.hessian(f)(theta0)


def fd_hessian(model, loss_fn, inputs, targets, step=1e-5):
    """Central finite differences of the float64 gradient: independent of PyTorch's second derivatives."""
    f, theta0 = flat_loss_fn(model, loss_fn, inputs, targets)
    g = torch.func.grad(f)
    rows = []
    for i in range(theta0.numel()):
        e = torch.zeros_like(theta0)
        e[i] = step
        rows.append((g(theta0 + e) - g(theta0 - e)) / (2 * step))
    H = torch.stack(rows)
    return (H + H.T) / 2


def explicit_ggn(model, loss_fn, inputs, targets, names=None):
    """The generalized Gauss-Newton ``J^T H_L J`` written out: ``J`` the Jacobian ``(numel(out), P)`` of the
    flattened outputs w.r.t. the flat parameters (torch.autograd.functional.jacobian), ``H_L`` the Hessian
    ``(numel(out), numel(out))`` of the loss w.r.t. the flattened outputs (torch.autograd.functional.hessian)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)]
    shapes = [(n, p.shape) for n, p in named]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def outputs(theta):
        params, offset = {}, 0
        for n, shape in shapes:
            k = shape.numel()
            params[n] = theta[offset:offset + k].reshape(shape)
            offset += k
        return functional_call(model, params, (inputs,))

    with torch.no_grad():
        out0 = outputs(theta0)
    J = torch.autograd.functional.jacobian(lambda theta: outputs(theta).reshape(-1), theta0)
    H_L = torch.autograd.functional.hessian(lambda z: loss_fn(z.reshape(out0.shape), targets), out0.reshape(-1))
    return J.T @ H_L @ J
