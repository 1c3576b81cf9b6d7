"""Independent references for the KFAC tests: the dense GGN and empirical Fisher written with plain torch.func /
autograd on the whole data as one batch, sharing no code with the engine."""

from __future__ import annotations

import torch
from torch.func import functional_call, jacrev


def _flat_model(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    theta0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def unflat(theta):
        out, k = {}, 0
        for n, p in named:
            out[n] = theta[k:k + p.numel()].reshape(p.shape)
            k += p.numel()
        return out

    return named, theta0, unflat


def dense_ggn(model, loss_fn, X, Y):
    """``J^T H J`` of ``loss_fn(model(X), Y)`` with J = d outputs / d params (jacrev) and H the loss Hessian
    w.r.t. the outputs (torch.autograd.functional.hessian)."""
    _, theta0, unflat = _flat_model(model)
    out = functional_call(model, unflat(theta0), (X,)).detach()
    J = jacrev(lambda t: functional_call(model, unflat(t), (X,)))(theta0).reshape(out.numel(), -1)
    H = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), Y), out.reshape(-1))
    return J.T @ H @ J


def dense_ef(model, loss_fn, X, Y, reduction="mean"):
    """``sum_n g_n g_n^T / N`` (``"mean"``) or ``sum_n g_n g_n^T`` (``"sum"``), ``g_n`` the gradient of
    ``loss_fn`` on sample ``n`` alone, by plain autograd one sample at a time."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for n in range(X.shape[0]):
        g = torch.autograd.grad(loss_fn(model(X[n:n + 1]), Y[n:n + 1]), params)
        rows.append(torch.cat([t.reshape(-1) for t in g]))
    Gs = torch.stack(rows)
    F = Gs.T @ Gs
    return F / X.shape[0] if reduction == "mean" else F


def block(M, idx):
    """``M[idx][:, idx]``."""
    return M[idx][:, idx]
