"""Structural layers: dropout (identity at inference), flatten, addition, concatenation, depth concatenation.

flattenLayer collapses S..., C column-major into C (https://www.mathworks.com/help/deeplearning/ref/
nnet.cnn.layer.flattenlayer.html); concatenationLayer's Dim is a MATLAB dimension of the formatted
(S..., C, B, T) array.
"""

from __future__ import annotations

import torch

from ..layout import flatten_column_major, matlab_dim_to_torch
from .base import Act, Translator, channel_dim


class Dropout(Translator):
    """dlnetwork ``predict`` semantics: dropout is off, the layer is the identity."""

    def forward(self, xs, p, c):
        return xs[0]


class Flatten(Translator):
    def forward(self, xs, p, c):
        x = xs[0]
        if "S" not in x.fmt:
            return x
        return Act(flatten_column_major(x.data, x.fmt), "CB")


class _Multi(Translator):
    properties = ("NumInputs",)

    def setup(self, learn, state):
        self.num_inputs = self.layer.integer("NumInputs", 2)

    def same_format(self, xs):
        fmts = {x.fmt for x in xs}
        if len(fmts) != 1:
            raise self.error(f"inputs have different formats {sorted(fmts)}")
        return xs[0].fmt


class Addition(_Multi):
    def forward(self, xs, p, c):
        fmt = self.same_format(xs)
        shapes = {tuple(x.data.shape) for x in xs}
        if len(shapes) != 1:
            raise self.error(f"inputs have different sizes {sorted(shapes)}")
        out = xs[0].data
        for x in xs[1:]:
            out = out + x.data
        return Act(out, fmt)


class Concatenation(_Multi):
    properties = ("Dim", "NumInputs")

    def setup(self, learn, state):
        super().setup(learn, state)
        self.dim = self.layer.integer("Dim")

    def forward(self, xs, p, c):
        fmt = self.same_format(xs)
        return Act(torch.cat([x.data for x in xs], dim=matlab_dim_to_torch(self.dim, fmt)), fmt)


class DepthConcatenation(_Multi):
    def forward(self, xs, p, c):
        fmt = self.same_format(xs)
        return Act(torch.cat([x.data for x in xs], dim=channel_dim(fmt)), fmt)
