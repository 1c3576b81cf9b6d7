"""The engine's contracts: the model is never changed, the train/eval policy, the memory budget, and the
clear errors on bad input."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


def bn_dropout_model():
    return nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 2)).to(D)


def snapshot(model):
    return ({n: p.detach().clone() for n, p in model.named_parameters()},
            {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
            {n: b.clone() for n, b in model.named_buffers()},
            [m.training for m in model.modules()])


def assert_same(model, snap):
    params, grads, buffers, modes = snap
    for n, p in model.named_parameters():
        assert torch.equal(p, params[n]), n
        assert (p.grad is None and grads[n] is None) or torch.equal(p.grad, grads[n]), n
    for n, b in model.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("train_mode", [False, True])
def test_model_untouched(train_mode):
    model = bn_dropout_model()
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    model(X).sum().backward()  # some existing .grad the engine must not touch
    model.train()
    model[3].eval()  # mixed modes must come back exactly
    snap = snapshot(model)
    hc.hessian(model, nn.MSELoss(), (X, Y), train_mode=train_mode)
    hc.hessian_diagonal(model, nn.MSELoss(), [(X[:5], Y[:5]), (X[5:], Y[5:])], train_mode=train_mode)
    hc.GGNOperator(model, nn.MSELoss(), (X, Y), train_mode=train_mode).matvec(torch.ones(50, dtype=D))
    assert_same(model, snap)


def test_model_untouched_when_an_error_is_raised():
    model = bn_dropout_model()
    model.train()
    snap = snapshot(model)
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 5, dtype=D)  # wrong target width
    with pytest.raises(hc.InvalidInputError):
        hc.hessian(model, nn.MSELoss(), (X, Y))
    assert_same(model, snap)


def test_eval_mode_is_the_default_policy():
    model = bn_dropout_model()
    model.train()
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    model.eval()
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


def test_train_mode_batchnorm_uses_batch_statistics():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    H = hc.hessian(model, nn.MSELoss(), (X, Y), train_mode=True)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.train()
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)  # torch.func functional_call on clones below
    for n, b in model.named_buffers():
        b.copy_(buffers[n])
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
    model.eval()
    assert (H - autograd_hessian(model, nn.MSELoss(), X, Y)).abs().max() > 1e-6


def test_train_mode_dropout_is_a_fixed_matrix_per_seed():
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 2)).to(D)
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True, seed=3)
    v = torch.randn(op.shape[0], dtype=D)
    torch.testing.assert_close(op.matvec(v), op.matvec(v))  # same masks in every product
    dense = op.to_dense()
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(op.matvec(v), dense @ v)
    other = hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True, seed=4).to_dense()
    assert (other - dense).abs().max() > 1e-8
    eval_h = hc.hessian(model, nn.MSELoss(), (X, Y))
    assert (eval_h - dense).abs().max() > 1e-8


def test_memory_budget_refuses_with_size_and_alternative():
    model = nn.Sequential(nn.Linear(30, 30), nn.Tanh(), nn.Linear(30, 1)).to(D)
    X, Y = torch.randn(4, 30, dtype=D), torch.randn(4, 1, dtype=D)
    with pytest.raises(hc.MemoryBudgetError) as e:
        hc.hessian(model, nn.MSELoss(), (X, Y), memory_budget="100KB")
    msg = str(e.value)
    assert "961 x 961" in msg and "7.0 MiB" in msg and "HessianOperator" in msg
    # a budget that fits works, with small chunks
    H = hc.hessian(model, nn.MSELoss(), (X, Y), memory_budget="20MB")
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


def test_clear_errors_on_bad_input():
    model = nn.Sequential(nn.Linear(3, 2)).to(D)
    X, Y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D)
    with pytest.raises(hc.InvalidInputError, match=r"model\(\(6, 4\) float64\) failed"):
        hc.hessian(model, nn.MSELoss(), (torch.randn(6, 4, dtype=D), Y))
    with pytest.raises(hc.InvalidInputError, match="reduction='none'"):
        hc.hessian(model, nn.MSELoss(reduction="none"), (X, Y))
    with pytest.raises(hc.InvalidInputError, match="must return a scalar"):
        hc.hessian(model, lambda o, t: (o - t) ** 2, (X, Y))
    with pytest.raises(hc.InvalidInputError, match="broadcasts"):
        hc.hessian(nn.Linear(3, 1).to(D), nn.MSELoss(), (X, torch.randn(6, dtype=D)))
    with pytest.raises(hc.InvalidInputError, match="empty"):
        hc.hessian(model, nn.MSELoss(), [])
    with pytest.raises(hc.InvalidInputError, match="single tensor"):
        hc.hessian(model, nn.MSELoss(), X)
    with pytest.raises(hc.InvalidInputError, match="contradicts"):
        hc.hessian(model, nn.MSELoss(), (X, Y), reduction="sum")
    with pytest.raises(hc.InvalidInputError, match=r"shape \(5,\)"):
        hc.hvp(model, nn.MSELoss(), (X, Y), torch.ones(5))
    with pytest.raises(hc.InvalidInputError, match="batch 1"):
        hc.hessian(model, nn.MSELoss(), [(X, Y), (X, Y, Y)])
    frozen = nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(hc.InvalidInputError, match="nothing to differentiate"):
        hc.hessian(frozen, nn.MSELoss(), (X.float(), Y.float()))
    with pytest.raises(hc.InvalidInputError, match="memory_budget"):
        hc.hessian(model, nn.MSELoss(), (X, Y), memory_budget="lots")


def test_non_finite_loss_and_curvature_are_reported():
    model = nn.Sequential(nn.Linear(3, 1), nn.Sigmoid()).to(D)
    X = torch.randn(4, 3, dtype=D)
    bad = torch.full((4, 1), float("nan"), dtype=D)
    with pytest.raises(hc.NonFiniteError, match="loss on batch 0"):
        hc.hessian(model, nn.MSELoss(), (X, bad))
    # finite loss on the first batch, NaN curvature from the second
    with pytest.raises(hc.NonFiniteError, match="NaN or Inf"):
        hc.hessian(model, nn.MSELoss(), [(X, torch.zeros(4, 1, dtype=D)), (X, bad)])


def test_paramspec_flatten_roundtrip_and_labels():
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)).to(D)
    spec = hc.ParamSpec(model)
    v = torch.arange(spec.numel, dtype=D)
    parts = spec.unflatten(v)
    assert [p.shape for p in parts] == [p.shape for p in model.parameters()]
    assert torch.equal(spec.flatten(parts), v)
    assert torch.equal(parts[0], torch.arange(6, dtype=D).reshape(2, 3))  # row-major
    assert spec.index_of(4) == ("0.weight", (1, 1))
    assert spec.index_of(7) == ("0.bias", (1,))


def test_iterable_dataset_without_length():
    model = nn.Sequential(nn.Linear(3, 2)).to(D)
    X, Y = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(X, Y))

    loader = torch.utils.data.DataLoader(Stream(), batch_size=4)
    op = hc.HessianOperator(model, nn.MSELoss(), loader)
    assert "batches=?" in repr(op)
    torch.testing.assert_close(op.to_dense(), autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


def test_fisher_refuses_train_mode_batchnorm():
    model = bn_dropout_model()
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    with pytest.raises(hc.InvalidInputError, match="per-sample gradients"):
        hc.EmpiricalFisherOperator(model, nn.MSELoss(), (X, Y), train_mode=True)


def test_single_batch_products_reuse_the_graph_inside_reuse_until_parameters_change():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(8, 3, dtype=D), torch.randn(8, 2, dtype=D)
    calls = []
    model[0].register_forward_hook(lambda *a: calls.append(1))
    for op_cls in (hc.HessianOperator, hc.GGNOperator):
        op = op_cls(model, nn.MSELoss(), (X, Y))
        v = torch.randn(op.shape[0], dtype=D)
        with op.reuse():
            first = op.matvec(v)
            calls.clear()
            torch.testing.assert_close(op.matvec(v), first)
            if op_cls is hc.HessianOperator:
                assert not calls  # no new forward pass: the graph was kept
            with torch.no_grad():
                model[0].weight.add_(0.1)  # in place, like an optimizer step
            ref = op_cls(model, nn.MSELoss(), (X, Y), chunk_size=1).to_dense() @ v
            torch.testing.assert_close(op.matvec(v), ref)  # the kept graph saw the change
            with torch.no_grad():
                model[0].weight.sub_(0.1)
        calls.clear()
        op.matvec(v)
        assert calls  # outside reuse() every product is built afresh


# -- counts of torch losses that do not average over samples ---------------------------------------------
def _batches(X, Y, cuts):
    edges = [0, *cuts, len(X)]
    return [(X[a:b], Y[a:b]) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("loss_fn", [
    nn.CrossEntropyLoss(), nn.CrossEntropyLoss(ignore_index=1),
    nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=D)),
    nn.CrossEntropyLoss(weight=torch.tensor([0.5, 2.0, 1.0], dtype=D), ignore_index=2, label_smoothing=0.2)])
def test_cross_entropy_over_batches_is_counted_by_its_targets(loss_fn):
    """The count of a batch is what torch's mean divides by: targets not ignored, weighted by class."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(D)
    X, Y = torch.randn(10, 3, dtype=D), torch.randint(0, 3, (10,))
    Y[[0, 3, 4]] = loss_fn.ignore_index
    H = hc.hessian(model, loss_fn, _batches(X, Y, [4, 6]))
    torch.testing.assert_close(H, autograd_hessian(model, loss_fn, X, Y), rtol=1e-10, atol=1e-12)


