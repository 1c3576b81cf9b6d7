"""Data-parallel curvature with torchrun: every rank holds a shard of the data, every result is the one of
the whole data set.

    torchrun --nproc-per-node 2 examples/distributed_torchrun.py            # CPU: gloo
    torchrun --nproc-per-node 3 examples/distributed_torchrun.py --check    # also compare with one process

With CUDA, each rank uses its own GPU (``LOCAL_RANK``) and the NCCL backend. The shards are deliberately
unequal (samples ``rank, rank + world, ...`` of 1001): the engine normalizes by the global sample count.
``--check`` recomputes the results on rank 0 alone over all the data (``distributed=False``) and prints
the largest differences.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import hessian_core as hc
from hessian_core.distributed import closure


def make_data(n: int, d: int, classes: int) -> TensorDataset:
    """The same synthetic classification set on every rank (each then keeps its own shard)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (X[:, :classes] + 0.5 * torch.randn(n, classes, generator=g, dtype=torch.float64)).argmax(1)
    return TensorDataset(X, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1001)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--check", action="store_true", help="compare with one process on all the data (rank 0)")
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    analyse(args, cuda)
    # Free every tensor and autograd graph of the analysis while the interpreter is fully alive: gloo's
    # worker threads may still reference them, and freeing them during interpreter shutdown can abort the
    # process (pytorch/pytorch PR #179291). Then leave together.
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def analyse(args, cuda: bool) -> None:
    """The analysis of one rank; everything it builds is freed when it returns."""
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)

    torch.manual_seed(0)  # one model on every rank (the engine checks that the parameters agree)
    d, classes = 10, 3
    model = nn.Sequential(nn.Linear(d, args.hidden), nn.Tanh(), nn.Linear(args.hidden, classes))
    model = model.to(device=device, dtype=torch.float64)
    loss_fn = nn.CrossEntropyLoss()

    # Strided shards, unequal when world does not divide the sample count. (DistributedSampler would pad
    # the shards to equal length by repeating samples, which changes the objective; drop_last drops some.)
    data = make_data(args.samples, d, classes)
    shard = DataLoader(Subset(data, range(rank, len(data), world)), batch_size=args.batch_size)

    # Every object below reduces over the ranks because a process group is initialized
    # (distributed=None); the default progress bars are shown on rank 0 only.
    loss, grad = hc.Objective(model, loss_fn, shard).value_and_grad()
    H = hc.HessianOperator(model, loss_fn, shard)

    # Random start vectors and probes: with seed=None rank 0 draws the seed and broadcasts it.
    t0 = time.perf_counter()
    top = hc.eigsh(H, k=3, which="LA")
    t_eig = time.perf_counter() - t0
    tr = hc.trace(H, num_matvecs=120)
    t0 = time.perf_counter()
    Hd = H.to_dense()
    t_dense = time.perf_counter() - t0

    if rank == 0:
        print(f"{world} ranks ({dist.get_backend()}), {len(data)} samples, P = {H.shape[0]}")
        print(f"loss {loss:.10f}   |grad| {float(grad.norm()):.6e}")
        print(f"top eigenvalues {[round(v, 8) for v in top.values.flip(0).tolist()]}   "
              f"max residual {float(top.residuals.max()):.1e}   ({t_eig:.2f} s)")
        print(f"trace: Hutch++ {tr.estimate:.6f} +- {tr.stderr:.1e}   exact {float(Hd.trace()):.6f}   "
              f"(dense Hessian {t_dense:.2f} s)")
    if args.check and rank == 0:  # rank 0 alone: distributed=False
        full = DataLoader(data, batch_size=args.batch_size)
        H1 = hc.hessian(model, loss_fn, full, distributed=False)
        loss1 = hc.Objective(model, loss_fn, full, distributed=False).loss()
        print(f"check vs one process on all data: max |H - H_1| = {float((Hd - H1).abs().max()):.2e}, "
              f"|loss - loss_1| = {abs(loss - loss1):.2e}")

    # Newton-CG on the whole data set: the closure's loss, gradient and Hessian products are global.
    opt = hc.optim.NewtonCG(model.parameters(), damping=1e-3)
    step = closure(hc.Objective(model, loss_fn, shard))
    losses = [float(opt.step(step).detach()) for _ in range(3)] + [float(step().detach())]
    if rank == 0:
        print("Newton-CG, loss over all data: " + " -> ".join(f"{v:.6f}" for v in losses))


if __name__ == "__main__":
    main()
