"""Data-parallel curvature on 2 gloo processes equals the single-process result on the concatenated data.

One spawn per module: :func:`_worker` (this file run as a script) computes every quantity on its shard and
saves it; the tests compare both ranks' results with the single-process engine on all the data and with
``torch.autograd.functional.hessian`` (float64, 1e-10). The shards are unequal on purpose: rank 0 holds
batches of 4 and 4 samples, rank 1 one batch of 2.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import hessian_core as hc  # noqa: E402
from hessian_core import distributed as hcd  # noqa: E402

WORLD = 2
TOL = dict(atol=1e-10, rtol=1e-10)
TIMEOUT_S = 120  # a hang in a collective fails the test instead of blocking CI


# -- the problem, built identically in the workers and in the test process ---------------------------
def mlp(bn: bool = False, dropout: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if bn else []) + [nn.Tanh()]
    layers += ([nn.Dropout(0.5)] if dropout else []) + [nn.Linear(4, 2)]
    return nn.Sequential(*layers).double()


def full_data():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(10, 2, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, -100, 1, 0, -100, 1, 1, 0, -100])  # masked samples, unevenly spread
    return X, Y, labels


def shards():
    """Rank 0: batches of 4 and 4 samples; rank 1: one batch of 2 (MSE data and masked-label data)."""
    X, Y, labels = full_data()
    cuts = [[(0, 4), (4, 8)], [(8, 10)]]
    mse = [[(X[a:b], Y[a:b]) for a, b in c] for c in cuts]
    ce = [[(X[a:b], labels[a:b]) for a, b in c] for c in cuts]
    return mse, ce


def probes(P: int):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(P, generator=g, dtype=torch.float64)
    return v, torch.randn(P, 3, generator=g, dtype=torch.float64)


def coupled_loss(o, t):
    """Couples the samples of a batch (not a sum over samples): the structured path does not apply."""
    return ((o - t).sum(0) ** 2).sum() / o.shape[0]


def masked_count(x, y):
    return (y != -100).sum()


def compute_all(mse, ce, model, bn_model, sampler_loader, rank: int) -> dict:
    """Everything checked, computed on this rank's data (run in every worker, in this order)."""
    loss = nn.MSELoss()
    obj = hc.Objective(model, loss, mse)
    out = {"reducer": repr(obj.reducer), "progress": obj.progress}
    out.update(curvature_results(model, loss, mse, ce, bn_model, sampler_loader))
    out.update(closure_results(obj))
    out.update(spectral_results(hc.HessianOperator(model, loss, mse)))
    out.update(optimizer_results(lambda m: hcd.closure(hc.Objective(m, loss, mse)), mse))
    out.update(seed_results(model, loss, mse, rank))
    out.update(failure_results(obj, mse, rank))
    return out


def curvature_results(model, loss, mse, ce, bn_model, sampler_loader) -> dict:
    """Loss, gradient, products, dense matrices, diagonals and blocks of the core engine."""
    v, V = probes(sum(p.numel() for p in model.parameters()))
    obj = hc.Objective(model, loss, mse)
    out = {}
    out["loss"], out["grad"] = obj.value_and_grad()
    out["loss_only"] = obj.loss()
    out["H"] = hc.hessian(model, loss, mse)
    structured, generic = (hc.HessianOperator(model, loss, mse, strategy=s) for s in ("auto", "generic"))
    out["H_structured"], out["H_generic"] = structured.to_dense(), generic.to_dense()
    out["diag_structured"], out["diag_generic"] = structured.diagonal(), generic.diagonal()
    out["strategies"] = (structured.last_strategy, generic.last_strategy)
    out["Hv"] = hc.hvp(model, loss, mse, v)
    out["HV"] = hc.HessianOperator(model, loss, mse, chunk_size=2).matmat(V)
    out["diag"] = hc.hessian_diagonal(model, loss, mse)
    out["blocks"] = hc.hessian_blocks(model, loss, mse, groups="module")
    ggn = hc.GGNOperator(model, loss, mse)
    out["G"], out["GV"] = ggn.to_dense(), ggn.matmat(V)
    ef = hc.EmpiricalFisherOperator(model, loss, mse)
    out["F"], out["FV"], out["Fdiag"] = ef.to_dense(), ef.matmat(V), ef.diagonal()
    out["H_sum"] = hc.hessian(model, nn.MSELoss(reduction="sum"), mse)
    out["H_ce_masked"] = hc.hessian(model, nn.CrossEntropyLoss(ignore_index=-100), ce, count_fn=masked_count)
    out["H_sampler"] = hc.hessian(model, loss, sampler_loader)
    out["H_bn_train"] = hc.hessian(bn_model, loss, mse, train_mode=True)
    # dropout masks drawn per global batch: rank 1's batch is the third of the concatenated data
    out["H_dropout_train"] = hc.hessian(mlp(dropout=True), loss, mse, train_mode=True, seed=5)
    out["H_local"] = hc.hessian(model, loss, mse, distributed=False)
    out["newton_step_dense"] = hc.newton_step(model, loss, mse, damping=1e-2).flat_step
    out["newton_step_cg"] = hc.newton_step(model, loss, mse, damping=1e-2, method="cg").flat_step
    # A loss coupling the samples of a batch: whether the structured path applies is found per batch, so
    # the ranks may disagree; they must still agree on one strategy (any_rank) and give the global result.
    op = hc.HessianOperator(model, coupled_loss, mse)
    out["H_coupled"], out["diag_coupled"] = op.to_dense(), op.diagonal()
    out["coupled_strategy"] = op.last_strategy
    out.update(kfac_results(model, loss, mse, ce))
    return out


