"""What the Newton-family optimizers share: one flat parameter vector, the closure, safe updates, the
optional model-based curvature, and how a step reports that it could not make progress.

The Newton step couples every parameter, so these optimizers take a single parameter group (like
``torch.optim.LBFGS``). Flat vectors follow the order of the parameters given (the core's
:class:`~hessian_core.params.ParamSpec` over them; with ``model=``, the model's order). Global state
(damping, trust radius, counters) lives in ``self.state[first parameter]``, so ``state_dict()`` saves it.
Every update is applied inside :meth:`CurvatureOptimizer.guarded`: an exception (a non-finite loss,
gradient, curvature product or step) puts the parameters back exactly as they were before the step and is
re-raised.

Round-off: a change of the loss smaller than :meth:`CurvatureOptimizer.roundoff` (``10 eps max(1, |f|)``
in the parameters' dtype; Conn, Gould & Toint, *Trust-Region Methods*, section 17.4.2) cannot be told from
the error of evaluating the loss. A step whose predicted decrease is below it is the end of the road
(the point is stationary to working precision): it is taken only if it does not raise the loss, and
nothing is adapted or warned about.

Warnings (:func:`~hessian_core.user_warnings.warn_user`) point at the line that called ``step`` and have
constant texts, so Python shows each once per line; the numbers are in ``state['last']``.
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
from ..user_warnings import warn_user


class CurvatureOptimizer(torch.optim.Optimizer):
    """Base class: parameter bookkeeping for the Newton family. Subclasses implement ``step(closure)``.

    ``model``, ``loss_fn``, ``curvature_data``, ``curvature_options``: optional; when given, curvature
    comes from the core operators of ``loss_fn(model(inputs), targets)`` on ``curvature_data`` (the fast
    structured and vmapped paths of :mod:`hessian_core.operators`) instead of the closure's graph.
    """

    def __init__(self, params, defaults: dict, *, model: torch.nn.Module | None = None,
                 loss_fn: Callable | None = None, curvature_data=None, curvature_options: dict | None = None):
        if model is not None and not isinstance(model, torch.nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if loss_fn is not None and not callable(loss_fn):
            raise InvalidInputError(f"loss_fn must be callable as loss_fn(outputs, targets), got {loss_fn!r}")
        if curvature_options is not None and not isinstance(curvature_options, dict):
            raise InvalidInputError(f"curvature_options must be a dict of Objective options, got {curvature_options!r}")
        self.model, self.loss_fn = model, loss_fn
        self.curvature_data = curvature_data
        self.curvature_options = dict(curvature_options or {})
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
        if self.model is None:
            return spec_of(tensors)
        # The model's order, so that flat vectors match the curvature operator's.
        owned = {id(p) for p in self.model.parameters()}
        foreign = [i for i, t in enumerate(tensors) if id(t) not in owned]
        if foreign:
            raise InvalidInputError(f"{type(self).__name__}: parameters {foreign} are not parameters of model=")
        return ParamSpec(self.model, list(tensors))

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

    # -- model-based curvature -----------------------------------------------------------------------
    def curvature_batch(self, data):
        """The data of this step's curvature: ``data`` (given to ``step``), else the constructor's
        ``curvature_data``; a callable is called (e.g. to draw a fresh sub-sample)."""
        data = self.curvature_data if data is None else data
        if data is None:
            raise InvalidInputError(
                f"{type(self).__name__} with model= needs curvature data: pass curvature_data=(inputs, targets) "
                "(or a list of batches, or a callable returning one) to the constructor or to "
                "step(closure, curvature_data=...)"
            )
        return data() if callable(data) else data

    def curvature_operator(self, kind, data):
        """``kind(model, loss_fn, data, params=..., memory_budget=..., progress=..., **curvature_options)``."""
        group = self.param_groups[0]
        options = {"memory_budget": group["memory_budget"], "progress": group["progress"], **self.curvature_options}
        return kind(self.model, self.loss_fn, self.curvature_batch(data), params=self.spec.tensors, **options)

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

    def roundoff(self, f: float) -> float:
        """Changes of the loss below this cannot be told from round-off: ``10 eps max(1, |f|)``."""
        return 10 * torch.finfo(self.spec.dtype).eps * max(1.0, abs(f))

    # -- bookkeeping -------------------------------------------------------------------------------
    def count(self, key: str, n: int = 1) -> None:
        st = self.global_state
        st[key] = st.get(key, 0) + n

    def finish_step(self, **info) -> None:
        """Record the step's outcome in the global state (``state['last']``) and count it."""
        st = self.global_state
        st["step"] = st.get("step", 0) + 1
        st["last"] = info
        if not info.get("accepted", True):
            self.count("rejected_steps")

    def report(self, message: str) -> None:
        """A step left the parameters unchanged although the loss could still decrease: warn (constant
        ``message``, attributed to the caller of ``step``); the numbers are in ``state['last']``."""
        warn_user(f"{type(self).__name__}: {message}; the parameters are unchanged (details in "
                  "opt.state[first parameter]['last'])", RuntimeWarning)
