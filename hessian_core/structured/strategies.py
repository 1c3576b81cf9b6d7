"""Choosing a strategy: the structured Linear-chain path when the model and loss allow it, else ``None``
(the caller then uses the generic chunked, vmapped Hessian-vector products, which work for any module).

Every structured result goes through :meth:`Objective.accumulate` (global normalization over batches,
eval-mode policy, progress bar) and is checked against the model's own output on every batch; when any
batch turns out not to fit (inputs of another shape, a loss that couples samples), the partial result is
dropped and ``None`` is returned, so the fallback is silent and always exact. Any other failure inside a
structured path (an in-place activation, a loss the path cannot evaluate) falls back the same way, and
``objective.notes["structured"]`` records why for ``plan()``: a fast path never fails where the generic
path works.
"""

from __future__ import annotations

import torch

from .. import distributed
from ..errors import HessianCoreError
from .chain import NotApplicable, parse_chain
from .chain_batch import ChainBatch
from .chain_dense import add_batch_hessian, mirror_lower_blocks
from .chain_diagonal import add_batch_diagonal
from .factored_diagonal import add_batch_diagonal as add_factored_diagonal
from .factored_diagonal import parse_modules

#: temporaries may always use this much, however small the result (rows are chunked below it)
MIN_WORK_BYTES = 2**20
#: at most this much for the per-sample Hessians of the diagonal (samples are processed in slices)
DIAGONAL_WORK_BYTES = 256 * 2**20


def work_bytes(objective, result_bytes: int) -> int:
    """Bytes for temporaries next to a result of ``result_bytes``: what the budget leaves, at most a quarter
    of the result (so the peak stays well under 2x the result), and at least :data:`MIN_WORK_BYTES`."""
    left = objective.budget - result_bytes
    return int(max(min(left, result_bytes // 4), MIN_WORK_BYTES))


def _lowest_selected(chain) -> int:
    return min(li for li, layer in enumerate(chain.layers) if layer.selected)


def _accumulate_or_none(objective, contribution, out, desc: str):
    """``objective.accumulate(contribution, out)``, or ``None`` when some batch does not fit the structured
    path (:class:`NotApplicable`). The failure is recorded, not raised, so that every rank of a distributed
    objective finishes the same reductions; then all ranks agree (``any_rank``) and fall back together."""
    failed = []

    def guarded(ctx, acc, w):
        if failed:
            return
        try:
            contribution(ctx, acc, w)
        except NotApplicable:
            failed.append(ctx.index)
        except Exception as e:  # noqa: BLE001 - any failure of a fast path falls back to the generic path
            failed.append(ctx.index)
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            objective.notes["structured"] = f"{desc} failed on batch {ctx.index} ({type(e).__name__}: {first}); " \
                                            "the generic path ran instead"

    try:
        objective.accumulate(guarded, out, desc=desc)
    except HessianCoreError:  # the data's, the budget's or a peer rank's: the generic path would raise it too
        raise
    except Exception as e:  # noqa: BLE001 - a torch error on the structured result: the generic path decides
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        objective.notes["structured"] = f"{desc} failed ({type(e).__name__}: {first}); the generic path ran instead"
        return None
    return None if distributed.any_rank(objective, bool(failed)) else out


def dense_plan(objective) -> tuple[bool, str]:
    """Whether :func:`structured_dense` applies to this model (``True``, and why), from its structure; the
    loss is checked on every batch (a sum of per-sample terms), falling back exactly when it is not."""
    if parse_chain(objective) is None:
        return False, ("the model is not an nn.Sequential chain of nn.Linear layers and elementwise activations "
                       "(with every differentiated parameter in it, untied, without hooks)")
    return True, "a Linear chain: Kronecker-structured blocks, one GEMM per pair of layers (if the loss is a sum of " \
                 "per-sample terms on every batch)"


def diagonal_plan(objective) -> tuple[bool, str]:
    """Whether :func:`structured_diagonal` applies to this model, and why (see :func:`dense_plan`)."""
    if parse_chain(objective) is not None:
        return True, "a Linear chain: Hessian backpropagation to each layer (if the loss is a sum of per-sample terms)"
    if parse_modules(objective) is not None:
        return True, ("a Sequential of Linear/conv/pooling layers and elementwise activations: backpropagated "
                      "square-root factors (if the loss is a sum of per-sample terms)")
    return False, "the model is neither a Linear chain nor a Sequential of Linear/conv/pooling/elementwise modules"


def structured_dense(objective) -> torch.Tensor | None:
    """Exact dense Hessian ``(P, P)`` of a Linear chain, or ``None`` if the structured path does not apply.

    Memory: the result plus at most :func:`work_bytes` of temporaries (GEMM operands are chunked by rows)."""
    chain = parse_chain(objective)
    if chain is None:
        return None
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
    if _accumulate_or_none(objective, contribution, list(H.split(rows)), "dense Hessian (structured)") is None:
        return None
    mirror_lower_blocks(H, spec, chain)
    return H


def structured_diagonal(objective) -> torch.Tensor | None:
    """Exact Hessian diagonal ``(P,)`` of a Linear chain (Hessian backpropagation), of a Sequential with
    convolutions (square-root factors, :mod:`.factored_diagonal`), or ``None`` if neither applies."""
    chain = parse_chain(objective)
    if chain is None:
        return _factored_diagonal(objective)
    spec = objective.params
    out = torch.zeros(spec.numel, dtype=spec.dtype, device=spec.device)
    primals = spec.primals()
    lowest = _lowest_selected(chain)

    work = max(min(objective.budget // 2, DIAGONAL_WORK_BYTES), MIN_WORK_BYTES)

    def contribution(ctx, acc, w):
        batch = ChainBatch(chain, ctx, primals, lowest)
        for part in batch.samples(work // batch.bytes_per_sample()):
            add_batch_diagonal(acc, spec, chain, part, w)

    return _accumulate_or_none(objective, contribution, out, "Hessian diagonal (structured)")


def _factored_diagonal(objective) -> torch.Tensor | None:
    modules = parse_modules(objective)
    if modules is None:
        return None
    spec = objective.params
    out = torch.zeros(spec.numel, dtype=spec.dtype, device=spec.device)

    work = max(min(objective.budget // 2, DIAGONAL_WORK_BYTES), MIN_WORK_BYTES)

    def contribution(ctx, acc, w):
        add_factored_diagonal(acc, objective, modules, ctx, w, work)

    return _accumulate_or_none(objective, contribution, out, "Hessian diagonal (structured, factored)")
