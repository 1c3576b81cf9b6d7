"""The objective: a model, a loss and data, and the one place where normalization is decided.

Normalization contract
----------------------
``loss_fn(outputs, targets)`` returns a scalar for one batch. Its *reduction* says how it combines the
samples of the batch:

* ``"mean"`` (the default, and what torch losses with ``reduction='mean'`` do): the objective over many
  batches is the mean over *all* samples, ``L = sum_b c_b * loss_b / sum_b c_b`` with ``c_b`` the
  number of samples of batch ``b`` (``count_fn``). With batches of 4, 4 and 2 samples this is exactly
  the loss of the 10 samples as one batch, not the mean of the three batch means.
* ``"sum"``: ``L = sum_b loss_b``.

The reduction is read from ``loss_fn.reduction`` when the loss has one (``torch.nn`` losses), else it
is ``"mean"`` unless ``reduction=`` says otherwise. A loss that averages over something other than the
leading dimension of the targets (masked tokens, ``ignore_index``, class weights) declares what it
averages over with ``count_fn(inputs, targets) -> number``, e.g. ``lambda x, y: (y != -100).sum()``.

Every curvature quantity (Hessian, GGN, Fisher, gradient, loss) is accumulated batch by batch with the
weight ``c_b`` (or 1 for ``"sum"``) and divided once by the total at the end: :meth:`Objective.accumulate`.

Model policy
------------
Analysis never changes the model: parameters are read, never written; ``.grad`` is never touched;
the train/eval flag of every submodule is restored. By default the model is evaluated in **eval mode**
(BatchNorm uses its running statistics, dropout is off) so the Hessian is a deterministic function of
the parameters. ``train_mode=True`` opts in to train mode: BatchNorm then uses batch statistics (their
dependence on the parameters is differentiated) and runs on copies of its buffers so running statistics
are not updated, and dropout masks are drawn from a generator seeded with ``seed`` and the batch index,
so that every product with the operator sees the same masks and the operator stays one fixed matrix.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from .data import Batches, leading_dim, shape_str, to_device
from .errors import InvalidInputError, NonFiniteError
from .memory import resolve_budget
from .params import ParamSpec

REDUCTIONS = ("mean", "sum")


def resolve_reduction(loss_fn, reduction: str | None) -> str:
    """The declared reduction of ``loss_fn`` (see the module docstring)."""
    declared = getattr(loss_fn, "reduction", None)
    if reduction is not None:
        if reduction not in REDUCTIONS:
            raise InvalidInputError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if declared in REDUCTIONS and declared != reduction:
            raise InvalidInputError(
                f"reduction={reduction!r} contradicts loss_fn.reduction={declared!r} of {type(loss_fn).__name__}"
            )
        return reduction
    if declared is None:
        return "mean"
    if declared == "none":
        raise InvalidInputError(
            f"{type(loss_fn).__name__} has reduction='none' and returns one loss per sample; the curvature "
            "of a loss needs a scalar: construct it with reduction='mean' or reduction='sum'"
        )
    if declared not in REDUCTIONS:
        raise InvalidInputError(f"loss_fn.reduction={declared!r} is not 'mean' or 'sum'")
    return declared


def default_count(inputs, targets) -> int:
    """Samples in a batch: the leading dimension of the targets (of the inputs if targets are 0-d)."""
    if isinstance(targets, torch.Tensor) and targets.dim() > 0:
        return int(targets.shape[0])
    return leading_dim(inputs)


class BatchContext:
    """One batch, on the model's device and dtype, with the functions of the parameters on it."""

    def __init__(self, objective: Objective, inputs, targets, index: int, count: float):
        self.objective = objective
        self.inputs = inputs
        self.targets = targets
        self.index = index
        self.count = count

    def outputs(self, params: tuple[torch.Tensor, ...]):
        """Model outputs with the differentiated parameters replaced by ``params``."""
        return self.objective.forward(params, self.inputs)

    def loss_of_outputs(self, outputs) -> torch.Tensor:
        return self.objective.loss_fn(outputs, self.targets)

    def loss(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """This batch's loss as ``loss_fn`` reduces it (not yet globally normalized)."""
        return self.loss_of_outputs(self.outputs(params))


class Objective:
    """``model``, ``loss_fn`` and ``data`` with their normalization; see the module docstring.

    Args:
        model: any ``nn.Module``.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``.
        data: ``(inputs, targets)`` or an iterable of such pairs (list, ``DataLoader``).
        reduction: ``"mean"`` or ``"sum"``; default from ``loss_fn.reduction``, else ``"mean"``.
        count_fn: ``count_fn(inputs, targets)``, what a ``"mean"`` loss averages over in a batch.
        params: subset of parameters (tensors or names); default all with ``requires_grad``.
        train_mode: evaluate in train mode (see the module docstring). Default eval mode.
        seed: seed of the dropout masks in train mode.
        memory_budget: bytes (or ``"2GB"``) the engine may allocate; default half the free memory.
        progress: show tqdm progress bars (``None``: only on a terminal).
        distributed: reduce over the ranks of ``torch.distributed`` (:mod:`hessian_core.distributed`);
            ``None``: on when a process group is initialized.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, reduction: str | None = None,
                 count_fn: Callable | None = None, params: Iterable | None = None, train_mode: bool = False,
                 seed: int = 0, memory_budget=None, progress: bool | None = None,
                 distributed: bool | None = None):
        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise InvalidInputError(
                f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.params = ParamSpec(model, params)
        self.reduction = resolve_reduction(loss_fn, reduction)
        self.count_fn = count_fn or default_count
        self.batches = Batches(data)
        self.train_mode = bool(train_mode)
        self.seed = int(seed)
        self.budget = resolve_budget(memory_budget, self.params.device)
        self.progress = progress
        # Index of this process's first batch among all ranks' batches (set by hessian_core.distributed in
        # train mode), so that every batch of the global data draws its own dropout masks.
        self.batch_offset = 0
        # Set by hessian_core.distributed: sums accumulated tensors and totals across ranks.
        self.reducer: Callable | None = None
        self._info: dict | None = None
        from .distributed import install  # cheap: torch.distributed is imported by torch already
        install(self, distributed)

    # -- subsets -----------------------------------------------------------------------------------
    def with_params(self, params: Iterable) -> Objective:
        """The same objective differentiated with respect to a subset of the parameters."""
        new = object.__new__(Objective)
        new.__dict__.update(self.__dict__)
        new.params = ParamSpec(self.model, params)
        return new

    # -- evaluation --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def model_mode(self):
        """Set the evaluation mode; restore every submodule's own train/eval flag afterwards."""
        flags = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.train(self.train_mode)
            yield
        finally:
            for m, flag in flags:
                m.training = flag

    @contextlib.contextmanager
    def batch_scope(self, index: int):
        """Fix the RNG per batch in train mode, so dropout masks are the same in every product."""
        if not self.train_mode:
            yield
            return
        devices = [self.params.device] if self.params.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self.batch_offset + index)
            yield

    def forward(self, params: tuple[torch.Tensor, ...], inputs):
        # Every parameter detached (canonical names only, so tied weights stay tied), then the
        # differentiated ones replaced: nothing links the results to the model's own tensors.
        tensors = {n: p.detach() for n, p in self.model.named_parameters()}
        tensors.update(zip(self.params.names, params))
        if self.train_mode:
            # Copies, so train-mode BatchNorm does not update the model's running statistics.
            tensors.update({n: b.clone() for n, b in self.model.named_buffers()})
        args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
        # torch's functional_call does not put back the tensors of a module used twice (or when a
        # transform raises inside it): restore every registered parameter and buffer ourselves.
        registered = [(m._parameters, n, t) for m in self.model.modules() for n, t in m._parameters.items()]
        registered += [(m._buffers, n, t) for m in self.model.modules() for n, t in m._buffers.items()]
        try:
            return functional_call(self.model, tensors, args)
        finally:
            for slots, n, t in registered:
                if slots.get(n) is not t:
                    slots[n] = t

    def contexts(self, desc: str | None = None):
        """Yield a :class:`BatchContext` per batch, inside the evaluation mode and RNG scope."""
        p = self.params
        it = self.batches
        bar = tqdm(it, total=it.length, desc=desc, disable=(not self.progress) if self.progress is not None else None,
                   leave=False)
        with self.model_mode():
            for i, (x, y) in enumerate(bar):
                x = to_device(x, p.device, p.dtype)
                y = to_device(y, p.device, p.dtype)
                count = self.count_fn(x, y)
                count = float(count.item() if isinstance(count, torch.Tensor) else count)
                if not count >= 0:
                    raise InvalidInputError(f"count_fn returned {count} for batch {i}; it must be >= 0")
                with self.batch_scope(i):
                    yield BatchContext(self, x, y, i, count)

    def accumulate(self, contribution: Callable, out, *, per_sample: bool = False, desc: str | None = None):
        """Globally normalized sum over batches, in place into ``out``.

        ``contribution(ctx, out, weight)`` adds ``weight * term_b`` into ``out`` (a tensor or a list of
        tensors), where ``term_b`` is the batch's quantity as ``loss_fn`` reduces it (e.g. the Hessian of
        the batch loss). ``weight`` is ``c_b`` for ``"mean"`` and 1 for ``"sum"``; with ``per_sample=True``
        (terms that are already sums over samples, like the empirical Fisher) it is 1. At the end ``out``
        is divided by the total count (``"mean"``) and returned.
        """
        self.validate()
        total = 0.0
        try:
            # closing(): the model's mode is restored even when a contribution raises.
            with contextlib.closing(self.contexts(desc)) as batches:
                for ctx in batches:
                    total += ctx.count
                    weight = 1.0 if (per_sample or self.reduction == "sum") else ctx.count
                    contribution(ctx, out, weight)
        except Exception:
            self._abort_peers()
            raise
        outs = out if isinstance(out, (list, tuple)) else [out]
        if self.reducer is not None:
            total = self.reducer(outs, total)
        #: what the last accumulation divided by (the global count for "mean", 1 for "sum"), for callers
        #: that differentiate through the per-batch terms themselves (hessian_core.distributed.closure)
        self.last_divisor = 1.0
        if self.reduction == "mean":
            if total <= 0:
                raise InvalidInputError("count_fn counted no samples in the data: the mean is undefined")
            self.last_divisor = total
            for t in outs:
                t.div_(total)
        for t in outs:
            check_finite(t, desc or "result")
        return out

    def value_and_grad(self) -> tuple[float, torch.Tensor]:
        """Globally normalized loss and flat gradient ``(P,)``."""
        primals = self.params.primals()
        out = [torch.zeros((), dtype=self.params.dtype, device=self.params.device),
               torch.zeros(self.params.numel, dtype=self.params.dtype, device=self.params.device)]

        def contribution(ctx, acc, w):
            g, v = torch.func.grad_and_value(ctx.loss)(primals)
            acc[0].add_(v.detach(), alpha=w)
            acc[1].add_(self.params.flatten(g), alpha=w)

        self.accumulate(contribution, out, desc="gradient")
        return float(out[0]), out[1]

    def loss(self) -> float:
        """Globally normalized loss at the current parameters."""
        primals = self.params.primals()
        out = torch.zeros((), dtype=self.params.dtype, device=self.params.device)
        with torch.no_grad():
            self.accumulate(lambda ctx, acc, w: acc.add_(ctx.loss(primals), alpha=w), out, desc="loss")
        return float(out)

    # -- validation --------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Run the first batch once, outside any transform, and turn failures into clear errors.

        Checks that the model accepts the inputs, that the loss accepts outputs and targets without
        silent broadcasting, returns a finite scalar; records the activation size for chunking.
        Cached: runs once per objective.
        """
        if self._info is not None:
            return self._info
        try:
            with contextlib.closing(self.contexts()) as batches:
                ctx = next(batches)
                self._info = self._check_batch(ctx)
        except Exception:
            self._abort_peers()
            raise
        return self._info

    def _abort_peers(self) -> None:
        """This rank failed locally: tell the other ranks, so they raise too instead of waiting for it in
        their next reduction."""
        if self.reducer is not None and hasattr(self.reducer, "abort"):
            self.reducer.abort()

    def _check_batch(self, ctx: BatchContext) -> dict:
        sizes = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(_numel(o)))
                 for m in self.model.modules()]
        try:
            with torch.no_grad():
                try:
                    outputs = ctx.outputs(self.params.primals())
                except Exception as e:  # noqa: BLE001 - re-raised with the shapes that caused it
                    raise InvalidInputError(
                        f"model({shape_str(ctx.inputs)}) failed on batch 0: {type(e).__name__}: {e}"
                    ) from e
        finally:
            for h in hooks:
                h.remove()
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                loss = ctx.loss_of_outputs(outputs)
            except Exception as e:  # noqa: BLE001
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
            warnings.warn(w.message, w.category, stacklevel=2)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise InvalidInputError(
                f"loss_fn must return a scalar, got {shape}; use reduction='mean' or 'sum' in the loss"
            )
        if not torch.isfinite(loss):
            raise NonFiniteError(f"the loss on batch 0 is {float(loss)}; the curvature is undefined there")
        return {"activation_numel": int(sum(sizes)), "output_shape": _shape_of(outputs)}

    def bytes_per_column(self) -> int:
        """Rough working memory of one tangent in a batched product: params and activations, a few copies."""
        info = self.validate()
        item = torch.empty((), dtype=self.params.dtype).element_size()
        return item * (6 * self.params.numel + 6 * info["activation_numel"] + 1)


def check_finite(t: torch.Tensor, what: str) -> None:
    # The sum is finite exactly when every entry is (barring overflow): a cheap test before the full one.
    if t.numel() and not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(
            f"{bad} of {t.numel()} entries of the {what} are NaN or Inf; check the data and the loss "
            "(e.g. log of 0 probabilities) at these parameters"
        )


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
    return None
