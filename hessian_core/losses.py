"""Losses for models with their own conventions, usable as ``loss_fn`` with their normalization declared.

:class:`CausalLMLoss` is the next-token cross-entropy of a causal language model as Hugging Face
``transformers`` computes it (``ForCausalLMLoss``): the logits at position ``t`` predict the label at
``t + 1``, labels equal to ``ignore_index`` (``-100``) are left out, and the mean is over the tokens
counted. It reads the logits out of whatever the model returns (a tensor, a ``ModelOutput`` or dict with
``"logits"``, a tuple whose first entry they are), declares what its mean averages over (:meth:`count_fn`,
picked up by :class:`~hessian_core.objective.Objective`, so that many batches are normalized over all their
tokens exactly) and has a closed-form output Hessian (:mod:`hessian_core.loss_hessians`), so the GGN of a
language model never forms the graph of the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .arguments import check_choice, check_int
from .loss_hessians import output_of


class CausalLMLoss(nn.Module):
    """``loss_fn(outputs, labels)``: mean (or sum) over the counted tokens of ``-log p(labels[:, t+1] | :t)``.

    Args:
        ignore_index: label value that is not predicted (padding, prompt tokens); Hugging Face uses -100.
        reduction: ``"mean"`` over the counted tokens of the batch, or ``"sum"``.
        key: the entry of a ``ModelOutput``/dict output holding the logits ``(B, T, V)``.

    ``labels`` ``(B, T)`` are the input ids with the positions not to predict set to ``ignore_index``
    (Hugging Face's ``labels=``); the shift happens here. Equals ``model(input_ids, labels=labels).loss``
    of a ``transformers`` causal LM.
    """

    def __init__(self, ignore_index: int = -100, reduction: str = "mean", key: str = "logits"):
        super().__init__()
        self.ignore_index = check_int(ignore_index, "ignore_index", None)
        self.reduction = check_choice(reduction, "reduction", ("mean", "sum"))
        self.key = key

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, key={self.key!r}"

    def select(self, outputs) -> torch.Tensor:
        """The logits ``(B, T, V)`` in the model's ``outputs``."""
        return output_of(outputs, self.key)

    def forward(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        logits = self.select(outputs)
        if logits.dtype in (torch.float16, torch.bfloat16):  # as transformers does: the loss in float32
            logits = logits.float()
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                               ignore_index=self.ignore_index, reduction=self.reduction)

    def count_fn(self, inputs, labels: torch.Tensor) -> torch.Tensor:
        """Tokens this loss averages over in a batch: the labels after the shift that are not ignored."""
        return (labels[:, 1:] != self.ignore_index).sum()

    def position_weights(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(B, T)``: the weight of each position's ``-log p`` in this batch's loss (0 for the last position
        and for ignored labels, ``1 / count`` or 1 for the others)."""
        valid = (labels[:, 1:] != self.ignore_index).to(logits.dtype)
        a = torch.zeros(logits.shape[:-1], dtype=logits.dtype, device=logits.device)
        a[:, :-1] = valid
        if self.reduction == "mean":
            a = a / valid.sum()
        return a
