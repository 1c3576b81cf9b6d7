"""A few products that catch a wrong second derivative before it becomes a wrong matrix.

PyTorch's second derivatives are sometimes silently wrong (the fused weight norm's double backward; a
backward that returns a modified "gradient", as ``Embedding(scale_grad_by_freq=True)`` or a custom autograd
Function does; nested forward mode through some kernels). A curvature matrix is symmetric, so on the first
batch an operator checks ``u^T A w = w^T A u`` for one random pair (two products), and the Hessian checks
forward-over-reverse against reverse-over-reverse on ``u`` (one more product) before it uses the former.

A failed symmetry check is localized to parameter tensors (two products per tensor, only then) and raised
as an :class:`~hessian_core.errors.InvalidInputError` naming the modules; a failed forward-mode comparison
makes the Hessian keep to reverse-over-reverse, and :meth:`plan` says so.

A verdict depends on the operations a model and loss use, not on the parameter values: a passed check is
remembered for the same model object, loss object, mode and structure (modules, parameters, hooks), so a
loop that builds a new operator per product (``hc.hvp``) pays for it once.
"""

from __future__ import annotations

import weakref

import torch

from ..errors import InvalidInputError

#: symmetry defects above this (relative to ``|u| |A w| + |w| |A u|``) are refused, per dtype
TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-2}
_SEED = 20240917


def tolerance(dtype: torch.dtype) -> float | None:
    """The tolerance of the checks in ``dtype`` (``None``: too coarse to check, e.g. half precision)."""
    return TOLERANCE.get(dtype)


def probes(spec, k: int, support: slice | None = None) -> torch.Tensor:
    """``(P, k)`` fixed pseudo-random vectors (zero outside ``support``), the same on every call and rank."""
    gen = torch.Generator(device="cpu").manual_seed(_SEED + (0 if support is None else support.start + 1))
    out = torch.zeros(spec.numel, k, dtype=torch.float64)
    rows = slice(None) if support is None else support
    out[rows] = torch.randn(out[rows].shape, generator=gen, dtype=torch.float64)
    return out.to(device=spec.device, dtype=spec.dtype)


def symmetry_defect(U: torch.Tensor, AU: torch.Tensor, i: int = 0, j: int = 1) -> float:
    """``|u_i^T A u_j - u_j^T A u_i| / (|u_i| |A u_j| + |u_j| |A u_i|)`` from columns of ``U`` and ``A U``."""
    a, b = U[:, i] @ AU[:, j], U[:, j] @ AU[:, i]
    scale = float(U[:, i].norm() * AU[:, j].norm() + U[:, j].norm() * AU[:, i].norm())
    return float((a - b).abs()) / scale if scale > 0 else 0.0


def relative_difference(x: torch.Tensor, y: torch.Tensor) -> float:
    scale = float(torch.maximum(x.abs().max(), y.abs().max())) if x.numel() else 0.0
    return float((x - y).abs().max()) / scale if scale > 0 else 0.0


def check_symmetry(op, products, what: str) -> str:
    """Two products with a fixed random pair; returns the report line, raises when ``A`` is not symmetric.

    ``products(V)``: the batch's curvature times ``V`` of shape ``(P, k)`` (called one column at a time:
    a single product takes the cheapest path).
    """
    tol = tolerance(op.dtype)
    if tol is None:
        return f"skipped ({op.dtype} is too coarse to check)"
    known = remembered(op, what)
    if known is not None:
        return known
    U = probes(op.params, 2)
    defect = symmetry_defect(U, torch.cat([products(U[:, j:j + 1]) for j in range(2)], dim=1))
    if defect > tol:
        raise asymmetric(op, products, what, defect)
    report = f"symmetric on a random pair (defect {defect:.1e})"
    remember(op, what, report)
    return report


_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> loss_fn -> {key: report}


def _key(op, what: str):
    o = op.objective
    hooks = tuple(len(getattr(m, h, None) or {}) for m in o.model.modules()
                  for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))
    structure = tuple((n, type(m)) for n, m in o.model.named_modules())
    return (what, o.train_mode, tuple(op.params.names), tuple(op.params.shapes), op.dtype, str(op.device), hooks,
            structure)


def remembered(op, what: str) -> str | None:
    """The report of a passed check of ``what`` for this model, loss and structure, if there is one."""
    try:
        found = _VERDICTS.get(op.objective.model, {}).get(op.objective.loss_fn, {}).get(_key(op, what))
    except TypeError:  # a loss object that cannot be weakly referenced or hashed: no memory
        return None
    return None if found is None else found + " (remembered for this model and loss)"


def remember(op, what: str, report: str) -> None:
    try:
        per_model = _VERDICTS.setdefault(op.objective.model, weakref.WeakKeyDictionary())
        per_model.setdefault(op.objective.loss_fn, {})[_key(op, what)] = report
    except TypeError:
        pass


def asymmetric(op, products, what: str, defect: float) -> InvalidInputError:
    """The error for a failed symmetry check, naming the parameters (and modules) where it fails."""
    spec = op.params
    T = len(spec)
    U = torch.cat([probes(spec, 2, s) for s in spec.slices], dim=1)  # u_i, w_i per tensor i
    AU = products(U)
    worst, where = -1.0, (0, 0)
    for i in range(T):
        for j in range(T):
            d = symmetry_defect(U, AU, 2 * i, 2 * j + 1)
            if d > worst:
                worst, where = d, (i, j)
    names = sorted({spec.names[where[0]], spec.names[where[1]]})
    model = op.objective.model
    owners = []
    for n in names:
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        owners.append(f"'{n}' of module '{owner or 'the model'}' ({type(model.get_submodule(owner)).__name__})")
    return InvalidInputError(
        f"self-check failed: the {what} PyTorch's derivatives give for this model is not symmetric "
        f"(u^T A w and w^T A u differ by {defect:.1e} relative), worst at {' and '.join(owners)}. Some "
        "operation there has a wrong second derivative, or its backward returns something other than the "
        "gradient (a backward hook, a custom autograd.Function, a straight-through estimator); hessian_core "
        "refuses rather than return a wrong matrix. Write that part with differentiable torch operations, or "
        "pass self_check=False to get PyTorch's result unchecked")
