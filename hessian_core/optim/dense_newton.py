"""Dense Newton: the exact Hessian of the closure's loss, solved by Cholesky, with optional
Levenberg-Marquardt damping and the saddle-free ``|H|``."""

from __future__ import annotations

import warnings

import torch

from ..errors import InvalidInputError
from ..operators import ClosureHessianOperator
from .base import CurvatureOptimizer
from .damping import LevenbergMarquardt, gain_ratio
from .dense_solve import check_dense_solve_fits, newton_direction, quadratic_change


class Newton(CurvatureOptimizer):
    """Newton's method with the dense Hessian: ``theta <- theta - lr (H + damping I)^{-1} g``.

    Args:
        params: the parameters (one group).
        lr: step scale (1 is the full Newton step: one step solves a quadratic).
        damping: ``lambda >= 0`` added to the Hessian's diagonal (the initial one if ``adaptive_damping``).
        adaptive_damping: Levenberg-Marquardt: the step is tried, the gain ratio
            ``rho = actual / predicted`` change of the loss adapts ``lambda`` (Martens' 3/2, 2/3 rule), and a
            step that does not lower the loss is rejected and retried with ``lambda`` x4 (up to
            ``max_trials``; then the parameters are left as they were and a warning is given).
        saddle_free: use ``|H|`` (eigendecomposition) instead of ``H``, so negative curvature is descended.
        max_trials: tries per step with ``adaptive_damping``.
        memory_budget: bytes (or ``"2GB"``); the dense ``P x P`` Hessian, its factorization and a work copy
            (``3 P^2`` numbers) must fit, else :class:`~hessian_core.errors.MemoryBudgetError`.
        progress: tqdm bar while the Hessian is built (``None``: only on a terminal).

    ``step(closure)``: ``closure()`` re-evaluates the model and returns the loss (calling ``backward``
    inside is allowed, not needed). The Hessian is built from the closure's graph (``P`` Hessian-vector
    products, batched). Returns the loss before the step, as ``torch.optim`` does.

    Indefinite ``H + lambda I``: the step is solved with a shifted matrix (see
    :func:`~hessian_core.optim.dense_solve.newton_direction`), so it is always a descent direction. Costs per
    step: one closure evaluation with double backward, ``P`` products, one ``O(P^3)`` factorization, plus one
    closure evaluation per trial with ``adaptive_damping``. ``state['last']`` records the method, damping,
    gain ratio and smallest eigenvalue (when computed).
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0, *, adaptive_damping: bool = False,
                 saddle_free: bool = False, max_trials: int = 20, memory_budget=None,
                 progress: bool | None = None):
        if not lr > 0:
            raise InvalidInputError(f"lr must be > 0, got {lr}")
        if not damping >= 0:
            raise InvalidInputError(f"damping must be >= 0, got {damping}")
        if max_trials < 1:
            raise InvalidInputError(f"max_trials must be >= 1, got {max_trials}")
        defaults = dict(lr=lr, damping=damping, adaptive_damping=adaptive_damping, saddle_free=saddle_free,
                        max_trials=max_trials, memory_budget=memory_budget, progress=progress)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        closure = self.require_closure(closure)
        group, spec, st = self.param_groups[0], self.spec, self.global_state
        P = spec.numel
        budget = self.budget()
        check_dense_solve_fits(P, spec.dtype, budget, "hessian_core.optim.NewtonCG or HessianFree (matrix-free)")
        x0 = self.flat_params()
        with self.guarded(x0):
            op = ClosureHessianOperator(closure, spec, memory_budget=budget, progress=group["progress"])
            self.count("closure_evals")
            H = op.to_dense()
            self.count("hvps", P)
            g, f0, loss = op.grad, op.value, op.loss.detach()
            del op  # release the double-backward graph before trials
            lam = st.get("damping", float(group["damping"]))
            if not group["adaptive_damping"]:
                d = newton_direction(H, g, lam, group["saddle_free"])
                s = group["lr"] * d.direction
                self.set_params(x0 + s)
                self.finish_step(method=d.method, damping=lam, shift=d.shift, min_eigenvalue=d.min_eigenvalue,
                                 predicted_change=quadratic_change(g, H @ s, s), accepted=True)
                return loss
            self._adaptive(closure, H, g, f0, x0, lam, group)
        return loss

    def _adaptive(self, closure, H, g, f0, x0, lam, group):
        scale = float(H.diagonal().abs().mean())
        lm = LevenbergMarquardt(lam, floor=1e-6 * scale if scale > 0 else 1e-8)
        for trial in range(1, group["max_trials"] + 1):
            d = newton_direction(H, g, lm.damping, group["saddle_free"])
            s = group["lr"] * d.direction
            predicted = quadratic_change(g, H @ s, s)
            rho = gain_ratio(self.loss_at(closure, x0 + s) - f0, predicted)
            if rho > 0:
                used = lm.damping
                self.global_state["damping"] = lm.update(rho)
                self.finish_step(method=d.method, damping=used, shift=d.shift,
                                 min_eigenvalue=d.min_eigenvalue, predicted_change=predicted, rho=rho,
                                 trials=trial, accepted=True)
                return
            lm.reject()
        self.set_params(x0)
        self.global_state["damping"] = lm.damping
        self.finish_step(method=d.method, damping=lm.damping, rho=rho, trials=group["max_trials"],
                         accepted=False)
        warnings.warn(f"Newton: no step lowered the loss in {group['max_trials']} tries (damping now "
                      f"{lm.damping:.3g}); the parameters are unchanged", RuntimeWarning, stacklevel=3)
