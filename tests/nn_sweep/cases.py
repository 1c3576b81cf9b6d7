"""The torch.nn sweep's cases: every module and loss class of ``torch.nn`` (discovered, so that a new PyTorch
release adds its classes to :func:`discovered` and the coverage test asks for a case), each on a small
float64 model as users build them, plus the situations users meet around them (in-place activations,
train and eval mode, parametrizations, hooks, checkpointing, structured outputs, buffers and inputs
written in forward, random forwards, counts over several batches).

A case is a function returning a :class:`~reference.Setup`; :data:`CASES` maps its name (the class name
first, then what is special in brackets) to ``(build, refusal)``: ``refusal`` is ``None`` when the result
must be exact, else a phrase the clear error must contain. :data:`NOT_LAYERS` lists the discovered classes
that are not layers a user differentiates through (abstract bases), each with its reason.
"""

from __future__ import annotations

import copy
import inspect
import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torch.utils.checkpoint import checkpoint, checkpoint_sequential

from .harness import D, Setup

N = 4  # samples per batch

#: discovered classes that are not layers (abstract bases without a forward of their own), with the reason
NOT_LAYERS = {
    "RNNCellBase": "abstract base of RNNCell/LSTMCell/GRUCell: no forward of its own",
    "RNNBase": "base class of RNN/LSTM/GRU: no forward of its own",
}


def discovered() -> list[str]:
    """Every ``nn.Module`` subclass exported by ``torch.nn`` (layers, losses, containers)."""
    return sorted(n for n in dir(nn) if inspect.isclass(getattr(nn, n)) and issubclass(getattr(nn, n), nn.Module))


CASES: dict[str, tuple] = {}


def case(name: str, refusal: str | None = None):
    def register(fn):
        assert name not in CASES, name
        CASES[name] = (fn, refusal)
        return fn
    return register


def cases(names: dict, refusal: str | None = None):
    """Register ``fn(arg)`` under each ``name: arg``."""
    def register(fn):
        for name, arg in names.items():
            assert name not in CASES, name
            CASES[name] = ((lambda a=arg: fn(a)), refusal)
        return fn
    return register


# -- hosts ------------------------------------------------------------------------------------------------
def randn(*shape):
    return torch.randn(*shape, dtype=D)


def with_head(body: nn.Module, x: torch.Tensor, out: int = 2) -> nn.Module:
    """``body -> Flatten -> Linear(k, out)``, ``k`` from one forward of ``body`` on ``x``."""
    body = body.to(D)
    with torch.no_grad():
        k = body(x).reshape(x.shape[0], -1).shape[1]
    return nn.Sequential(body, nn.Flatten(), nn.Linear(k, out)).to(D)


def features(mod: nn.Module, width: int = 4, **options) -> Setup:
    """``Linear(3, width) -> mod -> Linear(., 2)`` on ``(N, 3)`` inputs, MSE."""
    x = randn(N, 3)
    model = with_head(nn.Sequential(nn.Linear(3, width), mod), x)
    return Setup(model, nn.MSELoss(), (x, randn(N, 2)), options)


def spatial(mod: nn.Module, dims: int = 2, channels: int = 2, size: int = 4, **options) -> Setup:
    """``Conv{dims}d(C, C, 1) -> tanh -> mod -> Flatten -> Linear(., 1)`` on ``(N, C, size, ...)``, MSE."""
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](channels, channels, 1)
    x = randn(N, channels, *([size] * dims))
    model = with_head(nn.Sequential(conv, nn.Tanh(), mod), x, out=1)
    return Setup(model, nn.MSELoss(), (x, randn(N, 1)), options)


def layer(mod: nn.Module, x: torch.Tensor, **options) -> Setup:
    """``mod -> tanh -> Flatten -> Linear(., 1)`` for layers with parameters of their own."""
    model = with_head(nn.Sequential(mod, nn.Tanh()), x, out=1)
    return Setup(model, nn.MSELoss(), (x, randn(N, 1)), options)


# -- activations ------------------------------------------------------------------------------------------
ACTIVATIONS = {
    "CELU": nn.CELU, "ELU": nn.ELU, "GELU": nn.GELU, "GELU[tanh]": lambda: nn.GELU("tanh"), "GLU": nn.GLU,
    "Hardshrink": nn.Hardshrink, "Hardsigmoid": nn.Hardsigmoid, "Hardswish": nn.Hardswish,
    "Hardtanh": lambda: nn.Hardtanh(-0.5, 0.5), "LeakyReLU": nn.LeakyReLU, "LogSigmoid": nn.LogSigmoid,
    "LogSoftmax": lambda: nn.LogSoftmax(dim=1), "Mish": nn.Mish, "PReLU": nn.PReLU, "RReLU": nn.RReLU,
    "ReLU": nn.ReLU, "ReLU6": lambda: nn.ReLU6(), "SELU": nn.SELU, "SiLU": nn.SiLU, "Sigmoid": nn.Sigmoid,
    "Softmax": lambda: nn.Softmax(dim=1), "Softmin": lambda: nn.Softmin(dim=1), "Softplus": nn.Softplus,
    "Softshrink": nn.Softshrink, "Softsign": nn.Softsign, "Tanh": nn.Tanh, "Tanhshrink": nn.Tanhshrink,
    "Threshold": lambda: nn.Threshold(0.1, 20.0), "Identity": nn.Identity,
}
INPLACE = {
    "CELU": nn.CELU, "ELU": nn.ELU, "Hardsigmoid": nn.Hardsigmoid, "Hardswish": nn.Hardswish,
    "Hardtanh": lambda inplace: nn.Hardtanh(-0.5, 0.5, inplace=inplace), "LeakyReLU": nn.LeakyReLU,
    "Mish": nn.Mish, "RReLU": nn.RReLU, "ReLU": nn.ReLU, "ReLU6": nn.ReLU6, "SELU": nn.SELU, "SiLU": nn.SiLU,
    "Threshold": lambda inplace: nn.Threshold(0.1, 20.0, inplace=inplace),
}


@cases({name: make for name, make in ACTIVATIONS.items()})
def _activation(make):
    return features(make(), width=6)


@cases({f"{name}[inplace]": make for name, make in INPLACE.items()})
def _inplace_activation(make):
    return features(make(inplace=True), width=6)


