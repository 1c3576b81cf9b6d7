"""Second-order forward propagation through traced graphs (hessian_core.structured.graph_engine) against
independent float64 references: torch.autograd.functional.hessian (a loop of double backwards), the generic
path, torch.func.hessian, and central finite differences of the gradient where PyTorch's own second
derivatives are wrong (LayerNorm under torch.func)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from reference import autograd_hessian, fd_hessian, func_hessian
from torch import nn

import hessian_core as hc
import hessian_core.structured.strategies as strategies

D = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _bn(bn):
    """Running statistics and affine parameters away from their defaults (so every term is exercised)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g, dtype=D) - 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=D) + 0.5)
        bn.weight.copy_(torch.rand(bn.num_features, generator=g, dtype=D) + 0.5)
        bn.bias.copy_(torch.rand(bn.num_features, generator=g, dtype=D) - 0.5)
    return bn


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(x + torch.tanh(self.a(x)))


class ResidualConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1), nn.Linear(8, 2)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.avg_pool2d(h + torch.sigmoid(self.c2(h)), 2)
        return self.fc(h.view(h.size(0), -1))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        return self.c(self.a(x) * torch.sigmoid(self.b(x)))


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(7, 3), nn.Linear(3, 2)

    def forward(self, idx):
        return self.fc(torch.tanh(self.emb(idx)).mean(1))


class InplaceCustom(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):  # (N, 2, 3) -> per-position Linear, in-place ReLU, explicit batch size in view
        h = F.relu(self.a(x), inplace=True)
        return self.b(h.view(x.size(0), -1))


