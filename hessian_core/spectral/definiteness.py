"""What is known about an operator's definiteness before any product: positive semi-definite by
construction (empirical Fisher, Gauss-Newton of a loss convex in the outputs, their sums and positive
multiples), so that the spectral routines can stop as soon as a Ritz value reaches zero."""

from __future__ import annotations

from torch import nn

from ..arguments import check_optional_bool

#: torch losses whose Hessian with respect to the model outputs is positive semi-definite (convex in the
#: outputs, or linear in them), for any targets: the Gauss-Newton matrix of these is PSD.
CONVEX_LOSSES = (nn.MSELoss, nn.CrossEntropyLoss, nn.NLLLoss, nn.BCEWithLogitsLoss, nn.BCELoss, nn.L1Loss,
                 nn.SmoothL1Loss, nn.HuberLoss, nn.KLDivLoss, nn.SoftMarginLoss, nn.MultiLabelSoftMarginLoss)


def known_psd(op, psd: bool | None = None) -> bool:
    """``psd`` when given (the caller knows); else whether ``op`` is positive semi-definite by construction:
    :class:`~hessian_core.operators.EmpiricalFisherOperator`, :class:`~hessian_core.operators.GGNOperator`
    of a loss in :data:`CONVEX_LOSSES` (an ``nn.Module`` instance; a plain function is not recognized), the
    identity, ``alpha * A`` with ``alpha >= 0`` and sums of such operators."""
    given = check_optional_bool(psd, "psd")
    if given is not None:
        return given
    from ..operators import (
        EmpiricalFisherOperator,
        GGNOperator,
        IdentityOperator,
        ScaledOperator,
        SumOperator,
    )
    from ..operators.base import CountingView

    if isinstance(op, CountingView):
        return known_psd(op.op)
    if isinstance(op, (EmpiricalFisherOperator, IdentityOperator)):
        return True
    if isinstance(op, GGNOperator):
        loss = op.objective.loss_fn
        if isinstance(loss, nn.BCELoss) and loss.weight is not None:
            return bool((loss.weight >= 0).all())
        if isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss)) and loss.weight is not None:
            return bool((loss.weight >= 0).all())
        return isinstance(loss, CONVEX_LOSSES)
    if isinstance(op, ScaledOperator):
        return op.alpha >= 0 and known_psd(op.op)
    if isinstance(op, SumOperator):
        return all(known_psd(t) for t in op.terms)
    return False
