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
is ``"mean"`` unless ``reduction=`` says otherwise; ``KLDivLoss(reduction="batchmean")`` (the sum over a
batch divided by its size) is a ``"mean"`` over samples. What a ``"mean"`` averages over is counted
automatically for the torch losses that do not average over samples: ``CrossEntropyLoss`` and ``NLLLoss``
with class-index targets divide by the summed class weights of the targets that are not ``ignore_index``
(the number of such targets without weights), so batches with different numbers of ignored tokens are
exact. Any other loss that averages over something other than the leading dimension of the targets (a
mask of its own) declares it with ``count_fn(inputs, targets) -> number``, e.g.
``lambda x, y: (y != -100).sum()``; a loss object with a ``count_fn`` method declares it itself
(:class:`hessian_core.losses.CausalLMLoss`). A batch that counts 0 contributes nothing (its mean is 0/0).

Every curvature quantity (Hessian, GGN, Fisher, gradient, loss) is accumulated batch by batch with the
weight ``c_b`` (or 1 for ``"sum"``) and divided once by the total at the end: :meth:`Objective.accumulate`.

Model policy
------------
Analysis never changes the model: parameters are read, never written; ``.grad`` is never touched;
the train/eval flag of every submodule is restored (:mod:`hessian_core.forward`). By default the model is
evaluated in **eval mode** (BatchNorm uses its running statistics, dropout is off) so the Hessian is a
deterministic function of the parameters. ``train_mode=True`` opts in to train mode: BatchNorm then uses
batch statistics (their dependence on the parameters is differentiated) and runs on copies of its buffers
so running statistics are not updated. A forward that draws random numbers (dropout in train mode, or
in any mode through ``F.dropout(training=True)``, noise, random pooling) runs with torch's generator
seeded from ``seed`` and the batch index, so that every pass over a batch sees the same draws and the
operator stays one fixed matrix. Forwards that write into buffers or into their inputs run on copies.

