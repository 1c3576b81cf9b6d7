"""The first batch, run once outside any transform, so that problems become errors that name them.

:func:`probe` checks that the model accepts the inputs, that the loss accepts the outputs and targets
without silent broadcasting and returns a finite scalar, measures the activation size (for chunking), and
runs the forward a second time to see whether the model draws random numbers (dropout outside
``model.training``, noise, random pooling regions). A random model is evaluated with torch's generator
fixed per batch from then on, so every pass sees the same draws; randomness that the seed does not fix
(numpy, Python's ``random``, a private ``torch.Generator``) is refused with the module that uses it.

The probe's forwards run on copies of every parameter, buffer and input, so a forward that writes into
them changes nothing of the user's: writes into buffers or inputs are recorded (the objective then always
works on copies), a write into a parameter is refused by name (the curvature of a forward that changes its
own parameters is not defined). It also records which equivalent composites
(:mod:`hessian_core.composites`) the forward and loss needed; objectives that need none skip them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from .data import shape_str
from .errors import InvalidInputError, NonFiniteError


@dataclass(frozen=True)
class BatchProbe:
    """What :func:`probe` learned from the first batch.

    ``activation_numel``: elements of every module output in one forward (for the chunk sizes);
    ``output_shape``: shape of the model output (nested tuples for structured outputs);
    ``random``: the forward draws from torch's generator (then fixed per batch by the objective's seed);
    ``mutates_buffers`` / ``mutates_inputs``: the forward writes into buffers (observers, caches, running
    statistics) or into its input tensors, so the objective runs it on copies from then on;
    ``composites``: the operations replaced by :mod:`hessian_core.composites` (empty: none needed).
    """

    activation_numel: int
    output_shape: object
    random: bool
    mutates_buffers: bool
    mutates_inputs: bool
    composites: tuple = ()


def probe(objective, ctx) -> BatchProbe:
    """Run batch ``ctx`` of ``objective`` as described in the module docstring."""
    sizes: list[int] = []
    writes: dict = {}
    outputs = _outputs(objective, ctx, lambda: _recording_sizes(objective.model, sizes), seed=None, writes=writes)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loss = ctx.loss_of_outputs(outputs)
        except Exception as e:  # noqa: BLE001 - re-raised with the shapes that caused it
            raise InvalidInputError(
                f"loss_fn(outputs {shape_str(outputs)}, targets {shape_str(ctx.targets)}) failed on batch 0: "
                f"{type(e).__name__}: {e}"
            ) from e
    for w in caught:
        if "target size" in str(w.message) and "broadcast" in str(w.message):
            raise InvalidInputError(
                f"loss_fn broadcasts outputs {shape_str(outputs)} against targets {shape_str(ctx.targets)}, "
                "which silently gives a wrong loss and Hessian; reshape the targets to the outputs' shape"
            )
        warnings.warn(w.message, w.category, stacklevel=3)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise InvalidInputError(
            f"loss_fn must return a scalar, got {shape}; use reduction='mean' or 'sum' in the loss"
        )
    if not torch.isfinite(loss):
        raise NonFiniteError(f"the loss on batch 0 is {float(loss)}; the curvature is undefined there")
    random = _draws_random_numbers(objective, ctx, outputs)
    return BatchProbe(int(sum(sizes)), _shape_of(outputs), random, writes["buffers"], writes["inputs"],
                      tuple(sorted(objective.substitutions)))


def _outputs(objective, ctx, hooks, seed, writes=None):
    """One forward of batch ``ctx`` on copies of the parameters, buffers and inputs; ``writes`` (a dict)
    receives whether the forward wrote into the buffers and inputs. A write into a parameter is refused."""
    handles = hooks()
    model, spec = objective.model, objective.params
    inputs = _copy(ctx.inputs)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = tuple(p.clone() for p in spec.primals())
    others = {n: p.detach().clone() for n, p in model.named_parameters() if n not in set(spec.names)}
    watched = [list(buffers.values()), _flat(inputs), list(params) + list(others.values())]
    versions = [[t._version for t in group] for group in watched]
    try:
        with torch.no_grad():
            try:
                out = objective.forward(params, inputs, seed=seed, buffers=buffers, others=others,
                                        inputs_copied=True)
            except InvalidInputError:
                raise
            except Exception as e:  # noqa: BLE001 - re-raised with the shapes that caused it
                raise InvalidInputError(
                    f"model({shape_str(ctx.inputs)}) failed on batch 0: {type(e).__name__}: {e}"
                ) from e
        after = [[t._version for t in group] for group in watched]
        names = list(spec.names) + list(others)
        written = [n for n, v, w in zip(names, versions[2], after[2]) if v != w]
        if written:
            owner = written[0].rsplit(".", 1)[0] if "." in written[0] else ""
            raise InvalidInputError(
                f"module '{owner or 'the model'}' ({type(model.get_submodule(owner)).__name__}) writes into its "
                f"parameter '{written[0]}' during forward. The curvature of a forward that changes its own "
                "parameters is not defined, and hessian_core never changes a model: move the write out of "
                "forward (e.g. into a step after optimizer.step())")
        if writes is not None:
            writes["buffers"] = versions[0] != after[0]
            writes["inputs"] = versions[1] != after[1]
        return out
    finally:
        for h in handles:
            h.remove()


def _copy(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_copy(t) for t in x)
    return x


def _flat(x) -> list:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for item in x for t in _flat(item)]
    return []


def _recording_sizes(model, sizes):
    return [m.register_forward_hook(lambda _m, _i, o: sizes.append(_numel(o))) for m in model.modules()]


def _recording_outputs(model, record):
    return [m.register_forward_hook(lambda m, _i, o, name=name: record.append((name, type(m).__name__, o)))
            for name, m in model.named_modules()]


def _draws_random_numbers(objective, ctx, outputs) -> bool:
    """Whether a second forward differs from the first; refuse randomness that a seed does not fix."""
    again = _outputs(objective, ctx, lambda: [], seed=None)
    if _same(outputs, again):
        return False
    seed = objective.batch_seed(0)
    first, second = [], []
    a = _outputs(objective, ctx, lambda: _recording_outputs(objective.model, first), seed=seed)
    b = _outputs(objective, ctx, lambda: _recording_outputs(objective.model, second), seed=seed)
    if _same(a, b):
        return True
    culprit = next(((name or "the model", kind) for (name, kind, x), (_, _, y) in zip(first, second)
                    if not _same(x, y)), ("the model", type(objective.model).__name__))
    raise InvalidInputError(
        f"module '{culprit[0]}' ({culprit[1]}) gives a different output on every call, even with torch's "
        "random generator fixed: it draws random numbers elsewhere (numpy, Python's random, a private "
        "torch.Generator) or depends on changing state. The curvature of such a model is a different matrix "
        "on every product; make its forward deterministic, or draw its randomness from torch's global generator "
        "(which hessian_core fixes per batch)"
    )


def _same(x, y) -> bool:
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
        return x.shape == y.shape and x.dtype == y.dtype and bool(torch.equal(x, y))
    if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
        return len(x) == len(y) and all(_same(a, b) for a, b in zip(x, y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    return type(x) is type(y)


def _numel(o) -> int:
    if isinstance(o, torch.Tensor):
        return o.numel()
    if isinstance(o, (tuple, list)):
        return sum(_numel(t) for t in o)
    if isinstance(o, dict):
        return sum(_numel(t) for t in o.values())
    return 0


def _shape_of(o):
    if isinstance(o, torch.Tensor):
        return tuple(o.shape)
    if isinstance(o, (tuple, list)):
        return tuple(_shape_of(t) for t in o)
    if isinstance(o, dict):
        return {k: _shape_of(v) for k, v in o.items()}
    return None
