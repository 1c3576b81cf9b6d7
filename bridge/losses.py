"""MATLAB's loss definitions (not torch's), with their normalization declared to the core.

Each loss is called on one minibatch in torch layout (see layout.py) and returns that minibatch's loss
as MATLAB defines it; ``reduction`` and ``count(inputs, targets)`` tell the core's
:class:`~hessian_core.objective.Objective` how to combine minibatches so that several minibatches give
exactly the loss of their concatenation (global normalization).

=======================  ====================================================================  ==========
name                     per-minibatch value (N = observations, B)                             MATLAB ref
=======================  ====================================================================  ==========
``mse``                  ``sum((Y - T).^2) / (2 N)`` (half MSE)                                dlarray.mse
``l2loss``               ``sum((Y - T).^2) / N``                                               l2loss
``l1loss``               ``sum(abs(Y - T)) / N``                                               l1loss
``huber``                ``sum(h) / N``, h = d^2/2 if abs(d) <= delta else delta(abs(d) - delta/2)      huber
``crossentropy``         ``-sum(T .* log(Y)) / N``, Y probabilities (after softmax)            crossentropy
``binary-crossentropy``  ``-sum(T log Y + (1 - T) log(1 - Y)) / N`` (multilabel)               crossentropy
``index-crossentropy``   ``-sum(log Y(T(n), n)) / N``, T class indices (1-based)               trainnet
=======================  ====================================================================  ==========

Sums run over all elements (channels, spatial positions and time steps); N is the number of
observations (B). ``loss_options`` (MATLAB names): ``NormalizationFactor`` 'batch-size' (default) |
'all-elements' (divide by the number of elements instead; regression losses only) | 'none' (a sum);
``TransitionPoint`` (huber, default 1); ``ClassificationMode`` 'single-label' | 'multilabel'
(crossentropy). Pages: https://www.mathworks.com/help/deeplearning/ref/dlarray.mse.html,
.../ref/dlarray.l2loss.html, .../ref/dlarray.huber.html, .../ref/dlarray.crossentropy.html.
"""

from __future__ import annotations

import torch

from hessian_core.errors import InvalidInputError

from .layout import channel_dim_of

#: The one list of loss names (the MATLAB help, functionSignatures.json and the tests are checked against it).
LOSSES = ("mse", "l2loss", "l1loss", "huber", "crossentropy", "binary-crossentropy", "index-crossentropy")
_REGRESSION = ("l2loss", "l1loss", "huber")
_PROBABILITY = ("crossentropy", "binary-crossentropy", "index-crossentropy")


def default_loss(output_class: str) -> str:
    """The loss used when none is named, from the class of the network's output layer (the one rule, said
    in every wrapper's help): 'crossentropy' after a softmaxLayer, else 'mse'."""
    return "crossentropy" if output_class.rsplit(".", 1)[-1] == "SoftmaxLayer" else "mse"