@cases({f"{name}[inplace, Linear chain]": make for name, make in INPLACE.items()})
def _inplace_chain(make):
    """The structured Linear-chain path sees these; any failure inside it must fall back."""
    x = randn(N, 3)
    model = nn.Sequential(nn.Linear(3, 5), make(inplace=True), nn.Linear(5, 4), make(inplace=True),
                          nn.Linear(4, 2)).to(D)
    return Setup(model, nn.MSELoss(), (x, randn(N, 2)), {})


@case("RReLU[train, random slopes]")
def _rrelu_train():
    return features(nn.RReLU(), width=6, train_mode=True)


@case("Softmax2d")
def _softmax2d():
    return spatial(nn.Softmax2d(), channels=3)


# -- dropout --------------------------------------------------------------------------------------------
DROPOUTS = {"Dropout": (nn.Dropout, 0), "Dropout1d": (nn.Dropout1d, 1), "Dropout2d": (nn.Dropout2d, 2),
            "Dropout3d": (nn.Dropout3d, 3), "AlphaDropout": (nn.AlphaDropout, 0),
            "FeatureAlphaDropout": (nn.FeatureAlphaDropout, 2)}


def _dropout(make, dims, train, inplace=False):
    mod = make(0.4, inplace=inplace)
    if dims == 0:
        return features(mod, width=6, train_mode=train)
    return spatial(mod, dims=dims, channels=3, size=3, train_mode=train)


for _name, (_make, _dims) in DROPOUTS.items():
    CASES[_name] = ((lambda m=_make, d=_dims: _dropout(m, d, False)), None)
    CASES[f"{_name}[train]"] = ((lambda m=_make, d=_dims: _dropout(m, d, True)), None)
CASES["Dropout[train, inplace]"] = ((lambda: _dropout(nn.Dropout, 0, True, inplace=True)), None)


# -- normalization ---------------------------------------------------------------------------------------
NORMS = {
    "BatchNorm1d": (lambda: nn.BatchNorm1d(4), 0), "BatchNorm2d": (lambda: nn.BatchNorm2d(2), 2),
    "BatchNorm3d": (lambda: nn.BatchNorm3d(2), 3), "SyncBatchNorm": (lambda: nn.SyncBatchNorm(4), 0),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), 0), "LayerNorm": (lambda: nn.LayerNorm(4), 0),
    "RMSNorm": (lambda: nn.RMSNorm(4), 0),
    "InstanceNorm1d": (lambda: nn.InstanceNorm1d(2, affine=True), 1),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(2, affine=True), 2),
    "InstanceNorm3d": (lambda: nn.InstanceNorm3d(2, affine=True), 3),
    "InstanceNorm2d[running stats]": (lambda: nn.InstanceNorm2d(2, affine=True, track_running_stats=True), 2),
    "LocalResponseNorm": (lambda: nn.LocalResponseNorm(2), 2), "CrossMapLRN2d": (lambda: nn.CrossMapLRN2d(3), 2),
    "LazyBatchNorm1d": (lambda: nn.LazyBatchNorm1d(), 0), "LazyBatchNorm2d": (lambda: nn.LazyBatchNorm2d(), 2),
    "LazyBatchNorm3d": (lambda: nn.LazyBatchNorm3d(), 3),
    "LazyInstanceNorm1d": (lambda: nn.LazyInstanceNorm1d(affine=True), 1),
    "LazyInstanceNorm2d": (lambda: nn.LazyInstanceNorm2d(affine=True), 2),
    "LazyInstanceNorm3d": (lambda: nn.LazyInstanceNorm3d(affine=True), 3),
}


def _norm(make, dims, train):
    if dims == 0:
        return features(make(), width=4, train_mode=train)
    setup = spatial(make(), dims=dims, channels=2, size=3, train_mode=train)
    if isinstance(setup.model[0][2], nn.CrossMapLRN2d):  # PyTorch's own backward of it is off by ~1e-5
        setup.reference_model = copy.deepcopy(setup.model)
        setup.reference_model[0][2] = WindowLRN(setup.model[0][2], channels=2)
    return setup


class WindowLRN(nn.Module):
    """CrossMapLRN2d by its window matrix: channel ``c`` sums the squares of the channels CrossMapLRN2d's
    sliding recursion has in its window at ``c`` (found by running the recursion on unit vectors)."""

    def __init__(self, lrn, channels):
        super().__init__()
        self.lrn = lrn
        pre = int((lrn.size - 1) / 2 + 1)
        window, rows = [1.0 if c < pre else 0.0 for c in range(channels)], []
        for c in range(channels):
            if c > 0:
                window = list(window)
                if c < channels - pre + 1:
                    window[c + pre - 1] += 1.0
                if c > pre:
                    window[c - pre] -= 1.0
            rows.append(window)
        self.register_buffer("window", torch.tensor(rows, dtype=D))

    def forward(self, x):
        scale = torch.einsum("cd,nd...->nc...", self.window, x * x) * (self.lrn.alpha / self.lrn.size) + self.lrn.k
        return x * scale.pow(-self.lrn.beta)


for _name, (_make, _dims) in NORMS.items():
    CASES[_name] = ((lambda m=_make, d=_dims: _norm(m, d, False)), None)
    CASES[f"{_name}[train]"] = ((lambda m=_make, d=_dims: _norm(m, d, True)), None)


# -- linear, convolution, shape ---------------------------------------------------------------------------
@case("Linear")
def _linear():
    return layer(nn.Linear(3, 4), randn(N, 3))


@case("LazyLinear")
def _lazy_linear():
    return layer(nn.LazyLinear(4), randn(N, 3))