def test_nll_over_batches_with_a_batch_of_ignored_targets_only():
    model = nn.Sequential(nn.Linear(3, 3), nn.LogSoftmax(dim=1)).to(D)
    loss_fn = nn.NLLLoss(weight=torch.tensor([1.0, 3.0, 0.5], dtype=D))
    X, Y = torch.randn(8, 3, dtype=D), torch.randint(0, 3, (8,))
    Y[2:5] = -100  # the middle batch counts 0: its mean is 0/0 and it contributes nothing
    H = hc.hessian(model, loss_fn, _batches(X, Y, [2, 5]))
    torch.testing.assert_close(H, autograd_hessian(model, loss_fn, X, Y), rtol=1e-10, atol=1e-12)


def test_kl_div_batchmean_over_unequal_batches():
    model = nn.Sequential(nn.Linear(3, 3), nn.LogSoftmax(dim=1)).to(D)
    X, P = torch.randn(9, 3, dtype=D), torch.softmax(torch.randn(9, 3, dtype=D), 1)
    loss_fn = nn.KLDivLoss(reduction="batchmean")
    op = hc.HessianOperator(model, loss_fn, _batches(X, P, [4, 5]))
    assert op.objective.reduction == "mean"
    torch.testing.assert_close(op.to_dense(), autograd_hessian(model, loss_fn, X, P), rtol=1e-10, atol=1e-12)


