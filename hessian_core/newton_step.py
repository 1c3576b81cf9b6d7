"""One Newton step on ``(model, loss_fn, data)`` without an optimizer: :func:`newton_step`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .arguments import check_bool, check_choice, check_optional_int, check_optional_real, check_real
from .errors import NonFiniteError
from .functional import lists_options
from .named import NamedTensors, format_float
from .operators import HessianOperator
from .optim.cg import steihaug_cg
from .optim.dense_solve import check_dense_solve_fits, newton_direction, quadratic_change


@dataclass
class NewtonStep:
    """Result of :func:`newton_step`.

    Attributes:
        step: the update ``s = lr * d`` as tensors shaped like the parameters (ParamSpec order), also
            indexed by parameter name (``step["0.weight"]``).
        flat_step: the same, flat ``(P,)``.
        params: the parameters after the step, ``theta + s``: new tensors, shaped like the parameters,
            indexed by position or name.
        names: the parameter names, in that order.
        loss: the loss before the step (globally normalized over ``data``).
        grad: the gradient before the step, flat ``(P,)``.
        predicted_change: the quadratic model's change ``g.s + s.H s / 2`` (with the exact Hessian).
        applied: whether the model's parameters were updated in place (``apply=True``).
        info: how the step was solved (``method``, ``shift``, ``min_eigenvalue`` for ``"dense"``;
            ``cg_iterations``, ``cg_reason``, ``negative_curvature`` for ``"cg"``).
    """

    step: list
    flat_step: torch.Tensor
    params: list
    names: list
    loss: float
    grad: torch.Tensor
    predicted_change: float
    applied: bool
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        how = ", ".join(f"{k}={format_float(v) if isinstance(v, float) else repr(v)}" for k, v in self.info.items())
        return (f"NewtonStep(P={self.flat_step.numel()}, {len(self.names)} tensors, "
                f"loss={format_float(self.loss)}, "
                f"|grad|={format_float(self.grad.norm())}, |step|={format_float(self.flat_step.norm())}, "
                f"predicted_change={format_float(self.predicted_change)}, applied={self.applied}, {how})")


@lists_options
def newton_step(model, loss_fn, data, *, lr: float = 1.0, damping: float = 0.0, method: str = "dense",
                saddle_free: bool = False, radius: float | None = None, max_cg_iters: int | None = None,
                cg_rtol: float | None = None, apply: bool = False, **options) -> NewtonStep:
    """One Newton step ``s = -lr (H + damping I)^{-1} g`` for the loss of ``model`` on ``data``.

    Args:
        model, loss_fn, data: as everywhere in hessian_core (``data`` an ``(inputs, targets)`` pair or an
            iterable of them; the loss globally normalized over all batches).
        lr: step scale; 1 is the full step (it minimizes a quadratic loss exactly).
        damping: ``lambda >= 0`` added to the Hessian's diagonal.
        method: ``"dense"``: the exact ``P x P`` Hessian (memory-budget checked), Cholesky, or the shifted
            / saddle-free solve when indefinite (see :func:`hessian_core.optim.dense_solve.newton_direction`).
            ``"cg"``: matrix-free truncated CG on Hessian-vector products (Steihaug within ``radius`` when
            given), stopping at negative curvature.
        saddle_free: dense only: solve with ``|H|`` instead of ``H``.
        radius, max_cg_iters, cg_rtol: CG only (see :func:`hessian_core.optim.cg.steihaug_cg`).
        apply: if True, write ``theta + s`` into the model's parameters (in place, under ``no_grad``).
            Default False: the model is not touched; use the returned ``params`` / ``step``.
        **options: the options of :func:`hessian_core.hessian`, listed below.

    The step is a descent direction whenever the gradient is nonzero, also at indefinite Hessians.
    Raises :class:`~hessian_core.errors.NonFiniteError` (model untouched) for non-finite loss, gradient,
    Hessian or step, :class:`~hessian_core.errors.MemoryBudgetError` when the dense Hessian does not fit.
    """
    method = check_choice(method, "method", ("dense", "cg"))
    lr, damping = check_real(lr, "lr", positive=True), check_real(damping, "damping", nonnegative=True)
    saddle_free, apply = check_bool(saddle_free, "saddle_free"), check_bool(apply, "apply")
    radius = check_optional_real(radius, "radius", positive=True)
    max_cg_iters = check_optional_int(max_cg_iters, "max_cg_iters")
    cg_rtol = check_optional_real(cg_rtol, "cg_rtol", positive=True)
    op = HessianOperator(model, loss_fn, data, **options)
    objective = op.objective
    spec = objective.params
    loss, g = objective.value_and_grad()
    if method == "dense":
        check_dense_solve_fits(spec.numel, spec.dtype, objective.budget, "newton_step(..., method='cg') (matrix-free)")
        H = op.to_dense()
        d = newton_direction(H, g, damping, saddle_free)
        s = lr * d.direction
        Hs = H @ s
        info = {"method": d.method, "shift": d.shift, "min_eigenvalue": d.min_eigenvalue}
    else:
        with op.reuse():  # one graph for all CG products on one-batch data
            res = steihaug_cg(op.matvec, g, radius, damping=damping, rtol=cg_rtol, max_iter=max_cg_iters)
            s = lr * res.step
            Hs = op.matvec(s)
        info = {"cg_iterations": res.iterations, "cg_reason": res.reason,
                "negative_curvature": res.negative_curvature}
    if not bool(torch.isfinite(s).all()):
        raise NonFiniteError("the Newton step is not finite; use damping > 0")
    new = spec.flatten(spec.primals()) + s
    new_params = NamedTensors([t.clone() for t in spec.unflatten(new)], spec.names)
    if apply:
        with torch.no_grad():
            for p, value in zip(spec.tensors, new_params):
                p.copy_(value)
    return NewtonStep(step=NamedTensors([t.clone() for t in spec.unflatten(s)], spec.names), flat_step=s,
                      params=new_params, names=list(spec.names), loss=loss, grad=g,
                      predicted_change=quadratic_change(g, Hs, s), applied=apply, info=info)