@case("LazyLinear[not materialized]", refusal="LazyLinear")
def _lazy_unmaterialized():
    model = nn.Sequential(nn.LazyLinear(2)).to(D)
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("Bilinear")
def _bilinear():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.bil = nn.Linear(3, 3), nn.Linear(3, 2), nn.Bilinear(3, 2, 2)

        def forward(self, x):
            return self.bil(torch.tanh(self.a(x)), torch.tanh(self.b(x)))
    return Setup(Host().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


CONVS = {
    "Conv1d": (lambda: nn.Conv1d(2, 3, 3), 1), "Conv2d": (lambda: nn.Conv2d(2, 2, 2), 2),
    "Conv3d": (lambda: nn.Conv3d(2, 1, 2), 3),
    "Conv2d[groups, stride, dilation]": (lambda: nn.Conv2d(2, 4, 2, stride=2, dilation=1, groups=2, padding=1), 2),
    "Conv2d[padding=same, circular]": (lambda: nn.Conv2d(2, 2, 3, padding="same", padding_mode="circular"), 2),
    "Conv2d[reflect]": (lambda: nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), 2),
    "Conv1d[replicate]": (lambda: nn.Conv1d(2, 2, 3, padding=1, padding_mode="replicate"), 1),
    "ConvTranspose1d": (lambda: nn.ConvTranspose1d(2, 2, 2), 1),
    "ConvTranspose2d": (lambda: nn.ConvTranspose2d(2, 1, 2, stride=2, output_padding=1), 2),
    "ConvTranspose3d": (lambda: nn.ConvTranspose3d(2, 1, 2), 3),
    "LazyConv1d": (lambda: nn.LazyConv1d(2, 2), 1), "LazyConv2d": (lambda: nn.LazyConv2d(2, 2), 2),
    "LazyConv3d": (lambda: nn.LazyConv3d(1, 2), 3), "LazyConvTranspose1d": (lambda: nn.LazyConvTranspose1d(2, 2), 1),
    "LazyConvTranspose2d": (lambda: nn.LazyConvTranspose2d(1, 2), 2),
    "LazyConvTranspose3d": (lambda: nn.LazyConvTranspose3d(1, 2), 3),
}


@cases(CONVS)
def _conv(spec):
    make, dims = spec
    return layer(make(), randn(N, 2, *([3] * dims)))


SHAPES = {  # parameter-free modules on (N, C, spatial...) inputs: (module, dims, channels)
    "Flatten": (lambda: nn.Flatten(), 2, 2), "Unflatten": (lambda: nn.Unflatten(1, (2, 1)), 1, 2),
    "PixelShuffle": (lambda: nn.PixelShuffle(2), 2, 4), "PixelUnshuffle": (lambda: nn.PixelUnshuffle(2), 2, 2),
    "ChannelShuffle": (lambda: nn.ChannelShuffle(2), 2, 4),
    "Upsample[nearest]": (lambda: nn.Upsample(scale_factor=2), 2, 2),
    "Upsample[linear]": (lambda: nn.Upsample(scale_factor=2, mode="linear"), 1, 2),
    "Upsample[bilinear, align_corners]": (lambda: nn.Upsample(size=5, mode="bilinear", align_corners=True), 2, 2),
    "Upsample[bicubic]": (lambda: nn.Upsample(scale_factor=1.5, mode="bicubic"), 2, 2),
    "Upsample[trilinear]": (lambda: nn.Upsample(scale_factor=2, mode="trilinear"), 3, 1),
    "Upsample[nearest-exact]": (lambda: nn.Upsample(size=3, mode="nearest-exact"), 2, 2),
    "UpsamplingBilinear2d": (lambda: nn.UpsamplingBilinear2d(scale_factor=2), 2, 2),
    "UpsamplingNearest2d": (lambda: nn.UpsamplingNearest2d(scale_factor=2), 2, 2),
    "Unfold": (lambda: nn.Unfold(2), 2, 2),
    "AdaptiveAvgPool1d": (lambda: nn.AdaptiveAvgPool1d(3), 1, 2),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((3, 2)), 2, 2),
    "AdaptiveAvgPool3d": (lambda: nn.AdaptiveAvgPool3d(2), 3, 1),
    "AdaptiveMaxPool1d": (lambda: nn.AdaptiveMaxPool1d(3), 1, 2),
    "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(3), 2, 2),
    "AdaptiveMaxPool3d": (lambda: nn.AdaptiveMaxPool3d(2), 3, 1),
    "AvgPool1d": (lambda: nn.AvgPool1d(2), 1, 2),
    "AvgPool2d[ceil_mode, padding]": (lambda: nn.AvgPool2d(2, padding=1, ceil_mode=True,
                                                           count_include_pad=False), 2, 2),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), 2, 2), "AvgPool3d": (lambda: nn.AvgPool3d(2), 3, 1),
    "MaxPool1d": (lambda: nn.MaxPool1d(2), 1, 2), "MaxPool2d": (lambda: nn.MaxPool2d(2, stride=1), 2, 2),
    "MaxPool3d": (lambda: nn.MaxPool3d(2), 3, 1),
    "LPPool1d": (lambda: nn.LPPool1d(2, 2), 1, 2), "LPPool2d": (lambda: nn.LPPool2d(2, 2, stride=1), 2, 2),
    "LPPool3d": (lambda: nn.LPPool3d(2, 2), 3, 1),
    "FractionalMaxPool2d[random regions]": (lambda: nn.FractionalMaxPool2d(2, output_size=2), 2, 2),
    "FractionalMaxPool3d[random regions]": (lambda: nn.FractionalMaxPool3d(2, output_size=1), 3, 1),
    "CircularPad1d": (lambda: nn.CircularPad1d(1), 1, 2), "CircularPad2d": (lambda: nn.CircularPad2d(1), 2, 2),
    "CircularPad3d": (lambda: nn.CircularPad3d(1), 3, 1),
    "ConstantPad1d": (lambda: nn.ConstantPad1d(1, 0.5), 1, 2),
    "ConstantPad2d": (lambda: nn.ConstantPad2d((1, 0, 0, 1), 0.5), 2, 2),
    "ConstantPad3d": (lambda: nn.ConstantPad3d(1, 0.5), 3, 1),
    "ReflectionPad1d": (lambda: nn.ReflectionPad1d(1), 1, 2), "ReflectionPad2d": (lambda: nn.ReflectionPad2d(1), 2, 2),
    "ReflectionPad3d": (lambda: nn.ReflectionPad3d(1), 3, 1),
    "ReplicationPad1d": (lambda: nn.ReplicationPad1d(1), 1, 2),
    "ReplicationPad2d": (lambda: nn.ReplicationPad2d(1), 2, 2),
    "ReplicationPad3d": (lambda: nn.ReplicationPad3d(1), 3, 1),
    "ZeroPad1d": (lambda: nn.ZeroPad1d(1), 1, 2), "ZeroPad2d": (lambda: nn.ZeroPad2d(1), 2, 2),
    "ZeroPad3d": (lambda: nn.ZeroPad3d(1), 3, 1),
}


@cases(SHAPES)
def _shape(spec):
    make, dims, channels = spec
    return spatial(make(), dims=dims, channels=channels, size=4 if dims < 3 else 3)


