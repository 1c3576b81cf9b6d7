"""Data-parallel curvature on ``torch.distributed``: every rank holds a shard of the data, the results are
those of the whole data.

How it works
------------
Every quantity of an :class:`~hessian_core.objective.Objective` (loss, gradient, Hessian/GGN/Fisher
products, dense matrices, diagonals, blocks) is a weighted sum over batches divided once by the total
count (:meth:`Objective.accumulate`). With a process group initialized, each rank sums over its own
batches, then :class:`AllReduce` sums the partial results and the counts over all ranks with
``torch.distributed.all_reduce`` and the division uses the *global* count. So ranks may hold unequal
shards (strided ``Subset`` s, or simply different lists of batches: 4 + 4 samples on rank 0 and 2 on
rank 1 give exactly the mean over the 10 samples) and every rank receives the same result. (A
``DistributedSampler`` pads the shards to equal length by repeating samples, unless the ranks divide the
data set: the objective is then that of the padded data.)

Rules of the SPMD game
----------------------
* Every rank runs the same program: the same model (same parameter values and some data on every rank:
  checked when an objective is built), the same calls in the same order, with the same vectors. Results
  of reductions are identical on all ranks, so solvers built on them (eigsh, trace, Newton) stay in lockstep.
* While a process group is initialized, every objective reduces over the ranks (``distributed=None``);
  pass ``distributed=False`` for a computation on this rank's data alone (e.g. on rank 0 only).
* Random probes must be the same on every rank: :func:`shared_seed` broadcasts rank 0's seed. The
  spectral routines use it when ``seed=None`` (so such a call is a collective: pass ``seed=`` for a
  rank-local spectral call).
* The Newton-family optimizers take a closure: :func:`closure` makes one whose loss, gradient and
  Hessian products are global.
* Ranks that reach a reduction with results of different sizes, or after a rank called
  :meth:`AllReduce.abort`, all raise the same error. A rank that raises in its local pass without
  ``abort()`` leaves the others waiting in the collective until the process group's ``timeout``;
  ``torchrun`` and ``torch.multiprocessing.spawn`` then stop the whole job. :func:`any_rank` makes
  decisions taken from local data the same on every rank.

Backends: ``gloo`` reduces CPU (and CUDA) tensors, ``nccl`` only CUDA tensors (one GPU per rank).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from .errors import HessianCoreError, InvalidInputError

__all__ = ["AllReduce", "any_rank", "closure", "setup", "is_active", "rank", "shared_seed", "world_size"]


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
        if device is not None and device.type == "cuda":
            return device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class AllReduce:
    """The :attr:`Objective.reducer <hessian_core.objective.Objective>` of a data-parallel objective.

    ``reducer(outs, total)`` sums every tensor of ``outs`` in place over the ranks of ``group`` (the
    default process group when ``None``) and returns the global total count (summed in float64, exact
    whatever the dtype of the results). Before the sums, one ``all_gather`` of four numbers per rank
    (count, failure flag, number and total size of the results) lets every rank stop with the same error
    when a rank failed (:meth:`abort`) or the ranks took different code paths, instead of hanging in, or
    adding up, mismatched collectives.
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
        self.device: torch.device | None = None  # of the reduced tensors; set by check_device

    def __repr__(self) -> str:
        return f"AllReduce(backend={self.backend!r}, rank={self.rank}, world_size={self.world_size})"

    def __call__(self, outs: list[torch.Tensor], total: float) -> float:
        numel = float(sum(t.numel() for t in outs))
        table = self._gather_status([float(total), 0.0, float(len(outs)), numel])
        failed = [r for r in range(self.world_size) if table[r, 1] > 0]
        if failed:
            raise HessianCoreError(
                f"rank(s) {failed} failed during this computation (see their error); every rank stops here")
        if not bool((table[:, 2:] == table[0, 2:]).all()):
            sizes = ", ".join(f"rank {r}: {int(table[r, 2])} tensors of {int(table[r, 3])} numbers in all"
                              for r in range(self.world_size))
            raise HessianCoreError(
                f"the ranks reduce results of different sizes ({sizes}): they took different code paths; "
                "every rank must make the same calls with the same arguments")
        for t in outs:
            if t.is_contiguous():
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
            else:  # collectives need contiguous memory
                buf = t.contiguous()
                dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=self.group)
                t.copy_(buf)
        return float(table[:, 0].sum())

    def abort(self) -> None:
        """Tell the other ranks that this rank's local pass failed (call instead of the reduction, then
        re-raise the local error): they raise too, instead of hanging in the collective."""
        self._gather_status([0.0, 1.0, 0.0, 0.0])

    def _gather_status(self, values: list[float]) -> torch.Tensor:
        """``(world_size, len(values))``: every rank's ``values`` (float64: exact for counts below 2^53)."""
        mine = torch.tensor(values, dtype=torch.float64, device=self._status_device())
        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(rows, mine, group=self.group)
        return torch.stack(rows).cpu()

    def _status_device(self) -> torch.device:
        return _comm_device(self.group, self.device)

    def check_device(self, device: torch.device) -> None:
        """NCCL cannot reduce CPU tensors: say so before the first product, not deep inside it."""
        self.device = torch.device(device)
        if self.backend == "nccl" and device.type != "cuda":
            raise InvalidInputError(
                f"the process group uses the 'nccl' backend, which reduces CUDA tensors only, but the "
                f"parameters are on {device}; move the model to its rank's GPU "
                "(model.to(f'cuda:{local_rank}')) or initialize the group with backend='gloo'"
            )

    def check_ranks(self, params, empty: bool = False) -> None:
        """Raise the same clear error on every rank when the ranks cannot form one objective.

        Data parallelism assumes one model: a rank that built it with another seed would silently mix
        curvatures of different models. Compares the number of parameters and three float64 checksums of
        their values (sum, position-weighted sum, sum of squares), and whether some rank holds no batch
        (``empty``; that rank would fail alone and leave the others waiting in a collective). One
        all-reduce with MAX of ``[x, -x]``, so every rank reaches the same verdict.
        """
        device = _comm_device(self.group, params.device)
        flat = torch.cat([p.detach().reshape(-1).to(device=device, dtype=torch.float64)
                          for p in params.tensors])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=device)
        local = torch.stack([torch.tensor(float(params.numel), dtype=torch.float64, device=device),
                             flat.sum(), (weights * flat).sum() / flat.numel(), flat.square().sum()])
        flag = torch.tensor([float(empty)], dtype=torch.float64, device=device)
        both = torch.cat([local, -local, flag])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        hi, lo = both[:4], -both[4:8]
        if float(both[8]) > 0:
            raise InvalidInputError(
                "a rank holds no batch of data; give every rank at least one batch (e.g. "
                "Subset(dataset, range(rank, len(dataset), world_size)) with len(dataset) >= world_size)"
            )
        if int(hi[0]) != int(lo[0]):
            raise InvalidInputError(
                f"the ranks differentiate different numbers of parameters (from {int(lo[0])} to "
                f"{int(hi[0])}); every rank must build the same model with the same params="
            )
        if not torch.allclose(hi, lo, rtol=1e-12, atol=1e-12 * (1.0 + float(hi.abs().max()))):
            raise InvalidInputError(
                "the model's parameter values differ between ranks; data-parallel curvature needs one model: "
                "seed every rank identically, load the same checkpoint, or broadcast the parameters from "
                "rank 0 (torch.distributed.broadcast(p.data, 0) for each parameter)"
            )


