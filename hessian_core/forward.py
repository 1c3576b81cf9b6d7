"""Evaluating the user's model as a function of its parameters, without changing the model.

* :func:`functional_forward`: ``model(*inputs)`` with some parameters replaced by given tensors
  (``torch.func.functional_call``), every registered parameter and buffer put back afterwards, also when
  the call raises (torch does not restore a module used twice, or one whose call a transform aborted).
* :func:`model_mode`: the train/eval flag for the evaluation, every submodule's own flag restored.
* :func:`rng_scope`: torch's global random stream fixed to a seed for one evaluation, then restored, so
  that a model drawing random numbers in forward (dropout, noise) sees the same draws in every pass.
* :func:`tensor_versions`, :func:`model_versions`: a fingerprint (identity, storage, in-place version) of
  tensors or of a model's parameters and buffers, to tell whether anything changed since it was taken.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call


def tensor_versions(x) -> tuple:
    """Identity, storage and in-place version of every tensor in ``x`` (a tensor or a nested tuple/list):
    equal fingerprints mean no tensor was replaced or changed in place in between."""
    if isinstance(x, torch.Tensor):
        return ((id(x), x.data_ptr() if x.device.type != "meta" else 0, x._version),)
    if isinstance(x, (tuple, list)):
        return tuple(v for t in x for v in tensor_versions(t))
    return ()


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


def functional_forward(model: nn.Module, names, params, inputs, *, buffers: dict | None = None):
    """``model(*inputs)`` (or ``model(inputs)`` for one tensor) with the parameters ``names`` replaced by
    ``params`` and every other parameter detached, so nothing links the result to the model's own tensors.

    ``buffers``: tensors to use instead of the model's buffers, by name (copies, when the forward writes
    into its buffers: train-mode BatchNorm's running statistics, observers, caches). Tied parameters are
    listed once (canonical names) and stay tied.
    """
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    tensors.update(zip(names, params))
    if buffers:
        tensors.update(buffers)
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    registered = registered_tensors(model)
    try:
        return functional_call(model, tensors, args)
    finally:
        restore_tensors(registered)


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool):
    """Set ``model.train(train)``; restore every submodule's own train/eval flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(train)
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def rng_scope(seed: int | None, device: torch.device):
    """Inside, torch's global generator (and the CUDA one of ``device``) starts from ``seed``; outside, its
    state is as before. ``seed=None``: nothing is changed (no cost)."""
    if seed is None:
        yield
        return
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
