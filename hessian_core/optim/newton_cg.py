"""Newton-CG: matrix-free truncated Newton with a Steihaug trust region, or with a line search."""

from __future__ import annotations

import math

import torch

from ..arguments import check_bool, check_int, check_optional_bool, check_optional_int, check_optional_real, check_real
from ..errors import InvalidInputError, NonFiniteError
from ..operators import ClosureHessianOperator, LinearOperator
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
            boundary); a step is accepted when ``rho > eta`` and the loss did not rise, else it is retried
            with the smaller radius (up to ``max_trials``, never below ``min_radius``). ``False``:
            line-search Newton-CG: truncated CG stopped at negative curvature (``-g`` if met first), then
            Armijo backtracking (``c = 1e-4``, halving, up to ``max_trials`` halvings) from ``lr``.
        radius: initial trust radius (Euclidean norm of the flat step).
        max_radius: largest trust radius.
        min_radius: smallest trust radius (default ``sqrt(eps) * radius`` in the parameters' dtype). A step
            that fails at this radius means the method cannot make progress from here: the parameters stay,
            ``state['last']['stalled']`` says why and a warning is given.
        eta: acceptance threshold on ``rho``.
        minibatch: whether the closure's loss changes between steps (a fresh minibatch per step, dropout in
            the closure). ``None`` (default): detected, from the loss at the start of a step differing from
            the loss the previous step ended with. On such objectives each step starts from at least the
            initial ``radius``: a radius shrunk on one batch says little about the next, and a radius that
            only shrinks under noisy gain ratios ends the training silently.
        max_cg_iters: CG iterations per step (default ``P``).
        cg_rtol: CG stops when ``|r| <= cg_rtol |g|``; default ``min(0.5, sqrt|g|)`` (superlinear).
        max_trials: retries per step (trust region) or halvings (line search); if none succeeds the
            parameters are left unchanged and a warning is given.
        memory_budget: bytes (or ``"2GB"``) for batched products.
        curvature: the curvature CG uses instead of the closure's Hessian: a
            :class:`~hessian_core.operators.LinearOperator` over the same parameters in the same order (e.g.
            ``hc.GGNOperator(model, loss_fn, data)`` for Gauss-Newton-CG, a sum with damping, a KFAC operator),
            whose products are taken at the current parameters, or a callable returning one at each step.
            The loss and gradient still come from the closure. Default: the closure's exact Hessian.
        preconditioner: ``M^{-1}`` for preconditioned CG: an operator (e.g. ``kfac.inverse(1e-3)`` of a
            :class:`~hessian_core.kfac.KFACOperator` over the same parameters in the same order) or a callable
            ``f(damping) -> operator`` called at each step (a fresh one at the current parameters); the trust
            region is then measured in the norm of ``M`` (see :func:`~hessian_core.optim.cg.steihaug_cg`).

    Gain ratios use Conn, Gould & Toint's round-off guard ``rho = (actual - delta) / (predicted - delta)``
    with ``delta = 10 eps max(1, |f|)``; a step whose predicted decrease is below ``delta`` ends the
    iteration (``state['last']['converged']``: stationary to working precision), without warning.
    Negative curvature met by CG is followed downhill to the trust-region boundary (counted in
    ``state['negative_curvature']``); every step is a descent direction. Costs per trial: one closure
    evaluation with double backward, CG products, one product for the gain ratio, one closure evaluation
    at the trial point. ``step(closure)`` returns the loss before the step.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, *, trust_region: bool = True,
                 radius: float = 1.0, max_radius: float = 1e3, min_radius: float | None = None, eta: float = 1e-4,
                 minibatch: bool | None = None, max_cg_iters: int | None = None, cg_rtol: float | None = None,
                 max_trials: int = 10, memory_budget=None, preconditioner=None, curvature=None):
        radius = check_real(radius, "radius", positive=True)
        min_radius = check_optional_real(min_radius, "min_radius", positive=True, at_most=radius,
                                         why=" (at most radius)")
        defaults = dict(lr=check_real(lr, "lr", positive=True),
                        damping=check_real(damping, "damping", nonnegative=True),
                        trust_region=check_bool(trust_region, "trust_region"), radius=radius,
                        max_radius=check_real(max_radius, "max_radius", positive=True), min_radius=min_radius,
                        eta=check_real(eta, "eta", nonnegative=True, at_most=0.25, why=" (a step with rho <= 1/4 "
                                       "shrinks the radius)"),
                        minibatch=check_optional_bool(minibatch, "minibatch"),
                        max_cg_iters=check_optional_int(max_cg_iters, "max_cg_iters"),
                        cg_rtol=check_optional_real(cg_rtol, "cg_rtol", positive=True),
                        max_trials=check_int(max_trials, "max_trials"), memory_budget=memory_budget, progress=False)
        super().__init__(params, defaults)
        self.preconditioner = preconditioner
        if curvature is not None and not callable(curvature) and not isinstance(curvature, LinearOperator):
            raise InvalidInputError("curvature must be a LinearOperator over the optimizer's parameters (e.g. "
                                    "hc.GGNOperator(model, loss_fn, data), a sum with damping) or a callable "
                                    f"returning one, got {type(curvature).__name__}")
        self.curvature = curvature

    def _operator(self, closure):
        op = ClosureHessianOperator(closure, self.spec, memory_budget=self.budget(), progress=False)
        self.count("closure_evals")
        if self.curvature is None:
            return op
        curvature = self.curvature if isinstance(self.curvature, LinearOperator) else self.curvature()
        if not isinstance(curvature, LinearOperator) or curvature.size != self.spec.numel:
            raise InvalidInputError(f"curvature must be a LinearOperator of size P = {self.spec.numel} (the "
                                    f"optimizer's parameters, in their order), got {curvature!r}")
        spec = curvature.params
        if spec is not None and [id(t) for t in spec.tensors] != [id(t) for t in self.spec.tensors]:
            raise InvalidInputError("curvature is an operator over other parameters, or the same in another order, "
                                    "than the optimizer's; build it with params= the optimizer's parameters")
        return _Curvature(op, curvature)

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
            return self._line_search_step(closure, x0, group, st)

    def _minibatch(self, group, st, f0: float) -> bool:
        """Whether the objective changes between steps (given, or seen once: then for good)."""
        if group["minibatch"] is not None:
            return group["minibatch"]
        end = st.get("end_loss")
        if end is not None and abs(f0 - end) > self.roundoff(f0):
            st["minibatch"] = True
        return bool(st.get("minibatch", False))

    def _trust_region_step(self, closure, x0, group, st):
        radius0 = float(group["radius"])
        floor = group["min_radius"] or math.sqrt(torch.finfo(self.spec.dtype).eps) * radius0
        radius = max(st.get("radius", radius0), floor)
        info: dict = {}
        for trial in range(1, group["max_trials"] + 1):
            op = self._operator(closure)  # a fresh graph at x0 (a rejected trial changed the parameters)
            f0 = op.value
            if trial == 1:
                loss, f_start = op.loss.detach(), f0
                if self._minibatch(group, st, f0):
                    radius = max(radius, radius0)
            res = self._solve(op, radius, group)
            s = group["lr"] * res.step
            predicted = float(op.grad @ s + 0.5 * (s @ op.matvec(s)))
            self.count("hvps")
            del op
            delta = self.roundoff(f0)
            info = dict(cg_iterations=res.iterations, cg_reason=res.reason, radius=radius, trials=trial,
                        predicted_change=predicted)
            if not -predicted > delta:  # nothing left to gain above round-off: stationary to working precision
                f_new = self.loss_at(closure, x0 + s)
                keep = f_new <= f0
                if not keep:
                    self.set_params(x0)
                st["radius"], st["end_loss"] = radius, f_new if keep else f0
                self.finish_step(**info, rho=None, accepted=keep, converged=True)
                return loss
            if bool(torch.equal(x0 + s, x0)):  # the step is below the parameters' precision
                self.set_params(x0)
                st["radius"], st["end_loss"] = radius, f0
                self._stalled("step_underflow", info, "the trust-region step is too small to change the "
                              "parameters in their precision")
                return loss
            f_new = self.loss_at(closure, x0 + s)
            rho = gain_ratio(f_new - f0, predicted, delta)
            snorm, on_boundary = self._step_norm(s, res, radius, group["lr"])
            at_floor = radius <= floor
            if rho < 0.25:
                radius = max(0.25 * (min(radius, snorm) if snorm > 0 else radius), floor)
            elif rho > 0.75 and on_boundary:
                radius = min(2 * radius, group["max_radius"])
            st["radius"] = radius
            info.update(rho=rho, radius=radius)
            if rho > group["eta"] and f_new <= f0:
                st["end_loss"] = f_new
                self.finish_step(**info, accepted=True)
                return loss
            self.set_params(x0)
            if at_floor:  # failed at the smallest radius: retrying would fail the same way
                st["end_loss"] = f0
                self._stalled("min_radius", info, "no step within the smallest trust radius (min_radius) "
                              "lowered the loss: the method cannot make progress from here")
                return loss
        st["end_loss"] = f_start
        self.finish_step(**info, accepted=False)
        self.report(f"no trust-region step lowered the loss in max_trials={group['max_trials']} trials")
        return loss

    def _step_norm(self, s, res, radius: float, lr: float) -> tuple[float, bool]:
        """``(|s|, whether s reaches the boundary)`` in the trust region's norm: Euclidean, or ``M``'s with a
        preconditioner, where only a step that CG ended on the boundary has a known norm (``lr * radius``);
        inside it ``radius`` stands in (a rejected step then shrinks the radius by the usual factor)."""
        if self.preconditioner is None:
            snorm = float(s.norm())
            return snorm, snorm >= 0.99 * radius
        on_boundary = res.reason in ("boundary", "negative_curvature")  # Steihaug goes to the radius on both
        return (lr * radius if on_boundary else radius), on_boundary and lr >= 0.99

    def _stalled(self, why: str, info: dict, message: str) -> None:
        self.count("stalled_steps")
        self.finish_step(**info, accepted=False, stalled=why)
        self.report(message)

    def _line_search_step(self, closure, x0, group, st):
        op = self._operator(closure)
        loss, f0, g = op.loss.detach(), op.value, op.grad
        res = self._solve(op, None, group)
        del op
        d = res.step
        slope = float(g @ d)
        if not slope < 0:  # only at g = 0, or from round-off: fall back to steepest descent
            d, slope = -g, -float(g @ g)
        info = dict(cg_iterations=res.iterations, cg_reason=res.reason)
        alpha = group["lr"]
        delta = self.roundoff(f0)
        if not -alpha * slope > delta:  # nothing left to gain above round-off
            f_new = self.loss_at(closure, x0 + alpha * d) if slope < 0 else f0
            keep = slope < 0 and f_new <= f0
            if not keep:
                self.set_params(x0)
            self.finish_step(**info, alpha=alpha if keep else 0.0, accepted=keep, converged=True)
            return loss
        for halving in range(group["max_trials"]):
            f_new = self.loss_at(closure, x0 + alpha * d)
            if f_new <= f0 + 1e-4 * alpha * slope:
                self.finish_step(**info, alpha=alpha, halvings=halving, accepted=True)
                return loss
            alpha *= 0.5
        self.set_params(x0)
        self.finish_step(**info, alpha=0.0, accepted=False)
        self.report(f"the line search found no decrease in max_trials={group['max_trials']} halvings")
        return loss


class _Curvature:
    """The closure's loss and gradient at ``x0`` with another operator's products (``curvature=``)."""

    def __init__(self, closure_op, curvature):
        self.value, self.loss, self.grad = closure_op.value, closure_op.loss, closure_op.grad
        self.curvature = curvature

    def matvec(self, v):
        return self.curvature.matvec(v)
