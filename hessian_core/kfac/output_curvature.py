"""The curvature of the loss with respect to the model outputs, as columns to backpropagate.

For a batch with model outputs ``f`` of shape ``(B, *O)`` (``K = prod(O)`` numbers per sample), each kind
of curvature gives columns ``U`` of shape ``(r, B, *O)`` and optional signs ``(r, B)`` such that, for every
sample ``n``,

    sum_j sign[j, n] * U[j, n] U[j, n]^T  =  H_n

where ``H_n`` is sample ``n``'s block of the curvature of the batch loss ``loss_fn(f, targets)`` (as
``loss_fn`` reduces the batch) with respect to ``f``:

* ``"exact"``: ``H_n`` is the diagonal block of the Hessian of the batch loss w.r.t. the outputs (the
  generalized Gauss-Newton). Closed forms for ``nn.MSELoss``, ``nn.CrossEntropyLoss`` (no class weights)
  and ``nn.BCEWithLogitsLoss`` (no weights); any other loss through its Hessian w.r.t. the outputs
  (``K`` Hessian-vector products of the loss alone), factored per sample by ``eigh`` (signs for a loss
  that is not convex in the outputs). A loss that couples samples is refused.
* ``"mc"``: in expectation over labels drawn from the model's predictive distribution (Gaussian for
  ``MSELoss``, categorical for ``CrossEntropyLoss``, Bernoulli for ``BCEWithLogitsLoss``), ``mc_samples``
  draws per sample, each draw's gradient of the negative log-likelihood scaled like the loss.
* ``"empirical"``: ``H_n = g_n g_n^T`` with ``g_n`` the gradient w.r.t. ``f_n`` of the loss of sample
  ``n`` alone (``loss_fn`` on a batch of one), as :class:`~hessian_core.operators.EmpiricalFisherOperator`
  defines the empirical Fisher; such batches are weighted per sample (``per_sample = True``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import grad, vjp, vmap

from ..errors import InvalidInputError
from ..memory import check_fits

TYPES = ("exact", "mc", "empirical")


def output_curvature(objective, type: str, mc_samples: int):
    """The :class:`OutputCurvature` of ``type`` for ``objective``."""
    if type == "exact":
        return ExactCurvature(objective)
    if type == "mc":
        return MonteCarloCurvature(objective, mc_samples)
    return EmpiricalCurvature(objective)


class OutputCurvature:
    """Base: ``columns(ctx, f) -> (U, signs)`` for one batch; see the module docstring."""

    type = ""
    per_sample = False

    def __init__(self, objective):
        self.objective = objective
        self.loss_fn = objective.loss_fn

    def columns(self, ctx, f: torch.Tensor):
        raise NotImplementedError


# -- exact ---------------------------------------------------------------------------------------------
class ExactCurvature(OutputCurvature):
    type = "exact"

    def columns(self, ctx, f):
        closed = closed_form_columns(self.loss_fn, f, ctx.targets)
        if closed is not None:
            return closed, None
        return generic_columns(ctx.loss_of_outputs, f, self.objective.budget)


def closed_form_columns(loss_fn, f: torch.Tensor, y) -> torch.Tensor | None:
    """Columns for the losses with a known output Hessian, or ``None`` (then the generic path is used)."""
    red = getattr(loss_fn, "reduction", None)
    if red not in ("mean", "sum") or not isinstance(y, torch.Tensor):
        return None
    B, K = f.shape[0], f[0].numel()
    if type(loss_fn) is nn.MSELoss:
        # loss = c * sum (f - y)^2 with c = 1/numel (mean) or 1: H = 2c I.
        c = 1.0 / f.numel() if red == "mean" else 1.0
        eye = torch.eye(K, dtype=f.dtype, device=f.device) * math.sqrt(2 * c)
        return eye[:, None, :].expand(K, B, K).reshape(K, *f.shape)
    if type(loss_fn) is nn.BCEWithLogitsLoss and loss_fn.weight is None and loss_fn.pos_weight is None:
        c = 1.0 / f.numel() if red == "mean" else 1.0
        s = torch.sigmoid(f.detach()).reshape(B, K)
        d = (c * s * (1 - s)).sqrt()  # H = diag(c s (1 - s)) whatever the target in [0, 1]
        eye = torch.eye(K, dtype=f.dtype, device=f.device)
        return (eye[:, None, :] * d[None]).reshape(K, *f.shape)
    if type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None and f.dim() >= 2:
        kappa = _cross_entropy_scale(loss_fn, f, y)
        if kappa is None:
            return None
        # per term (sample n, position q): H = kappa (diag p - p p^T) = S S^T, S = diag(sqrt p) - p sqrt(p)^T
        C = f.shape[1]
        p = torch.softmax(f.detach(), dim=1).movedim(1, -1)  # (B, *Q, C)
        sp = p.sqrt()
        S = torch.diag_embed(sp) - p[..., :, None] * sp[..., None, :]  # (B, *Q, C, C): [.., i, column c]
        S = S * kappa.sqrt()[..., None, None]
        Q = p[0, ..., 0].numel()
        S = S.reshape(B, Q, C, C)
        # one column per (position q, class column c), nonzero only at position q
        U = torch.zeros(Q, C, B, Q, C, dtype=f.dtype, device=f.device)
        idx = torch.arange(Q, device=f.device)
        U[idx, :, :, idx, :] = S.permute(1, 3, 0, 2)  # (Q, C_col, B, C_row)
        U = U.reshape(Q * C, B, Q, C).movedim(-1, 2)  # (r, B, C, Q)
        return U.reshape(Q * C, *f.shape)
    return None


def _cross_entropy_scale(loss_fn, f, y) -> torch.Tensor | None:
    """Weight of each term (sample, position) of a cross-entropy batch loss, shape ``(B, *Q)``, or ``None``
    for targets this closed form does not read."""
    red = loss_fn.reduction
    terms = (f.shape[0],) + tuple(f.shape[2:])
    if y.dtype in (torch.long, torch.int, torch.int32, torch.int16, torch.int8, torch.uint8):
        if tuple(y.shape) != terms:
            return None
        keep = (y != loss_fn.ignore_index).to(f.dtype)
        if red == "sum":
            return keep
        n = keep.sum()
        return keep / n if n > 0 else keep
    if y.is_floating_point() and tuple(y.shape) == tuple(f.shape):
        # probability targets: H = (sum_c q_c) (diag p - p p^T); torch divides a mean by the number of terms
        mass = y.sum(1)
        return mass / math.prod(terms) if red == "mean" else mass
    return None


def generic_columns(loss_of_outputs, f: torch.Tensor, budget: int):
    """Columns of any loss from its Hessian w.r.t. the outputs: per-sample diagonal blocks ``(B, K, K)`` by
    ``K`` Hessian-vector products (reverse over reverse, vectorized), checked to be all of the Hessian
    (samples not coupled), factored by ``eigh``."""
    B, K = f.shape[0], f[0].numel()
    item = f.element_size()
    check_fits(3 * B * K * K * item, budget, f"the per-sample output Hessians of the loss ({B} x {K} x {K})",
               "type='mc' or type='empirical' (no output Hessian), or smaller batches")
    x = f.detach()
    _, hvp = vjp(grad(loss_of_outputs), x)
    eye = torch.eye(K, dtype=f.dtype, device=f.device)
    tangents = eye[:, None, :].expand(K, B, K).reshape(K, *f.shape)
    try:
        cols = vmap(lambda v: hvp(v)[0])(tangents)
    except (RuntimeError, NotImplementedError):
        cols = torch.stack([hvp(t)[0] for t in tangents])
    H = cols.reshape(K, B, K).permute(1, 2, 0)  # H[n, i, k] = (H e_k)[n, i]
    H = (H + H.transpose(1, 2)) / 2
    # Coupled samples (a batch-level term) would leave curvature between samples that this misses.
    gen = torch.Generator(device="cpu").manual_seed(12345)
    probe = torch.randn(f.shape, generator=gen, dtype=f.dtype).to(f.device)
    full = hvp(probe)[0].reshape(B, K)
    blocks = torch.einsum("nik,nk->ni", H, probe.reshape(B, K))
    scale = float(full.abs().max()) + float(H.abs().max()) * K
    if float((full - blocks).abs().max()) > 1e3 * torch.finfo(f.dtype).eps * max(scale, 1e-300):
        raise InvalidInputError(
            "KFAC: the loss couples different samples (its Hessian w.r.t. the model outputs has blocks between "
            "samples), so it is not a sum of per-sample terms and KFAC's per-sample factors do not apply; use "
            "type='empirical' or the exact GGNOperator")
    lam, Q = torch.linalg.eigh(H)  # (B, K), (B, K, K)
    tol = K * torch.finfo(f.dtype).eps * float(lam.abs().max())
    significant = lam.abs() > tol
    r = max(int(significant.sum(1).max()), 1)
    order = torch.argsort(lam.abs(), dim=1, descending=True)[:, :r]  # (B, r)
    lam_r = torch.gather(lam, 1, order) * torch.gather(significant, 1, order)
    Q_r = torch.gather(Q, 2, order[:, None, :].expand(B, K, r))
    S = Q_r * lam_r.abs().sqrt()[:, None, :]  # (B, K, r)
    U = S.permute(2, 0, 1).reshape(r, *f.shape)
    signs = torch.sign(lam_r).T  # (r, B)
    return U, (None if bool((signs >= 0).all()) else signs)


# -- Monte Carlo ----------------------------------------------------------------------------------------
MC_LOSSES = "nn.MSELoss, nn.CrossEntropyLoss (no class weights), nn.BCEWithLogitsLoss (no weights)"


class MonteCarloCurvature(OutputCurvature):
    """Labels drawn per batch from a generator seeded by the objective's seed and the batch index, so every
    pass (and every rank) sees the same draws."""

    type = "mc"
    SALT = 0x9E3779B9  # MC labels use a stream of their own, not the forward's (dropout) stream

    def __init__(self, objective, mc_samples: int):
        super().__init__(objective)
        self.mc_samples = mc_samples
        loss_fn = self.loss_fn
        ok = ((type(loss_fn) is nn.MSELoss)
              or (type(loss_fn) is nn.CrossEntropyLoss and loss_fn.weight is None)
              or (type(loss_fn) is nn.BCEWithLogitsLoss and loss_fn.weight is None and loss_fn.pos_weight is None))
        if not ok:
            name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
            raise InvalidInputError(
                f"KFAC type='mc' draws labels from the likelihood of the loss, known for {MC_LOSSES}; {name} has "
                "none here. Use type='exact' (any loss) or type='empirical'")

    def generator(self, ctx, device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed((self.objective.batch_seed(ctx.index) ^ self.SALT) % (2**63))
        return g

    def columns(self, ctx, f):
        loss_fn, M = self.loss_fn, self.mc_samples
        gen = self.generator(ctx, f.device)
        x = f.detach()
        red = loss_fn.reduction
        shape = (M, *x.shape)
        if type(loss_fn) is nn.MSELoss:
            # y ~ N(f, 1/2): d/df (f - y)^2 = -sqrt(2) eps has second moment 2 = the Hessian of (f - y)^2.
            c = 1.0 / x.numel() if red == "mean" else 1.0
            eps = torch.randn(shape, generator=gen, dtype=x.dtype, device=x.device)
            return eps * math.sqrt(2 * c / M), None
        if type(loss_fn) is nn.BCEWithLogitsLoss:
            c = 1.0 / x.numel() if red == "mean" else 1.0
            s = torch.sigmoid(x)
            y = torch.bernoulli(s.expand(shape), generator=gen)
            return (s - y) * math.sqrt(c / M), None
        # cross-entropy: y ~ Cat(softmax(f)) per term; d/df -log p_y = p - onehot(y)
        kappa = _cross_entropy_scale(loss_fn, x, ctx.targets)
        if kappa is None:
            raise InvalidInputError(
                f"KFAC type='mc': cross-entropy targets of shape {tuple(ctx.targets.shape)} and dtype "
                f"{ctx.targets.dtype} for outputs {tuple(x.shape)} are not class indices (B, ...) or "
                "probabilities shaped like the outputs")
        p = torch.softmax(x, dim=1).movedim(1, -1)  # (B, *Q, C)
        C = p.shape[-1]
        flat = p.reshape(-1, C)
        draws = torch.multinomial(flat, M, replacement=True, generator=gen)  # (terms, M)
        onehot = torch.nn.functional.one_hot(draws.T, C).to(x.dtype)  # (M, terms, C)
        g = (flat[None] - onehot) * (kappa.reshape(1, -1, 1) / M).sqrt()
        return g.reshape(M, *p.shape).movedim(-1, 2), None


# -- empirical ------------------------------------------------------------------------------------------
class EmpiricalCurvature(OutputCurvature):
    """One column: the gradient of each sample's own loss w.r.t. its outputs (weighted per sample)."""

    type = "empirical"
    per_sample = True

    def columns(self, ctx, f):
        loss_fn = self.loss_fn
        x = f.detach()

        def sample_loss(fn, yn):
            return loss_fn(fn.unsqueeze(0), _unsqueeze(yn))

        try:
            g = vmap(grad(sample_loss))(x, ctx.targets)
        except (RuntimeError, NotImplementedError, ValueError):
            g = torch.stack([grad(sample_loss)(x[i], _index(ctx.targets, i)) for i in range(x.shape[0])])
        return g[None], None


def _unsqueeze(y):
    if isinstance(y, torch.Tensor):
        return y.unsqueeze(0)
    return type(y)(t.unsqueeze(0) for t in y)


def _index(y, i):
    if isinstance(y, torch.Tensor):
        return y[i]
    return type(y)(t[i] for t in y)

