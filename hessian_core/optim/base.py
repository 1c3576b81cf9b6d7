"""What the Newton-family optimizers share: one flat parameter vector, the closure, and safe updates.

The Newton step couples every parameter, so these optimizers take a single parameter group (like
``torch.optim.LBFGS``). Flat vectors follow the order of the parameters given (the core's
:class:`~hessian_core.params.ParamSpec` over them). Global state (damping, trust radius, counters) lives in
``self.state[first parameter]``, so ``state_dict()`` saves it. Every update is applied inside
:meth:`CurvatureOptimizer.guarded`: an exception (a non-finite loss, gradient, curvature product or step)
puts the parameters back exactly as they were before the step and is re-raised.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from ..closure import evaluate_closure
from ..errors import InvalidInputError
from ..finite import check_finite
from ..memory import resolve_budget
from ..params import ParamSpec, spec_of


class CurvatureOptimizer(torch.optim.Optimizer):
    """Base class: parameter bookkeeping for the Newton family. Subclasses implement ``step(closure)``."""

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self._spec: ParamSpec | None = None
        self._spec_ids: tuple[int, ...] = ()
        _ = self.spec  # validate now: one group, one dtype and device

    # -- parameters --------------------------------------------------------------------------------
    @property
    def spec(self) -> ParamSpec:
        """The :class:`ParamSpec` of the (single group's) parameters, rebuilt if the group changed."""
        name = type(self).__name__
        if len(self.param_groups) != 1:
            raise InvalidInputError(
                f"{name} does not support parameter groups (got {len(self.param_groups)}): the Newton step "
                "couples all parameters; pass one list of parameters"
            )
        tensors = self.param_groups[0]["params"]
        ids = tuple(map(id, tensors))
        if self._spec is None or ids != self._spec_ids:
            frozen = [i for i, t in enumerate(tensors) if not t.requires_grad]
            if frozen:
                raise InvalidInputError(
                    f"{name}: parameters {frozen} have requires_grad=False; leave them out")
            self._spec, self._spec_ids = self._make_spec(tensors), ids
        return self._spec

    def _make_spec(self, tensors) -> ParamSpec:
        return spec_of(tensors)

    @property
    def global_state(self) -> dict:
        """Optimizer-wide state (damping, radius, counters), stored under the first parameter."""
        return self.state[self.param_groups[0]["params"][0]]

    def flat_params(self) -> torch.Tensor:
        """Copy of the current parameters as one flat ``(P,)`` vector."""
        return self.spec.flatten(self.spec.primals()).clone()

    @torch.no_grad()
    def set_params(self, flat: torch.Tensor) -> None:
        """Write a flat ``(P,)`` vector into the parameters, in place (the tensors stay the same objects)."""
        for p, piece in zip(self.spec.tensors, self.spec.unflatten(flat)):
            p.copy_(piece)

    @contextlib.contextmanager
    def guarded(self, x0: torch.Tensor):
        """On any exception inside, restore the parameters to ``x0`` before re-raising."""
        try:
            yield
        except BaseException:
            self.set_params(x0)
            raise

    def budget(self) -> int:
        return resolve_budget(self.param_groups[0].get("memory_budget"), self.spec.device)

    # -- closure -----------------------------------------------------------------------------------
    def require_closure(self, closure: Callable | None) -> Callable:
        if closure is None or not callable(closure):
            raise InvalidInputError(
                f"{type(self).__name__}.step needs a closure that re-evaluates the model and returns the "
                "loss: opt.step(lambda: loss_fn(model(x), y)); calling loss.backward() inside is allowed, "
                "not needed"
            )
        return closure

    def loss_and_grad(self, closure: Callable) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate the closure: ``(detached loss tensor, flat gradient (P,))``, both checked finite."""
        loss, flat, _ = evaluate_closure(closure, self.spec)
        check_finite(loss.detach().reshape(1), "loss returned by the closure")
        check_finite(flat, "gradient of the closure's loss")
        self.count("closure_evals")
        return loss.detach(), flat

    def loss_at(self, closure: Callable, flat: torch.Tensor) -> float:
        """Set the parameters to ``flat`` and return the closure's loss there (``inf`` if not finite)."""
        self.set_params(flat)
        with torch.enable_grad():
            value = closure()
        self.count("closure_evals")
        value = float(value.detach() if isinstance(value, torch.Tensor) else value)
        return value if math.isfinite(value) else math.inf

    def count(self, key: str, n: int = 1) -> None:
        st = self.global_state
        st[key] = st.get(key, 0) + n

    def finish_step(self, **info) -> None:
        """Record the step's outcome in the global state (``state['last']``) and count it."""
        st = self.global_state
        st["step"] = st.get("step", 0) + 1
        st["last"] = info