def setup(params, batches, distributed: bool | None = None, group=None) -> tuple[AllReduce | None, int]:
    """The reducer of a data-parallel objective (see :class:`AllReduce`) and the index of this rank's first
    batch among all ranks' batches (for the per-batch seeds of random models), or ``(None, 0)``.

    ``distributed``: ``None`` turns it on when a process group is initialized, ``True`` requires one,
    ``False`` keeps the objective local to this rank. When on, the ranks are checked to hold the same
    parameters and some data (:meth:`AllReduce.check_ranks`, a collective: every rank must build the
    objective).
    """
    if distributed is None:
        distributed = is_active()
    elif not isinstance(distributed, bool):
        raise InvalidInputError(f"distributed must be True, False or None, got {distributed!r}")
    if not distributed:
        return None, 0
    reducer = AllReduce(group)
    reducer.check_device(params.device)
    reducer.check_ranks(params, empty=batches.length == 0)
    return reducer, _batch_offset(reducer, batches)


def _batch_offset(reducer: AllReduce, batches) -> int:
    """Number of batches on the ranks before this one, so that dropout masks in train mode are those of
    one process running the ranks' batches in rank order. A loader without a length on any rank gives
    each rank its own range of seeds instead (masks differ between batches, not equal to one process)."""
    mine = -1.0 if batches.length is None else float(batches.length)
    counts = reducer._gather_status([mine])[:, 0]
    if bool((counts < 0).any()):
        return reducer.rank * 1_000_000_007
    return int(counts[: reducer.rank].sum())


