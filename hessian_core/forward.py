"""Evaluating the user's model as a function of its parameters, without changing the model.

* :func:`functional_forward`: ``model(*inputs)`` with some parameters replaced by given tensors
  (``torch.func.functional_call``), every registered parameter and buffer put back afterwards, also when
  the call raises (torch does not restore a module used twice, or one whose call a transform aborted),
  inside :func:`analysis_scope`. :func:`direct_forward`: the same for the model's own parameters, without
  substituting them (cheaper for small models).
* :func:`analysis_scope`: what a forward needs to be differentiable twice by ``torch.func`` and to compute
  the same function as the user's forward: the equivalent composites of :mod:`hessian_core.composites`,
  activation checkpointing run as the plain call it is a memory-saving form of, backward hooks (which only
  observe or rewrite gradients PyTorch computes, never the forward value) set aside, and
  ``parametrize.cached()`` caches kept out (a cache filled outside would return the user's parametrized
  weight instead of the one of the parameters being differentiated); attention runs on kernels with every
  derivative (:mod:`hessian_core.second_order_kernels`). All is put back on exit.
* :func:`model_mode`: the train/eval flag for the evaluation, every submodule's own flag restored.
* :func:`rng_scope`: torch's global random stream fixed to a seed for one evaluation, then restored, so
  that a model drawing random numbers in forward (dropout, noise) sees the same draws in every pass.
* :func:`model_versions`: a fingerprint (identity, storage, in-place version; see
  :func:`~hessian_core.data.tensor_versions`) of a model's parameters and buffers, to tell whether anything
  changed since it was taken.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import torch.utils.checkpoint as _checkpoint
from torch import nn
from torch.func import functional_call
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize as _parametrize

from .composites import composites as _composites
from .data import tensor_versions
from .errors import InvalidInputError
from .second_order_kernels import second_order_kernels


def model_versions(model: nn.Module) -> tuple:
    """:func:`tensor_versions` of every parameter and then every buffer of ``model``."""
    return tensor_versions(list(model.parameters())) + tensor_versions(list(model.buffers()))


def registered_tensors(model: nn.Module) -> list[tuple[dict, str, torch.Tensor | None]]:
    """``(slots, name, tensor)`` of every registered parameter and buffer of every submodule: what
    :func:`restore_tensors` puts back."""
    out = []
    for m in model.modules():
        out += [(m._parameters, n, t) for n, t in m._parameters.items()]
        out += [(m._buffers, n, t) for n, t in m._buffers.items()]
    return out


def restore_tensors(registered) -> None:
    """Put back the tensor objects recorded by :func:`registered_tensors`."""
    for slots, n, t in registered:
        if slots.get(n) is not t:
            slots[n] = t


def functional_forward(model: nn.Module, names, params, inputs, *, buffers: dict | None = None,
                       others: dict | None = None, composites: bool = True, used: dict | None = None):
    """``model(*inputs)`` (or ``model(inputs)`` for one tensor) with the parameters ``names`` replaced by
    ``params`` and every other parameter detached (or replaced by ``others``, by name), so nothing links the
    result to the model's own tensors.

    ``buffers``: tensors to use instead of the model's buffers, by name (copies, when the forward writes
    into its buffers: train-mode BatchNorm's running statistics, observers, caches). Tied parameters are
    listed once (canonical names) and stay tied. ``composites``: use the equivalent composites of
    :mod:`hessian_core.composites` (``used`` receives what they replaced). Raises
    :class:`~hessian_core.errors.InvalidInputError` when the forward wrote into one of the model's own
    parameters or buffers in place (it should have been given a copy: see :mod:`hessian_core.validation`).
    """
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    if others:
        tensors.update(others)
    tensors.update(zip(names, params))
    if buffers:
        tensors.update(buffers)
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    model, tensors = _unwrapped(model, tensors)
    registered = registered_tensors(model)
    before = [t._version for _, _, t in registered if t is not None]
    # Tensors a forward assigns as plain attributes (the legacy spectral_norm/weight_norm hooks set
    # ``module.weight``) would otherwise keep this evaluation's tensors.
    modules = list(model.modules())
    attributes = _tensor_attributes(modules)
    try:
        with analysis_scope(model, composites, used, modules), second_order_kernels(model):
            return functional_call(model, tensors, args)
    finally:
        restore_tensors(registered)
        for m, k, v in attributes:
            if m.__dict__.get(k) is not v:
                m.__dict__[k] = v
        after = [t._version for _, _, t in registered if t is not None]
        if after != before:
            raise _written(model, registered, before)


def direct_forward(model: nn.Module, inputs, *, used: dict | None = None, mode: model_mode | None = None):
    """``model(*inputs)`` as it is, for the model's own parameters (nothing substituted, no composites), inside
    :func:`analysis_scope` and :func:`~hessian_core.second_order_kernels.second_order_kernels` like
    :func:`functional_forward`, with the tensors a forward assigns as plain attributes put back. What a product
    on a small model saves: the cost of substituting every parameter. ``mode``: the :class:`model_mode` of
    the same pass (its walk of the modules). A model made only of :data:`MODE_FREE` modules without hooks
    (``mode.standard``) is called without those scopes: its layers assign no attribute, call no attention
    kernel and hold no parametrization or hook, so every scope would find nothing to do."""
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if mode is not None and mode.standard:
        return model(*args)
    modules = list(model.modules()) if mode is None else mode.modules
    attributes = _tensor_attributes(modules)
    try:
        # Checkpointing as it is: plain autograd differentiates the non-reentrant form twice, and the reentrant
        # form raises (no .grad() support); a first batch that checkpoints takes functional_forward instead.
        # (analysis_scope's other two parts, entered directly: this runs on every product of a small model)
        with _without_backward_hooks(modules, used), _uncached_parametrizations(), second_order_kernels(model):
            return model(*args)
    finally:
        for m, k, v in attributes:
            if m.__dict__.get(k) is not v:
                m.__dict__[k] = v


def _tensor_attributes(modules) -> list:
    """``(module, name, tensor)`` of the tensors held as plain attributes (what a forward may reassign)."""
    kinds = set()
    for m in modules:  # the types first (C-level): most models hold no tensor attribute at all
        kinds.update(map(type, m.__dict__.values()))
    for kind in kinds:
        if issubclass(kind, torch.Tensor):
            return [(m, k, v) for m in modules for k, v in m.__dict__.items() if isinstance(v, torch.Tensor)]
    return []


def _unwrapped(model, tensors):
    """``nn.DataParallel`` / ``DistributedDataParallel`` compute their ``.module``'s function (the stateless
    API refuses the wrappers): evaluate the inner module, with the tensors' names without ``module.``."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while isinstance(model, wrappers):
        model = model.module
        tensors = {n.removeprefix("module."): t for n, t in tensors.items()}
    return model, tensors


