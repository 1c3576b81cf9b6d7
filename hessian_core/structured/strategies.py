"""Choosing a structured strategy, or none (then the caller uses the generic chunked, vmapped
Hessian-vector products, which work for any module).

Dense Hessians and blocks: a chain of ``nn.Linear`` layers and elementwise activations uses the Kronecker
blocks of :mod:`.chain_dense`; any other model is traced (:mod:`.trace`) and, when every call has a rule and
the cost model says it pays, goes through second-order forward propagation (:mod:`.graph_engine`,
:mod:`.graph_assembly`). Diagonals: the Linear chain's Hessian backpropagation, the backpropagated
square-root factors of a Sequential with convolutions (:mod:`.factored_diagonal`), or the graph engine.

Every structured result goes through :meth:`Objective.accumulate` (global normalization over batches,
eval-mode policy, progress bar) and is checked against the model's own output on every batch; when any
batch turns out not to fit (an op without a rule, inputs of another shape, a loss that couples samples), the
partial result is dropped and ``None`` is returned with the reason, so the fallback is silent and always
exact. Any other failure inside a structured path (an in-place activation, a loss the path cannot evaluate)
falls back the same way, and ``objective.notes["structured"]`` records why for ``plan()``: a fast path never
fails where the generic path works.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .. import distributed
from ..errors import HessianCoreError
from ..memory import format_bytes
from .chain import NotApplicable, parse_chain
from .chain_batch import ChainBatch
from .chain_dense import add_batch_hessian, mirror_lower_blocks
from .chain_diagonal import add_batch_diagonal
from .factored_diagonal import add_batch_diagonal as add_factored_diagonal
from .factored_diagonal import parse_modules
from .graph_assembly import add_slice_diagonal, add_slice_hessian, mirror_blocks
from .graph_engine import BatchGraph

#: temporaries may always use this much, however small the result (rows are chunked below it)
MIN_WORK_BYTES = 2**20
#: at most this much for the per-sample Hessians of the diagonal (samples are processed in slices)
DIAGONAL_WORK_BYTES = 256 * 2**20
#: the graph engine's per-sample Gram matrices and tangents may use this much however small the result
GRAPH_WORK_BYTES = 32 * 2**20
#: errors of torch transforms on an op the engine's rules let through: the generic path then runs instead
_ENGINE_ERRORS = (RuntimeError, NotImplementedError, TypeError, ValueError, IndexError)


def work_bytes(objective, result_bytes: int) -> int:
    """Bytes for temporaries next to a result of ``result_bytes``: what the budget leaves, at most a quarter
    of the result (so the peak stays well under 2x the result), and at least :data:`MIN_WORK_BYTES`."""
    left = objective.budget - result_bytes
    return int(max(min(left, result_bytes // 4), MIN_WORK_BYTES))


def _lowest_selected(chain) -> int:
    return min(li for li, layer in enumerate(chain.layers) if layer.selected)


@dataclass
class Outcome:
    """A structured result, or ``None`` with the reason; ``path`` names the computation that ran."""

    value: torch.Tensor | None
    path: str


def _accumulate(objective, contribution, out, desc: str, path: str) -> Outcome:
    """``objective.accumulate(contribution, out)``, or no value when some batch does not fit the structured
    path (:class:`NotApplicable`, with its reason). The failure is recorded, not raised, so that every rank of
    a distributed objective finishes the same reductions; then all ranks agree (``any_rank``) and fall back
    together."""
    failed: list[str] = []

    def guarded(ctx, acc, w):
        if failed:
            return
        try:
            contribution(ctx, acc, w)
        except NotApplicable as e:
            failed.append(f"batch {ctx.index}: {e}")
        except Exception as e:  # noqa: BLE001 - any failure of a fast path falls back to the generic path
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            failed.append(f"batch {ctx.index}: {type(e).__name__}: {first}")
            objective.notes["structured"] = f"{path} ({desc}) failed on batch {ctx.index} ({type(e).__name__}: " \
                                            f"{first})"

    try:
        objective.accumulate(guarded, out, desc=desc)
    except HessianCoreError:  # the data's, the budget's or a peer rank's: the generic path would raise it too
        raise
    except Exception as e:  # noqa: BLE001 - a torch error on the structured result: the generic path decides
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        objective.notes["structured"] = f"{path} ({desc}) failed ({type(e).__name__}: {first})"
        return Outcome(None, f"{type(e).__name__}: {first}")
    if distributed.any_rank(objective, bool(failed)):
        return Outcome(None, failed[0] if failed else "another rank's batch does not fit the structured path")
    return Outcome(out, path)


# -- dense Hessian ---------------------------------------------------------------------------------
def dense_plan(objective) -> tuple[bool, str]:
    """Whether a structured dense Hessian applies to this model, and why: from its structure for a Linear
    chain, from the first batch's trace otherwise (the loss and later batches are checked when it runs)."""
    if parse_chain(objective) is not None:
        return True, ("a Linear chain: Kronecker-structured blocks, one GEMM per pair of layers (if the loss is a "
                      "sum of per-sample terms on every batch)")
    return _graph_plan(objective, diagonal=False)


