"""Block products and fixed costs of the curvature operators: every way of applying a block (a loop of double
backwards, batched products, chunks, a tiny budget) gives the same matrix as single products and the dense
Hessian; products after a parameter change are fresh; data is converted once; no per-product progress bars."""

import warnings

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc
import hessian_core.objective as objective_module

D = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _problem(n=6):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(8, 3)).to(D).eval()
    X = torch.randn(n, 1, 4, 4, generator=g, dtype=D)
    Y = torch.randint(0, 3, (n,), generator=g)
    return model, nn.CrossEntropyLoss(), X, Y


@pytest.mark.parametrize("mode", ["loop", "vmap", None])
def test_block_products_equal_single_products_and_the_dense_hessian(mode):
    model, loss, X, Y = _problem()
    H = autograd_hessian(model, loss, X, Y)
    op = hc.HessianOperator(model, loss, (X, Y))
    op.block_mode = mode  # None: measured on the first block
    V = torch.randn(H.shape[0], 5, dtype=D, generator=torch.Generator().manual_seed(1))
    HV = op.matmat(V)
    assert op.block_mode in ("loop", "vmap")
    torch.testing.assert_close(HV, H @ V, **TOL)
    torch.testing.assert_close(HV, torch.stack([op.matvec(V[:, j]) for j in range(5)], 1), **TOL)
    assert op.num_matvecs == 10


def test_chunks_budget_and_batches_give_the_same_products():
    model, loss, X, Y = _problem(7)
    V = torch.randn(hc.ParamSpec(model).numel, 4, dtype=D, generator=torch.Generator().manual_seed(2))
    ref = autograd_hessian(model, loss, X, Y) @ V
    for kw in (dict(chunk_size=3), dict(memory_budget=4096), {}):
        op = hc.HessianOperator(model, loss, [(X[:3], Y[:3]), (X[3:], Y[3:])], **kw)
        torch.testing.assert_close(op.matmat(V), ref, **TOL)
    assert hc.HessianOperator(model, loss, (X, Y), chunk_size=3).block_mode == "vmap"  # the user's chunks


def test_plan_says_which_path_block_size_and_budget():
    model, loss, X, Y = _problem()
    op = hc.HessianOperator(model, loss, (X, Y), memory_budget="64MiB")
    plan = op.plan()
    assert plan["budget"].startswith("64.0 MiB") and "memory_budget" in plan["budget"]
    assert "not measured" in plan["products"]["blocks (matmat)"]
    op.matmat(torch.ones(op.size, 3, dtype=D))
    plan = op.plan()
    assert op.block_mode in plan["products"]["blocks (matmat)"] or "loop" in plan["products"]["blocks (matmat)"]
    assert plan["products"]["block size for eigsh and the estimators"] == op.block_size()
    assert "half the memory free" in hc.HessianOperator(model, loss, (X, Y)).plan()["budget"]
    op.to_dense()
    assert op.plan()["last dense or diagonal"] == op.last_path


def test_eigsh_block_size_follows_the_measurement(monkeypatch):
    model, loss, X, Y = _problem()
    op = hc.HessianOperator(model, loss, (X, Y))
    op.block_mode, op.block_speedup = "loop", 0.8
    assert op.preferred_block(4, cost=2.0) == 1
    op.block_mode, op.block_speedup = "vmap", 3.0
    assert op.preferred_block(4, cost=2.0) == 4
    assert hc.DenseOperator(torch.eye(5, dtype=D)).preferred_block(4, cost=2.0) == 4
    fresh = hc.HessianOperator(model, loss, (X, Y))
    assert fresh.preferred_block(3) in (1, 3) and fresh.block_mode is not None  # measured on demand
    H = autograd_hessian(model, loss, X, Y)
    res = hc.eigsh(fresh, k=2, which="LA", seed=0)
    torch.testing.assert_close(res.values, torch.linalg.eigvalsh(H)[-2:], rtol=1e-8, atol=1e-10)


def test_products_after_an_in_place_update_are_fresh():
    model, loss, X, Y = _problem()
    op = hc.HessianOperator(model, loss, (X, Y))
    v = torch.randn(op.size, dtype=D, generator=torch.Generator().manual_seed(3))
    before = op.matvec(v)
    with torch.no_grad():
        model[5].weight.mul_(1.5)
    after = op.matvec(v)
    torch.testing.assert_close(after, autograd_hessian(model, loss, X, Y) @ v, **TOL)
    assert not torch.allclose(before, after)
    assert all(p.grad is None for p in model.parameters())


def test_parameter_hooks_do_not_enter_the_hessian():
    """The model's own parameters are differentiated directly only when no tensor hook would run on them."""
    model, loss, X, Y = _problem()
    H = autograd_hessian(model, loss, X, Y)
    handle = model[5].weight.register_hook(lambda g: 2 * g)
    op = hc.HessianOperator(model, loss, (X, Y))
    e = torch.zeros(op.size, dtype=D)
    e[-5] = 1  # a column of the last layer's weight
    torch.testing.assert_close(op.matvec(e), H[:, -5], **TOL)
    handle.remove()


def test_float32_data_is_converted_once_and_the_graph_kept(monkeypatch):
    model, loss, X, Y = _problem()
    op = hc.HessianOperator(model, loss, (X.float(), Y))
    calls = []
    original = type(op.objective).forward
    monkeypatch.setattr(type(op.objective), "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    v = torch.randn(op.size, dtype=D, generator=torch.Generator().manual_seed(4))
    with op.reuse():
        out = [op.matvec(v) for _ in range(3)]
    assert len(calls) == 1  # one graph for three products: the converted batch is the same tensor each time
    ref = autograd_hessian(model, loss, X.float().double(), Y) @ v
    torch.testing.assert_close(out[2], ref, **TOL)
    Xf = op.objective.batches._source[0][0]
    with torch.no_grad():
        Xf.mul_(2)  # the caller changes the data in place: converted again, the next product sees it
    torch.testing.assert_close(op.matvec(v), autograd_hessian(model, loss, Xf.double(), Y) @ v, **TOL)


def test_progress_bars_only_for_passes_over_several_batches(monkeypatch):
    model, loss, X, Y = _problem()
    made = []
    original = objective_module.tqdm
    monkeypatch.setattr(objective_module, "tqdm", lambda *a, **k: made.append(k) or original(*a, **k))
    op = hc.HessianOperator(model, loss, (X, Y), progress=True)
    op.matvec(torch.ones(op.size, dtype=D))
    assert not made  # one batch: nothing to watch
    op = hc.HessianOperator(model, loss, [(X[:3], Y[:3]), (X[3:], Y[3:])], progress=True)
    op.matvec(torch.ones(op.size, dtype=D))
    assert made and all(k["delay"] > 0 for k in made)  # shown only if the pass takes a while


def test_a_missing_batching_rule_is_said_in_plan_not_warned():
    """GroupNorm's batched double backward fails inside PyTorch (a batching rule): the columns go one at a
    time, exactly (against autograd), and plan() says why, without a RuntimeWarning on every such model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.Tanh(), nn.Flatten(), nn.Linear(16, 2))
    model = model.double()
    X, Y = torch.randn(5, 2, 6, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="generic")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        H = op.to_dense()
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y))
    assert "batched double backward failed" in op.plan()["batched products"]
