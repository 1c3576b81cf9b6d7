"""Elementwise activation layers and softmax (over the channel dimension).

Formulas from the MathWorks layer pages: leakyReluLayer ``x`` if x >= 0 else ``Scale * x`` (default
0.01); eluLayer ``x`` if x >= 0 else ``Alpha * (exp(x) - 1)`` (default 1); geluLayer
``x/2 (1 + erf(x/sqrt 2))`` or, with Approximation 'tanh', ``x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``;
swishLayer ``x * sigmoid(x)``; softmaxLayer over C
(https://www.mathworks.com/help/deeplearning/ref/nnet.cnn.layer.geluLayer.html, .../eluLayer.html, ...).
"""

from __future__ import annotations

import math

import torch

from .base import Act, Translator, channel_dim


class _Elementwise(Translator):
    def fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, xs, p, c):
        return Act(self.fn(xs[0].data), xs[0].fmt)


class ReLU(_Elementwise):
    def fn(self, x):
        return torch.relu(x)


class LeakyReLU(_Elementwise):
    properties = ("Scale",)
    def setup(self, learn, state):
        self.scale = self.layer.number("Scale", 0.01)

    def fn(self, x):
        return torch.where(x >= 0, x, self.scale * x)


class ELU(_Elementwise):
    properties = ("Alpha",)
    def setup(self, learn, state):
        self.alpha = self.layer.number("Alpha", 1.0)

    def fn(self, x):
        return torch.where(x >= 0, x, self.alpha * torch.expm1(torch.clamp(x, max=0)))


class GELU(_Elementwise):
    properties = ("Approximation",)
    def setup(self, learn, state):
        self.approx = self.layer.text("Approximation", "none").lower()
        if self.approx not in ("none", "tanh"):
            raise self.error(f"Approximation {self.approx!r} is not supported ('none' or 'tanh')")

    def fn(self, x):
        if self.approx == "tanh":
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


class Sigmoid(_Elementwise):
    def fn(self, x):
        return torch.sigmoid(x)


class Tanh(_Elementwise):
    def fn(self, x):
        return torch.tanh(x)


class Swish(_Elementwise):
    def fn(self, x):
        return x * torch.sigmoid(x)


class Softmax(Translator):
    def forward(self, xs, p, c):
        x = xs[0]
        return Act(torch.softmax(x.data, dim=channel_dim(x.fmt)), x.fmt)
