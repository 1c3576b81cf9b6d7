"""Influence functions (Koh & Liang 2017, "up-weighting"): :func:`influence_scores`.

For the training objective ``L(theta) = sum_i l_i(theta) / W`` (``W = n`` for ``"mean"``, 1 for ``"sum"``)
at a minimizer ``theta*`` of ``L + damping/2 ||theta||^2``, up-weighting training sample ``i`` by ``eps``
moves the minimizer by ``-eps (H + damping I)^{-1} grad l_i`` (``H`` the Hessian of ``L``), so the loss of
test sample ``j`` changes by ``eps * score[j, i]`` with

    score[j, i] = -grad L_test_j^T (H + damping I)^{-1} grad l_i.

Removing sample ``i`` from a ``"mean"`` objective is ``eps = -1/n``: the test loss changes by about
``-score[j, i] / n`` (``-score[j, i]`` for ``"sum"``). ``damping`` is the L2 coefficient of the training
objective when there is one (weight decay ``wd`` in ``L + wd/2 ||theta||^2``), and a regularizer otherwise
(at a point that is not a strict minimum ``H`` is singular or indefinite).
"""

from __future__ import annotations

import contextlib

import torch

from ..arguments import check_choice
from ..errors import InvalidInputError
from ..objective import Objective
from ..operators import GGNOperator, HessianOperator
from .inverse_operator import InverseOperator
from .per_sample import check_separable, losses_and_gradients, num_samples, refuse_train_mode, sample_chunk

CURVATURES = {"hessian": HessianOperator, "ggn": GGNOperator}


def influence_scores(model, loss_fn, train_data, test_data, damping: float = 0.0, *, curvature: str = "hessian",
                     method: str = "auto", tol: float | None = None, maxiter: int | None = None,
                     preconditioner=None, **options) -> torch.Tensor:
    """Koh & Liang's up-weighting influence of every training sample on every test sample's loss.

    Args:
        model, loss_fn: as everywhere (``loss_fn`` a mean or sum over samples, see the module docstring).
        train_data, test_data: ``(inputs, targets)`` or iterables of them, in a fixed order (a shuffling
            ``DataLoader`` is refused: the columns and rows follow the data's order).
        damping: added to the curvature's diagonal (the training objective's L2 coefficient, if any).
        curvature: ``"hessian"`` (exact) or ``"ggn"`` (generalized Gauss-Newton, positive semi-definite).
        method, tol, maxiter, preconditioner: how ``(H + damping I)^{-1}`` is applied (:func:`solve`):
            ``"auto"`` factors the dense matrix once when it fits (``P <= 2000``), else block CG.
        **options: :class:`~hessian_core.objective.Objective` options (``params``, ``memory_budget``,
            ``progress``, ...), for both data sets.

    Returns:
        ``(n_test, n_train)`` tensor ``score[j, i] = -grad L_test_j^T (H + damping I)^{-1} grad l_i``, in the
        model's dtype. Memory: the test gradients and their solves, ``2 P`` numbers per test sample (in
        chunks of test samples within the memory budget, one pass over the training data per chunk), plus
        the training gradients of one chunk of samples.
    """
    curvature = check_choice(curvature, "curvature", tuple(CURVATURES))
    for name, data in (("train_data", train_data), ("test_data", test_data)):
        _refuse_shuffled(data, name)
    train = Objective(model, loss_fn, train_data, **options)
    test = Objective(model, loss_fn, test_data, **options)
    for o in (train, test):
        refuse_train_mode(o, "influence_scores")
        if o.reducer is not None:
            raise InvalidInputError("influence_scores does not run distributed yet; pass distributed=False")
    inv = InverseOperator(CURVATURES[curvature](train), damping, method=method, tol=tol, maxiter=maxiter,
                          preconditioner=preconditioner)
    P = train.params.numel
    test_chunk = sample_chunk(test, 2 * P)
    rows = []
    with inv.reuse():
        pending: list[torch.Tensor] = []
        for G_test in _gradients(test, "test gradients", max(test_chunk // 2, 1)):
            pending.append(G_test)
            if sum(g.shape[1] for g in pending) >= test_chunk:
                rows.append(_scores(inv, train, torch.cat(pending, dim=1)))
                pending = []
        if pending:
            rows.append(_scores(inv, train, torch.cat(pending, dim=1)))
    return torch.cat(rows, dim=0)


def _scores(inv: InverseOperator, train: Objective, G_test: torch.Tensor) -> torch.Tensor:
    """``-(G_test^T (H + damping I)^{-1}) G_train`` for one chunk of test gradients ``(P, m)``: ``(m, n_train)``."""
    X = inv.matmat(G_test)
    P = train.params.numel
    step = sample_chunk(train, P, reserved=2 * X.numel() * X.element_size())
    return torch.cat([-(X.T @ G) for G in _gradients(train, "influence", step)], dim=1)


def _gradients(objective: Objective, desc: str, step: int):
    """Per-sample gradients ``(P, m)`` of the objective's data, in order, ``step`` samples at a time."""
    checked = False
    with contextlib.closing(objective.contexts(desc)) as batches:
        for ctx in batches:
            if not checked:
                check_separable(objective, ctx)
                checked = True
            n = num_samples(ctx)
            for a in range(0, n, step):
                yield losses_and_gradients(objective, ctx, a, min(a + step, n))[1]


def _refuse_shuffled(data, name: str) -> None:
    sampler = getattr(data, "sampler", None)
    if isinstance(data, torch.utils.data.DataLoader) and isinstance(sampler, torch.utils.data.RandomSampler):
        raise InvalidInputError(
            f"{name} is a DataLoader with shuffle=True: its samples come in a new order on every pass, so the "
            "rows/columns of the scores would not belong to fixed samples; use shuffle=False")
