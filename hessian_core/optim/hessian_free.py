"""Hessian-free optimization (Martens 2010; Martens & Sutskever 2012) on the core's GGN operator."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import InvalidInputError, NonFiniteError
from ..operators import ClosureHessianOperator, GGNOperator
from ..params import ParamSpec, spec_of
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
        if curvature not in ("ggn", "hessian"):
            raise InvalidInputError(f"curvature must be 'ggn' or 'hessian', got {curvature!r}")
        if curvature == "ggn" and (model is None or loss_fn is None):
            raise InvalidInputError(
                "HessianFree(curvature='ggn') needs model= and loss_fn= (the GGN is J^T H_loss J of "
                "loss_fn(model(inputs), targets)); give them, or use curvature='hessian' for closure-only use"
            )
        if not lr > 0 or not damping >= 0 or not 0 <= cg_decay <= 1 or max_cg_iters < 1:
            raise InvalidInputError(
                f"need lr > 0, damping >= 0, 0 <= cg_decay <= 1, max_cg_iters >= 1; got lr={lr}, "
                f"damping={damping}, cg_decay={cg_decay}, max_cg_iters={max_cg_iters}")
        self.model, self.loss_fn, self.curvature = model, loss_fn, curvature
        self.curvature_data = curvature_data
        self.curvature_options = dict(curvature_options or {})
        defaults = dict(lr=lr, damping=damping, adaptive_damping=adaptive_damping, max_cg_iters=max_cg_iters,
                        min_cg_iters=min_cg_iters, cg_tol=cg_tol, cg_decay=cg_decay, backtrack=backtrack,
                        line_search=line_search, max_line_search=max_line_search, memory_budget=memory_budget,
                        progress=progress)
        super().__init__(params, defaults)
        self.preconditioner = preconditioner

    def _make_spec(self, tensors) -> ParamSpec:
        if self.model is None:
            return spec_of(tensors)
        # The model's order, so that flat vectors match the GGN operator's.
        owned = {id(p) for p in self.model.parameters()}
        foreign = [i for i, t in enumerate(tensors) if id(t) not in owned]
        if foreign:
            raise InvalidInputError(f"HessianFree: parameters {foreign} are not parameters of model=")
        return ParamSpec(self.model, list(tensors))

    # -- curvature ---------------------------------------------------------------------------------
    def _curvature_batch(self, data):
        data = self.curvature_data if data is None else data
        if data is None:
            raise InvalidInputError(
                "HessianFree with GGN curvature needs curvature data: pass curvature_data=(inputs, targets) "
                "(or a list of batches, or a callable returning one) to the constructor or to "
                "step(closure, curvature_data=...)"
            )
        return data() if callable(data) else data

    def _products(self, closure, curvature_data):
        """``(loss tensor, f0, g, matvec)`` at the current parameters."""
        group = self.param_groups[0]
        if self.curvature == "hessian":
            op = ClosureHessianOperator(closure, self.spec, memory_budget=self.budget(),
                                        progress=group["progress"])
            self.count("closure_evals")
            return op.loss.detach(), op.value, op.grad, self._counted(op.matvec)
        loss, g = self.loss_and_grad(closure)
        op = GGNOperator(self.model, self.loss_fn, self._curvature_batch(curvature_data),
                         params=self.spec.tensors, memory_budget=group["memory_budget"],
                         progress=group["progress"], **self.curvature_options)
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
            rho = gain_ratio(f_new - f0, predicted)
            if group["adaptive_damping"]:
                st["damping"] = LevenbergMarquardt(lam).update(rho)
            alpha = lr if math.isfinite(f_new) or group["line_search"] else 0.0
            if group["line_search"]:
                tries = 0
                while not f_new <= f0 + 1e-2 * alpha * gp:
                    tries += 1
                    if tries > group["max_line_search"]:
                        alpha = 0.0
                        break
                    alpha *= 0.8
                    f_new = self.loss_at(closure, x0 + alpha * p)
            self.set_params(x0 + alpha * p)
            self.finish_step(cg_iterations=res.iterations, cg_reason=res.reason, chosen_iterate=i, rho=rho,
                             damping=lam, alpha=alpha, predicted_change=predicted,
                             negative_curvature=res.negative_curvature, accepted=alpha > 0)
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
