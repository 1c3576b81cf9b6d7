"""Curvature-based pruning: saliencies, rankings, and masks applied to a copy of the model.

* :func:`obd_saliencies`: optimal brain damage (LeCun et al. 1990), ``0.5 * H_ii * w_i^2``: the loss increase
  of zeroing ``w_i`` alone predicted by the quadratic model with the *exact* diagonal of ``H`` (at a
  minimum, where the gradient vanishes).
* :func:`obs_saliencies`: optimal brain surgeon (Hassibi & Stork 1993), ``w_q^2 / (2 [H^{-1}]_qq)``: the
  increase when ``w_q`` is zeroed and every other weight moves by the best correction
  ``dw = -w_q / [H^{-1}]_qq * H^{-1} e_q``, for a chosen set of candidates ``q``.
* :func:`trace_sensitivities`: HAWQ-style sensitivity per layer or output channel,
  ``trace(H_block) / numel * ||w_block||^2``, with the exact trace of each diagonal block (HAWQ estimates it
  by Hutchinson's method), ranked.
* :func:`prune`: masks from any of these (or magnitude, the baseline), applied to a deep copy of the model;
  OBS pruning removes weights greedily with rank-one updates of ``H^{-1}`` and moves the remaining weights.

``H`` is the curvature of the globally normalized objective (``curvature="hessian"`` or ``"ggn"``), plus
``damping * I`` for OBS (``H`` of a trained network is singular or indefinite; OBS needs it positive
definite). Flat indices follow :class:`~hessian_core.params.ParamSpec` order.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch

from ..arguments import check_choice, check_real
from ..errors import InvalidInputError
from ..memory import check_fits
from ..objective import Objective
from ..operators import GGNOperator, HessianOperator
from .curvature_matrices import dense_curvature, diagonal_curvature
from .factor import SymmetricFactor, check_dense_fits
from .solve import solve

CURVATURES = {"hessian": HessianOperator, "ggn": GGNOperator}
METHODS = ("obd", "obs", "magnitude", "trace")


def _objective(model, loss_fn, data, curvature: str, options: dict) -> Objective:
    check_choice(curvature, "curvature", tuple(CURVATURES))
    return Objective(model, loss_fn, data, **options)


def obd_saliencies(model, loss_fn, data, *, curvature: str = "hessian", **options) -> list[torch.Tensor]:
    """``0.5 * H_ii * w_i^2`` for every parameter, as tensors shaped like the parameters (ParamSpec order).
    ``**options``: :class:`~hessian_core.objective.Objective` options (``params``, ``memory_budget``...)."""
    objective = _objective(model, loss_fn, data, curvature, options)
    spec = objective.params
    w = spec.flatten(spec.primals())
    return spec.unflatten(0.5 * diagonal_curvature(objective, curvature) * w * w)


@dataclass
class OBSSaliencies:
    """OBS saliencies of a set of candidate weights.

    Attributes:
        indices: ``(m,)`` flat indices of the candidates (ParamSpec order).
        saliencies: ``(m,)`` ``w_q^2 / (2 [H^{-1}]_qq)``.
        inverse_diagonal: ``(m,)`` ``[(H + damping I)^{-1}]_qq``.
        columns: ``(P, m)`` ``(H + damping I)^{-1} e_q``.
        weights: ``(P,)`` the flat parameters.
    """

    indices: torch.Tensor
    saliencies: torch.Tensor
    inverse_diagonal: torch.Tensor
    columns: torch.Tensor = field(repr=False)
    weights: torch.Tensor = field(repr=False)

    def update(self, i: int) -> torch.Tensor:
        """The OBS change of all weights ``(P,)`` when candidate ``i`` (its position in ``indices``) alone is
        removed: ``-w_q / [H^{-1}]_qq * H^{-1} e_q`` (it sets ``w_q`` to zero exactly)."""
        q = int(self.indices[i])
        return -self.weights[q] / self.inverse_diagonal[i] * self.columns[:, i]

    def joint_update(self, subset) -> tuple[torch.Tensor, float]:
        """Removing the candidates ``subset`` (positions in ``indices``) together: the weight change
        ``-H^{-1} E_Q [H^{-1}]_QQ^{-1} w_Q`` ``(P,)`` and the predicted loss increase
        ``0.5 w_Q^T [H^{-1}]_QQ^{-1} w_Q``."""
        sub = torch.as_tensor(subset, dtype=torch.long)
        Q = self.indices[sub]
        S = self.columns[Q][:, sub]  # [H^{-1}]_QQ
        coef = torch.linalg.solve((S + S.T) / 2, self.weights[Q])
        return -self.columns[:, sub] @ coef, float(0.5 * self.weights[Q] @ coef)


def obs_saliencies(model, loss_fn, data, candidates=None, *, damping: float = 0.0, curvature: str = "hessian",
                   method: str = "auto", tol: float | None = None, **options) -> OBSSaliencies:
    """OBS saliencies ``w_q^2 / (2 [(H + damping I)^{-1}]_qq)`` of the candidates.

    Args:
        candidates: flat indices (ParamSpec order), or ``None`` for every entry of every weight tensor
            (parameters with two or more dimensions).
        damping: added to ``H``'s diagonal; ``H + damping I`` must be positive definite (else
            :class:`~hessian_core.errors.InvalidInputError` says by how much it is not).
        method, tol: how the ``m`` columns ``(H + damping I)^{-1} e_q`` are solved (:func:`solve`; ``"minres"``
            is refused: OBS needs a positive definite matrix). Memory: ``P * m`` numbers.
    """
    objective = _objective(model, loss_fn, data, curvature, options)
    spec = objective.params
    damping = check_real(damping, "damping")
    idx = default_candidates(spec) if candidates is None else torch.as_tensor(candidates, dtype=torch.long).flatten()
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= spec.numel:
        raise InvalidInputError(f"candidates must be flat indices in [0, {spec.numel}), got {idx.numel()} of them")
    method = check_choice(method, "method", ("auto", "dense", "cg"))
    item = torch.empty((), dtype=spec.dtype).element_size()
    check_fits(2 * spec.numel * idx.numel() * item, objective.budget, f"OBS columns for {idx.numel()} candidates",
               "fewer candidates at a time")
    E = torch.zeros(spec.numel, idx.numel(), dtype=spec.dtype, device=spec.device)
    cols_of = torch.arange(idx.numel(), device=spec.device)
    E[idx.to(spec.device), cols_of] = 1
    if method == "dense" or (method == "auto" and 3 * spec.numel ** 2 * item <= objective.budget):
        cols = _pd_factor(objective, curvature, damping).solve(E)
    else:
        cols = solve(CURVATURES[curvature](objective), E, damping, method="cg", tol=tol).x
    w = spec.flatten(spec.primals())
    inv_diag = cols[idx.to(spec.device), cols_of]
    return OBSSaliencies(idx, w[idx] ** 2 / (2 * inv_diag), inv_diag, cols, w)


def default_candidates(spec) -> torch.Tensor:
    """Flat indices of every entry of the weight tensors (two or more dimensions)."""
    parts = [torch.arange(s.start, s.stop) for s, shape in zip(spec.slices, spec.shapes) if len(shape) >= 2]
    if not parts:
        raise InvalidInputError("the model has no weight tensor (two or more dimensions) to prune; pass candidates=")
    return torch.cat(parts)


def _pd_factor(objective, curvature: str, damping: float) -> SymmetricFactor:
    spec = objective.params
    check_dense_fits(spec.numel, spec.dtype, objective.budget, 3, "the dense OBS inverse", "method='cg'")
    H = dense_curvature(objective, curvature, "obs_saliencies(..., method='cg')")
    H.diagonal().add_(damping)
    return SymmetricFactor(H, allow_indefinite=False, what=f"the {curvature.upper()} + {damping:g} I")


@dataclass
class Sensitivity:
    """HAWQ-style sensitivity of one block: ``module``, ``channel`` (``None`` for a whole layer), the exact
    ``trace`` of its diagonal Hessian block, ``numel``, ``sq_norm`` (``||w||^2``) and ``score =
    trace / numel * sq_norm``; ``positions``: its flat indices."""

    module: str
    channel: int | None
    trace: float
    numel: int
    sq_norm: float
    score: float
    positions: torch.Tensor = field(repr=False)


def trace_sensitivities(model, loss_fn, data, granularity: str = "layer", *, curvature: str = "hessian",
                        **options) -> list[Sensitivity]:
    """Sensitivity of every layer (all parameters of a module) or output channel (a row of a weight tensor,
    dim 0, with the module's bias entry), most sensitive first. Traces are exact (sums of the exact
    diagonal)."""
    granularity = check_choice(granularity, "granularity", ("layer", "channel"))
    objective = _objective(model, loss_fn, data, curvature, options)
    d = diagonal_curvature(objective, curvature)
    w = objective.params.flatten(objective.params.primals())
    out = []
    for module, channel, pos in _blocks(objective.params, granularity):
        tr, sq = float(d[pos].sum()), float((w[pos] ** 2).sum())
        out.append(Sensitivity(module, channel, tr, pos.numel(), sq, tr / pos.numel() * sq, pos))
    return sorted(out, key=lambda s: -s.score)


def _module_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _blocks(spec, granularity: str):
    """``(module, channel or None, flat positions)`` of every layer or output channel."""
    by_module: dict[str, list[int]] = {}
    for i, n in enumerate(spec.names):
        by_module.setdefault(_module_of(n), []).append(i)
    for module, members in by_module.items():
        if granularity == "layer":
            yield module, None, torch.cat([torch.arange(spec.slices[i].start, spec.slices[i].stop) for i in members])
            continue
        weights = [i for i in members if len(spec.shapes[i]) >= 2]
        if not weights:
            continue
        rows = spec.shapes[weights[0]][0]
        for c in range(rows):
            pos = []
            for i in members:
                shape, s = spec.shapes[i], spec.slices[i]
                if len(shape) >= 1 and shape[0] == rows:
                    per = math.prod(shape[1:])
                    pos.append(torch.arange(s.start + c * per, s.start + (c + 1) * per))
            yield module, c, torch.cat(pos)


@dataclass
class PruneResult:
    """Outcome of :func:`prune`.

    Attributes:
        model: a deep copy of the model with the pruned weights set to zero (and, for OBS, the others moved);
            the model passed in is unchanged.
        masks: ``{parameter name: bool tensor}``, ``True`` where a weight is kept.
        pruned: number of weights set to zero; ``sparsity``: that over the prunable weights.
        loss_before, loss_after: the objective on ``data`` for the model passed in and for the copy.
        scores: the saliencies that ranked the candidates (flat, or one per channel).
        method, granularity, scope: as requested.
    """

    model: torch.nn.Module
    masks: dict
    pruned: int
    sparsity: float
    loss_before: float
    loss_after: float
    scores: torch.Tensor
    method: str
    granularity: str
    scope: str


def prune(model, loss_fn, data, sparsity: float, *, method: str = "obd", granularity: str = "weight",
          scope: str = "global", damping: float = 0.0, curvature: str = "hessian", obs_steps: int = 128,
          **options) -> PruneResult:
    """Prune a fraction ``sparsity`` of the weights (entries of tensors with two or more dimensions) of a copy
    of ``model``, ranked by ``method``:

    * ``"obd"``: :func:`obd_saliencies`; ``"magnitude"``: ``|w|`` (the baseline);
    * ``"obs"``: greedy optimal brain surgeon on ``(H + damping I)^{-1}`` (dense, budget checked): in at most
      ``obs_steps`` steps the weights of smallest saliency are removed together, all weights take the joint
      OBS correction and ``H^{-1}`` its rank-``k`` update, and the saliencies are recomputed;
    * ``"trace"``: channels ranked by :func:`trace_sensitivities` (``granularity="channel"`` only).

    ``granularity="channel"`` removes whole output channels (a weight row and its bias entry) with the
    channel's summed saliency (``"obd"``, ``"magnitude"``: ``||w_c||^2``, ``"trace"``). ``scope="global"``
    ranks across layers, ``"layer"`` prunes each weight tensor (or layer) by the same fraction.
    """
    sparsity = check_real(sparsity, "sparsity", nonnegative=True, at_most=1.0)
    method = check_choice(method, "method", METHODS)
    granularity = check_choice(granularity, "granularity", ("weight", "channel"))
    scope = check_choice(scope, "scope", ("global", "layer"))
    if method == "trace" and granularity != "channel":
        raise InvalidInputError("method='trace' ranks blocks: use granularity='channel' (or obd/obs for weights)")
    if method == "obs" and granularity == "channel":
        raise InvalidInputError("channel pruning by OBS is not provided; use 'obd', 'trace' or 'magnitude'")
    objective = _objective(model, loss_fn, data, curvature, options)
    spec = objective.params
    w = spec.flatten(spec.primals()).clone()
    diagonal = (lambda: diagonal_curvature(objective, curvature))
    loss_before = objective.loss()
    cand = default_candidates(spec)
    group_of = _tensor_of(spec, cand)
    if granularity == "weight":
        k_of = _quotas(group_of, sparsity, scope)
        if method == "obs":
            Hinv = _pd_factor(objective, curvature, damping).inverse()
            keep, w, scores = _greedy_obs(Hinv, w, cand, k_of, group_of, obs_steps)
        else:
            scores = w[cand].abs() if method == "magnitude" else 0.5 * diagonal()[cand] * w[cand] ** 2
            keep = _select(scores, group_of, k_of)
        removed = cand[~keep]
    else:
        blocks = list(_blocks(spec, "channel"))
        if method == "trace":
            d = diagonal()
            scores = torch.tensor([float(d[p].sum()) / p.numel() * float((w[p] ** 2).sum()) for _, _, p in blocks])
        elif method == "obd":
            s = 0.5 * diagonal() * w * w
            scores = torch.tensor([float(s[p].sum()) for _, _, p in blocks])
        else:
            scores = torch.tensor([float((w[p] ** 2).sum()) for _, _, p in blocks])
        layer = [m for m, _, _ in blocks]
        layer_ids = torch.tensor([sorted(set(layer)).index(m) for m in layer])
        keep_blocks = _select(scores, layer_ids, _quotas(layer_ids, sparsity, scope))
        removed = torch.cat([p for (_, _, p), k in zip(blocks, keep_blocks) if not k]
                            or [torch.empty(0, dtype=torch.long)])
    w[removed] = 0
    pruned_model, masks = _apply(model, spec, w, removed)
    loss_after = Objective(pruned_model, loss_fn, data, **options).loss()
    n_removed = int(removed.numel())
    return PruneResult(pruned_model, masks, n_removed, n_removed / cand.numel(), loss_before, loss_after, scores,
                       method, granularity, scope)


def _tensor_of(spec, cand: torch.Tensor) -> torch.Tensor:
    """Which weight tensor each candidate belongs to (for ``scope="layer"``)."""
    tensor_id = torch.empty(spec.numel, dtype=torch.long)
    for i, s in enumerate(spec.slices):
        tensor_id[s] = i
    return tensor_id[cand]


def _quotas(group_of: torch.Tensor, sparsity: float, scope: str) -> dict:
    """How many to remove: ``{None: k}`` globally, ``{group: k_g}`` per group."""
    if scope == "global":
        return {None: int(round(sparsity * group_of.numel()))}
    return {int(g): int(round(sparsity * int((group_of == g).sum()))) for g in group_of.unique()}


def _select(scores: torch.Tensor, group_of: torch.Tensor, k_of: dict) -> torch.Tensor:
    """Keep-mask over candidates: the ``k`` lowest scores removed, globally or per group."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    for g, k in k_of.items():
        members = torch.arange(scores.numel()) if g is None else (group_of == g).nonzero().flatten()
        order = torch.argsort(scores[members].cpu(), stable=True)
        keep[members[order[:k]]] = False
    return keep