def any_rank(objective, flag: bool) -> bool:
    """``flag`` or'ed over the ranks of a distributed ``objective`` (just ``flag`` for a local one), so that
    a decision taken from local data (e.g. "this batch does not fit the structured path, fall back") is the
    same on every rank. A collective for a distributed objective: every rank must call it."""
    reducer = getattr(objective, "reducer", None)
    if not isinstance(reducer, AllReduce):
        return bool(flag)
    return bool(reducer._gather_status([float(bool(flag))]).max() > 0)


def shared_seed(seed: int | None = None, group=None) -> int:
    """A seed that is the same on every rank: rank 0's ``seed`` (or, when ``None``, a fresh random seed
    drawn on rank 0), broadcast to all. Without a process group, ``seed`` or a fresh random seed.

    Build every random probe from ``torch.Generator().manual_seed(shared_seed(seed))`` so that all ranks
    multiply the operator with the same vectors. A collective: every rank must call it.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())  # as spectral._random draws it
    seed = int(seed)
    if not is_active():
        return seed
    buf = torch.tensor([seed], dtype=torch.int64, device=_comm_device(group))
    dist.broadcast(buf, src=dist.get_global_rank(group, 0) if group is not None else 0, group=group)
    return int(buf.item())


# -- closures for the Newton-family optimizers --------------------------------------------------------
class _SumOverRanks(torch.autograd.Function):
    """``sum_r x_r`` over the ranks; the cotangent of each rank's term is the output's cotangent (identity).

    c10d has no vmap rule, so a batched double backward (``is_grads_batched=True``) raises here, on every
    rank alike and before any communication; ``ClosureHessianOperator`` then takes one product at a time.
    """

    @staticmethod
    def forward(ctx, x, group):
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ShareParameter(torch.autograd.Function):
    """Identity on a parameter whose backward sums the gradient over the ranks (every rank holds the same
    parameter, so its gradient is the sum of the ranks' terms). Differentiable: double backward gives
    all-reduced Hessian-vector products."""

    @staticmethod
    def forward(ctx, p, group):
        ctx.group = group
        return p.view_as(p)

    @staticmethod
    def backward(ctx, grad):
        return _SumOverRanks.apply(grad, ctx.group), None


def closure(objective) -> Callable[[], torch.Tensor]:
    """``closure()`` for the Newton-family optimizers (``opt.step(closure)``): the loss of the data-parallel
    ``objective`` over all ranks, whose gradient and Hessian products are global too.

    ``objective`` must be distributed (a process group initialized). The returned loss tensor has the
    globally normalized value (:meth:`Objective.accumulate`); the parameters enter it through an identity
    whose backward all-reduces, so ``autograd.grad`` of it gives the global gradient on every rank and a
    double backward gives global Hessian-vector products (one all-reduce per product). The optimizer must be
    given the objective's parameters, and every rank must step in lockstep (each call is a collective).
    """
    reducer = getattr(objective, "reducer", None)
    if not isinstance(reducer, AllReduce):
        raise InvalidInputError(
            "closure() needs a distributed Objective (built while a torch.distributed process group is "
            "initialized, distributed=None or True); for one process write the closure directly"
        )
    spec = objective.params

    def loss() -> torch.Tensor:
        shared = tuple(_ShareParameter.apply(p, reducer.group) for p in spec.tensors)
        terms = []
        value = torch.zeros((), dtype=spec.dtype, device=spec.device)

        def contribution(ctx, acc, w):
            terms.append(ctx.loss(shared) * w)
            acc.add_(terms[-1].detach())

        _, divisor = objective.accumulate(contribution, value, desc="loss", return_divisor=True)
        local = sum(terms) / divisor
        return local + (value - local.detach())  # global value, gradient through this rank's terms

    return loss
