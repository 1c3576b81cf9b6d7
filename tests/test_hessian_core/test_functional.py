"""Exact curvature of the core engine against independent references (float64 autograd, closed forms,
the per-element double-backward loop, explicit Jacobians)."""

import pytest
import torch
from reference import autograd_hessian, loop_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


def mlp(act=nn.Tanh, sizes=(3, 5, 4, 2), bias=True):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, bias=bias), act()]
    return nn.Sequential(*layers[:-1]).to(D)


def small_cnn(classes=3):
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(2, classes),
    ).to(D)


def data(n=10, d_in=3, d_out=2):
    return torch.randn(n, d_in, dtype=D), torch.randn(n, d_out, dtype=D)


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU, nn.Sigmoid])
@pytest.mark.parametrize("loss", ["mse", "mse_sum", "lambda"])
def test_mlp_matches_autograd(act, loss):
    model = mlp(act)
    X, Y = data()
    loss_fn = {"mse": nn.MSELoss(), "mse_sum": nn.MSELoss(reduction="sum"),
               "lambda": lambda o, t: ((o - t) ** 4).mean()}[loss]
    H = hc.hessian(model, loss_fn, (X, Y))
    ref = autograd_hessian(model, loss_fn, X, Y)
    assert H.dtype == D and H.shape == ref.shape == (54, 54)
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)


def test_cross_entropy_and_bce_match_autograd():
    model = mlp(nn.Tanh, (3, 6, 4))
    X = torch.randn(12, 3, dtype=D)
    y = torch.randint(0, 4, (12,))
    ce = nn.CrossEntropyLoss()
    torch.testing.assert_close(hc.hessian(model, ce, (X, y)), autograd_hessian(model, ce, X, y),
                               rtol=1e-10, atol=1e-12)
    model2 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1), nn.Sigmoid()).to(D)
    t = torch.randint(0, 2, (12, 1)).to(D)
    bce = nn.BCELoss()
    torch.testing.assert_close(hc.hessian(model2, bce, (X, t)), autograd_hessian(model2, bce, X, t),
                               rtol=1e-10, atol=1e-12)


def test_small_cnn_matches_autograd():
    model = small_cnn()
    X = torch.randn(5, 1, 6, 6, dtype=D)
    y = torch.randint(0, 3, (5,))
    ce = nn.CrossEntropyLoss()
    H = hc.hessian(model, ce, (X, y))
    torch.testing.assert_close(H, autograd_hessian(model, ce, X, y), rtol=1e-10, atol=1e-12)


def test_per_element_loop_agrees():
    model = mlp(nn.Tanh)
    X, Y = data()
    loss_fn = nn.MSELoss()
    torch.testing.assert_close(hc.hessian(model, loss_fn, (X, Y)), loop_hessian(model, loss_fn, X, Y),
                               rtol=1e-10, atol=1e-12)


def test_linear_regression_closed_form():
    # L = mean_i (w.x_i + b - y_i)^2  =>  H = 2/N A^T A with A = [X, 1]
    model = nn.Linear(4, 1).to(D)
    X = torch.randn(9, 4, dtype=D)
    y = torch.randn(9, 1, dtype=D)
    A = torch.cat([X, torch.ones(9, 1, dtype=D)], 1)
    torch.testing.assert_close(hc.hessian(model, nn.MSELoss(), (X, y)), 2 / 9 * A.T @ A, rtol=1e-12, atol=1e-12)


def test_logistic_regression_closed_form():
    # L = mean BCE(sigmoid(a_i.theta), t_i)  =>  H = 1/N A^T diag(p(1-p)) A
    model = nn.Linear(3, 1).to(D)
    X = torch.randn(20, 3, dtype=D)
    t = torch.randint(0, 2, (20, 1)).to(D)
    A = torch.cat([X, torch.ones(20, 1, dtype=D)], 1)
    with torch.no_grad():
        p = torch.sigmoid(model(X))[:, 0]
    H = hc.hessian(model, nn.BCEWithLogitsLoss(), (X, t))
    torch.testing.assert_close(H, A.T @ torch.diag(p * (1 - p)) @ A / 20, rtol=1e-12, atol=1e-12)


class Logits(nn.Module):
    """Outputs a learnable logit vector for every sample: the Hessian w.r.t. it is the loss's own."""

    def __init__(self, c):
        super().__init__()
        self.z = nn.Parameter(torch.randn(c, dtype=D))

    def forward(self, x):
        return self.z.expand(x.shape[0], -1)


def test_softmax_cross_entropy_closed_form():
    model = Logits(5)
    X = torch.zeros(3, 1, dtype=D)
    y = torch.tensor([0, 2, 4])
    p = torch.softmax(model.z.detach(), 0)
    H = hc.hessian(model, nn.CrossEntropyLoss(), (X, y))
    torch.testing.assert_close(H, torch.diag(p) - torch.outer(p, p), rtol=1e-12, atol=1e-14)