def kfac_results(model, loss, mse, ce) -> dict:
    """KFAC/EKFAC factors are sums over samples reduced over the ranks; MC labels are drawn per global batch."""
    return {
        "kfac": hc.KFACOperator(model, loss, mse).to_dense(),
        "kfac_mc": hc.KFACOperator(model, loss, mse, type="mc", mc_samples=3, seed=2).to_dense(),
        "ekfac_ce_masked": hc.EKFACOperator(model, nn.CrossEntropyLoss(ignore_index=-100), ce,
                                            count_fn=masked_count).to_dense(),
    }


def closure_results(obj) -> dict:
    """The optimizers' closure: global value, gradient and (double backward) Hessian products."""
    from hessian_core.operators import ClosureHessianOperator

    v, V = probes(obj.params.numel)
    closure = hcd.closure(obj)
    params = list(obj.params.tensors)
    value = closure()
    grads = torch.autograd.grad(value, params, create_graph=True)
    hv = torch.autograd.grad(grads, params, obj.params.unflatten(v))
    return {"closure_loss": float(value), "closure_grad": obj.params.flatten([g.detach() for g in grads]),
            "closure_Hv": obj.params.flatten(hv),
            "closure_HV": ClosureHessianOperator(closure, params).matmat(V)}


def seed_results(model, loss, mse, rank: int) -> dict:
    """Random probes from shared seeds: scipy's eigsh with a shared start vector, then seed=None calls of
    the spectral routines after the ranks' global RNGs were made to differ."""
    from scipy.sparse.linalg import eigsh

    out = {"seed": hcd.shared_seed(None), "seed_given": hcd.shared_seed(100 + rank)}  # rank 0's wins
    op = hc.HessianOperator(model, loss, mse)
    v0 = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(out["seed"]), dtype=torch.float64)
    vals = eigsh(op.to_scipy(), k=3, which="LA", v0=v0.numpy(), tol=1e-13)[0]
    out["eig_top3"] = torch.as_tensor(np.sort(vals))
    torch.manual_seed(1000 + rank)
    out["eig_seed_none"] = hc.spectral.eigsh(op, k=3, which="LA").values
    out["trace_seed_none"] = torch.tensor(float(hc.spectral.trace(op, 12, "hutchinson")))
    return out


def failure_results(obj, mse, rank: int) -> dict:
    """Inconsistent ranks get the same clear error on every rank, and the ranks stay in step afterwards."""
    model, loss = obj.model, obj.loss_fn
    out = {}

    def outcome(key, fn, expected=hc.HessianCoreError):
        try:
            fn()
            out[key] = "no error"
        except expected as e:
            out[key] = str(e)

    torch.manual_seed(rank)  # a model that differs between the ranks
    outcome("params_differ", lambda: hc.Objective(nn.Sequential(nn.Linear(3, 2)).double(), loss, mse))
    outcome("empty_shard", lambda: hc.Objective(model, loss, mse if rank == 0 else []))
    buf = torch.ones(3, dtype=torch.float64)
    # rank 1's local pass failed and it says so (abort); rank 0 raises instead of hanging
    outcome("peer_failed", lambda: obj.reducer.abort() if rank == 1 else obj.reducer([buf], 4.0))
    out["after_abort"] = hc.Objective(model, loss, mse).loss()  # the ranks are still in step
    # a local error (rank 1's targets do not fit the model) raises on rank 1 and stops rank 0 too
    bad = [(x, y[:, :1].expand(-1, 3)) for x, y in mse]
    outcome("local_error", lambda: hc.hessian(model, loss, bad if rank == 1 else mse))
    out["after_local_error"] = hc.Objective(model, loss, mse).loss()
    out["any_rank"] = (hcd.any_rank(obj, rank == 1), hcd.any_rank(obj, False))
    # ranks on different code paths (here: one or two result tensors) are stopped, not mixed
    outcome("paths_differ", lambda: obj.reducer([buf] if rank == 0 else [buf, buf.clone()], 4.0))
    return out


