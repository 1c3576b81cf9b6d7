"""Evaluating a user's ``closure()`` (the loss, as ``torch.optim`` optimizers get it) with its gradient.

Closures that call ``loss.backward()`` themselves (the usual ``torch.optim`` closure) are supported: while
the closure runs, :func:`keep_graph` makes every ``backward`` keep the graph (``retain_graph=True``), so
second-order products can still traverse it; ``.grad`` is filled by the closure as it wrote it. The patch
of ``torch.autograd.backward`` is in place only while the closure runs, and always undone.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable

import torch

from .errors import InvalidInputError
from .params import ParamSpec
from .second_order_kernels import second_order_kernels

_BACKWARD_SIGNATURE = inspect.signature(torch.autograd.backward)


@contextlib.contextmanager
def keep_graph():
    """While active, ``tensor.backward()`` / ``torch.autograd.backward`` keep the graph
    (``retain_graph=True``), so that a closure which calls ``loss.backward()`` leaves a graph that the
    second derivatives can still traverse. Yields a list that counts the backward calls seen."""
    original = torch.autograd.backward
    calls: list[int] = []

    def backward(*args, **kwargs):
        bound = _BACKWARD_SIGNATURE.bind(*args, **kwargs)
        bound.arguments["retain_graph"] = True
        calls.append(1)
        return original(*bound.args, **bound.kwargs)

    torch.autograd.backward = backward
    try:
        yield calls
    finally:
        torch.autograd.backward = original


def evaluate_closure(closure: Callable, spec: ParamSpec, *, create_graph: bool = False):
    """Run ``closure()`` with autograd on and return ``(loss tensor, flat gradient (P,), per-tensor grads)``.

    With ``create_graph=True`` the per-tensor gradients keep their graph (for Hessian products).
    Raises :class:`InvalidInputError` when the closure does not return a scalar tensor of the parameters.
    """
    with torch.enable_grad(), keep_graph(), second_order_kernels():
        loss = closure()
        loss = check_loss(loss)
        try:
            grads = torch.autograd.grad(loss, spec.tensors, create_graph=create_graph, allow_unused=True)
        except RuntimeError as e:
            if "second time" not in str(e):
                raise
            raise InvalidInputError(
                "the closure freed the loss's graph (torch.autograd.grad inside the closure does, unlike "
                "loss.backward()); return the loss without differentiating it, or use retain_graph=True there"
            ) from e
    grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(spec.tensors, grads))
    flat = spec.flatten([g.detach() for g in grads])
    return loss, flat, grads


def check_loss(loss) -> torch.Tensor:
    """The closure's return value as a scalar loss tensor with a graph, or a clear error."""
    if not isinstance(loss, torch.Tensor):
        raise InvalidInputError(
            f"the closure returned a {type(loss).__name__}; it must return the loss tensor itself "
            "(return loss, not loss.item())"
        )
    if loss.numel() != 1:
        raise InvalidInputError(
            f"the closure returned a tensor of shape {tuple(loss.shape)}; the loss must be a scalar")
    if not loss.requires_grad:
        raise InvalidInputError(
            "the closure's loss does not depend on the parameters through autograd (requires_grad=False): "
            "compute it from the parameters, outside torch.no_grad(), and do not .detach() it"
        )
    return loss.reshape(())