@cases({"MaxUnpool1d": 1, "MaxUnpool2d": 2, "MaxUnpool3d": 3})
def _unpool(dims):
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](1, 1, 1)
            self.pool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[dims - 1](2, return_indices=True)
            self.unpool = (nn.MaxUnpool1d, nn.MaxUnpool2d, nn.MaxUnpool3d)[dims - 1](2)
            self.head = nn.Linear(4 ** dims, 1)

        def forward(self, x):
            y, idx = self.pool(torch.tanh(self.conv(x)))
            return self.head(self.unpool(y, idx).flatten(1))
    return Setup(Host().to(D), nn.MSELoss(), (randn(N, 1, *([4] * dims)), randn(N, 1)), {})


@case("Fold")
def _fold():
    x = randn(N, 8, 4)
    model = with_head(nn.Sequential(nn.Conv1d(8, 8, 1), nn.Tanh(), nn.Fold((3, 3), 2)), x, out=1)
    return Setup(model, nn.MSELoss(), (x, randn(N, 1)), {})


class TwoBranches(nn.Module):
    """``op(tanh(a(x)), tanh(b(x)))`` for modules of two inputs, then a linear head."""

    def __init__(self, op, out):
        super().__init__()
        self.a, self.b, self.op, self.head = nn.Linear(3, 4), nn.Linear(3, 4), op, nn.Linear(out, 2)

    def forward(self, x):
        y = self.op(torch.tanh(self.a(x)), torch.tanh(self.b(x)))
        return self.head(y.reshape(x.shape[0], -1))


@cases({"CosineSimilarity": (lambda: nn.CosineSimilarity(), 1), "PairwiseDistance": (lambda: nn.PairwiseDistance(), 1)})
def _two_inputs(spec):
    make, out = spec
    return Setup(TwoBranches(make(), out).to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


# -- embeddings ------------------------------------------------------------------------------------------
class EmbeddingHost(nn.Module):
    def __init__(self, emb, pool="mean"):
        super().__init__()
        self.emb, self.head, self.pool = emb, nn.Linear(3, 2), pool

    def forward(self, idx, *rest):
        e = self.emb(idx, *rest)
        if e.dim() == 3:
            e = e.mean(1)
        return self.head(torch.tanh(e))


def tokens():
    return torch.tensor([[0, 1, 2], [3, 0, 1], [2, 2, 4], [1, 4, 4]])


EMBEDDINGS = {
    "Embedding": {}, "Embedding[padding_idx]": {"padding_idx": 0},
    "Embedding[scale_grad_by_freq]": {"scale_grad_by_freq": True}, "Embedding[sparse]": {"sparse": True},
    "Embedding[max_norm]": {"max_norm": 1.0},
}


def _renormed(weight, max_norm, norm_type=2.0):
    """What Embedding(max_norm=...) looks up: each row rescaled to norm at most max_norm (as torch does)."""
    norms = weight.norm(p=norm_type, dim=1, keepdim=True)
    return torch.where(norms > max_norm, weight * (max_norm / (norms + 1e-7)), weight)


class RenormedEmbedding(nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.weight, self.max_norm = emb.weight, emb.max_norm

    def forward(self, idx):
        return F.embedding(idx, _renormed(self.weight, self.max_norm))


@cases(EMBEDDINGS)
def _embedding(kwargs):
    emb = nn.Embedding(5, 3, **kwargs)
    with torch.no_grad():
        emb.weight.mul_(2.0)  # rows of norm above max_norm, a non-zero padding row (pretrained vectors)
    model = EmbeddingHost(emb).to(D)
    setup = Setup(model, nn.MSELoss(), (tokens(), randn(N, 2)), {})
    if "max_norm" in kwargs or "scale_grad_by_freq" in kwargs:  # PyTorch's gradient is not the loss's there
        ref = EmbeddingHost(nn.Embedding(5, 3)).to(D)
        ref.load_state_dict(model.state_dict())
        if "max_norm" in kwargs:
            ref.emb.max_norm = kwargs["max_norm"]
            ref.emb = RenormedEmbedding(ref.emb)
        setup.reference_model = ref
    if "padding_idx" in kwargs:  # PyTorch's gradient of the padding row is zero: the row is held constant
        setup.held = {"emb.weight": [kwargs["padding_idx"]]}
    return setup


class BagHost(nn.Module):
    def __init__(self, bag, weighted=False):
        super().__init__()
        self.bag, self.head, self.weighted = bag, nn.Linear(3, 2), weighted

    def forward(self, idx, extra=None):
        if self.weighted:
            return self.head(torch.tanh(self.bag(idx, per_sample_weights=extra)))
        return self.head(torch.tanh(self.bag(idx, extra)))


class RenormedBag(nn.Module):
    def __init__(self, bag):
        super().__init__()
        self.weight, self.max_norm = bag.weight, bag.max_norm

    def forward(self, idx, offsets=None):
        return F.embedding(idx, _renormed(self.weight, self.max_norm)).mean(1)


BAGS = {
    "EmbeddingBag[mean]": ({"mode": "mean"}, False),
    "EmbeddingBag[sum, per_sample_weights]": ({"mode": "sum"}, True),
    "EmbeddingBag[max]": ({"mode": "max"}, False),
    "EmbeddingBag[padding_idx]": ({"mode": "mean", "padding_idx": 1}, False),
    "EmbeddingBag[offsets]": ({"mode": "sum"}, None),
    "EmbeddingBag[max, offsets, include_last_offset]": ({"mode": "max", "include_last_offset": True}, None),
    "EmbeddingBag[max_norm]": ({"mode": "mean", "max_norm": 1.0}, False),
}



@cases(BAGS)
def _bag(spec):
    kwargs, weighted = spec
    bag = nn.EmbeddingBag(5, 3, **kwargs)
    with torch.no_grad():
        bag.weight.mul_(2.0)  # rows of norm above max_norm
    model = BagHost(bag, weighted=bool(weighted)).to(D)
    if weighted is None:  # 1-D input with offsets: bags of 3, 1, 4 and 2 tokens (a last offset: of 3, 1, 4)
        idx = torch.tensor([0, 1, 2, 3, 0, 1, 2, 4, 1, 4])
        last = kwargs.get("include_last_offset", False)
        inputs = (idx, torch.tensor([0, 3, 4, 8] + ([10] if last else [])))
        targets = randn(N, 2)
    elif weighted:
        inputs, targets = (tokens(), randn(N, 3)), randn(N, 2)
    else:
        inputs, targets = tokens(), randn(N, 2)
    setup = Setup(model, nn.MSELoss(), (inputs, targets), {})
    if "max_norm" in kwargs:
        ref = BagHost(RenormedBag(bag)).to(D)
        ref.head = model.head
        setup.reference_model = ref
    return setup


# -- recurrent and attention ---------------------------------------------------------------------------
class Recurrent(nn.Module):
    def __init__(self, rnn, width):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(width, 2)

    def forward(self, x):
        out = self.rnn(x)
        out = out[0] if isinstance(out, tuple) else out
        return self.head(out[:, -1])


RNNS = {
    "RNN": lambda: nn.RNN(3, 3, batch_first=True), "RNN[relu, 2 layers]": lambda: nn.RNN(
        3, 3, num_layers=2, nonlinearity="relu", batch_first=True),
    "LSTM": lambda: nn.LSTM(3, 3, batch_first=True), "LSTM[bidirectional, proj_size]": lambda: nn.LSTM(
        3, 3, batch_first=True, bidirectional=True, proj_size=2),
    "GRU": lambda: nn.GRU(3, 3, batch_first=True),
}


@cases(RNNS)
def _rnn(make):
    rnn = make().to(D)
    x = randn(N, 3, 3)
    with torch.no_grad():
        width = rnn(x)[0].shape[-1]
    return Setup(Recurrent(rnn, width).to(D), nn.MSELoss(), (x, randn(N, 2)), {})


@cases({"RNNCell": nn.RNNCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell})
def _cell(make):
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.head = make(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            state = None
            for t in range(x.shape[1]):
                state = self.cell(x[:, t], state)
            h = state[0] if isinstance(state, tuple) else state
            return self.head(h)
    return Setup(Host().to(D), nn.MSELoss(), (randn(N, 3, 3), randn(N, 2)), {})


@case("LSTM[pack_padded_sequence]")
def _packed():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.head = nn.LSTM(3, 3, batch_first=True), nn.Linear(3, 2)

        def forward(self, x, lengths):
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
            return self.head(h[-1])
    return Setup(Host().to(D), nn.MSELoss(), ((randn(N, 4, 3), torch.tensor([4, 2, 3, 1])), randn(N, 2)), {})


class Attention(nn.Module):
    def __init__(self, mha, need_weights=False):
        super().__init__()
        self.inp, self.mha, self.head, self.need = nn.Linear(3, 4), mha, nn.Linear(4, 2), need_weights

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        out = self.mha(h, h, h, need_weights=self.need)[0]
        return self.head(out.mean(1))


@case("MultiheadAttention")
def _mha():
    return Setup(Attention(nn.MultiheadAttention(4, 2, batch_first=True)).to(D), nn.MSELoss(),
                 (randn(N, 3, 3), randn(N, 2)), {})


@case("MultiheadAttention[kdim, vdim, need_weights, bias_kv]")
def _mha_general():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(3, 4), nn.Linear(3, 2)
            self.mha = nn.MultiheadAttention(4, 2, kdim=2, vdim=2, add_bias_kv=True, batch_first=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            k = torch.tanh(self.k(x))
            out, w = self.mha(torch.tanh(self.q(x)), k, k, need_weights=True)
            return self.head(out.mean(1)) + w.sum((1, 2))[:, None]
    return Setup(Host().to(D), nn.MSELoss(), (randn(N, 3, 3), randn(N, 2)), {})


class Sequence(nn.Module):
    def __init__(self, body, decoder=False):
        super().__init__()
        self.inp, self.body, self.head, self.decoder = nn.Linear(3, 4), body, nn.Linear(4, 2), decoder

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        out = self.body(h, h) if self.decoder else self.body(h)
        return self.head(out.mean(1))


def _encoder_layer():
    return nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True)


def _decoder_layer():
    return nn.TransformerDecoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True)


TRANSFORMERS = {
    "TransformerEncoderLayer": (_encoder_layer, False),
    "TransformerEncoder": (lambda: nn.TransformerEncoder(_encoder_layer(), 1, enable_nested_tensor=False), False),
    "TransformerDecoderLayer": (_decoder_layer, True),
    "TransformerDecoder": (lambda: nn.TransformerDecoder(_decoder_layer(), 1), True),
    "Transformer": (lambda: nn.Transformer(4, 2, 1, 1, 6, dropout=0.0, batch_first=True), True),
}


@cases(TRANSFORMERS)
def _transformer(spec):
    make, decoder = spec
    return Setup(Sequence(make(), decoder).to(D), nn.MSELoss(), (randn(N, 3, 3), randn(N, 2)), {})


@case("TransformerEncoderLayer[train, dropout]")
def _transformer_train():
    layer_ = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.2, batch_first=True)
    return Setup(Sequence(layer_).to(D), nn.MSELoss(), (randn(N, 3, 3), randn(N, 2)), {"train_mode": True})


# -- containers ----------------------------------------------------------------------------------------
class ListHost(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(3, 4), nn.Linear(4, 2)])
        self.scales = nn.ParameterList([nn.Parameter(torch.rand(4) + 0.5), nn.Parameter(torch.rand(2) + 0.5)])
        self.extra = nn.ModuleDict({"act": nn.Tanh()})
        self.shift = nn.ParameterDict({"out": nn.Parameter(torch.randn(2))})

    def forward(self, x):
        for lin, s in zip(self.layers, self.scales):
            x = self.extra["act"](lin(x)) * s
        return x + self.shift["out"]