def spectral_results(op) -> dict:
    """Seeded spectral estimates (the same probes in one process and on every rank)."""
    from hessian_core import spectral

    eig = spectral.eigsh(op, k=4, which="BE", ncv=16, seed=7, tol=1e-12)
    return {
        "eig_be": eig.values, "eig_residuals": eig.residuals,
        "trace_hutchpp": torch.tensor(float(spectral.trace(op, 30, "hutch++", seed=3))),
        "diag_xdiag": spectral.diagonal_estimate(op, 20, seed=4).estimate,
        "density": spectral.spectral_density(op, num_probes=3, num_iters=10, seed=5).density,
    }


def optimizer_results(make_closure, curvature_data, steps: int = 2) -> dict:
    """Parameters after ``steps`` steps of each Newton-family optimizer from the same start."""
    from hessian_core.optim import HessianFree, Newton, NewtonCG

    makers = {
        "newton": lambda m: Newton(m.parameters(), damping=1e-2),
        "newton_cg": lambda m: NewtonCG(m.parameters(), damping=1e-2),
        "hessian_free": lambda m: HessianFree(m.parameters(), model=m, loss_fn=nn.MSELoss(),
                                              curvature_data=curvature_data),
    }
    out = {}
    for name, make in makers.items():
        model = mlp()
        opt, closure = make(model), make_closure(model)
        for _ in range(steps):
            opt.step(closure)
        out[f"opt_{name}"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return out


def _worker(rank: int, port: int, outdir: str) -> None:
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=TIMEOUT_S // 2))
    try:
        mse, ce = shards()
        X, Y, _ = full_data()
        ds = TensorDataset(X, Y)
        loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, WORLD, rank, shuffle=False))
        out = compute_all(mse[rank], ce[rank], mlp(), mlp(bn=True), loader, rank)
        torch.save(out, os.path.join(outdir, f"rank{rank}.pt"))
        del out, loader
    finally:
        # Free what the computations left (graphs, tensors gloo's threads may reference) before interpreter
        # shutdown, where freeing them can abort the process (pytorch/pytorch PR #179291).
        gc.collect()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(outdir) -> list[dict] | str:
    """Run the 2 workers; their results by rank, or what went wrong."""
    port = _free_port()
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), str(r), str(port), str(outdir)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    deadline = time.monotonic() + TIMEOUT_S
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
            p.communicate()
        return f"the distributed workers did not finish in {TIMEOUT_S} s (a collective hung)"
    for r, (p, log) in enumerate(zip(procs, logs)):
        if p.returncode != 0:
            return f"rank {r} exited with {p.returncode}:\n{log[-4000:]}"
    return [torch.load(outdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The workers' results, by rank. Spawned once per module, failure included (a failed fixture would
    otherwise be retried by every test)."""
    if "result" not in _SPAWNED:
        _SPAWNED["result"] = _spawn(tmp_path_factory.mktemp("distributed"))
    if isinstance(_SPAWNED["result"], str):
        pytest.fail(_SPAWNED["result"])
    return _SPAWNED["result"]


_SPAWNED: dict = {}


@pytest.fixture(scope="module")
def reference() -> dict:
    """Single process on the concatenated data (the batches of rank 0, then rank 1)."""
    mse, ce = shards()
    mse_all, ce_all = mse[0] + mse[1], ce[0] + ce[1]
    X, Y, _ = full_data()
    model, loss = mlp(), nn.MSELoss()
    P = sum(p.numel() for p in model.parameters())
    v, V = probes(P)
    H = hc.hessian(model, loss, mse_all, distributed=False)
    L, g = hc.Objective(model, loss, mse_all).value_and_grad()
    ggn = hc.GGNOperator(model, loss, mse_all)
    ef = hc.EmpiricalFisherOperator(model, loss, mse_all)
    return {
        "loss": L, "grad": g, "loss_only": L, "H": H, "Hv": H @ v, "HV": H @ V,
        "H_structured": H, "H_generic": H, "diag_structured": H.diagonal(), "diag_generic": H.diagonal(),
        "closure_loss": L, "closure_grad": g, "closure_Hv": H @ v, "closure_HV": H @ V,
        "newton_step_dense": hc.newton_step(model, loss, mse_all, damping=1e-2).flat_step,
        "newton_step_cg": hc.newton_step(model, loss, mse_all, damping=1e-2, method="cg").flat_step,
        "diag": hc.hessian_diagonal(model, loss, mse_all),
        "blocks": hc.hessian_blocks(model, loss, mse_all, groups="module"),
        "G": ggn.to_dense(), "GV": ggn.matmat(V),
        "F": ef.to_dense(), "FV": ef.matmat(V), "Fdiag": ef.diagonal(),
        "H_sum": hc.hessian(model, nn.MSELoss(reduction="sum"), mse_all),
        "H_ce_masked": hc.hessian(model, nn.CrossEntropyLoss(ignore_index=-100), ce_all,
                                  count_fn=masked_count),
        "H_sampler": H,  # the sampler's shards cover the same 10 samples
        "H_coupled": hc.hessian(model, coupled_loss, mse_all, distributed=False),
        "diag_coupled": hc.hessian(model, coupled_loss, mse_all, distributed=False).diagonal(),
        "H_bn_train": hc.hessian(mlp(bn=True), loss, mse_all, train_mode=True),
        "H_dropout_train": hc.hessian(mlp(dropout=True), loss, mse_all, train_mode=True, seed=5),
        "eig_top3": torch.linalg.eigvalsh(H)[-3:],
        **kfac_results(model, loss, mse_all, ce_all),
        **spectral_results(hc.HessianOperator(model, loss, mse_all)),
        **optimizer_results(lambda m: (lambda: loss(m(X), Y)), mse_all),  # one batch of all 10 samples
    }


KEYS = ["loss", "grad", "loss_only", "H", "H_structured", "H_generic", "diag_structured", "diag_generic",
        "H_coupled", "diag_coupled", "Hv", "HV", "diag", "blocks", "G", "GV", "F", "FV", "Fdiag",
        "H_sum", "H_ce_masked", "H_sampler", "H_bn_train", "H_dropout_train", "eig_top3",
        "closure_loss", "closure_grad", "closure_Hv", "closure_HV", "newton_step_dense", "newton_step_cg",
        "eig_be", "trace_hutchpp", "diag_xdiag", "density", "opt_newton", "opt_newton_cg", "opt_hessian_free",
        "kfac", "kfac_mc", "ekfac_ce_masked"]


def _close(a, b):
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y)
    else:
        f64 = torch.float64
        torch.testing.assert_close(torch.as_tensor(a, dtype=f64), torch.as_tensor(b, dtype=f64), **TOL)


@pytest.mark.parametrize("key", KEYS)
def test_distributed_equals_single_process_on_all_data(ranks, reference, key):
    for r in range(WORLD):
        _close(ranks[r][key], reference[key])


def test_ranks_receive_identical_results(ranks):
    """All-reduce hands every rank the same bits, so solvers built on it stay in lockstep."""
    for key in KEYS:
        a, b = ranks[0][key], ranks[1][key]
        for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y)), key


def test_ranks_agree_on_the_structured_fallback(ranks):
    assert ranks[0]["coupled_strategy"] == ranks[1]["coupled_strategy"]


def test_both_dense_strategies_were_exercised(ranks):
    assert ranks[0]["strategies"] == ("structured", "generic")


def test_reducer_installed_by_default(ranks):
    assert ranks[0]["reducer"] == "AllReduce(backend='gloo', rank=0, world_size=2)"
    assert ranks[1]["reducer"] == "AllReduce(backend='gloo', rank=1, world_size=2)"


def test_hessian_matches_autograd_on_the_whole_batch(ranks):
    """Independent of the engine: torch.autograd.functional.hessian of the mean loss over all 10 samples."""
    from reference import autograd_hessian

    X, Y, labels = full_data()
    torch.testing.assert_close(ranks[0]["H"], autograd_hessian(mlp(), nn.MSELoss(), X, Y), **TOL)
    keep = labels != -100  # the masked mean is the mean over the unmasked samples
    ref = autograd_hessian(mlp(), nn.CrossEntropyLoss(), X[keep], labels[keep])
    torch.testing.assert_close(ranks[1]["H_ce_masked"], ref, **TOL)


def test_local_objective_sees_only_its_shard(ranks):
    mse, _ = shards()
    for r in range(WORLD):
        local = hc.hessian(mlp(), nn.MSELoss(), mse[r], distributed=False)
        _close(ranks[r]["H_local"], local)
    assert not torch.allclose(ranks[0]["H_local"], ranks[1]["H_local"])


def test_shared_seed_is_rank_zeros(ranks):
    assert ranks[0]["seed"] == ranks[1]["seed"]
    assert ranks[0]["seed_given"] == ranks[1]["seed_given"] == 100


def test_progress_bars_default_to_rank_zero(ranks):
    assert ranks[0]["progress"] is None and ranks[1]["progress"] is False


def test_spectral_with_seed_none_uses_rank_zeros_probes(ranks, reference):
    """The ranks' global RNGs differ; the results agree because the seed is rank 0's."""
    for key in ("eig_seed_none", "trace_seed_none"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    torch.testing.assert_close(ranks[0]["eig_seed_none"], reference["eig_top3"], atol=1e-7, rtol=0)


def test_eigsh_residuals_certify_the_distributed_eigenpairs(ranks):
    assert float(ranks[0]["eig_residuals"].max()) < 1e-9


def test_different_models_are_refused_on_every_rank(ranks):
    for r in range(WORLD):
        assert "parameter values differ between ranks" in ranks[r]["params_differ"]


def test_a_failed_rank_stops_the_others_cleanly(ranks, reference):
    assert ranks[1]["peer_failed"] == "no error"  # it re-raises its own error (not simulated here)
    assert "rank(s) [1] failed" in ranks[0]["peer_failed"]
    for r in range(WORLD):
        _close(ranks[r]["after_abort"], reference["loss"])


def test_a_local_error_is_raised_on_its_rank_and_stops_the_others(ranks, reference):
    assert "targets (2, 3) float64) failed on batch 0" in ranks[1]["local_error"]  # its own clear error
    assert "rank(s) [1] failed" in ranks[0]["local_error"]
    for r in range(WORLD):
        _close(ranks[r]["after_local_error"], reference["loss"])


def test_ranks_on_different_code_paths_are_stopped_on_every_rank(ranks):
    for r in range(WORLD):
        assert "rank 0: 1 tensors of 3 numbers in all, rank 1: 2 tensors of 6" in ranks[r]["paths_differ"]


def test_any_rank_agrees_on_local_decisions(ranks):
    assert ranks[0]["any_rank"] == ranks[1]["any_rank"] == (True, False)


def test_an_empty_shard_is_refused_on_every_rank(ranks):
    for r in range(WORLD):
        assert "a rank holds no batch of data" in ranks[r]["empty_shard"]


def test_torchrun_example_matches_one_process():
    """examples/distributed_torchrun.py under torchrun (3 ranks, unequal shards of 101 samples)."""
    example = os.path.join(ROOT, "examples",
                           "distributed_torchrun.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "--master-port",
           str(_free_port()), example, "--samples", "101", "--hidden", "4", "--check"]
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    try:
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the torchrun example did not finish in {TIMEOUT_S} s")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    check = next(line for line in run.stdout.splitlines() if line.startswith("check vs one process"))
    diffs = [float(word.rstrip(",")) for word in check.split() if word[0].isdigit()]
    assert len(diffs) == 2 and max(diffs) < 1e-12, check
    assert "3 ranks (gloo), 101 samples" in run.stdout


# -- without a process group (this process) ----------------------------------------------------------
def test_without_process_group():
    mse, _ = shards()
    assert not hcd.is_active() and hcd.rank() == 0 and hcd.world_size() == 1
    assert hc.Objective(mlp(), nn.MSELoss(), mse[0]).reducer is None
    with pytest.raises(hc.InvalidInputError, match="no torch.distributed process group"):
        hc.Objective(mlp(), nn.MSELoss(), mse[0], distributed=True)
    with pytest.raises(hc.InvalidInputError, match="distributed must be"):
        hc.Objective(mlp(), nn.MSELoss(), mse[0], distributed="yes")
    with pytest.raises(hc.InvalidInputError, match="needs a distributed Objective"):
        hcd.closure(hc.Objective(mlp(), nn.MSELoss(), mse[0]))
    assert hcd.any_rank(hc.Objective(mlp(), nn.MSELoss(), mse[0]), True) is True
    assert hcd.shared_seed(7) == 7
    assert isinstance(hcd.shared_seed(None), int)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