# -- models that hold, write or wrap their state -----------------------------------------------------------
def test_lazy_module_not_yet_initialized_is_refused_by_name():
    with pytest.raises(hc.InvalidInputError, match=r"'0.weight' of module '0' \(LazyLinear\).*first forward"):
        hc.hessian(nn.Sequential(nn.LazyLinear(2)), nn.MSELoss(), (torch.randn(4, 3), torch.randn(4, 2)))


class WritesItsWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).to(D)

    def forward(self, x):
        with torch.no_grad():
            self.lin.weight.clamp_(-0.1, 0.1)  # "projected" weights, written in forward
        return self.lin(x)


def test_a_forward_that_writes_its_parameters_is_refused_and_nothing_changes():
    model = WritesItsWeight()
    snap = snapshot(model)
    with pytest.raises(hc.InvalidInputError, match=r"module 'lin' \(Linear\) writes into its parameter 'lin.weight'"):
        hc.hessian(model, nn.MSELoss(), (torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)))
    assert_same(model, snap)


def test_data_parallel_is_analysed_through_its_module():
    inner = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D)
    H = hc.hessian(nn.DataParallel(inner), nn.MSELoss(), (X, Y))
    torch.testing.assert_close(H, autograd_hessian(inner, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


def test_buffers_and_inputs_written_in_forward_stay_untouched():
    class Centering(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            x.sub_(x.mean(0))
            return self.lin(x)

    model = Centering().to(D)
    X, Y = torch.randn(5, 3, dtype=D), torch.randn(5, 2, dtype=D)
    X0, snap = X.clone(), snapshot(model)
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    assert torch.equal(X, X0)
    assert_same(model, snap)
    probe = hc.HessianOperator(model, nn.MSELoss(), (X, Y)).objective.probe
    assert probe.mutates_buffers and probe.mutates_inputs
    ref = nn.Sequential(nn.Linear(3, 2)).to(D)
    ref[0].load_state_dict(model.lin.state_dict())
    torch.testing.assert_close(H, autograd_hessian(ref, nn.MSELoss(), X - X.mean(0), Y), rtol=1e-10, atol=1e-12)


def test_empirical_fisher_weights_samples_by_their_count():
    """F = sum_i c_i g_i g_i^T / sum_i c_i: a sample counts its target's class weight, 0 when ignored."""
    model = nn.Sequential(nn.Linear(3, 3)).to(D)
    weight = torch.tensor([0.5, 2.0, 1.0], dtype=D)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    X, Y = torch.randn(7, 3, dtype=D), torch.randint(0, 3, (7,))
    Y[2] = -100
    F = hc.EmpiricalFisherOperator(model, loss_fn, [(X[:4], Y[:4]), (X[4:], Y[4:])]).to_dense()
    ref = torch.zeros_like(F)
    for i in range(7):
        if Y[i] < 0:
            continue
        model.zero_grad()
        nn.CrossEntropyLoss()(model(X[i:i + 1]), Y[i:i + 1]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        ref += weight[Y[i]] * torch.outer(g, g)
    torch.testing.assert_close(F, ref / weight[Y[Y >= 0]].sum(), rtol=1e-10, atol=1e-12)