class _NormVariants(nn.Module):
    """LayerNorm over tokens without affine, with a weight only, and over two trailing dimensions."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(12, 2)
        self.plain, self.weighted = nn.LayerNorm(4, elementwise_affine=False), nn.LayerNorm(4, bias=False)
        self.two = nn.LayerNorm((3, 4))
        with torch.no_grad():
            self.weighted.weight.uniform_(0.5, 1.5)
            self.two.weight.uniform_(0.5, 1.5)
            self.two.bias.uniform_(-0.5, 0.5)

    def forward(self, x):  # (N, 3, 4)
        h = self.a(x)
        h = torch.tanh(self.weighted(self.plain(h) + h))
        h = F.gelu(self.two(self.b(h)))
        return self.c(h.flatten(1))


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def _classes(n, c, seed=1):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


CASES = {
    "conv2d_bn_pool": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), _bn(nn.BatchNorm2d(2)), nn.ReLU(),
                                             nn.MaxPool2d(2), nn.Conv2d(2, 3, 2), _bn(nn.BatchNorm2d(3)), nn.Tanh(),
                                             nn.Flatten(), nn.Linear(3, 3)),
                       lambda: (_x(7, 1, 4, 4), _classes(7, 3)), nn.CrossEntropyLoss()),
    "conv1d_avgpool": (lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.AvgPool1d(2), nn.Flatten(),
                                             nn.Linear(6, 2)),
                       lambda: (_x(6, 2, 6), _x(6, 2, seed=1)), nn.MSELoss()),
    "conv_stride_dilation": (lambda: nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Tanh(),
                                                   nn.Conv2d(2, 2, 2, dilation=2), nn.Flatten(),
                                                   nn.Unflatten(1, (2, 1)), nn.Conv1d(2, 3, 1, stride=2),
                                                   nn.Softplus(), nn.Flatten(), nn.Linear(3, 2)),
                             lambda: (_x(5, 1, 6, 6), _x(5, 2, seed=1)), nn.MSELoss()),
    "layernorm_gelu": (lambda: nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.GELU(), nn.Linear(5, 4),
                                             nn.LayerNorm(4), nn.GELU(), nn.Linear(4, 3)),
                       lambda: (_x(7, 3), _classes(7, 3)), nn.CrossEntropyLoss()),
    "rmsnorm_silu": (lambda: nn.Sequential(nn.Linear(3, 4), nn.RMSNorm(4), nn.SiLU(), nn.Linear(4, 2)),
                     lambda: (_x(6, 3), _x(6, 2, seed=1)), nn.MSELoss(reduction="sum")),
    # the closed forms of layer_norm / rms_norm (norm_rules): rows of tokens, no affine, weight without
    # bias, a two-dimensional normalized shape, rms_norm's default eps
    "layernorm_tokens_variants": (lambda: _NormVariants(), lambda: (_x(5, 3, 4), _x(5, 2, seed=1)), nn.MSELoss()),
    "rmsnorm_tokens": (lambda: nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4), nn.Tanh(), nn.Flatten(),
                                             nn.Linear(12, 2)),
                       lambda: (_x(5, 3, 4), _classes(5, 2)), nn.CrossEntropyLoss()),
    "groupnorm": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                                        nn.Flatten(), nn.Linear(4, 2)),
                  lambda: (_x(5, 1, 5, 5), _x(5, 2, seed=1)), nn.MSELoss()),
    "residual": (Residual, lambda: (_x(6, 3), _x(6, 2, seed=1)), nn.MSELoss()),
    "residual_conv": (ResidualConv, lambda: (_x(5, 1, 4, 4), _classes(5, 2)), nn.CrossEntropyLoss()),
    "gated_product": (Gated, lambda: (_x(6, 3), _classes(6, 2)), nn.CrossEntropyLoss()),
    "softmax_inside": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 2)),
                       lambda: (_x(6, 3), _x(6, 2, seed=1)), nn.MSELoss()),
    "embedding_tokens": (Tokens, lambda: (torch.randint(0, 7, (6, 4), generator=torch.Generator().manual_seed(2)),
                                          _classes(6, 2)), nn.CrossEntropyLoss()),
    "dropout_eval_elu_3d": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3), nn.ELU(), nn.Flatten(),
                                                  nn.Linear(8, 2)),
                                 lambda: (_x(6, 2, 3), _x(6, 2, seed=1)), nn.MSELoss()),
    "inplace_relu_custom_forward": (InplaceCustom, lambda: (_x(6, 2, 3), _x(6, 2, seed=1)), nn.MSELoss()),
}


def _problem(name):
    make, data, loss = CASES[name]
    torch.manual_seed(0)
    model = make().to(D).eval()  # the references evaluate the model as it is; hessian_core in eval mode
    return model, loss, data()


@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_and_diagonal_match_references(name):
    model, loss, (X, Y) = _problem(name)
    # torch.func.hessian of normalization layers is wrong in torch 2.13 (asymmetric for LayerNorm, see the
    # finite-difference test below); the loop of double backwards is right there
    ref = autograd_hessian(model, loss, X, Y) if "norm" in name else func_hessian(model, loss, X, Y)
    op = hc.HessianOperator(model, loss, (X, Y), strategy="structured")
    H = op.to_dense()
    assert op.last_path.startswith("structured: graph"), op.last_path
    torch.testing.assert_close(H, ref, **TOL)
    generic = hc.HessianOperator(model, loss, (X, Y), strategy="generic").to_dense()
    torch.testing.assert_close(H, generic, rtol=1e-12, atol=1e-12 * float(generic.abs().max()))
    d = op.diagonal()
    assert op.last_strategy == "structured"
    torch.testing.assert_close(d, ref.diagonal(), **TOL)


@pytest.mark.parametrize("name", ["layernorm_gelu", "layernorm_tokens_variants", "rmsnorm_tokens"])
def test_norm_closed_forms_match_the_vmapped_products(name, monkeypatch):
    """The closed-form tangents and curvature of layer_norm / rms_norm (norm_rules) run, and agree with the
    vmapped reverse-over-reverse products of the decomposed normalization they replace."""
    import hessian_core.structured.graph_engine as engine

    model, loss, (X, Y) = _problem(name)
    answered = []
    closed = engine.norm_products

    def counted(*a):
        out = closed(*a)
        answered.append(out is not None)
        return out

    monkeypatch.setattr(engine, "norm_products", counted)
    H = hc.hessian(model, loss, (X, Y), strategy="structured")
    assert answered and all(answered)
    monkeypatch.setattr(engine, "norm_products", lambda *a: None)
    monkeypatch.setattr(engine, "norm_push", lambda *a: None)
    vmapped = hc.hessian(model, loss, (X, Y), strategy="structured")
    torch.testing.assert_close(H, vmapped, rtol=1e-12, atol=1e-12 * float(vmapped.abs().max()))
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-13 * float(H.abs().max()))


class _MeanRow(nn.Module):
    """LayerNorm of the batch mean: a 1-D input whose leading dimension is not the samples'."""

    def __init__(self):
        super().__init__()
        self.a, self.ln, self.c = nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.a(x)
        return self.c(torch.tanh(h + self.ln(h.mean(0))))


