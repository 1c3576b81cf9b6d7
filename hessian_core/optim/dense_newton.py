"""Dense Newton: the exact Hessian (of the closure's loss, or of ``loss_fn(model(x), y)`` through the core's
fast dense paths), solved by Cholesky, with a line search or Levenberg-Marquardt damping, and the
saddle-free ``|H|``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ..arguments import check_bool, check_int, check_optional_bool, check_real
from ..errors import InvalidInputError
from ..operators import ClosureHessianOperator, HessianOperator
from .base import CurvatureOptimizer
from .damping import LevenbergMarquardt, gain_ratio
from .dense_solve import check_dense_solve_fits, newton_direction, quadratic_change


class Newton(CurvatureOptimizer):
    """Newton's method with the dense Hessian: ``theta <- theta - alpha (H + damping I)^{-1} g``.

    Args:
        params: the parameters (one group).
        lr: step scale, the first step length tried (1 is the full Newton step: one step solves a quadratic).
        damping: ``lambda >= 0`` added to the Hessian's diagonal (the initial one if ``adaptive_damping``).
        adaptive_damping: Levenberg-Marquardt: the step is tried, the gain ratio
            ``rho = actual / predicted`` change of the loss adapts ``lambda`` (Martens' 3/2, 2/3 rule), and a
            step that does not lower the loss is rejected and retried with ``lambda`` x4 (up to
            ``max_trials``).
        saddle_free: use ``|H|`` (eigendecomposition) instead of ``H``, so negative curvature is descended.
        line_search: without ``adaptive_damping``: the step is tried, and halved (Armijo, ``c = 1e-4``, up
            to ``max_trials`` times) until the loss decreases enough. Default ``True``, so that no step raises
            the loss; ``False`` applies ``lr * d`` untried (one closure evaluation less per step).
        max_trials: tries per step (line search or damping). When none lowers the loss the parameters are
            left as they were and a warning is given.
        model, loss_fn, curvature_data: optional; when given, ``H`` is the Hessian of
            ``loss_fn(model(inputs), targets)`` over ``curvature_data`` (a batch, a list of batches, a loader,
            or a callable returning one; ``step(closure, curvature_data=...)`` overrides it), computed by
            :class:`~hessian_core.operators.HessianOperator` with the structured and chunked vmapped dense paths
            of :func:`hessian_core.hessian` (for a Linear chain, many times faster than ``P`` products through
            the closure's graph). Give the data the closure uses for the exact Newton step, or a sub-sample
            for sub-sampled Newton. Evaluated with the core's model policy (eval mode unless
            ``curvature_options={"train_mode": True}``); terms of the closure outside
            ``loss_fn(model(x), y)`` (a regularizer) are not in ``H``. The gradient and the trial losses
            always come from the closure.
        curvature_options: further :class:`~hessian_core.objective.Objective` options for that Hessian
            (``reduction``, ``count_fn``, ``train_mode``, ``seed``...).
        memory_budget: bytes (or ``"2GB"``); the dense ``P x P`` Hessian, its factorization and a work copy
            (``3 P^2`` numbers) must fit, else :class:`~hessian_core.errors.MemoryBudgetError`.
        progress: tqdm bars while the Hessian is built and over the stages of a step (``None``: only on a
            terminal).

    ``step(closure)``: ``closure()`` re-evaluates the model and returns the loss (calling ``backward``
    inside is allowed, not needed). Returns the loss before the step, as ``torch.optim`` does.

    Indefinite ``H + lambda I``: the step is solved with a shifted matrix (see
    :func:`~hessian_core.optim.dense_solve.newton_direction`), so it is always a descent direction. A step
    whose predicted decrease is below the loss's round-off (``10 eps max(1, |f|)``) is taken only if it does
    not raise the loss, without warning (``state['last']['converged']``). Costs per step: one closure
    evaluation with double backward (or, with ``model=``, one with backward plus the core's dense Hessian),
    one factorization (Cholesky; ``eigh`` for ``saddle_free``), one closure evaluation per trial.
    ``state['last']`` records the method, damping, step length, gain ratio and smallest eigenvalue (when
    computed).
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, *, adaptive_damping: bool = False,
                 saddle_free: bool = False, line_search: bool = True, max_trials: int = 20,
                 model: torch.nn.Module | None = None, loss_fn: Callable | None = None, curvature_data=None,
                 curvature_options: dict | None = None, memory_budget=None, progress: bool | None = None):
        if (model is None) != (loss_fn is None):
            raise InvalidInputError("Newton: give model= and loss_fn= together (the Hessian of "
                                    "loss_fn(model(inputs), targets)), or neither (the closure's Hessian)")
        defaults = dict(lr=check_real(lr, "lr", positive=True),
                        damping=check_real(damping, "damping", nonnegative=True),
                        adaptive_damping=check_bool(adaptive_damping, "adaptive_damping"),
                        saddle_free=check_bool(saddle_free, "saddle_free"),
                        line_search=check_bool(line_search, "line_search"),
                        max_trials=check_int(max_trials, "max_trials"), memory_budget=memory_budget,
                        progress=check_optional_bool(progress, "progress"))
        super().__init__(params, defaults, model=model, loss_fn=loss_fn, curvature_data=curvature_data,
                         curvature_options=curvature_options)

    @torch.no_grad()
    def step(self, closure=None, curvature_data=None):
        """One Newton step; ``curvature_data`` overrides the constructor's for this step (``model=`` only)."""
        closure = self.require_closure(closure)
        group, spec, st = self.param_groups[0], self.spec, self.global_state
        P = spec.numel
        budget = self.budget()
        check_dense_solve_fits(P, spec.dtype, budget, "hessian_core.optim.NewtonCG or HessianFree (matrix-free)")
        x0 = self.flat_params()
        show = group["progress"]
        stages = tqdm(total=3, desc="Newton step", leave=False, disable=(not show) if show is not None else None)
        with self.guarded(x0), stages:
            stages.set_postfix_str(f"dense {P} x {P} Hessian")
            H, g, f0, loss = self._hessian(closure, curvature_data, budget, group)
            self.count("hvps", P)
            stages.update()
            lam = st.get("damping", float(group["damping"]))
            stages.set_postfix_str("solve")
            if group["adaptive_damping"]:
                self._adaptive(closure, H, g, f0, x0, lam, group, stages)
            else:
                d = newton_direction(H, g, lam, group["saddle_free"])
                stages.update()
                stages.set_postfix_str("trial points")
                self._line_search(closure, H, g, f0, x0, d, lam, group)
            stages.update()
        return loss

    def _hessian(self, closure, curvature_data, budget, group):
        """``(H, g, f0, loss)`` at the current parameters."""
        if self.model is None:
            op = ClosureHessianOperator(closure, self.spec, memory_budget=budget, progress=group["progress"])
            self.count("closure_evals")
            return op.to_dense(), op.grad, op.value, op.loss.detach()
        loss, g = self.loss_and_grad(closure)
        H = self.curvature_operator(HessianOperator, curvature_data).to_dense()
        return H, g, float(loss), loss

    def _line_search(self, closure, H, g, f0, x0, d, lam, group):
        info = dict(method=d.method, damping=lam, shift=d.shift, min_eigenvalue=d.min_eigenvalue)
        alpha = group["lr"]
        s = alpha * d.direction
        predicted = quadratic_change(g, H @ s, s)
        if not group["line_search"]:
            self.set_params(x0 + s)
            self.finish_step(**info, alpha=alpha, predicted_change=predicted, accepted=True)
            return
        slope = float(g @ d.direction)
        if not -predicted > self.roundoff(f0):  # nothing left to gain above round-off
            keep = slope < 0 and self.loss_at(closure, x0 + s) <= f0
            self.set_params(x0 + s if keep else x0)
            self.finish_step(**info, alpha=alpha if keep else 0.0, predicted_change=predicted, accepted=keep,
                             converged=True)
            return
        for halving in range(group["max_trials"]):
            f_new = self.loss_at(closure, x0 + alpha * d.direction)
            if f_new <= f0 + 1e-4 * alpha * slope:
                s = alpha * d.direction
                self.finish_step(**info, alpha=alpha, halvings=halving, predicted_change=quadratic_change(g, H @ s, s),
                                 accepted=True)
                return
            alpha *= 0.5
        self.set_params(x0)
        self.finish_step(**info, alpha=0.0, predicted_change=predicted, accepted=False)
        self.report(f"the line search found no decrease in max_trials={group['max_trials']} halvings")

    def _adaptive(self, closure, H, g, f0, x0, lam, group, stages):
        scale = float(H.diagonal().abs().mean())
        lm = LevenbergMarquardt(lam, floor=1e-6 * scale if scale > 0 else 1e-8)
        delta = self.roundoff(f0)
        for trial in range(1, group["max_trials"] + 1):
            d = newton_direction(H, g, lm.damping, group["saddle_free"])
            s = group["lr"] * d.direction
            predicted = quadratic_change(g, H @ s, s)
            info = dict(method=d.method, damping=lm.damping, shift=d.shift, min_eigenvalue=d.min_eigenvalue,
                        predicted_change=predicted, trials=trial)
            if trial == 1:
                stages.update()
                stages.set_postfix_str("trial points")
            f_new = self.loss_at(closure, x0 + s)
            if not -predicted > delta:  # nothing left to gain above round-off
                keep = f_new <= f0
                self.set_params(x0 + s if keep else x0)
                self.finish_step(**info, rho=None, accepted=keep, converged=True)
                return
            rho = gain_ratio(f_new - f0, predicted, delta)
            if rho > 0 and f_new <= f0:
                self.global_state["damping"] = lm.update(rho)
                self.finish_step(**info, rho=rho, accepted=True)
                return
            lm.reject()
        self.set_params(x0)
        self.global_state["damping"] = lm.damping
        self.finish_step(**info, rho=rho, accepted=False)
        self.report(f"no step lowered the loss in max_trials={group['max_trials']} tries of Levenberg-Marquardt "
                    "damping")