@cases({"ModuleList": 0, "ModuleDict": 1, "ParameterList": 2, "ParameterDict": 3, "Module": 4})
def _containers(_):
    return Setup(ListHost().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("Sequential")
def _sequential():
    return features(nn.Sequential(nn.Tanh(), nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())))


@case("Container")
def _container():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        box = nn.Container(lin=nn.Linear(4, 4))

    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.box, self.head = box, nn.Linear(4, 2)
            self.inp = nn.Linear(3, 4)

        def forward(self, x):
            return self.head(torch.tanh(self.box.lin(torch.tanh(self.inp(x)))))
    return Setup(Host().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("DataParallel")
def _data_parallel():
    inner = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    return Setup(nn.DataParallel(inner), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


# -- losses --------------------------------------------------------------------------------------------
def mlp(out=3, width=4):
    return nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, out)).to(D)


def classes(n=N, c=3):
    return torch.randint(0, c, (n,))


@case("MSELoss")
def _mse():
    return Setup(mlp(2), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("MSELoss[sum, several batches]")
def _mse_sum():
    x, y = randn(7, 3), randn(7, 2)
    return Setup(mlp(2), nn.MSELoss(reduction="sum"), [(x[:4], y[:4]), (x[4:], y[4:])], {}, reference_data=(x, y))


@cases({"L1Loss": nn.L1Loss, "SmoothL1Loss": lambda: nn.SmoothL1Loss(beta=0.5), "HuberLoss": lambda: nn.HuberLoss(
    delta=0.5), "SoftMarginLoss": nn.SoftMarginLoss})
def _regression(make):
    y = randn(N, 2)
    if isinstance(make(), nn.SoftMarginLoss):
        y = torch.sign(y)
    return Setup(mlp(2), make(), (randn(N, 3), y), {})


@case("BCELoss")
def _bce():
    model = nn.Sequential(mlp(2), nn.Sigmoid())
    loss = nn.BCELoss(weight=torch.tensor([1.0, 2.0], dtype=D))
    return Setup(model, loss, (randn(N, 3), torch.rand(N, 2, dtype=D)), {})


@case("BCEWithLogitsLoss")
def _bce_logits():
    loss = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 0.5], dtype=D))
    return Setup(mlp(2), loss, (randn(N, 3), torch.rand(N, 2, dtype=D)), {})


