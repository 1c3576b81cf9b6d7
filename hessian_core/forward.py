"""Evaluating the user's model as a function of its parameters, without changing the model.

* :func:`functional_forward`: ``model(*inputs)`` with some parameters replaced by given tensors
  (``torch.func.functional_call``), every registered parameter and buffer put back afterwards, also when
  the call raises (torch does not restore a module used twice, or one whose call a transform aborted).
* :func:`model_mode`: the train/eval flag for the evaluation, every submodule's own flag restored.
* :func:`rng_scope`: torch's global random stream fixed to a seed for one evaluation, then restored, so
  that a model drawing random numbers in forward (dropout, noise) sees the same draws in every pass.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call


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


#: module types (exact) whose forward does not read ``self.training``: a model made only of these computes the
#: same in either mode, and its flags need not be switched (a cost paid on every product of a small model)
MODE_FREE = {
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Flatten, nn.Unflatten, nn.Identity,
    nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Hardtanh, nn.ReLU6,
    nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax,
}


@contextlib.contextmanager
def model_mode(model: nn.Module, train: bool):
    """Set ``model.train(train)``; restore every submodule's own train/eval flag afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    # already in that mode, or made only of modules that ignore it: nothing to set or restore
    switch = any(flag != train for _, flag in flags) and not all(type(m) in MODE_FREE for m, _ in flags)
    try:
        if switch:
            model.train(train)
        yield
    finally:
        if switch:
            for m, flag in flags:
                if m.training != flag:
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