@pytest.mark.parametrize("make", [_MeanRow, lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm((6, 4)), nn.Tanh(),
                                                                  nn.Linear(4, 2))],
                         ids=["norm_of_the_batch_mean", "norm_over_the_batch"])
def test_norm_closed_forms_where_rows_are_not_samples(make):
    """A normalization that mixes the samples makes the batch one unit; its closed forms then sum over it."""
    torch.manual_seed(0)
    model = make().to(D).eval()
    X, Y = _x(6, 3), _x(6, 2, seed=1)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="structured")
    H = op.to_dense()
    assert "the batch as one unit" in op.last_path
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)


def test_norm_closed_forms_with_the_batch_as_one_unit():
    """Train-mode BatchNorm couples the samples: the closed forms then sum over the whole batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), _bn(nn.BatchNorm1d(4)), nn.Linear(4, 4), nn.LayerNorm(4), nn.Tanh(),
                          nn.Linear(4, 2)).to(D)
    with torch.no_grad():
        model[3].weight.uniform_(0.5, 1.5)
    X, Y = _x(8, 3), _x(8, 2, seed=1)
    batches = [(X[:5], Y[:5]), (X[5:], Y[5:])]
    op = hc.HessianOperator(model, nn.MSELoss(), batches, train_mode=True, strategy="structured")
    H = op.to_dense()
    assert "the batch as one unit" in op.last_path
    torch.testing.assert_close(H, _batched_reference(model, nn.MSELoss(), batches, train=True), **TOL)
    torch.testing.assert_close(op.diagonal(), H.diagonal(), **TOL)


def test_layernorm_against_finite_differences():
    model, loss, (X, Y) = _problem("layernorm_gelu")
    H = hc.HessianOperator(model, loss, (X, Y), strategy="structured").to_dense()
    torch.testing.assert_close(H, fd_hessian(model, loss, X, Y), rtol=1e-6, atol=1e-7)


def _batched_reference(model, loss, batches, train=False):
    """Mean over all samples: each batch's Hessian (on its own statistics in train mode) weighted by its size."""
    total, n = 0, 0
    for X, Y in batches:
        m = copy.deepcopy(model).train(train)
        total = total + X.shape[0] * autograd_hessian(m, loss, X, Y)
        n += X.shape[0]
    return total / n