def _written(model, registered, before) -> InvalidInputError:
    slots_names = {id(slots): name for name, m in model.named_modules() for slots in (m._parameters, m._buffers)}
    changed = [f"{slots_names.get(id(slots), '?')}.{n}".lstrip(".")
               for (slots, n, t), v in zip([r for r in registered if r[2] is not None], before) if t._version != v]
    return InvalidInputError(
        f"the model's forward wrote into {', '.join(changed)} in place although its first batch did not; "
        "hessian_core evaluates such forwards on copies only when the first batch shows the write. Make the "
        "write unconditional, or keep the state outside the module's parameters and buffers")


@contextlib.contextmanager
def analysis_scope(model: nn.Module, composites: bool = True, used: dict | None = None, modules=None):
    """See the module docstring; ``composites=False`` leaves PyTorch's own operations in place. ``modules``:
    ``list(model.modules())`` when the caller has it already."""
    # nested scopes rather than an ExitStack: entered on every forward of a product
    with (_composites(model, used) if composites else contextlib.nullcontext()), _plain_checkpoints(used), \
            _without_backward_hooks(model.modules() if modules is None else modules, used), \
            _uncached_parametrizations():
        yield


_CHECKPOINT_DEPTH = [0]


@contextlib.contextmanager
def _plain_checkpoints(used):
    """``torch.utils.checkpoint`` (both ``use_reentrant`` modes) calls the checkpointed function directly:
    the same values, without the recomputation machinery that ``torch.func`` cannot see through (the
    reentrant form has no ``.grad()`` support at all). Nested scopes patch once."""
    def reentrant(cls, function, preserve_rng_state, *args):
        if used is not None:
            used["checkpoint"] = "activation checkpointing runs as the plain call (the same function)"
        return function(*args)

    def non_reentrant(function, *args, **kwargs):
        if used is not None:
            used["checkpoint"] = "activation checkpointing runs as the plain call (the same function)"
        yield

    if _CHECKPOINT_DEPTH[0]:
        yield
        return
    cls = _checkpoint.CheckpointFunction
    saved = (cls.__dict__.get("apply"), _checkpoint._checkpoint_without_reentrant_generator)
    _CHECKPOINT_DEPTH[0] += 1
    try:
        cls.apply = classmethod(reentrant)
        _checkpoint._checkpoint_without_reentrant_generator = non_reentrant
        yield
    finally:
        if saved[0] is None:
            del cls.apply  # inherited from torch.autograd.Function again
        else:
            cls.apply = saved[0]
        _checkpoint._checkpoint_without_reentrant_generator = saved[1]
        _CHECKPOINT_DEPTH[0] -= 1