def test_unequal_batches_mean_is_global_not_mean_of_means():
    model = mlp(nn.Tanh)
    X, Y = data(10)
    batches = [(X[:4], Y[:4]), (X[4:8], Y[4:8]), (X[8:], Y[8:])]
    loss_fn = nn.MSELoss()
    full = autograd_hessian(model, loss_fn, X, Y)
    H = hc.hessian(model, loss_fn, batches)
    torch.testing.assert_close(H, full, rtol=1e-10, atol=1e-12)
    mean_of_means = sum(autograd_hessian(model, loss_fn, x, y) for x, y in batches) / 3
    assert (mean_of_means - full).abs().max() > 1e-3  # the wrong answer really is different here


def test_unequal_batches_sum_and_dataloader():
    model = mlp(nn.Tanh)
    X, Y = data(10)
    loss_fn = nn.MSELoss(reduction="sum")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=4)
    torch.testing.assert_close(hc.hessian(model, loss_fn, loader), autograd_hessian(model, loss_fn, X, Y),
                               rtol=1e-10, atol=1e-12)
    # a plain callable that sums declares it
    plain = lambda o, t: ((o - t) ** 2).sum()  # noqa: E731
    torch.testing.assert_close(hc.hessian(model, plain, loader, reduction="sum"),
                               autograd_hessian(model, plain, X, Y), rtol=1e-10, atol=1e-12)


def test_generator_data_is_materialized_once():
    model = mlp(nn.Tanh)
    X, Y = data(10)
    gen = ((X[i:i + 5], Y[i:i + 5]) for i in (0, 5))
    op = hc.HessianOperator(model, nn.MSELoss(), gen)
    v = torch.randn(op.shape[0], dtype=D)
    ref = autograd_hessian(model, nn.MSELoss(), X, Y) @ v
    torch.testing.assert_close(op.matvec(v), ref)
    torch.testing.assert_close(op.matvec(v), ref)  # a second pass sees the same data


def test_count_fn_ignore_index_normalizes_over_kept_targets():
    model = mlp(nn.Tanh, (3, 4, 3))
    X = torch.randn(10, 3, dtype=D)
    y = torch.randint(0, 3, (10,))
    y[[1, 2, 7]] = -100
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    batches = [(X[:4], y[:4]), (X[4:8], y[4:8]), (X[8:], y[8:])]
    H = hc.hessian(model, ce, batches, count_fn=lambda x, t: (t != -100).sum())
    torch.testing.assert_close(H, autograd_hessian(model, ce, X, y), rtol=1e-10, atol=1e-12)


def test_frozen_parameters_excluded():
    model = mlp(nn.Tanh)
    model[0].weight.requires_grad_(False)
    X, Y = data()
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    assert H.shape == (54 - 15, 54 - 15)
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.b.weight = self.a.weight  # shared

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def test_tied_parameters_counted_once():
    model = Tied().to(D)
    X, Y = data(6, 3, 3)
    H = hc.hessian(model, nn.MSELoss(), (X, Y))
    assert H.shape == (9 + 3 + 3, 9 + 3 + 3)
    torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H, loop_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)


def test_dtype_follows_model_and_float_data_is_cast():
    model = mlp(nn.Tanh).float()
    X, Y = data()
    H32 = hc.hessian(model, nn.MSELoss(), (X.float(), Y.float()))
    assert H32.dtype == torch.float32
    H64 = hc.hessian(model.double(), nn.MSELoss(), (X.float(), Y.float()))  # data cast to the model
    assert H64.dtype == D
    torch.testing.assert_close(H32.double(), H64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op_cls", [hc.HessianOperator, hc.GGNOperator, hc.EmpiricalFisherOperator])
def test_operators_symmetric_and_consistent(op_cls):
    model = mlp(nn.Tanh)
    X, Y = data(10)
    op = op_cls(model, nn.MSELoss(), [(X[:6], Y[:6]), (X[6:], Y[6:])], chunk_size=7)
    u, v = torch.randn(2, op.shape[0], dtype=D)
    assert abs(u @ op.matvec(v) - v @ op.matvec(u)) < 1e-12
    dense = op.to_dense()
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)
    V = torch.randn(op.shape[0], 3, dtype=D)
    torch.testing.assert_close(op.matmat(V), dense @ V)
    torch.testing.assert_close(op @ V, dense @ V)
    torch.testing.assert_close(op.diagonal(), dense.diagonal())
    sp = op.to_scipy()
    torch.testing.assert_close(torch.from_numpy(sp.matvec(v.numpy())), dense @ v)
    torch.testing.assert_close(torch.from_numpy(sp @ V.numpy()), dense @ V)