@pytest.mark.parametrize("conv", [False, True])
def test_batchnorm_train_mode_across_two_unequal_batches(conv):
    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(nn.Conv2d(1, 2, 2), _bn(nn.BatchNorm2d(2)), nn.Tanh(), nn.Flatten(),
                              nn.Linear(8, 2)).to(D)
        X = _x(8, 1, 3, 3)
    else:
        model = nn.Sequential(nn.Linear(3, 4), _bn(nn.BatchNorm1d(4)), nn.Tanh(), nn.Linear(4, 2)).to(D)
        X = _x(8, 3)
    Y = _x(8, 2, seed=1)
    batches = [(X[:5], Y[:5]), (X[5:], Y[5:])]
    buffers = [b.clone() for b in model.buffers()]
    ref = _batched_reference(model, nn.MSELoss(), batches, train=True)
    op = hc.HessianOperator(model, nn.MSELoss(), batches, train_mode=True, strategy="structured")
    H = op.to_dense()
    assert "the batch as one unit" in op.last_path
    torch.testing.assert_close(H, ref, **TOL)
    torch.testing.assert_close(op.diagonal(), ref.diagonal(), **TOL)
    generic = hc.HessianOperator(model, nn.MSELoss(), batches, train_mode=True, strategy="generic").to_dense()
    torch.testing.assert_close(H, generic, rtol=1e-12, atol=1e-12 * float(generic.abs().max()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # running statistics untouched
    if not conv:  # independent of PyTorch's second derivatives of batch_norm: finite differences of gradients
        stats = copy.deepcopy(model).train()  # batch statistics without running ones (nothing written)
        stats[1].track_running_stats, stats[1].running_mean, stats[1].running_var = False, None, None
        fd = sum(X.shape[0] * fd_hessian(stats, nn.MSELoss(), X, Y) for X, Y in batches) / 8
        torch.testing.assert_close(H, fd, rtol=1e-6, atol=1e-7)


def test_unequal_batches_blocks_subsets_and_entry_points_agree():
    model, loss, (X, Y) = _problem("conv2d_bn_pool")
    batches = [(X[:4], Y[:4]), (X[4:], Y[4:])]
    ref = _batched_reference(model, loss, batches)
    H = hc.hessian(model, loss, batches, strategy="structured")
    torch.testing.assert_close(H, ref, **TOL)
    torch.testing.assert_close(hc.hessian(model, loss, batches), H, **TOL)  # auto: whichever path runs
    spec = hc.ParamSpec(model)
    diag = torch.cat([t.reshape(-1) for t in hc.hessian_diagonal(model, loss, batches)])
    torch.testing.assert_close(diag, H.diagonal(), **TOL)
    for block, sl in zip(hc.hessian_blocks(model, loss, batches, groups="module", strategy="structured"),
                         _module_slices(spec)):
        torch.testing.assert_close(block, H[sl, sl], **TOL)
    op = hc.HessianOperator(model, loss, batches)
    V = _x(spec.numel, 3, seed=4)
    torch.testing.assert_close(op.matmat(V), H @ V, **TOL)
    sub = op.with_params(["4.weight", "8.bias"])
    idx = spec.positions_of(sub.params)
    torch.testing.assert_close(sub.to_dense(), H[idx][:, idx], **TOL)


def _module_slices(spec):
    out, start, prev = [], 0, None
    for name, a in zip(spec.names, spec.offsets[:-1]):
        module = name.rsplit(".", 1)[0]
        if prev is not None and module != prev:
            out.append(slice(start, a))
            start = a
        prev = module
    out.append(slice(start, spec.offsets[-1]))
    return out


def test_sample_slices_under_a_small_budget(monkeypatch):
    """Slices of one sample (per-sample Grams, kron coefficients and cross terms sliced alike)."""
    monkeypatch.setattr(strategies, "GRAPH_WORK_BYTES", 0)
    monkeypatch.setattr(strategies, "MIN_WORK_BYTES", 0)
    model, loss, (X, Y) = _problem("layernorm_gelu")
    P = hc.ParamSpec(model).numel
    calls = []
    original = strategies.add_slice_hessian
    monkeypatch.setattr(strategies, "add_slice_hessian", lambda *a: calls.append(1) or original(*a))
    H = hc.hessian(model, loss, (X, Y), strategy="structured", memory_budget=P * P * 8 + 1)
    assert len(calls) == X.shape[0]
    torch.testing.assert_close(H, autograd_hessian(model, loss, X, Y), **TOL)


def test_loss_coupling_samples_is_exact_as_one_unit():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    X, Y = _x(6, 3), _x(6, 2, seed=1)

    def coupled(o, t):
        return ((o - t).sum(0) ** 2).sum() / o.shape[0]

    op = hc.HessianOperator(model, coupled, (X, Y), strategy="structured")
    torch.testing.assert_close(op.to_dense(), autograd_hessian(model, coupled, X, Y), **TOL)
    assert "the batch as one unit" in op.last_path


def test_auto_uses_the_graph_only_where_it_pays():
    model, loss, (X, Y) = _problem("conv2d_bn_pool")
    op = hc.HessianOperator(model, loss, (X, Y))
    op.to_dense()
    assert op.last_path.startswith("structured: graph")
    assert op.plan()["dense"].startswith("structured")
    # a loss that couples samples makes every column a tangent and every curving unit a P x P Gram: the
    # products are cheaper, and the reason is reported
    coupled = hc.HessianOperator(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(D),
                                 lambda o, t: ((o - t).sum(0) ** 2).sum(), (_x(30, 3), _x(30, 2, seed=1)))
    coupled.to_dense()
    assert coupled.last_strategy == "generic" and "cost about" in coupled.last_path


@pytest.mark.parametrize("make, why", [
    (lambda: nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), None),
    (lambda: _tied(), "tied"),
    (lambda: _item_model(), "number"),
])
def test_fallbacks_name_their_reason(make, why):
    model = make().to(D)
    X, Y = _x(6, 3), _x(6, 2, seed=1)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    H = op.to_dense()
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)
    if why is None:
        assert op.last_path == "structured: Linear chain"
    else:
        assert op.last_strategy == "generic" and why in op.last_path
        with pytest.raises(hc.InvalidInputError, match=why):
            hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="structured").to_dense()


