"""Data-parallel curvature on ``torch.distributed``: every rank holds a shard of the data, the results are
those of the whole data.

How it works
------------
Every quantity of an :class:`~hessian_core.objective.Objective` (loss, gradient, Hessian/GGN/Fisher
products, dense matrices, diagonals, blocks) is a weighted sum over batches divided once by the total
count (:meth:`Objective.accumulate`). With a process group initialized, each rank sums over its own
batches, then :class:`AllReduce` sums the partial results and the counts over all ranks with
``torch.distributed.all_reduce`` and the division uses the *global* count. So ranks may hold unequal
shards (a ``DistributedSampler`` split, or simply different lists of batches: 4 + 4 samples on rank 0
and 2 on rank 1 give exactly the mean over the 10 samples) and every rank receives the same result.

Rules of the SPMD game
----------------------
* Every rank runs the same program: the same model (same parameter values: checked when the objective
  is built), the same calls in the same order, with the same vectors. Results of reductions are
  identical on all ranks, so solvers built on them (eigsh, trace, Newton steps) stay in lockstep.
* Random probes must be the same on every rank: draw them from a generator seeded with
  :func:`shared_seed`, which broadcasts rank 0's seed.
* A rank that raises before a reduction leaves the others waiting in the collective until the process
  group's ``timeout``; ``torchrun`` and ``torch.multiprocessing.spawn`` then stop the whole job.

Backends: ``gloo`` reduces CPU (and CUDA) tensors, ``nccl`` only CUDA tensors (one GPU per rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .errors import InvalidInputError

__all__ = ["AllReduce", "install", "is_active", "shared_seed", "rank", "world_size"]


def is_active() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank(group=None) -> int:
    """This process's rank in ``group`` (0 when no process group is active)."""
    return dist.get_rank(group) if is_active() else 0


def world_size(group=None) -> int:
    """Number of ranks in ``group`` (1 when no process group is active)."""
    return dist.get_world_size(group) if is_active() else 1


def _comm_device(group, device: torch.device | None = None) -> torch.device:
    """Where small bookkeeping tensors live: NCCL reduces only CUDA tensors, gloo CPU ones."""
    if dist.get_backend(group) == "nccl":
        return device if device is not None and device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class AllReduce:
    """The :attr:`Objective.reducer <hessian_core.objective.Objective>` of a data-parallel objective.

    ``reducer(outs, total)`` sums every tensor of ``outs`` in place over the ranks of ``group`` (the
    default process group when ``None``) and returns the global total count. The count is reduced in
    float64, so sample counts stay exact whatever the dtype of the results.
    """

    def __init__(self, group=None):
        if not is_active():
            raise InvalidInputError(
                "no torch.distributed process group is initialized; call "
                "torch.distributed.init_process_group(...) first (torchrun sets up the environment for it)"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)

    def __repr__(self) -> str:
        return f"AllReduce(backend={self.backend!r}, rank={self.rank}, world_size={self.world_size})"

    def __call__(self, outs: list[torch.Tensor], total: float) -> float:
        for t in outs:
            if t.is_contiguous():
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
            else:  # collectives need contiguous memory
                buf = t.contiguous()
                dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
                t.copy_(buf)
        device = outs[0].device if outs else _comm_device(self.group)
        count = torch.tensor(float(total), dtype=torch.float64, device=device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=self.group)
        return float(count)

    def check_device(self, device: torch.device) -> None:
        """NCCL cannot reduce CPU tensors: say so before the first product, not deep inside it."""
        if self.backend == "nccl" and device.type != "cuda":
            raise InvalidInputError(
                f"the process group uses the 'nccl' backend, which reduces CUDA tensors only, but the parameters "
                f"are on {device}; move the model to its rank's GPU (model.to(f'cuda:{{local_rank}}')) or "
                "initialize the group with backend='gloo'"
            )

    def check_same_params(self, params) -> None:
        """Raise on every rank if the differentiated parameters differ between ranks.

        Data parallelism assumes one model; a rank that built it with another seed would silently mix
        curvatures of different models. Compares the number of parameters and two float64 moments of the
        values by reducing them with MAX and MIN (one collective, the same verdict on every rank).
        """
        device = _comm_device(self.group, params.device)
        flat = torch.cat([p.detach().reshape(-1).to(device=device, dtype=torch.float64) for p in params.tensors])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=device)
        local = torch.stack([torch.tensor(float(params.numel), dtype=torch.float64, device=device),
                             flat.sum(), (weights * flat).sum() / flat.numel(), flat.square().sum()])
        both = torch.cat([local, -local])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        hi, lo = both[:4], -both[4:]
        if int(hi[0]) != int(lo[0]):
            raise InvalidInputError(
                f"the ranks differentiate different numbers of parameters (from {int(lo[0])} to {int(hi[0])}); "
                "every rank must build the same model with the same params="
            )
        if not torch.allclose(hi, lo, rtol=1e-12, atol=1e-12 * (1.0 + float(hi.abs().max()))):
            raise InvalidInputError(
                "the model's parameter values differ between ranks; data-parallel curvature needs one model: "
                "seed every rank identically, load the same checkpoint, or broadcast the parameters from rank 0 "
                "(torch.distributed.broadcast(p.data, 0) for each parameter)"
            )


def install(objective, distributed: bool | None = None, group=None) -> None:
    """Make ``objective`` data-parallel: set ``objective.reducer`` (see :class:`AllReduce`).

    ``distributed``: ``None`` turns it on when a process group is initialized, ``True`` requires one,
    ``False`` keeps the objective local to this rank. When on, the parameters are checked to be the same on
    every rank (a collective: every rank must build the objective), and progress bars default to rank 0 only.
    """
    if distributed is None:
        distributed = is_active()
    elif not isinstance(distributed, bool):
        raise InvalidInputError(f"distributed must be True, False or None, got {distributed!r}")
    if not distributed:
        objective.reducer = None
        return
    reducer = AllReduce(group)
    reducer.check_device(objective.params.device)
    reducer.check_same_params(objective.params)
    objective.reducer = reducer
    if objective.progress is None and reducer.rank != 0:
        objective.progress = False


def shared_seed(seed: int | None = None, group=None) -> int:
    """A seed that is the same on every rank: rank 0's ``seed`` (or, when ``None``, a fresh random seed
    drawn on rank 0), broadcast to all. Without a process group, ``seed`` or a fresh random seed.

    Build every random probe from ``torch.Generator().manual_seed(shared_seed(seed))`` so that all ranks
    multiply the operator with the same vectors. A collective: every rank must call it.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), generator=None))
    seed = int(seed)
    if not is_active():
        return seed
    buf = torch.tensor([seed], dtype=torch.int64, device=_comm_device(group))
    dist.broadcast(buf, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return int(buf.item())