def test_ggn_equals_explicit_jacobian_product():
    model = mlp(nn.Tanh)
    X, Y = data(7)
    loss_fn = nn.MSELoss()
    names = [n for n, _ in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [p.shape for p in model.parameters()]

    def outputs(theta):
        ps, o = {}, 0
        for n, s in zip(names, shapes):
            ps[n] = theta[o:o + s.numel()].reshape(s)
            o += s.numel()
        return torch.func.functional_call(model, ps, (X,)).reshape(-1)

    J = torch.autograd.functional.jacobian(outputs, theta0)  # (N*C, P)
    out0 = outputs(theta0).detach()
    HL = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(Y.shape), Y), out0)
    G = hc.GGNOperator(model, loss_fn, (X, Y)).to_dense()
    torch.testing.assert_close(G, J.T @ HL @ J, rtol=1e-10, atol=1e-12)


def test_ggn_equals_hessian_for_linear_model():
    model = nn.Linear(3, 2).to(D)
    X, Y = data(8)
    torch.testing.assert_close(hc.GGNOperator(model, nn.MSELoss(), (X, Y)).to_dense(),
                               hc.hessian(model, nn.MSELoss(), (X, Y)), rtol=1e-12, atol=1e-12)


def test_empirical_fisher_equals_per_sample_gradient_loop():
    model = mlp(nn.Tanh)
    X, Y = data(9)
    loss_fn = nn.MSELoss()
    params = list(model.parameters())
    F = torch.zeros(54, 54, dtype=D)
    for i in range(9):
        g = torch.autograd.grad(loss_fn(model(X[i:i + 1]), Y[i:i + 1]), params)
        g = torch.cat([x.reshape(-1) for x in g])
        F += torch.outer(g, g)
    F /= 9
    op = hc.EmpiricalFisherOperator(model, loss_fn, [(X[:5], Y[:5]), (X[5:], Y[5:])])
    torch.testing.assert_close(op.to_dense(), F, rtol=1e-10, atol=1e-12)


def test_diagonal_and_blocks_match_dense():
    model = mlp(nn.Tanh)
    X, Y = data()
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)
    diag = hc.hessian_diagonal(model, nn.MSELoss(), (X, Y))
    assert [d.shape for d in diag] == [p.shape for p in model.parameters()]
    torch.testing.assert_close(torch.cat([d.reshape(-1) for d in diag]), ref.diagonal(), rtol=1e-10, atol=1e-12)
    blocks = hc.hessian_blocks(model, nn.MSELoss(), (X, Y))
    offsets = [0]
    for p in model.parameters():
        offsets.append(offsets[-1] + p.numel())
    for b, lo, hi in zip(blocks, offsets[:-1], offsets[1:]):
        torch.testing.assert_close(b, ref[lo:hi, lo:hi], rtol=1e-10, atol=1e-12)
    per_module = hc.hessian_blocks(model, nn.MSELoss(), (X, Y), groups="module")
    assert len(per_module) == 3
    torch.testing.assert_close(per_module[1], ref[offsets[2]:offsets[4], offsets[2]:offsets[4]],
                               rtol=1e-10, atol=1e-12)
    assert not any(b.requires_grad for b in blocks + diag)


def test_hvp_flat_and_list():
    model = mlp(nn.Tanh)
    X, Y = data()
    ref = autograd_hessian(model, nn.MSELoss(), X, Y)
    v = torch.randn(54, dtype=D)
    torch.testing.assert_close(hc.hvp(model, nn.MSELoss(), (X, Y), v), ref @ v)
    parts = [t.clone() for t in torch.split(v, [p.numel() for p in model.parameters()])]
    v_list = [t.reshape(p.shape) for t, p in zip(parts, model.parameters())]
    torch.testing.assert_close(hc.hvp(model, nn.MSELoss(), (X, Y), v_list), ref @ v)
    op = hc.HessianOperator(model, nn.MSELoss(), (X, Y))
    out = op.matvec(v_list)
    assert [o.shape for o in out] == [p.shape for p in model.parameters()]


def test_params_subset_and_multi_input_model():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x, z):
            return torch.tanh(self.a(x)) * self.b(z)

    model = TwoInputs().to(D)
    x, z, y = torch.randn(6, 3, dtype=D), torch.randn(6, 2, dtype=D), torch.randn(6, 2, dtype=D)
    H = hc.hessian(model, nn.MSELoss(), ((x, z), y))
    loss = lambda o, t: nn.functional.mse_loss(o, t)  # noqa: E731

    def f(theta):
        aw, ab, bw, bb = torch.split(theta, [6, 2, 4, 2])
        out = torch.tanh(x @ aw.reshape(2, 3).T + ab) * (z @ bw.reshape(2, 2).T + bb)
        return loss(out, y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    ref = torch.autograd.functional.hessian(f, theta0)
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)
    sub = hc.hessian(model, nn.MSELoss(), ((x, z), y), params=["b.weight", model.a.bias])
    idx = torch.cat([torch.arange(6, 8), torch.arange(8, 12)])  # model order: a.bias then b.weight
    torch.testing.assert_close(sub, ref[idx][:, idx], rtol=1e-10, atol=1e-12)
