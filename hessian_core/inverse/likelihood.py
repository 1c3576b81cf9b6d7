"""The likelihood behind a torch loss, and the factors between our normalized objective and it.

hessian_core's objective is the loss as ``loss_fn`` reduces it, globally normalized: for ``"mean"`` the mean
over the data set (:mod:`hessian_core.objective`). A Laplace approximation needs the negative log likelihood
of the whole data set, ``NLL(theta) = -log p(D | theta)``. For the losses that are log likelihoods:

====================  ==============  ==========================================  ===========================
loss                  likelihood      ``NLL = a * L + c``, ``reduction="mean"``    ``reduction="sum"``
====================  ==============  ==========================================  ===========================
``MSELoss``           Gaussian,       ``a = N O / (2 sigma^2)``,                  ``a = 1 / (2 sigma^2)``,
                      noise ``sigma`` ``c = N O / 2 * log(2 pi sigma^2)``         same ``c``
``CrossEntropyLoss``  categorical     ``a = N``, ``c = 0``                        ``a = 1``
``BCEWithLogitsLoss`` Bernoulli       ``a = N O``, ``c = 0``                      ``a = 1``
====================  ==============  ==========================================  ===========================

``N`` is the number of samples and ``O`` the number of outputs per sample (``MSELoss`` and
``BCEWithLogitsLoss`` with ``"mean"`` average over all ``N O`` entries; ``CrossEntropyLoss`` over the ``N``
samples). The Hessian (or GGN) of the NLL is then ``a`` times that of ``L``. The empirical Fisher is not
linear in the loss: ``sum_n grad nll_n grad nll_n^T = (a^2 / W) * F_L`` with ``F_L`` the empirical Fisher
of ``L`` (``W = N`` for ``"mean"``, 1 for ``"sum"``): :meth:`Likelihood.curvature_scale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InvalidInputError

KINDS = {nn.MSELoss: "regression", nn.CrossEntropyLoss: "classification", nn.BCEWithLogitsLoss: "binary"}


def likelihood_kind(loss_fn) -> str:
    """``"regression"``, ``"classification"`` or ``"binary"`` for the supported torch losses; other losses and
    options that make a loss something other than a log likelihood are refused by name."""
    kind = next((k for cls, k in KINDS.items() if type(loss_fn) is cls), None)
    if kind is None:
        raise InvalidInputError(
            f"a Laplace approximation needs a loss that is a negative log likelihood; {type(loss_fn).__name__} is not "
            "one hessian_core knows: use nn.MSELoss (Gaussian, with sigma_noise), nn.CrossEntropyLoss (categorical) "
            "or nn.BCEWithLogitsLoss (Bernoulli)")
    if getattr(loss_fn, "weight", None) is not None or getattr(loss_fn, "pos_weight", None) is not None:
        raise InvalidInputError(f"{type(loss_fn).__name__} with class weights is not a likelihood; drop weight=")
    if getattr(loss_fn, "label_smoothing", 0.0):
        raise InvalidInputError("CrossEntropyLoss with label_smoothing is not a likelihood; use label_smoothing=0")
    return kind


@dataclass
class Likelihood:
    """A likelihood with the sizes that tie it to the objective (see the module docstring).

    ``kind``: ``"regression"``, ``"classification"``, ``"binary"``; ``reduction``: the objective's;
    ``n_samples``: ``N``; ``n_outputs``: ``O`` (outputs per sample).
    """

    kind: str
    reduction: str
    n_samples: int
    n_outputs: int

    @property
    def divisor(self) -> float:
        """``W``: what the objective divides by (``N`` for ``"mean"``, 1 for ``"sum"``)."""
        return float(self.n_samples) if self.reduction == "mean" else 1.0

    def nll_scale(self, sigma) -> torch.Tensor | float:
        """``a`` in ``NLL = a * L + c``; a tensor when ``sigma`` is one (differentiable)."""
        if self.reduction == "sum":
            terms = 1.0
        elif self.kind == "classification":
            terms = float(self.n_samples)
        else:
            terms = float(self.n_samples * self.n_outputs)
        return terms / (2 * sigma ** 2) if self.kind == "regression" else terms

    def nll(self, loss: float, sigma) -> torch.Tensor | float:
        """``NLL = a * L + c`` from the objective's value ``L``."""
        value = self.nll_scale(sigma) * loss
        if self.kind == "regression":
            value = value + self.n_samples * self.n_outputs / 2 * (torch.log(2 * math.pi * sigma ** 2)
                                                                   if isinstance(sigma, torch.Tensor)
                                                                   else math.log(2 * math.pi * sigma ** 2))
        return value

    def curvature_scale(self, curvature: str, sigma):
        """The factor from the curvature of ``L`` to that of the NLL: ``a`` for the Hessian and GGN,
        ``a^2 / W`` for the empirical Fisher."""
        a = self.nll_scale(sigma)
        return a * a / self.divisor if curvature == "ef" else a