CROSS_ENTROPY = {
    "CrossEntropyLoss": {}, "CrossEntropyLoss[weight, label_smoothing]": {
        "weight": torch.tensor([0.5, 2.0, 1.0], dtype=D), "label_smoothing": 0.1},
}


@cases(CROSS_ENTROPY)
def _ce(kwargs):
    return Setup(mlp(3), nn.CrossEntropyLoss(**kwargs), (randn(N, 3), classes()), {})


@case("CrossEntropyLoss[probabilities]")
def _ce_probs():
    return Setup(mlp(3), nn.CrossEntropyLoss(), (randn(N, 3), torch.softmax(randn(N, 3), 1)), {})


@case("CrossEntropyLoss[K-dimensional, ignore_index, several batches]")
def _ce_kdim():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(3)

        def forward(self, x):  # (n, T, 3) -> logits (n, 3, T)
            return self.net(x).transpose(1, 2)
    x = randn(6, 4, 3)
    y = torch.randint(0, 3, (6, 4))
    y[0, :3] = -100
    y[1, 1] = -100
    y[4:, 2:] = -100
    data = [(x[:2], y[:2]), (x[2:5], y[2:5]), (x[5:], y[5:])]
    return Setup(Host().to(D), nn.CrossEntropyLoss(), data, {}, reference_data=(x, y))


def _ignored(y, every=3):
    y = y.clone()
    y[::every] = -100
    return y


@case("CrossEntropyLoss[ignore_index, several batches]")
def _ce_ignore():
    x, y = randn(9, 3), _ignored(classes(9))
    y[5] = -100
    data = [(x[:4], y[:4]), (x[4:7], y[4:7]), (x[7:], y[7:])]
    return Setup(mlp(3), nn.CrossEntropyLoss(), data, {}, reference_data=(x, y))


@case("CrossEntropyLoss[weight, ignore_index=2, several batches]")
def _ce_weight_ignore():
    x, y = randn(9, 3), classes(9)
    loss = nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=D), ignore_index=2)
    data = [(x[:2], y[:2]), (x[2:7], y[2:7]), (x[7:], y[7:])]
    return Setup(mlp(3), loss, data, {}, reference_data=(x, y))


@case("NLLLoss[weight, ignore_index, several batches]")
def _nll():
    x, y = randn(8, 3), _ignored(classes(8))
    model = nn.Sequential(mlp(3), nn.LogSoftmax(dim=1))
    loss = nn.NLLLoss(weight=torch.tensor([1.0, 3.0, 0.5], dtype=D))
    data = [(x[:3], y[:3]), (x[3:], y[3:])]
    return Setup(model, loss, data, {}, reference_data=(x, y))


@case("NLLLoss2d")
def _nll2d():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = nn.NLLLoss2d()
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.LogSoftmax(dim=1))
    return Setup(model.to(D), loss, (randn(N, 2, 2, 2), torch.randint(0, 3, (N, 2, 2))), {})


@cases({"KLDivLoss[batchmean, several batches]": ("batchmean", False), "KLDivLoss": ("mean", False),
        "KLDivLoss[sum, log_target]": ("sum", True)})
def _kl(spec):
    reduction, log_target = spec
    x, p = randn(7, 3), torch.softmax(randn(7, 3), 1)
    if log_target:
        p = p.log()
    model = nn.Sequential(mlp(3), nn.LogSoftmax(dim=1))
    loss = nn.KLDivLoss(reduction=reduction, log_target=log_target)
    return Setup(model, loss, [(x[:4], p[:4]), (x[4:], p[4:])], {}, reference_data=(x, p))


@cases({"PoissonNLLLoss": {}, "PoissonNLLLoss[rates, full]": {"log_input": False, "full": True}})
def _poisson(kwargs):
    model = mlp(2) if kwargs.get("log_input", True) else nn.Sequential(mlp(2), nn.Softplus())
    y = torch.poisson(torch.full((N, 2), 3.0, dtype=D))
    return Setup(model, nn.PoissonNLLLoss(**kwargs), (randn(N, 3), y), {})


@case("GaussianNLLLoss")
def _gaussian_fixed_var():
    loss = nn.GaussianNLLLoss()
    var = torch.full((N, 2), 0.5, dtype=D)
    return Setup(mlp(2), lambda out, y: loss(out, y, var), (randn(N, 3), randn(N, 2)), {})


class MeanAndVariance(nn.Module):
    """A regression net predicting a mean and a variance: a tuple output."""

    def __init__(self):
        super().__init__()
        self.body = mlp(4)

    def forward(self, x):
        h = self.body(x)
        return h[:, :2], F.softplus(h[:, 2:]) + 0.1


@case("GaussianNLLLoss[predicted variance, tuple output]")
def _gaussian():
    loss = nn.GaussianNLLLoss()
    return Setup(MeanAndVariance().to(D), lambda out, y: loss(out[0], y, out[1]), (randn(N, 3), randn(N, 2)), {})


class Siamese(nn.Module):
    """One net applied to two (or three) inputs: a tuple output, as metric-learning losses take."""

    def __init__(self, out=2):
        super().__init__()
        self.net = mlp(out)

    def forward(self, *xs):
        return tuple(self.net(x) for x in xs)


@case("CosineEmbeddingLoss")
def _cosine():
    loss = nn.CosineEmbeddingLoss(margin=-0.5)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=D)
    return Setup(Siamese(3).to(D), lambda out, t: loss(out[0], out[1], t), ((randn(N, 3), randn(N, 3)), y), {})


