"""Newton-CG: matrix-free truncated Newton with a Steihaug trust region, or with a line search."""

from __future__ import annotations

import warnings

import torch

from ..errors import InvalidInputError, NonFiniteError
from ..operators import ClosureHessianOperator
from .base import CurvatureOptimizer
from .cg import preconditioner_of, steihaug_cg
from .damping import gain_ratio


class NewtonCG(CurvatureOptimizer):
    """Truncated Newton with CG on Hessian-vector products of the closure's loss (never the dense ``H``).

    Args:
        params: the parameters (one group).
        lr: step scale (keep 1 with the trust region: the radius already sets the length).
        damping: ``lambda >= 0``: CG solves ``(H + lambda I) s = -g``.
        trust_region: ``True`` (default): Steihaug-Toint CG inside a radius adapted by the gain ratio
            ``rho`` (shrink x1/4 if ``rho < 1/4``, double up to ``max_radius`` if ``rho > 3/4`` on the
            boundary); a step with ``rho <= eta`` is rejected and the step retried with the smaller radius
            (up to ``max_trials``). ``False``: line-search Newton-CG: truncated CG stopped at negative
            curvature (``-g`` if met first), then Armijo backtracking (``c = 1e-4``, halving, up to
            ``max_trials`` halvings) from ``lr``.
        radius: initial trust radius (Euclidean norm of the flat step).
        max_radius: largest trust radius.
        eta: acceptance threshold on ``rho``.
        max_cg_iters: CG iterations per step (default ``P``).
        cg_rtol: CG stops when ``|r| <= cg_rtol |g|``; default ``min(0.5, sqrt|g|)`` (superlinear).
        max_trials: retries per step (trust region) or halvings (line search); if none succeeds the
            parameters are left unchanged and a warning is given.
        memory_budget: bytes (or ``"2GB"``) for batched products.
        preconditioner: ``M^{-1}`` for preconditioned CG: an operator (e.g. ``kfac.inverse(1e-3)`` of a
            :class:`~hessian_core.kfac.KFACOperator` over the same parameters in the same order) or a callable
            ``f(damping) -> operator`` called at each step (a fresh one at the current parameters); the trust
            region is then measured in the norm of ``M`` (see :func:`~hessian_core.optim.cg.steihaug_cg`).

    Negative curvature met by CG is followed downhill to the trust-region boundary (counted in
    ``state['negative_curvature']``); every step is a descent direction. Costs per trial: one closure
    evaluation with double backward, CG products, one product for the gain ratio, one closure evaluation
    at the trial point. ``step(closure)`` returns the loss before the step.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, *, trust_region: bool = True,
                 radius: float = 1.0, max_radius: float = 1e3, eta: float = 1e-4,
                 max_cg_iters: int | None = None, cg_rtol: float | None = None, max_trials: int = 10,
                 memory_budget=None, preconditioner=None):
        for name, value in (("lr", lr), ("radius", radius), ("max_radius", max_radius)):
            if not value > 0:
                raise InvalidInputError(f"{name} must be > 0, got {value}")
        if not damping >= 0:
            raise InvalidInputError(f"damping must be >= 0, got {damping}")
        if max_trials < 1:
            raise InvalidInputError(f"max_trials must be >= 1, got {max_trials}")
        defaults = dict(lr=lr, damping=damping, trust_region=trust_region, radius=radius,
                        max_radius=max_radius, eta=eta, max_cg_iters=max_cg_iters, cg_rtol=cg_rtol,
                        max_trials=max_trials, memory_budget=memory_budget)
        super().__init__(params, defaults)
        self.preconditioner = preconditioner

    def _operator(self, closure):
        op = ClosureHessianOperator(closure, self.spec, memory_budget=self.budget(), progress=False)
        self.count("closure_evals")
        return op

    def _solve(self, op, radius, group):
        calls = [0]

        def matvec(v):
            calls[0] += 1
            return op.matvec(v)

        precondition = preconditioner_of(self.preconditioner, group["damping"], self.spec.numel)
        res = steihaug_cg(matvec, op.grad, radius, damping=group["damping"], rtol=group["cg_rtol"],
                          max_iter=group["max_cg_iters"], precondition=precondition)
        self.count("hvps", calls[0])
        if res.negative_curvature:
            self.count("negative_curvature")
        if not bool(torch.isfinite(res.step).all()):
            raise NonFiniteError("the Newton-CG step is not finite; try damping > 0")
        return res

    @torch.no_grad()
    def step(self, closure=None):
        closure = self.require_closure(closure)
        group, st = self.param_groups[0], self.global_state
        x0 = self.flat_params()
        with self.guarded(x0):
            if group["trust_region"]:
                return self._trust_region_step(closure, x0, group, st)
            return self._line_search_step(closure, x0, group)

    def _trust_region_step(self, closure, x0, group, st):
        radius = st.get("radius", float(group["radius"]))
        for trial in range(1, group["max_trials"] + 1):
            op = self._operator(closure)  # a fresh graph at x0 (a rejected trial changed the parameters)
            if trial == 1:
                loss, f0 = op.loss.detach(), op.value
            res = self._solve(op, radius, group)
            s = group["lr"] * res.step
            predicted = float(op.grad @ s + 0.5 * (s @ op.matvec(s)))
            self.count("hvps")
            del op
            rho = gain_ratio(self.loss_at(closure, x0 + s) - f0, predicted)
            snorm = float(s.norm())
            if rho < 0.25:
                radius = 0.25 * min(radius, snorm) if snorm > 0 else 0.25 * radius
            elif rho > 0.75 and snorm >= 0.99 * radius:
                radius = min(2 * radius, group["max_radius"])
            st["radius"] = radius
            if rho > group["eta"]:
                self.finish_step(cg_iterations=res.iterations, cg_reason=res.reason, rho=rho, radius=radius,
                                 predicted_change=predicted, trials=trial, accepted=True)
                return loss
            self.set_params(x0)
        self.finish_step(cg_iterations=res.iterations, cg_reason=res.reason, rho=rho, radius=radius,
                         trials=group["max_trials"], accepted=False)
        warnings.warn(f"NewtonCG: no step lowered the loss in {group['max_trials']} trust-region trials "
                      f"(radius now {radius:.3g}); the parameters are unchanged", RuntimeWarning,
                      stacklevel=3)
        return loss

    def _line_search_step(self, closure, x0, group):
        op = self._operator(closure)
        loss, f0, g = op.loss.detach(), op.value, op.grad
        res = self._solve(op, None, group)
        del op
        d = res.step
        slope = float(g @ d)
        if not slope < 0:  # only at g = 0, or from round-off: fall back to steepest descent
            d, slope = -g, -float(g @ g)
        alpha = group["lr"]
        for halving in range(group["max_trials"]):
            if slope == 0:
                break
            f_new = self.loss_at(closure, x0 + alpha * d)
            if f_new <= f0 + 1e-4 * alpha * slope:
                self.finish_step(cg_iterations=res.iterations, cg_reason=res.reason, alpha=alpha,
                                 halvings=halving, accepted=True)
                return loss
            alpha *= 0.5
        self.set_params(x0)
        self.finish_step(cg_iterations=res.iterations, cg_reason=res.reason, alpha=0.0, accepted=slope == 0)
        if slope != 0:
            warnings.warn(f"NewtonCG: the line search found no decrease in {group['max_trials']} halvings; "
                          "the parameters are unchanged", RuntimeWarning, stacklevel=3)
        return loss