Data contract: every pass over ``data`` must yield the same samples (see :mod:`hessian_core.data`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from . import distributed as _distributed
from .composites import composites as _composites
from .data import Batches, ConvertedBatches, PassFingerprints, leading_dim, to_device
from .diagnosis import unsupported
from .errors import InvalidInputError
from .finite import check_finite
from .forward import direct_forward, functional_forward, model_mode, rng_scope
from .memory import resolve_budget
from .params import ParamSpec
from .validation import BatchProbe, probe

REDUCTIONS = ("mean", "sum")
#: seconds a pass over the data runs before its progress bar appears (shorter work shows none)
PROGRESS_DELAY = 0.5


def resolve_reduction(loss_fn, reduction: str | None) -> str:
    """The declared reduction of ``loss_fn`` (see the module docstring)."""
    declared = getattr(loss_fn, "reduction", None)
    if declared == "batchmean" and isinstance(loss_fn, nn.KLDivLoss):
        declared = "mean"  # sum over the batch / batch size: a mean over samples
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


def count_of(loss_fn) -> Callable:
    """What ``loss_fn`` with ``reduction="mean"`` divides a batch's sum by, as ``count(inputs, targets)``.

    ``CrossEntropyLoss`` / ``NLLLoss`` (and ``LinearCrossEntropyLoss``) with class-index targets divide by
    ``sum(weight[y])`` over the targets ``y`` that are not ``ignore_index`` (their number without class
    weights); with class probabilities as targets, by the number of positions ``N * d1 * ...``. Every other
    loss: :func:`default_count`.
    """
    kinds = tuple(k for k in (nn.CrossEntropyLoss, nn.NLLLoss, getattr(nn, "LinearCrossEntropyLoss", None)) if k)
    if not isinstance(loss_fn, kinds):
        return default_count
    ignore = getattr(loss_fn, "ignore_index", None)
    ignore = -100 if ignore is None else ignore
    weight = getattr(loss_fn, "weight", None)

    def per_sample(inputs, targets) -> torch.Tensor:
        """The count of each sample ``(N,)`` (what the batch's count sums)."""
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point():  # class probabilities
            n = targets.shape[0] if targets.dim() > 1 else 1
            return torch.full((n,), targets[0, 0].numel() if targets.dim() > 1 else 1, dtype=torch.float64)
        keep = targets != ignore
        per = keep.to(torch.float64) if weight is None else torch.where(
            keep, weight.to(targets.device)[targets.clamp_min(0) * keep], 0).to(torch.float64)
        return per.reshape(per.shape[0], -1).sum(1) if per.dim() > 1 else per

    def count(inputs, targets):
        if targets.dim() == 0 or (targets.is_floating_point() and targets.dim() < 2):
            return default_count(inputs, targets)
        return per_sample(inputs, targets).sum()

    count.per_sample = per_sample
    count.__qualname__ = f"count_of({type(loss_fn).__name__})"
    return count


class BatchContext:
    """One batch, on the model's device and dtype, with the functions of the parameters on it."""

    def __init__(self, objective: Objective, inputs, targets, index: int, count: float):
        self.objective = objective
        self.inputs = inputs
        self.targets = targets
        self.index = index
        self.count = count

    def outputs(self, params: tuple[torch.Tensor, ...]):
        """Model outputs with the differentiated parameters replaced by ``params`` (the batch's random
        draws, if the model makes any, are the same in every call)."""
        return self.objective.forward(params, self.inputs, seed=self.objective.seed_of(self.index))

    def loss_of_outputs(self, outputs) -> torch.Tensor:
        """``loss_fn(outputs, targets)``, with the equivalent composites of :mod:`hessian_core.composites`
        for losses PyTorch cannot differentiate twice, when the objective uses them."""
        loss_fn = self.objective.loss_fn
        with self.objective.composites():
            if self.objective.loss_constants is not None:  # the loss's own parameters are constants
                return functional_call(loss_fn, self.objective.loss_constants, (outputs, self.targets))
            return loss_fn(outputs, self.targets)

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
        count_fn: ``count_fn(inputs, targets)``, what a ``"mean"`` loss averages over in a batch; default
            ``loss_fn.count_fn`` when the loss has one, else the targets' leading dimension.
        params: subset of parameters (tensors or names); default all with ``requires_grad``.
        train_mode: evaluate in train mode (see the module docstring). Default eval mode.
        seed: seed of the random draws of a random forward (dropout masks in train mode), per batch.
        memory_budget: bytes (or ``"2GB"``) the engine may allocate; default half the free memory.
        progress: show tqdm progress bars (``None``: only on a terminal).
        distributed: reduce over the ranks of ``torch.distributed`` (:mod:`hessian_core.distributed`);
            ``None``: on when a process group is initialized.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable, data, *, reduction: str | None = None,
                 count_fn: Callable | None = None, params: Iterable | None = None, train_mode: bool = False,
                 seed: int = 0, memory_budget=None, progress: bool | None = None,
                 distributed: bool | None = None, _derived_from: Objective | None = None):
        from .arguments import check_bool, check_int, check_optional_bool

        if not isinstance(model, nn.Module):
            raise InvalidInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise InvalidInputError(
                f"loss_fn must be callable as loss_fn(outputs, targets), got {type(loss_fn).__name__}")
        if count_fn is not None and not callable(count_fn):
            raise InvalidInputError(f"count_fn must be callable as count_fn(inputs, targets), got {count_fn!r}")
        lazy = [n for n, p in model.named_parameters() if isinstance(p, nn.parameter.UninitializedParameter)]
        if lazy:
            owner = lazy[0].rsplit(".", 1)[0] if "." in lazy[0] else ""
            kind = type(model.get_submodule(owner)).__name__
            raise InvalidInputError(
                f"parameter '{lazy[0]}' of module '{owner or 'the model'}' ({kind}) is not initialized yet (a lazy "
                "module): its shape is only known after a first forward. Call the model once on a batch "
                "before analysing it")
        self.model = model
        self.loss_fn = loss_fn
        #: a loss module's own parameters (LinearCrossEntropyLoss's weight), detached: constants, not
        #: differentiated and never recorded in a graph (None when it has none that require grad)
        self.loss_constants = ({n: p.detach() for n, p in loss_fn.named_parameters()}
                               if isinstance(loss_fn, nn.Module) and any(p.requires_grad for p in loss_fn.parameters())
                               else None)
        self.params = ParamSpec(model, params)
        self.reduction = resolve_reduction(loss_fn, reduction)
        self.count_fn = count_fn or getattr(loss_fn, "count_fn", None) or count_of(loss_fn)
        self.batches = Batches(data)
        self.train_mode = check_bool(train_mode, "train_mode")
        self.seed = check_int(seed, "seed", None)
        self.budget = resolve_budget(memory_budget, self.params.device)
        #: where the budget came from (plan() says it: the default depends on what else runs on the machine)
        self.budget_source = ("half the memory free when the operator was built" if memory_budget is None
                              else "memory_budget")
        self.progress = check_optional_bool(progress, "progress")
        parent = _derived_from
        if parent is None:
            self.reducer, self.batch_offset = _distributed.setup(self.params, self.batches, distributed)
            #: what the first batch showed (:func:`hessian_core.validation.probe`), once :meth:`validate` ran
            self.probe: BatchProbe | None = None
            #: fingerprints of each pass over data that is not fixed (a DataLoader), see hessian_core.data
            self.fingerprints = None if self.batches.fixed else PassFingerprints(order_free=not self.train_mode)
            self._converted = ConvertedBatches()
            #: what the equivalent composites replaced in this model's forward and loss ({op: what was done})
            self.substitutions: dict[str, str] = {}
            #: what happened on the way that plan() reports ({topic: note}), e.g. a structured path's fallback
            self.notes: dict[str, str] = {}
        else:  # the same model and data (with_params): share what was learned about them
            self.budget_source = parent.budget_source
            self.reducer, self.batch_offset = parent.reducer, parent.batch_offset
            self.probe, self.fingerprints = parent.probe, parent.fingerprints
            self._converted = parent._converted
            self.substitutions, self.notes = parent.substitutions, parent.notes
        if self.progress is None and self.reducer is not None and self.reducer.rank != 0:
            self.progress = False
        self._pass_mode = None  # the model_mode of the pass that runs (contexts()): its walk of the modules

    def __repr__(self) -> str:
        n = self.batches.length
        return (f"Objective(P={self.params.numel}, reduction={self.reduction!r}, batches={'?' if n is None else n}, "
                f"train_mode={self.train_mode}, distributed={self.reducer is not None})")

    # -- subsets -----------------------------------------------------------------------------------
    def with_params(self, params: Iterable) -> Objective:
        """The same objective differentiated with respect to a subset of the parameters."""
        return Objective(self.model, self.loss_fn, self.batches, reduction=self.reduction, count_fn=self.count_fn,
                         params=params, train_mode=self.train_mode, seed=self.seed, memory_budget=self.budget,
                         progress=self.progress, _derived_from=self)

    # -- evaluation --------------------------------------------------------------------------------
    def seed_of(self, index: int) -> int | None:
        """The seed of batch ``index``'s random draws, or ``None`` when the forward makes none."""
        random = self.train_mode or self.probe is None or self.probe.random
        return self.batch_seed(index) if random else None

    def batch_seed(self, index: int) -> int:
        """Seed of batch ``index`` (of all ranks' batches, in rank order)."""
        return self.seed * 1_000_003 + self.batch_offset + index

    def forward(self, params: tuple[torch.Tensor, ...], inputs, *, seed: int | None = None,
                buffers: dict | None = None, others: dict | None = None, inputs_copied: bool = False):
        """``model(inputs)`` with the differentiated parameters replaced by ``params`` (see
        :func:`~hessian_core.forward.functional_forward`; ``others``: tensors for the other parameters, by
        name), random draws from ``seed``; on copies of the buffers and inputs when the forward writes into
        them (always before :meth:`validate`; ``inputs_copied``: the caller passes copies already).

        Given the model's own parameter tensors (``params.tensors``, no tensor hooks on them), nothing to copy
        or substitute, and a model whose first batch needed no composites, the model is called directly
        (:func:`~hessian_core.forward.direct_forward`): the same computation without the cost of substituting
        tensors (what a product on a small model spends most of its time on)."""
        probed = self.probe
        if buffers is None and (self.train_mode or probed is None or probed.mutates_buffers):
            buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        if (probed is None or probed.mutates_inputs) and not inputs_copied:
            inputs = _copy(inputs)
        elif buffers is None and others is None and not self.uses_composites and self._own(params):
            with rng_scope(seed, self.params.device):
                return direct_forward(self.model, inputs, used=self.substitutions, mode=self._pass_mode)
        with rng_scope(seed, self.params.device):
            return functional_forward(self.model, self.params.names, params, inputs, buffers=buffers, others=others,
                                      composites=self.uses_composites, used=self.substitutions)

    @property
    def uses_composites(self) -> bool:
        """Whether forwards and losses use :mod:`hessian_core.composites` (until :meth:`validate`, always;
        then only when the first batch needed one)."""
        return self.probe is None or bool(self.probe.composites)

    def composites(self):
        """Context in which torch calls use the equivalent composites, when this objective needs them."""
        if not self.uses_composites:
            return contextlib.nullcontext()
        return _composites(self.model, self.substitutions)

    def _own(self, params) -> bool:
        """``params`` are the model's own differentiated parameters, without tensor hooks (which autograd
        would run on them)."""
        own = self.params.tensors
        if len(params) != len(own):
            return False
        for a, b in zip(params, own):  # a loop, not all(generator): checked on every product
            if a is not b or b._backward_hooks:
                return False
        return True

    def contexts(self, desc: str | None = None):
        """Yield a :class:`BatchContext` per batch, inside the evaluation mode; a complete pass is
        fingerprinted (data that is not fixed must be the same in every pass)."""
        p = self.params
        it = self.batches
        prints = self.fingerprints
        n = it.length
        bar = it
        if self.progress is not False and (n is None or n > 1):  # a bar only for work long enough to watch
            bar = tqdm(it, total=n, desc=desc, disable=None if self.progress is None else False, leave=False,
                       delay=PROGRESS_DELAY)
        converted = self._converted if it.fixed else None
        if prints is not None:
            prints.start()
        with model_mode(self.model, self.train_mode) as mode:
            self._pass_mode = mode  # the forwards of this pass reuse its walk of the modules
            try:
                for i, (x, y) in enumerate(bar):
                    if prints is not None:  # the data as the loader gives it (see _check_passes_agree)
                        prints.add(i, x, y)
                    if converted is not None:  # fixed data: converted to the model's dtype once
                        x, y = converted.get(i, x, y, p.device, p.dtype)
                    else:
                        x = to_device(x, p.device, p.dtype)
                        y = to_device(y, p.device, p.dtype)
                    count = self.count_fn(x, y)  # each pass: it may read values a .data write changed
                    count = float(count.item() if isinstance(count, torch.Tensor) else count)
                    if not count >= 0:
                        raise InvalidInputError(f"count_fn returned {count} for batch {i}; it must be >= 0")
                    yield BatchContext(self, x, y, i, count)
            finally:
                self._pass_mode = None
        if prints is not None:
            prints.finish()

    def accumulate(self, contribution: Callable, out, *, per_sample: bool = False, desc: str | None = None,
                   return_divisor: bool = False):
        """Globally normalized sum over batches, in place into ``out``.

        ``contribution(ctx, out, weight)`` adds ``weight * term_b`` into ``out`` (a tensor or a list of
        tensors), where ``term_b`` is the batch's quantity as ``loss_fn`` reduces it (e.g. the Hessian of
        the batch loss). ``weight`` is ``c_b`` for ``"mean"`` and 1 for ``"sum"``; with ``per_sample=True``
        (terms that are already sums over samples, like the empirical Fisher) it is 1. At the end ``out``
        is divided by the total count (``"mean"``) and returned; with ``return_divisor=True`` as
        ``(out, divisor)`` (the global count for ``"mean"``, 1 for ``"sum"``), for callers that
        differentiate through the per-batch terms themselves (:func:`hessian_core.distributed.closure`).
        """
        if torch.is_inference_mode_enabled():  # derivatives would silently be missing (or raise PyTorch's
            # unrelated-looking error): torch.enable_grad(), which the engine uses, does not undo inference mode
            raise InvalidInputError(
                "hessian_core was called inside torch.inference_mode(), which switches autograd off for "
                "everything computed in it (torch.enable_grad() cannot undo it), so no derivative can be "
                "taken; call it outside inference_mode (inside torch.no_grad() is fine)")
        self.validate()
        total = 0.0
        # one batch of fixed data, one process: its mean is the global mean (weight 1, nothing to divide)
        whole = (self.reduction == "mean" and not per_sample and self.reducer is None and self.batches.fixed
                 and self.batches.length == 1)
        try:
            # closing(): the model's mode is restored even when a contribution raises.
            with contextlib.closing(self.contexts(desc)) as batches:
                for ctx in batches:
                    total += ctx.count
                    weight = 1.0 if (per_sample or self.reduction == "sum") else ctx.count
                    if weight == 0 and self.reduction == "mean":
                        continue  # nothing counted (every target ignored): the batch's mean is 0/0
                    if whole:
                        weight = 1.0
                    try:
                        contribution(ctx, out, weight)
                    except (RuntimeError, NotImplementedError) as e:
                        if isinstance(e, torch.OutOfMemoryError):
                            raise
                        raise unsupported(self, ctx, e, desc) from e
        except Exception:
            self._abort_peers()
            raise
        outs = out if isinstance(out, (list, tuple)) else [out]
        if self.reducer is not None:
            total = self.reducer(outs, total)
        divisor = 1.0
        if self.reduction == "mean":
            if total <= 0:
                raise InvalidInputError("count_fn counted no samples in the data: the mean is undefined")
            divisor = total
            if not whole:
                for t in outs:
                    t.div_(total)
        for t in outs:
            check_finite(t, desc or "result")
        return (out, divisor) if return_divisor else out

    def value_and_grad(self) -> tuple[float, torch.Tensor]:
        """Globally normalized loss and flat gradient ``(P,)``."""
        primals = self.params.primals()
        out = [torch.zeros((), dtype=self.params.dtype, device=self.params.device),
               torch.zeros(self.params.numel, dtype=self.params.dtype, device=self.params.device)]

        def contribution(ctx, acc, w):
            try:
                g, v = torch.func.grad_and_value(ctx.loss)(primals)
            except (RuntimeError, NotImplementedError) as e:
                from .operators.autograd_products import transforms_unsupported

                if not transforms_unsupported(e):
                    raise
                leaves = tuple(p.detach().requires_grad_() for p in primals)  # plain autograd, as the operators
                with torch.enable_grad():
                    v = ctx.loss(leaves)
                    g = torch.autograd.grad(v, leaves, allow_unused=True)
                g = [torch.zeros_like(p) if x is None else x for x, p in zip(g, primals)]
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
    def validate(self) -> BatchProbe:
        """Probe the first batch once (:func:`hessian_core.validation.probe`): clear errors for a model or
        loss that cannot work, the activation size, and whether the forward is random or writes into its
        buffers or inputs. Runs once per objective (and its :meth:`with_params` subsets)."""
        if self.probe is not None:
            return self.probe
        try:
            self._check_passes_agree()
            with contextlib.closing(self.contexts()) as batches:
                ctx = next(batches)
                self.probe = probe(self, ctx)
        except Exception:
            self._abort_peers()
            raise
        return self.probe

    def _check_passes_agree(self) -> None:
        """Data that is not fixed (a DataLoader) is read twice here, without the model, and fingerprinted
        (:class:`~hessian_core.data.PassFingerprints`): a loader whose passes differ is refused before any
        product, also for computations that pass over the data only once (a dense matrix)."""
        prints = self.fingerprints
        if prints is None or prints.first is not None:
            return
        for _ in range(2):
            prints.start()
            for i, (x, y) in enumerate(self.batches):
                prints.add(i, x, y)
            prints.finish()

    def _abort_peers(self) -> None:
        """This rank failed locally: tell the other ranks, so they raise too instead of waiting for it in
        their next reduction."""
        if self.reducer is not None:
            self.reducer.abort()

    def bytes_per_column(self) -> int:
        """Rough working memory of one tangent in a batched product: params and activations, a few copies."""
        info = self.validate()
        item = torch.empty((), dtype=self.params.dtype).element_size()
        return item * (6 * self.params.numel + 6 * info.activation_numel + 1)


def _copy(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, (tuple, list)):
        return type(x)(_copy(t) for t in x)
    return x


def keyword_options(cls, stop: type = object) -> tuple[str, ...]:
    """The public keyword-only arguments of ``cls.__init__`` and of its bases' up to (without) ``stop``: an
    operator's own options (``strategy``, ``chunk_size``, ``self_check``...)."""
    import inspect

    names: list[str] = []
    for klass in cls.__mro__:
        if klass is stop or klass is object:
            break
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_") and p.name not in names:
                names.append(p.name)
    return tuple(names)


#: The options of :class:`Objective` (keyword arguments of every entry point built on it).
OBJECTIVE_OPTIONS = keyword_options(Objective)