@case("MarginRankingLoss")
def _ranking():
    loss = nn.MarginRankingLoss(margin=2.0)
    y = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=D)
    return Setup(Siamese(1).to(D), lambda out, t: loss(out[0][:, 0], out[1][:, 0], t),
                 ((randn(N, 3), randn(N, 3)), y), {})


@cases({"TripletMarginLoss": lambda: nn.TripletMarginLoss(margin=3.0),
        "TripletMarginWithDistanceLoss": lambda: nn.TripletMarginWithDistanceLoss(
            distance_function=nn.PairwiseDistance(), margin=3.0, swap=True)})
def _triplet(make):
    loss = make()
    xs = (randn(N, 3), randn(N, 3), randn(N, 3))
    return Setup(Siamese(3).to(D), lambda out, t: loss(*out), (xs, torch.zeros(N, dtype=D)), {})


@case("HingeEmbeddingLoss")
def _hinge():
    model = nn.Sequential(mlp(2), nn.Softplus())
    y = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]], dtype=D)
    return Setup(model, nn.HingeEmbeddingLoss(margin=3.0), (randn(N, 3), y), {})


@case("MultiLabelSoftMarginLoss")
def _mlsm():
    return Setup(mlp(3), nn.MultiLabelSoftMarginLoss(), (randn(N, 3), (torch.rand(N, 3) > 0.5).to(D)), {})


@cases({"MultiMarginLoss": {}, "MultiMarginLoss[p=2, weight, margin]": {
    "p": 2, "margin": 2.0, "weight": torch.tensor([1.0, 0.5, 2.0], dtype=D)}})
def _multi_margin(kwargs):
    return Setup(mlp(3), nn.MultiMarginLoss(**kwargs), (randn(N, 3), classes()), {})


@case("MultiLabelMarginLoss")
def _multilabel_margin():
    y = torch.tensor([[0, 2, -1, 1], [1, -1, 0, 0], [3, 1, 2, 0], [2, -1, 3, 3]])
    return Setup(mlp(4), nn.MultiLabelMarginLoss(), (randn(N, 3), y), {})


@case("CTCLoss")
def _ctc():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(4)

        def forward(self, x):  # (n, T, 3) -> log-probabilities (T, n, C)
            return self.net(x).log_softmax(-1).transpose(0, 1)
    loss = nn.CTCLoss()
    targets = torch.tensor([[1, 2], [3, 3], [1, 0], [2, 0]])
    target_lengths = torch.tensor([2, 2, 1, 1])
    input_lengths = torch.tensor([5, 5, 4, 3])

    def ctc(out, y):
        return loss(out, y, input_lengths, target_lengths)

    def by_enumeration(out, y):  # every alignment of every sample, summed: an independent CTC
        terms = []
        for n in range(N):
            T, want = int(input_lengths[n]), tuple(int(c) for c in y[n, :target_lengths[n]])
            paths = [p for p in itertools.product(range(4), repeat=T) if _collapse(p) == want]
            index = torch.tensor(paths)
            logp = out[torch.arange(T)[None], n, index].sum(1)
            terms.append(-torch.logsumexp(logp, 0) / len(want))
        return torch.stack(terms).mean()
    return Setup(Host().to(D), ctc, (randn(N, 5, 3), targets), {}, reference_loss_fn=by_enumeration)


def _collapse(path, blank=0):
    out, last = [], None
    for c in path:
        if c != last and c != blank:
            out.append(c)
        last = c
    return tuple(out)


@case("LinearCrossEntropyLoss")
def _linear_ce():
    loss = nn.LinearCrossEntropyLoss(4, 3, bias=True, dtype=D)
    return Setup(mlp(4), loss, (randn(N, 3), classes()), {})


@case("AdaptiveLogSoftmaxWithLoss")
def _adaptive():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = mlp(4)
            self.out = nn.AdaptiveLogSoftmaxWithLoss(4, 6, cutoffs=[2, 4], div_value=2.0)

        def forward(self, x, y):
            return self.out(torch.tanh(self.body(x)), y).loss
    y = torch.randint(0, 6, (N,))
    return Setup(Host().to(D), lambda out, t: out, ((randn(N, 3), y), y), {})


# -- parametrizations, tying, freezing --------------------------------------------------------------------
def _net():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)


def _param_case(transform, **options):
    model = _net()
    transform(model[0])
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), options)


PARAMETRIZATIONS = {
    "weight_norm[parametrizations]": (lambda m: parametrizations.weight_norm(m), {}),
    "weight_norm[legacy hook]": (lambda m: nn.utils.weight_norm(m), {}),
    "spectral_norm[parametrizations]": (lambda m: parametrizations.spectral_norm(m), {}),
    "spectral_norm[parametrizations, train]": (lambda m: parametrizations.spectral_norm(m), {"train_mode": True}),
    "spectral_norm[legacy hook]": (lambda m: nn.utils.spectral_norm(m), {}),
    "spectral_norm[legacy hook, train]": (lambda m: nn.utils.spectral_norm(m), {"train_mode": True}),
    "orthogonal[matrix_exp]": (lambda m: parametrizations.orthogonal(m, orthogonal_map="matrix_exp"), {}),
    "orthogonal[cayley]": (lambda m: parametrizations.orthogonal(m, orthogonal_map="cayley"), {}),
    "orthogonal[householder]": (lambda m: parametrizations.orthogonal(m, orthogonal_map="householder"),
                                {"_held_diagonal": True}),
}


class HeldAfterOneStep(nn.Module):
    """Reference for spectral norm in train mode: its power iteration (computed without gradient) run once,
    as each forward does, then held (what a Hessian can mean for values computed without gradient)."""

    def __init__(self, model, x):
        super().__init__()
        self.inner = copy.deepcopy(model).train()
        with torch.no_grad():
            self.inner(x)
        self.inner.eval()

    def train(self, mode=True):
        return self  # stays in eval: no further power iteration

    def forward(self, x):
        return self.inner(x)


@cases(PARAMETRIZATIONS)
def _parametrization(spec):
    transform, options = spec
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        setup = _param_case(transform, **options)
    if options.get("train_mode"):
        setup.reference_model = HeldAfterOneStep(setup.model, setup.data[0])
    if options.get("_held_diagonal"):
        # torch casts the diagonal of the Householder reflectors to int (+-1): PyTorch's gradient there is zero
        del setup.options["_held_diagonal"]
        setup.held = {"0.parametrizations.weight.original": [(i, i) for i in range(min(setup.model[0].weight.shape))]}
    return setup


