"""convolution2dLayer and 2-D pooling (max, average, global average, global max).

MATLAB conventions (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.convolution2dlayer.html):
Weights FH x FW x C x NF, a cross-correlation (no kernel flip) -> torch weight ``W.permute(3, 2, 0, 1)``;
Bias 1 x 1 x NF; Stride and DilationFactor [h w]; PaddingSize [top bottom left right]; PaddingMode
'same' pads so that the output is ceil(input / stride), the odd extra row/column at the bottom/right.
averagePooling2dLayer: PaddingValue 0 counts padded zeros in the mean, 'mean' leaves them out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Act, Translator


class _Windowed(Translator):
    """Shared Stride / DilationFactor / PaddingSize / PaddingMode handling."""

    def window_setup(self, fsize: tuple[int, int], stride_default=(1, 1)):
        lay = self.layer
        self.fsize = fsize
        self.stride = lay.ints("Stride", 2, stride_default)
        self.dilation = lay.ints("DilationFactor", 2, (1, 1)) if lay.has("DilationFactor") else (1, 1)
        mode = lay.text("PaddingMode", "manual").lower()
        if mode not in ("manual", "same"):
            raise self.error(f"PaddingMode {mode!r} is not supported ('manual' or 'same')")
        self.same = mode == "same"
        self.pad = lay.ints("PaddingSize", 4, (0, 0, 0, 0)) if not self.same else None

    def padding(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) for an input of h x w."""
        if not self.same:
            return self.pad
        out = []
        for n, f, s, d in zip((h, w), self.fsize, self.stride, self.dilation):
            total = max((math.ceil(n / s) - 1) * s + (f - 1) * d + 1 - n, 0)
            out += [total // 2, total - total // 2]  # the extra one goes to bottom / right
        return tuple(out)

    def padded(self, x: torch.Tensor, value: float = 0.0) -> torch.Tensor:
        t, b, left, r = self.padding(x.shape[2], x.shape[3])
        if not (t or b or left or r):
            return x
        return F.pad(x, (left, r, t, b), value=value)


class Convolution2D(_Windowed):
    learnable_names = ("Weights", "Bias")
    properties = ("FilterSize", "NumChannels", "NumFilters", "NumGroups", "Stride", "DilationFactor", "PaddingMode",
                  "PaddingSize", "PaddingValue")

    def setup(self, learn, state):
        lay = self.layer
        W = learn["Weights"]
        nf = lay.integer("NumFilters") if lay.has("NumFilters") else (W.shape[3] if W.ndim > 3 else 1)
        fsize = lay.ints("FilterSize", 2) if lay.has("FilterSize") else tuple(W.shape[:2])
        # NumChannels is 'auto' until the network is initialized, then a number that Weights must match.
        nc = lay.integer("NumChannels") if lay.has("NumChannels") and not lay.is_text("NumChannels") else None
        self.expect(learn, "Weights", (fsize[0], fsize[1], nc, nf))
        self.expect(learn, "Bias", (1, 1, nf))
        self.window_setup(fsize)
        if lay.has("NumGroups") or lay.short_class == "GroupedConvolution2DLayer":
            raise self.error("grouped convolution is not supported")
        if lay.is_text("PaddingValue"):  # 'symmetric-include-edge', 'replicate', ...
            raise self.error(f"PaddingValue {lay.text('PaddingValue')!r} is not supported (numeric values only)")
        self.pad_value = lay.number("PaddingValue", 0)

    def forward(self, xs, p, c):
        x = xs[0]
        self.need_format(x, "SSCB")
        W = p["Weights"].permute(3, 2, 0, 1)  # FH x FW x C x NF -> NF x C x FH x FW
        if x.data.shape[1] != W.shape[1]:
            raise self.error(f"the input has {x.data.shape[1]} channels, Weights expects {W.shape[1]}")
        y = F.conv2d(self.padded(x.data, self.pad_value), W, p["Bias"].reshape(-1), stride=self.stride,
                     dilation=self.dilation)
        return Act(y, x.fmt)


class MaxPooling2D(_Windowed):
    properties = ("PoolSize", "Stride", "DilationFactor", "PaddingMode", "PaddingSize")

    def setup(self, learn, state):
        self.window_setup(self.layer.ints("PoolSize", 2), stride_default=(1, 1))

    def forward(self, xs, p, c):
        x = xs[0]
        self.need_format(x, "SSCB")
        # Padding never wins a max.
        return Act(F.max_pool2d(self.padded(x.data, -math.inf), self.fsize, self.stride), x.fmt)


class AveragePooling2D(_Windowed):
    properties = ("PoolSize", "Stride", "DilationFactor", "PaddingMode", "PaddingSize", "PaddingValue")

    def setup(self, learn, state):
        self.window_setup(self.layer.ints("PoolSize", 2), stride_default=(1, 1))
        lay = self.layer
        if lay.is_text("PaddingValue"):
            if lay.text("PaddingValue").lower() != "mean":
                raise self.error(f"PaddingValue {lay.text('PaddingValue')!r} is not supported (0 or 'mean')")
            self.exclude_pad = True
        else:
            if lay.number("PaddingValue", 0) != 0:
                raise self.error("PaddingValue other than 0 or 'mean' is not supported")
            self.exclude_pad = False

    def forward(self, xs, p, c):
        x = xs[0]
        self.need_format(x, "SSCB")
        sums = F.avg_pool2d(self.padded(x.data), self.fsize, self.stride)
        if not self.exclude_pad:
            return Act(sums, x.fmt)
        ones = torch.ones_like(x.data[:1, :1])
        frac = F.avg_pool2d(self.padded(ones), self.fsize, self.stride)  # fraction of real pixels per window
        return Act(sums / frac, x.fmt)


class GlobalAveragePooling2D(Translator):
    def forward(self, xs, p, c):
        x = xs[0]
        self.need_format(x, "S*CB")
        return Act(x.data.mean(dim=tuple(range(2, x.data.dim())), keepdim=True), x.fmt)


class GlobalMaxPooling2D(Translator):
    def forward(self, xs, p, c):
        x = xs[0]
        self.need_format(x, "S*CB")
        return Act(x.data.amax(dim=tuple(range(2, x.data.dim())), keepdim=True), x.fmt)