def _greedy_obs(Hinv, w, cand, k_of, group_of, steps):
    """Greedy OBS with block updates of the dense inverse ``Hinv`` (overwritten); returns (keep mask, new flat
    weights, first saliencies)."""
    cand_dev = cand.to(w.device)
    keep = torch.ones(cand.numel(), dtype=torch.bool)
    left = dict(k_of)
    total = sum(left.values())
    block = max(1, math.ceil(total / max(1, steps)))
    first = None
    while sum(left.values()) > 0:
        diag = Hinv.diagonal()[cand_dev]
        sal = (w[cand_dev] ** 2 / (2 * diag)).cpu()
        if first is None:
            first = sal.clone()
        sal[~keep] = math.inf
        chosen = []
        for g, k in left.items():
            if k == 0:
                continue
            pool = sal.clone()
            if g is not None:
                pool[group_of != g] = math.inf
            take = torch.argsort(pool, stable=True)[:min(k, block)]
            chosen.append(take)
            left[g] = k - take.numel()
        sel = torch.cat(chosen)
        Q = cand_dev[sel.to(w.device)]
        S = Hinv[Q][:, Q]
        cols = Hinv[:, Q].clone()
        w.sub_(cols @ torch.linalg.solve((S + S.T) / 2, w[Q]))
        # H^{-1} <- H^{-1} - H^{-1} E_Q [H^{-1}]_QQ^{-1} E_Q^T H^{-1}: in place, O(P^2 |Q|)
        Hinv.addmm_(cols, torch.linalg.solve((S + S.T) / 2, cols.T), alpha=-1.0)
        w[Q] = 0
        keep[sel] = False
    return keep, w, first if first is not None else torch.zeros(cand.numel())


def _apply(model, spec, w: torch.Tensor, removed: torch.Tensor):
    """A deep copy of ``model`` with the flat weights ``w`` written in, and the keep-masks."""
    pruned = copy.deepcopy(model)
    params = dict(pruned.named_parameters())
    flat_mask = torch.ones(spec.numel, dtype=torch.bool)
    flat_mask[removed] = False
    masks = {}
    with torch.no_grad():
        for name, value, mask in zip(spec.names, spec.unflatten(w), spec.unflatten(flat_mask)):
            params[name].copy_(value)
            masks[name] = mask.clone()
    return pruned, masks