class Symmetric(nn.Module):
    def forward(self, w):
        return w.triu() + w.triu(1).T


@case("register_parametrization[custom]")
def _custom_parametrization():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).to(D)
    parametrize.register_parametrization(model[0], "weight", Symmetric())
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class Cached(nn.Module):
    """A model whose forward runs inside ``parametrize.cached()``, as recommended for shared weights."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)
        parametrize.register_parametrization(self.a, "weight", Symmetric())

    def forward(self, x):
        with parametrize.cached():
            return self.b(torch.tanh(self.a(torch.tanh(self.a(x)))))


@case("parametrize.cached[inside forward]")
def _cached_inside():
    return Setup(Cached().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("parametrize.cached[around the call]")
def _cached_outside():
    setup = _custom_parametrization()
    setup.options["_cached"] = True  # the sweep calls hessian_core inside parametrize.cached()
    return setup


@case("tied weights")
def _tied():
    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 3)
            self.mix = nn.Linear(3, 3)

        def forward(self, idx):
            h = torch.tanh(self.mix(self.emb(idx).mean(1)))
            return h @ self.emb.weight.T  # logits over the vocabulary, tied to the embedding
    return Setup(Host().to(D), nn.CrossEntropyLoss(), (tokens(), classes(c=5)), {})


@case("frozen parameters")
def _frozen():
    model = _net()
    model[0].bias.requires_grad_(False)
    model[2].weight.requires_grad_(False)
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


# -- hooks, checkpointing, autograd Functions ----------------------------------------------------------
@case("full backward hook")
def _backward_hook():
    model = _net()
    model[0].register_full_backward_hook(lambda m, gi, go: None)
    model[2].register_full_backward_pre_hook(lambda m, go: None)
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("forward hooks changing outputs")
def _forward_hooks():
    model = _net()
    model[0].register_forward_pre_hook(lambda m, args: (args[0] * 2.0,))
    model[1].register_forward_hook(lambda m, args, out: out * out)
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class Checkpointed(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 2)
        self.reentrant = reentrant

    def forward(self, x):
        h = torch.tanh(self.a(x))
        if self.reentrant == "sequential":
            h = checkpoint_sequential(self.b, 1, h, use_reentrant=False)
        else:
            h = checkpoint(self.b, h, use_reentrant=self.reentrant)
        return self.c(h)


@cases({"checkpoint[use_reentrant=True]": True, "checkpoint[use_reentrant=False]": False,
        "checkpoint_sequential": "sequential"})
def _checkpoint(mode):
    return Setup(Checkpointed(mode).to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class Cube(torch.autograd.Function):
    """An old-style autograd Function (forward with ctx, no setup_context) with a differentiable backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


class OnceCube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


class FunctionHost(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.b, self.fn = nn.Linear(3, 4), nn.Linear(4, 2), fn

    def forward(self, x):
        return self.b(self.fn.apply(torch.tanh(self.a(x))))


@case("autograd.Function[old style]")
def _old_function():
    return Setup(FunctionHost(Cube).to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("autograd.Function[once_differentiable]", refusal="OnceCube")
def _once_function():
    return Setup(FunctionHost(OnceCube).to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


# -- structured outputs ------------------------------------------------------------------------------------
class DictOutput(nn.Module):
    """A Hugging Face style model: a dict with logits, hidden states and an integer entry."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return {"logits": self.head(h), "hidden": h, "length": torch.tensor(x.shape[0])}


@case("dict output")
def _dict_output():
    ce = nn.CrossEntropyLoss()
    return Setup(DictOutput().to(D), lambda out, y: ce(out["logits"], y), (randn(N, 3), classes()), {})


@case("dict output[loss of two entries]")
def _dict_two():
    ce = nn.CrossEntropyLoss()
    return Setup(DictOutput().to(D), lambda out, y: ce(out["logits"], y) + out["hidden"].pow(2).mean(),
                 (randn(N, 3), classes()), {})


# -- state written in forward, random forwards ------------------------------------------------------------
class Counter(nn.Module):
    """Updates buffers in forward: a call counter and a cache of the last output."""

    def __init__(self):
        super().__init__()
        self.net = _net()
        self.register_buffer("calls", torch.zeros((), dtype=D))
        self.register_buffer("last", torch.zeros(N, 2, dtype=D))

    def forward(self, x):
        self.calls += 1
        out = self.net(x)
        self.last.copy_(out.detach())
        return out


@case("buffers updated in forward")
def _counter():
    return Setup(Counter().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class Centering(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        x.sub_(x.mean(0))  # writes into its input
        return self.net(x)


@case("input written in forward")
def _centering():
    return Setup(Centering().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class RunningMean(nn.Module):
    """Centers its output by a running mean kept in a buffer, then updates the running mean."""

    def __init__(self):
        super().__init__()
        self.net = _net()
        self.register_buffer("mean", torch.randn(2, dtype=D))

    def forward(self, x):
        out = self.net(x)
        centered = out - self.mean
        self.mean.mul_(0.9).add_(0.1 * out.detach().mean(0))
        return centered


@case("buffer read, then updated")
def _running_mean():
    return Setup(RunningMean().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("MinMaxObserver")
def _observer():
    from torch.ao.quantization import MinMaxObserver
    model = nn.Sequential(nn.Linear(3, 4), MinMaxObserver(dtype=torch.quint8), nn.Tanh(), nn.Linear(4, 2)).to(D)
    return Setup(model, nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


@case("BatchNorm1d[train, momentum=None]")
def _bn_cumulative():
    return features(nn.BatchNorm1d(4, momentum=None), train_mode=True)


class MCDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net[2](F.dropout(self.net[1](self.net[0](x)), 0.3, training=True))


@case("F.dropout(training=True)[eval]")
def _mc_dropout():
    return Setup(MCDropout().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = nn.Linear(3, 4), nn.Linear(2, 3)

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.dec(torch.tanh(z))


@case("randn_like reparameterization")
def _vae():
    x = randn(N, 3)
    return Setup(VAE().to(D), nn.MSELoss(), (x, x.clone()), {})


class NumpyNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        return self.net(x + torch.from_numpy(np.random.randn(*x.shape)))


@case("numpy noise in forward", refusal="different output on every call")
def _numpy_noise():
    return Setup(NumpyNoise().to(D), nn.MSELoss(), (randn(N, 3), randn(N, 2)), {})


def all_cases() -> dict:
    return dict(sorted(CASES.items()))
