"""fullyConnectedLayer: ``Y = W * X + b`` with Weights OutputSize x InputSize, Bias OutputSize x 1.

Spatial input is flattened column-major over S..., C before the product (H fastest, then W, then C), and
the output is 'CB'; sequence input ('CBT') is multiplied at every time step
(https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.fullyconnectedlayer.html).
"""

from __future__ import annotations

import torch.nn.functional as F

from ..layout import flatten_column_major
from .base import Act, Translator


class FullyConnected(Translator):
    learnable_names = ("Weights", "Bias")
    properties = ("InputSize", "OutputSize")

    def setup(self, learn, state):
        lay = self.layer
        out = lay.integer("OutputSize") if lay.has("OutputSize") else learn["Weights"].shape[0]
        # InputSize is 'auto' until the network is initialized, then a number that Weights must match.
        inp = lay.integer("InputSize") if lay.has("InputSize") and not lay.is_text("InputSize") else None
        self.expect(learn, "Weights", (out, inp))
        self.expect(learn, "Bias", (out, 1))

    def forward(self, xs, p, c):
        x = xs[0]
        data, fmt = x.data, x.fmt
        if "S" in fmt:
            data, fmt = flatten_column_major(data, fmt), "CB"
        W = p["Weights"]
        if data.shape[-1] != W.shape[1]:
            raise self.error(f"Weights is {tuple(W.shape)} but the input has {data.shape[-1]} features "
                             "(S..., C flattened column-major)")
        return Act(F.linear(data, W, p["Bias"].reshape(-1)), fmt)
