"""Hessian-free optimization (Martens 2010; Martens & Sutskever 2012) on the core's GGN operator."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..arguments import check_bool, check_choice, check_int, check_optional_bool, check_real
from ..errors import InvalidInputError, NonFiniteError
from ..operators import ClosureHessianOperator, GGNOperator
from .base import CurvatureOptimizer
from .cg import martens_cg, preconditioner_of
from .damping import LevenbergMarquardt, gain_ratio


class HessianFree(CurvatureOptimizer):
    """Martens' Hessian-free: CG on damped Gauss-Newton products, warm-started, backtracked, LM-damped.

    Curvature (``curvature=``):

    * ``"ggn"`` (the default when ``model`` and ``loss_fn`` are given): the core's
      :class:`~hessian_core.operators.GGNOperator` of ``loss_fn(model(inputs), targets)`` on the
      *curvature data*, which may be a small sub-sample of the gradient batch (Martens used about 1/10 to
      1/100): ``curvature_data=`` here or in ``step``, a ``(inputs, targets)`` pair, a list of pairs, or a
      callable returning one (called each step, e.g. to draw a fresh random minibatch). Evaluated with the
      core's model policy (eval mode unless ``curvature_options={"train_mode": True}``). The GGN is positive
      semi-definite: with ``damping > 0`` every CG iterate is a descent direction. Terms of the closure's
      loss outside ``loss_fn(model(x), y)`` (regularizers) are not in the GGN; ``damping`` stands in.
    * ``"hessian"`` (the default without a model): Hessian products from the closure's graph; CG stops at
      negative curvature and steps are always descent directions (``-g`` as the last resort).

    Each ``step(closure)``:

    1. loss and gradient ``g`` from the closure (the gradient batch);
    2. CG on ``(B + lambda I) p = -g`` from ``cg_decay`` x the previous CG solution (warm start), stopped by
       Martens' relative-progress rule (``cg_tol``) or ``max_cg_iters``; iterates at
       ``ceil(1.3^j)`` are kept;
    3. CG backtracking (``backtrack=True``): from the last kept iterate back, the first whose successor
       did not lower the loss;
    4. LM damping (``adaptive_damping=True``): ``rho = actual / predicted`` (undamped quadratic model);
       ``lambda *= 3/2`` if ``rho < 1/4``, ``*= 2/3`` if ``rho > 3/4``;
    5. line search (``line_search=True``): Armijo (``c = 1e-2``) from ``lr``, shrinking by 0.8, at most
       ``max_line_search`` times; if nothing lowers the loss the parameters are left unchanged.

    ``preconditioner``: ``M^{-1}`` for preconditioned CG in step 2: an operator (e.g. ``kfac.inverse(d)`` of a
    :class:`~hessian_core.kfac.KFACOperator` over the same parameters in the model's order) or a callable
    ``f(damping) -> operator`` called at each step with the current LM damping ``lambda``, e.g.
    ``lambda lam: hc.KFACOperator(model, loss_fn, batch).inverse(lam)``.

    Returns the loss before the step. ``state['last']`` has the CG iterations, the chosen iterate, ``rho``,
    the damping and the step size; ``state`` counts ``closure_evals`` and ``curvature_products``.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 1.0, *, model: torch.nn.Module | None = None,
                 loss_fn: Callable | None = None, curvature_data=None, curvature: str | None = None,
                 adaptive_damping: bool = True, max_cg_iters: int = 250, min_cg_iters: int = 1,
                 cg_tol: float = 5e-4, cg_decay: float = 0.95, backtrack: bool = True,
                 line_search: bool = True, max_line_search: int = 30, memory_budget=None,
                 progress: bool | None = False, curvature_options: dict | None = None, preconditioner=None):
        if curvature is None:
            curvature = "ggn" if model is not None else "hessian"
        curvature = check_choice(curvature, "curvature", ("ggn", "hessian"))
        if curvature == "ggn" and (model is None or loss_fn is None):
            raise InvalidInputError(
                "HessianFree(curvature='ggn') needs model= and loss_fn= (the GGN is J^T H_loss J of "
                "loss_fn(model(inputs), targets)); give them, or use curvature='hessian' for closure-only use"
            )
        self.curvature = curvature
        max_cg_iters = check_int(max_cg_iters, "max_cg_iters")
        defaults = dict(lr=check_real(lr, "lr", positive=True),
                        damping=check_real(damping, "damping", nonnegative=True),
                        adaptive_damping=check_bool(adaptive_damping, "adaptive_damping"),
                        max_cg_iters=max_cg_iters,
                        min_cg_iters=check_int(min_cg_iters, "min_cg_iters", most=max_cg_iters,
                                               why=" (at most max_cg_iters)"),
                        cg_tol=check_real(cg_tol, "cg_tol", positive=True),
                        cg_decay=check_real(cg_decay, "cg_decay", nonnegative=True, at_most=1.0),
                        backtrack=check_bool(backtrack, "backtrack"),
                        line_search=check_bool(line_search, "line_search"),
                        max_line_search=check_int(max_line_search, "max_line_search"), memory_budget=memory_budget,
                        progress=check_optional_bool(progress, "progress"))
        super().__init__(params, defaults, model=model, loss_fn=loss_fn, curvature_data=curvature_data,
                         curvature_options=curvature_options)
        self.preconditioner = preconditioner

    def _products(self, closure, curvature_data):
        """``(loss tensor, f0, g, matvec)`` at the current parameters."""
        group = self.param_groups[0]
        if self.curvature == "hessian":
            op = ClosureHessianOperator(closure, self.spec, memory_budget=self.budget(),
                                        progress=group["progress"])
            self.count("closure_evals")
            return op.loss.detach(), op.value, op.grad, self._counted(op.matvec)
        loss, g = self.loss_and_grad(closure)
        op = self.curvature_operator(GGNOperator, curvature_data)
        return loss, float(loss), g, self._counted(op.matvec)

    def _counted(self, matvec):
        def counted(v):
            self.count("curvature_products")
            return matvec(v)

        return counted

    # -- step --------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None, curvature_data=None):
        """One HF step; ``curvature_data`` overrides the constructor's for this step."""
        closure = self.require_closure(closure)
        group, st = self.param_groups[0], self.global_state
        x0 = self.flat_params()
        with self.guarded(x0):
            loss, f0, g, matvec = self._products(closure, curvature_data)
            lam = st.get("damping", float(group["damping"]))
            warm = st.get("cg_solution")
            warm = group["cg_decay"] * warm if warm is not None and warm.shape == g.shape else None
            res = martens_cg(matvec, g, warm, damping=lam, max_iter=group["max_cg_iters"],
                             min_iter=group["min_cg_iters"], tol=group["cg_tol"],
                             precondition=preconditioner_of(self.preconditioner, lam, self.spec.numel))
            if not bool(torch.isfinite(res.step).all()):
                raise NonFiniteError("the CG solution is not finite; raise the damping")
            st["cg_solution"] = res.step
            lr = group["lr"]
            candidates = [(i, p, phi) for i, p, phi in res.iterates if float(g @ p) < 0]
            if not candidates and float(g.abs().max()) > 0:
                # Negative curvature at once (Hessian mode) or a useless warm start: steepest descent.
                gg = float(g @ g)
                candidates = [(0, -g, -gg + 0.5 * float(g @ matvec(g)) + 0.5 * lam * gg)]
            if not candidates:
                self.finish_step(cg_iterations=res.iterations, damping=lam, alpha=0.0, accepted=True)
                return loss
            i, p, phi, f_new = self._backtrack(closure, x0, candidates, lr, group["backtrack"])
            # Undamped model change of s = lr p: lr g.p + lr^2 p.B p / 2; p.(B + lam I) p = 2 (phi - g.p).
            gp = float(g @ p)
            pBp = 2 * (phi - gp) - lam * float(p @ p)
            predicted = lr * gp + 0.5 * lr * lr * pBp
            delta = self.roundoff(f0)
            rho = gain_ratio(f_new - f0, predicted, delta)
            if group["adaptive_damping"]:
                st["damping"] = LevenbergMarquardt(lam).update(rho)
            info = dict(cg_iterations=res.iterations, cg_reason=res.reason, chosen_iterate=i, rho=rho, damping=lam,
                        predicted_change=predicted, negative_curvature=res.negative_curvature)
            if not -predicted > delta:  # nothing left to gain above round-off: stationary to working precision
                alpha = lr if f_new <= f0 else 0.0
                self.set_params(x0 + alpha * p)
                self.finish_step(**info, alpha=alpha, accepted=alpha > 0, converged=True)
                return loss
            alpha = lr if math.isfinite(f_new) else 0.0
            if group["line_search"]:
                alpha, tries = lr, 0
                while not f_new <= f0 + 1e-2 * alpha * gp:
                    tries += 1
                    if tries > group["max_line_search"]:
                        alpha = 0.0
                        break
                    alpha *= 0.8
                    f_new = self.loss_at(closure, x0 + alpha * p)
            self.set_params(x0 + alpha * p)
            self.finish_step(**info, alpha=alpha, accepted=alpha > 0)
            if alpha == 0:
                self.report(f"the line search found no decrease in max_line_search={group['max_line_search']} "
                            "tries" if group["line_search"] else "the loss at the trial point is not finite")
        return loss

    def _backtrack(self, closure, x0, candidates, lr, backtrack):
        """Martens' CG backtracking: the loss at the last kept iterate, then earlier ones while they are
        better. Returns ``(iteration, p, phi, loss at x0 + lr p)``."""
        k = len(candidates) - 1
        i, p, phi = candidates[k]
        best = (i, p, phi, self.loss_at(closure, x0 + lr * p))
        if not backtrack:
            return best
        while k > 0:
            k -= 1
            i, p, phi = candidates[k]
            f = self.loss_at(closure, x0 + lr * p)
            if not f < best[3]:
                break
            best = (i, p, phi, f)
        return best