class MatlabLoss:
    """``loss(Y, T) -> scalar`` for one minibatch; ``reduction`` and ``count`` for the core."""

    def __init__(self, name: str, options: dict | None = None, fmt: str = "CB"):
        name = str(name).lower()
        if name not in LOSSES:
            raise InvalidInputError(f"loss {name!r} is not supported; supported: {', '.join(LOSSES)}")
        options = {str(k): v for k, v in dict(options or {}).items()}
        known = {"NormalizationFactor", "TransitionPoint", "ClassificationMode"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInputError(f"loss_options {unknown} are not supported (supported: {sorted(known)})")
        self.name = name
        self.fmt = fmt
        norm = str(options.get("NormalizationFactor", "batch-size")).lower()
        allowed = ("batch-size", "all-elements", "none") if name in _REGRESSION else ("batch-size", "none")
        if norm not in allowed:
            hint = ("; MATLAB's mse takes no NormalizationFactor: 'l2loss' with 'all-elements' is the sum of squares "
                    "divided by the number of elements") if name == "mse" else ""
            raise InvalidInputError(f"NormalizationFactor {norm!r} is not supported for {name} "
                                    f"({', '.join(allowed)}){hint}")
        self.norm = norm
        self.reduction = "sum" if norm == "none" else "mean"
        self.delta = float(options.get("TransitionPoint", 1.0))
        if not self.delta > 0:
            raise InvalidInputError(f"TransitionPoint must be positive, got {self.delta}")
        mode = str(options.get("ClassificationMode", "single-label")).lower()
        if mode not in ("single-label", "multilabel"):
            raise InvalidInputError(f"ClassificationMode {mode!r} is not 'single-label' or 'multilabel'")
        if name == "binary-crossentropy":
            mode = "multilabel"
        self.multilabel = mode == "multilabel"

    def __repr__(self) -> str:
        return f"MatlabLoss({self.name!r}, NormalizationFactor={self.norm!r})"

    def check_outputs(self, Y: torch.Tensor, output: str) -> None:
        """Refuse outputs a probability loss cannot take (before any work): crossentropy, as MATLAB defines
        it, takes probabilities; on other values it is not a loss but a NaN or a wrong number."""
        if self.name not in _PROBABILITY or Y.numel() == 0:
            return
        lo, hi = float(Y.min()), float(Y.max())
        upper = 1.0 + 1e-6
        if lo >= 0 and hi <= upper:
            return
        layer = "sigmoidLayer" if self.multilabel else "softmaxLayer"
        raise InvalidInputError(
            f"{self.name} takes probabilities, but the network output ({output}) has values in "
            f"[{lo:.4g}, {hi:.4g}]. End the network with a {layer}"
            + ("" if self.multilabel else " (sigmoidLayer for 'binary-crossentropy' or ClassificationMode "
               "'multilabel')") + ", or choose a loss for unbounded outputs such as 'mse'")

    # -- the core's normalization contract ---------------------------------------------------------
    def count(self, inputs, targets) -> float:
        """What one minibatch's loss is divided by: its observations, or its elements ('all-elements')."""
        if self.norm == "all-elements":
            return float(targets.numel())
        return float(targets.shape[0])  # batch dimension first in every torch layout

    # -- value -------------------------------------------------------------------------------------
    def total(self, Y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """The un-normalized sum of the loss over the minibatch."""
        if self.name == "index-crossentropy":
            return self._index_ce(Y, T)
        if Y.shape != T.shape:
            raise InvalidInputError(f"{self.name}: predictions have size {tuple(Y.shape)} (torch layout of "
                                    f"{self.fmt!r}) but targets have {tuple(T.shape)}")
        d = Y - T
        if self.name == "mse":
            return d.square().sum() / 2
        if self.name == "l2loss":
            return d.square().sum()
        if self.name == "l1loss":
            return d.abs().sum()
        if self.name == "huber":
            a = d.abs()
            return torch.where(a <= self.delta, 0.5 * d.square(), self.delta * (a - 0.5 * self.delta)).sum()
        # crossentropy / binary-crossentropy on probabilities
        if self.multilabel:
            return -(T * torch.log(Y) + (1 - T) * torch.log(1 - Y)).sum()
        return -(T * torch.log(Y)).sum()

    def _index_ce(self, Y, T):
        cdim = channel_dim_of(self.fmt)
        if T.shape[cdim] != 1 or T.dim() != Y.dim():
            raise InvalidInputError(f"index-crossentropy: targets must hold one class index per observation "
                                    f"(size 1 in C), got {tuple(T.shape)} for predictions {tuple(Y.shape)}")
        idx = T.detach()
        C = Y.shape[cdim]
        if bool(((idx != idx.round()) | (idx < 1) | (idx > C)).any()):
            raise InvalidInputError(f"index-crossentropy: targets must be integers in 1..{C} (1-based class indices)")
        return -torch.log(torch.gather(Y, cdim, idx.long() - 1)).sum()

    def __call__(self, Y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        s = self.total(Y, T)
        if self.reduction == "sum":
            return s
        return s / self.count(None, T)