def structured_dense(objective, force: bool = False) -> Outcome:
    """Exact dense Hessian ``(P, P)``: Linear chains first (:func:`chain_dense`), then the graph engine
    (where its cost model says it pays, or always with ``force``)."""
    out = chain_dense(objective) if parse_chain(objective) is not None else None
    if out is not None and out.value is not None:
        return out
    graph = graph_dense(objective, force)
    if graph.value is None and out is not None:
        return Outcome(None, f"Linear chain: {out.path}; graph: {graph.path}")
    return graph


def chain_dense(objective) -> Outcome:
    """Exact dense Hessian of a Linear chain (Kronecker blocks). Memory: the result plus at most
    :func:`work_bytes` of temporaries (GEMM operands are chunked by rows)."""
    chain = parse_chain(objective)
    spec = objective.params
    P = spec.numel
    H = torch.zeros(P, P, dtype=spec.dtype, device=spec.device)
    work = work_bytes(objective, H.numel() * H.element_size())
    primals = spec.primals()
    lowest = _lowest_selected(chain)

    def contribution(ctx, _row_blocks, w):
        batch = ChainBatch(chain, ctx, primals, lowest)
        for part in batch.samples(work // batch.bytes_per_sample()):
            add_batch_hessian(H, spec, chain, part, w, work)

    # Handed to accumulate as row blocks (views of H): its finiteness check then needs a temporary the size
    # of one block, not of H (torch.isfinite allocates a full-size abs() and two boolean masks).
    rows = max(1, (1 << 18) // max(P, 1))
    out = _accumulate(objective, contribution, list(H.split(rows)), "dense Hessian (structured)", "Linear chain")
    if out.value is None:
        return out
    mirror_lower_blocks(H, spec, chain)
    return Outcome(H, out.path)


def graph_dense(objective, force: bool = False) -> Outcome:
    """Exact dense Hessian by second-order forward propagation through the traced graph. Memory: the result
    plus the per-sample Gram matrices and tangents of a slice of samples (at most ``max(|H| / 2, 32 MiB)``
    within the budget)."""
    spec = objective.params
    P = spec.numel
    H = torch.zeros(P, P, dtype=spec.dtype, device=spec.device)
    size = H.numel() * H.element_size()
    work = int(max(min(objective.budget - size, max(size // 2, GRAPH_WORK_BYTES)), MIN_WORK_BYTES))
    primals = spec.primals()
    layout: list = []  # the groups of the first batch; every batch must place its blocks alike
    modes: set[str] = set()

    def contribution(ctx, _rows, w):
        bg = _batch_graph(objective, ctx, primals, diagonal=False, force=force)
        geometry = [g.geometry() for g in bg.groups]
        if not layout:
            layout.extend([geometry, bg.groups])
        elif layout[0] != geometry:
            raise NotApplicable("batches differ in their tangent groups")
        modes.add(_mode(bg))
        _check_slice(bg, work)
        try:
            for sl in bg.samples(work // bg.bytes_per_sample()):
                add_slice_hessian(H, bg, bg.propagate(sl), w, work)
        except _ENGINE_ERRORS as e:
            _not_applicable(e)

    rows = max(1, (1 << 18) // max(P, 1))
    out = _accumulate(objective, contribution, list(H.split(rows)), "dense Hessian (structured)", "graph")
    if out.value is None:
        return out
    mirror_blocks(H, layout[1])
    return Outcome(H, f"graph ({', '.join(sorted(modes))})")


# -- diagonal --------------------------------------------------------------------------------------
def diagonal_plan(objective) -> tuple[bool, str]:
    """Whether a structured diagonal applies to this model, and why (see :func:`dense_plan`)."""
    if parse_chain(objective) is not None:
        return True, "a Linear chain: Hessian backpropagation to each layer (if the loss is a sum of per-sample terms)"
    if parse_modules(objective) is not None:
        return True, ("a Sequential of Linear/conv/pooling layers and elementwise activations: backpropagated "
                      "square-root factors (if the loss is a sum of per-sample terms)")
    return _graph_plan(objective, diagonal=True)


def structured_diagonal(objective, force: bool = False) -> Outcome:
    """Exact Hessian diagonal ``(P,)``: a Linear chain's Hessian backpropagation, a Sequential's square-root
    factors (:mod:`.factored_diagonal`), else the graph engine (see :func:`structured_dense`)."""
    if parse_chain(objective) is not None:
        out = chain_diagonal(objective)
    elif parse_modules(objective) is not None:
        out = factored_diagonal(objective)
    else:
        return graph_diagonal(objective, force)
    if out.value is not None:
        return out
    graph = graph_diagonal(objective, force)
    return graph if graph.value is not None else Outcome(None, f"{out.path}; graph: {graph.path}")


def chain_diagonal(objective) -> Outcome:
    chain = parse_chain(objective)
    spec = objective.params
    out = torch.zeros(spec.numel, dtype=spec.dtype, device=spec.device)
    primals = spec.primals()
    lowest = _lowest_selected(chain)
    work = max(min(objective.budget // 2, DIAGONAL_WORK_BYTES), MIN_WORK_BYTES)

    def contribution(ctx, acc, w):
        batch = ChainBatch(chain, ctx, primals, lowest)
        for part in batch.samples(work // batch.bytes_per_sample()):
            add_batch_diagonal(acc, spec, chain, part, w)

    return _accumulate(objective, contribution, out, "Hessian diagonal (structured)", "Linear chain")


def factored_diagonal(objective, ggn: bool = False) -> Outcome:
    """The Hessian's (``ggn=True``: the generalized Gauss-Newton's) exact diagonal of a Sequential by
    backpropagated square-root factors (:mod:`.factored_diagonal`)."""
    modules = parse_modules(objective)
    spec = objective.params
    out = torch.zeros(spec.numel, dtype=spec.dtype, device=spec.device)
    work = max(min(objective.budget // 2, DIAGONAL_WORK_BYTES), MIN_WORK_BYTES)

    def contribution(ctx, acc, w):
        add_factored_diagonal(acc, objective, modules, ctx, w, work, ggn)

    kind = "GGN" if ggn else "Hessian"
    return _accumulate(objective, contribution, out, f"{kind} diagonal (structured, factored)",
                       "square-root factors")


def structured_ggn_diagonal(objective, force: bool = False) -> Outcome:
    """Exact GGN diagonal ``(P,)`` of a Sequential of Linear/conv/pooling layers and elementwise activations
    (square-root factors of the per-sample output Hessians backpropagated), else ``Outcome(None, why)``."""
    if parse_modules(objective) is None:
        return Outcome(None, "not a Sequential of Linear/conv/pooling layers and elementwise activations")
    return factored_diagonal(objective, ggn=True)


def graph_diagonal(objective, force: bool = False) -> Outcome:
    spec = objective.params
    out = torch.zeros(spec.numel, dtype=spec.dtype, device=spec.device)
    primals = spec.primals()
    work = max(min(objective.budget // 2, DIAGONAL_WORK_BYTES), MIN_WORK_BYTES)
    modes: set[str] = set()

    def contribution(ctx, acc, w):
        bg = _batch_graph(objective, ctx, primals, diagonal=True, force=force)
        modes.add(_mode(bg))
        _check_slice(bg, work)
        try:
            for sl in bg.samples(work // bg.bytes_per_sample()):
                add_slice_diagonal(acc, bg, bg.propagate(sl), w)
        except _ENGINE_ERRORS as e:
            _not_applicable(e)

    out = _accumulate(objective, contribution, out, "Hessian diagonal (structured)", "graph")
    return out if out.value is None else Outcome(out.value, f"graph ({', '.join(sorted(modes))})")


# -- the graph engine's applicability --------------------------------------------------------------
def _batch_graph(objective, ctx, primals, diagonal: bool, force: bool = False) -> BatchGraph:
    """The traced batch, if the graph engine applies to it and pays (its cost model against ``P``
    Hessian-vector products; not asked with ``force``); else :class:`NotApplicable`."""
    try:
        bg = BatchGraph(objective, ctx, primals, diagonal=diagonal)
    except _ENGINE_ERRORS as e:
        _not_applicable(e, "tracing: ")
    ours, generic = bg.cost()
    if ours > generic and not force:
        raise NotApplicable(f"second-order propagation would cost about {ours / generic:.1f}x the "
                            f"Hessian-vector products here ({_mode(bg)})")
    return bg


def _not_applicable(e: Exception, where: str = ""):
    """A torch transform failed on some op: the generic path runs instead (our own errors are real)."""
    if isinstance(e, HessianCoreError):
        raise e
    raise NotApplicable(f"{where}{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def _check_slice(bg: BatchGraph, work: int) -> None:
    if not bg.per_sample and bg.bytes_per_sample() * bg.N > 4 * work:
        raise NotApplicable(f"the whole batch is one unit ({_mode(bg)}) and its tangents need "
                            f"{format_bytes(bg.bytes_per_sample() * bg.N)}, more than the work area")


def _mode(bg: BatchGraph) -> str:
    if bg.per_sample:
        kron = sum(g.size for g in bg.groups if g.kind == "kron")
        return f"per sample, {bg.K} tangent columns ({kron} of them Kronecker-factored)"
    return f"the batch as one unit, {bg.K} tangent columns"


def _graph_plan(objective, diagonal: bool) -> tuple[bool, str]:
    """Trace the first batch and say whether the graph engine takes it, and why."""
    what = "diagonal" if diagonal else "dense"
    try:
        with contextlib.closing(objective.contexts()) as batches:
            ctx = next(batches)
            bg = _batch_graph(objective, ctx, objective.params.primals(), diagonal)
    except NotApplicable as e:
        return False, f"the traced model does not fit second-order propagation ({e})"
    ours, generic = bg.cost()
    return True, (f"second-order propagation through the traced graph ({what}; {_mode(bg)}; estimated "
                  f"{generic / max(ours, 1):.1f}x fewer operations than Hessian-vector products)")
