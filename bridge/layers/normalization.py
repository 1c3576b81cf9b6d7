"""batchNormalizationLayer (inference: trained statistics) and layerNormalizationLayer.

batchNormalization, as dlnetwork ``predict`` computes it
(https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.batchnormalizationlayer.html):
``Scale .* (x - TrainedMean) ./ sqrt(TrainedVariance + Epsilon) + Offset`` per channel.
layerNormalization (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.layernormalizationlayer.html):
per observation, mean and (biased) variance over OperationDimension, then per-channel Scale and Offset;
'auto' = channel only for 'CB'/'CBT' data (never over time), spatial and channel for images.
"""

from __future__ import annotations

import torch

from .base import Act, Translator, channel_dim, channel_view


def _num_channels(self, learn) -> int:
    lay = self.layer
    if lay.has("NumChannels") and not lay.is_text("NumChannels"):
        return lay.integer("NumChannels")
    return int(learn["Scale"].size)


def _per_channel_learnables(translator, learn) -> int:
    """Check that Offset and Scale have one element per channel, record their shapes; the channel count."""
    c = _num_channels(translator, learn)
    for n in translator.learnable_names:
        if learn[n].size != c:
            raise translator.error(f"{n} has {learn[n].size} elements, expected one per channel ({c})")
        translator.shapes[n] = tuple(learn[n].shape) if learn[n].ndim else (1,)
    return c


class BatchNormalization(Translator):
    learnable_names = ("Offset", "Scale")
    properties = ("NumChannels", "Epsilon", "TrainedMean", "TrainedVariance")

    def setup(self, learn, state):
        c = _per_channel_learnables(self, learn)
        for key in ("TrainedMean", "TrainedVariance"):
            value = state.get(key)
            if value is None and self.layer.has(key):
                value = self.layer.array(key)
            if value is None:
                raise self.error(f"{key} is in neither the State rows nor the layer's properties")
            if value.size != c:
                raise self.error(f"{key} has {value.size} elements, expected {c}")
            self.const(key, value.reshape(-1, order="F"))
        self.eps = self.layer.number("Epsilon", 1e-5)

    def forward(self, xs, p, c):
        x = xs[0]
        d = x.data.dim()
        mean = channel_view(c["TrainedMean"], x.fmt, d)
        var = channel_view(c["TrainedVariance"], x.fmt, d)
        y = (x.data - mean) / torch.sqrt(var + self.eps)
        return Act(channel_view(p["Scale"], x.fmt, d) * y + channel_view(p["Offset"], x.fmt, d), x.fmt)


class LayerNormalization(Translator):
    learnable_names = ("Offset", "Scale")
    properties = ("NumChannels", "Epsilon", "OperationDimension")

    def setup(self, learn, state):
        _per_channel_learnables(self, learn)
        self.eps = self.layer.number("Epsilon", 1e-5)
        self.opdim = self.layer.text("OperationDimension", "auto").lower()
        if self.opdim not in ("auto", "channel-only", "spatial-channel", "batch-excluded"):
            raise self.error(f"OperationDimension {self.opdim!r} is not supported")

    def dims(self, fmt: str, ndim: int) -> tuple[int, ...]:
        mode = self.opdim
        if mode == "auto":
            mode = "spatial-channel" if "S" in fmt else "channel-only"
        if mode == "channel-only":
            return (channel_dim(fmt),)
        if mode == "spatial-channel":
            return tuple(range(1, ndim)) if "T" not in fmt else (2,)
        return tuple(range(1, ndim))  # batch-excluded: everything but B (time included)

    def forward(self, xs, p, c):
        x = xs[0]
        d = x.data.dim()
        dims = self.dims(x.fmt, d)
        mu = x.data.mean(dim=dims, keepdim=True)
        var = (x.data - mu).square().mean(dim=dims, keepdim=True)
        y = (x.data - mu) / torch.sqrt(var + self.eps)
        return Act(channel_view(p["Scale"], x.fmt, d) * y + channel_view(p["Offset"], x.fmt, d), x.fmt)