class _without_backward_hooks:
    """Backward hooks (module and global) set aside on ``modules``: they wrap the forward in autograd
    Functions that ``torch.func`` rejects, and they observe or rewrite gradients, never the forward value.
    (A class, not a generator: entered on every forward of a product.)"""

    __slots__ = ("modules", "used", "saved", "glob")

    def __init__(self, modules, used):
        self.modules, self.used = modules, used

    def __enter__(self):
        self.saved = [(m, m._backward_hooks, m._backward_pre_hooks) for m in self.modules
                      if m._backward_hooks or m._backward_pre_hooks]
        self.glob = (_module._global_backward_hooks, _module._global_backward_pre_hooks)
        if not self.saved and not self.glob[0] and not self.glob[1]:
            self.saved = None
            return self
        if self.used is not None:
            self.used["backward hooks"] = ("not called: the curvature is that of the loss (hooks observe or "
                                           "rewrite gradients, not the forward)")
        for m, _, _ in self.saved:
            m._backward_hooks, m._backward_pre_hooks = OrderedDict(), OrderedDict()
        _module._global_backward_hooks, _module._global_backward_pre_hooks = OrderedDict(), OrderedDict()
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            for m, hooks, pre in self.saved:
                m._backward_hooks, m._backward_pre_hooks = hooks, pre
            _module._global_backward_hooks, _module._global_backward_pre_hooks = self.glob
        return False


class _uncached_parametrizations:
    """Parametrizations recomputed from the parameters being differentiated, with a cache of our own for
    ``parametrize.cached()`` inside the forward; the caller's cache (and its enabled count) put back."""

    __slots__ = ("saved",)

    def __enter__(self):
        self.saved = (_parametrize._cache_enabled, _parametrize._cache)
        _parametrize._cache_enabled, _parametrize._cache = 0, {}
        return self

    def __exit__(self, *exc):
        _parametrize._cache_enabled, _parametrize._cache = self.saved
        return False


#: torch.nn module types (exact) whose forward does not read ``self.training``: a model made only of these
#: computes the same in either mode, and its flags need not be switched (a cost paid on every product of a small
#: model). Their forwards also assign no attribute and call no attention kernel (see :func:`direct_forward`).
MODE_FREE = {
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Flatten, nn.Unflatten, nn.Identity,
    nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Hardtanh, nn.ReLU6,
    nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax,
}


class model_mode:
    """``with model_mode(model, train)``: ``model.train(train)`` inside; every submodule's own train/eval flag
    restored afterwards. (A class, not a generator: entered on every product.)"""

    __slots__ = ("model", "train", "flags", "modules", "standard")

    def __init__(self, model: nn.Module, train: bool):
        self.model, self.train = model, train

    def __enter__(self):
        train = self.train
        modules = self.modules = list(self.model.modules())  # (also for the forwards inside: one walk per pass)
        self.flags = None
        # Already in that mode, or made only of modules that ignore it (and no forward hooks, which may read
        # it, as the legacy spectral_norm hook does): nothing to set or restore. ``standard``: only such
        # modules and no hook at all (see direct_forward). One loop, not generators: this runs on every product.
        switch = bool(_module._global_forward_hooks or _module._global_forward_pre_hooks)
        standard = not (switch or _module._global_backward_hooks or _module._global_backward_pre_hooks)
        same = True
        for m in modules:
            if m.training != train:
                same = False
            if type(m) not in MODE_FREE or m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__:
                switch, standard = True, False  # (a forward set on the instance is not its type's)
            elif m._backward_hooks or m._backward_pre_hooks:
                standard = False
        self.standard = standard
        if switch and not same:
            self.flags = [(m, m.training) for m in modules]
            self.model.train(train)
        return self

    def __exit__(self, *exc):
        if self.flags is not None:
            for m, flag in self.flags:
                if m.training != flag:
                    m.training = flag
        return False


def rng_scope(seed: int | None, device: torch.device):
    """Inside, torch's global generator (and the CUDA one of ``device``) starts from ``seed``; outside, its
    state is as before. ``seed=None``: nothing is changed (no cost)."""
    return contextlib.nullcontext() if seed is None else _seeded(seed, device)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        # The generators fork_rng restores, seeded directly: torch.manual_seed seeds every backend and costs
        # milliseconds (it records stack traces for lazy CUDA initialization), once per forward here.
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