def _tied():
    lin = nn.Linear(3, 3)
    return nn.Sequential(lin, nn.Tanh(), lin, nn.Linear(3, 2))


class _Item(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 2)

    def forward(self, x):
        y = self.a(x)
        return y * float(y.abs().max())  # the scale's derivative would be lost: refused


def _item_model():
    return _Item()


def test_train_mode_dropout_is_exact_and_model_is_untouched():
    model = nn.Sequential(nn.Linear(3, 4), _bn(nn.BatchNorm1d(4)), nn.Tanh(), nn.Dropout(0.5),
                          nn.Linear(4, 2)).to(D).train()
    state = copy.deepcopy(model.state_dict())
    X, Y = _x(6, 3), _x(6, 2, seed=1)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True)
    H = op.to_dense()
    assert op.last_strategy == "structured"  # the masks are constants of the seeded forward (composites)
    torch.testing.assert_close(H, hc.HessianOperator(model, nn.MSELoss(), (X, Y), train_mode=True,
                                                     strategy="generic").to_dense(), **TOL)
    H_eval = hc.hessian(model, nn.MSELoss(), (X, Y), strategy="structured")  # eval mode: dropout is off
    torch.testing.assert_close(H_eval, autograd_hessian(copy.deepcopy(model).eval(), nn.MSELoss(), X, Y), **TOL)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_float32_model():
    model, loss, (X, Y) = _problem("conv2d_bn_pool")
    ref = func_hessian(model, loss, X, Y)
    model32 = copy.deepcopy(model).float()
    op = hc.HessianOperator(model32, loss, (X.float(), Y), strategy="structured")
    H = op.to_dense()
    assert H.dtype == torch.float32 and op.last_path.startswith("structured: graph (per sample")
    torch.testing.assert_close(H.double(), ref, rtol=1e-4, atol=1e-5)


class _TwoBranches(nn.Module):
    """``cosine_similarity(tanh(a(x)), tanh(b(x)))`` then a head: a 'general' call of two per-sample inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(3, 4), nn.Linear(3, 4), nn.Linear(1, 2)

    def forward(self, x):
        y = F.cosine_similarity(torch.tanh(self.a(x)), torch.tanh(self.b(x)))
        return self.head(y[:, None])


@pytest.mark.parametrize("names", [["a.weight"], ["a.weight", "a.bias"], ["b.bias", "head.weight"]])
def test_parameter_subsets_keep_per_sample_constants_per_sample(names):
    """With only one branch differentiated, the other branch is a constant that still differs by sample."""
    torch.manual_seed(0)
    model = _TwoBranches().to(D)
    X, Y = _x(6, 3), _x(6, 2, seed=1)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y), params=names, strategy="structured")
    H = op.to_dense()
    assert op.last_path.startswith("structured: graph (per sample")
    full = autograd_hessian(model, nn.MSELoss(), X, Y)
    idx = hc.ParamSpec(model).positions_of(op.params)
    torch.testing.assert_close(H, full[idx][:, idx], **TOL)
    torch.testing.assert_close(op.diagonal(), full[idx, idx], **TOL)


class _Cube(torch.autograd.Function):
    """``x ** 3`` with its own (correct) backward: its derivative is the backward's, not its forward ops'."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g


class _WithFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(_Cube.apply(torch.tanh(self.a(x))))


def test_custom_autograd_functions_are_not_traced_through():
    """The trace sees the ops inside a custom Function's forward but not the Function itself: autograd, which
    the trace runs alongside, names the value it never saw, and the generic path answers exactly."""
    torch.manual_seed(0)
    model = _WithFunction().to(D)
    X, Y = _x(6, 3), _x(6, 2, seed=1)
    with pytest.raises(hc.InvalidInputError, match="custom autograd.Function"):
        hc.HessianOperator(model, nn.MSELoss(), (X, Y), strategy="structured").to_dense()
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    torch.testing.assert_close(op.to_dense(), autograd_hessian(model, nn.MSELoss(), X, Y), **TOL)
    assert op.last_strategy == "generic" and "custom autograd.Function" in op.last_path
