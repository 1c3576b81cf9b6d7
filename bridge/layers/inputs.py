"""Input layers and their input normalization (featureInputLayer, imageInputLayer, image3dInputLayer,
sequenceInputLayer).

Normalization (https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.imageinputlayer.html):
zerocenter ``x - Mean``; zscore ``(x - Mean) ./ StandardDeviation``; rescale-symmetric
``2 (x - Min) ./ (Max - Min) - 1``; rescale-zero-one ``(x - Min) ./ (Max - Min)``; none.
Default: 'zerocenter' for image inputs, 'none' for feature and sequence inputs (the exporter sends
``Normalization`` explicitly; the defaults only apply to hand-written specs). A function handle
(documented for all three) cannot be evaluated here: the MATLAB wrappers apply it to the data before it
crosses and send 'none'; a spec that still carries one (``'function_handle: ...'``) is refused.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Act, Translator

#: How dlnetworkToSpec marks a Normalization given as a function handle: 'function_handle: @(x) ...'.
FUNCTION_HANDLE = "function_handle:"
NEEDS = {"none": (), "zerocenter": ("Mean",), "zscore": ("Mean", "StandardDeviation"),
         "rescale-symmetric": ("Min", "Max"), "rescale-zero-one": ("Min", "Max")}


class InputTranslator(Translator):
    # NormalizationDimension is not read: the statistics' own size (scalar, per channel, InputSize) says it.
    properties = ("InputSize", "Normalization", "Mean", "StandardDeviation", "Min", "Max")
    fmt = "CB"
    default_normalization = "none"
    n_spatial = 0

    def setup(self, learn, state):
        lay = self.layer
        size = lay.array("InputSize").reshape(-1).astype(int).tolist()
        if self.n_spatial and len(size) == self.n_spatial:
            size.append(1)  # [h w] means one channel
        if len(size) != self.n_spatial + 1:
            raise self.error(f"InputSize {size} must have {self.n_spatial + 1} elements for {self.fmt} input")
        self.size = tuple(size)  # MATLAB order: S..., C
        if lay.has("Normalization") and not lay.is_text("Normalization"):
            raise self.error("Normalization must be a name such as 'zscore'")
        self.norm = lay.text("Normalization", self.default_normalization).lower()
        if self.norm.startswith(FUNCTION_HANDLE):
            raise self.error(
                f"Normalization is a function handle ({lay.text('Normalization')[len(FUNCTION_HANDLE):].strip()}), "
                "which Python cannot evaluate. dlhessian and the other MATLAB wrappers apply it to X before the "
                "data leaves MATLAB; when you call bridge.api yourself (e.g. through MatlabSession), apply it to "
                "X first and set the layer's Normalization to 'none'")
        if self.norm not in NEEDS:
            raise self.error(f"Normalization {self.norm!r} is not supported (supported: {', '.join(NEEDS)})")
        for key in NEEDS[self.norm]:
            self.const(key, self._to_torch_layout(key, lay.array(key)))

    def _to_torch_layout(self, key, a: np.ndarray) -> np.ndarray:
        """A statistic of size 1, C or S...xC (MATLAB order) -> broadcastable over (B, C, S...) / (B, C) / (B, T, C)."""
        c = self.size[-1]
        if a.size == 1:
            return a.reshape(())
        if a.size == c:
            v = a.reshape(-1, order="F")
            if "T" in self.fmt:
                return v.reshape(1, 1, c)
            return v.reshape((1, c) + (1,) * self.n_spatial)
        if a.size == int(np.prod(self.size)) and self.n_spatial:
            full = a.reshape(self.size, order="F")  # S..., C
            k = self.n_spatial
            return np.transpose(full, (k,) + tuple(range(k)))[None]
        raise self.error(f"{key} has size {a.shape}; expected a scalar, {c} values (per channel) or InputSize")

    def forward(self, xs, p, c):
        x = xs[0]
        if x.fmt != self.fmt:
            raise self.error(f"the data has format {x.fmt!r}, this input layer takes {self.fmt!r}")
        got = tuple(x.data.shape[2:]) + (x.data.shape[1],) if "T" not in self.fmt else (x.data.shape[2],)
        if got != self.size:
            raise self.error(f"the data has size {got} (S..., C) per observation, InputSize is {self.size}")
        return Act(normalize(x.data, self.norm, c), x.fmt)


def normalize(x: torch.Tensor, norm: str, c: dict) -> torch.Tensor:
    if norm == "zerocenter":
        return x - c["Mean"]
    if norm == "zscore":
        return (x - c["Mean"]) / c["StandardDeviation"]
    if norm == "rescale-symmetric":
        return 2 * (x - c["Min"]) / (c["Max"] - c["Min"]) - 1
    if norm == "rescale-zero-one":
        return (x - c["Min"]) / (c["Max"] - c["Min"])
    return x


class FeatureInput(InputTranslator):
    fmt = "CB"


class ImageInput(InputTranslator):
    fmt = "SSCB"
    default_normalization = "zerocenter"
    n_spatial = 2


class Image3DInput(InputTranslator):
    fmt = "SSSCB"
    default_normalization = "zerocenter"
    n_spatial = 3


class SequenceInput(InputTranslator):
    fmt = "CBT"

    def forward(self, xs, p, c):
        x = xs[0]
        if x.fmt != "CBT":
            raise self.error(f"the data has format {x.fmt!r}; sequenceInputLayer (vector sequences) takes 'CBT'")
        return super().forward(xs, p, c)
