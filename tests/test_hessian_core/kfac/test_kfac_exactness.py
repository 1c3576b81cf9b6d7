"""KFAC equals the exact GGN block where the theory says so (float64), against an independent dense GGN
(``J^T H J`` by torch.func) and closed forms; and it is not exact where the theory does not say so."""

import pytest
import torch
from kfac_refs import block, dense_ef, dense_ggn
from torch import nn

import hessian_core as hc

D = torch.float64


def assert_blocks_equal(op, ref, tol=1e-12):
    for key, (idx, b) in zip(op.keys, op.blocks):
        R = block(ref, idx)
        err = float((b.to_dense() - R).abs().max())
        assert err <= tol * max(float(R.abs().max()), 1e-300), (key, err)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_single_linear_layer_mse_is_exact_and_has_the_closed_form(reduction):
    torch.manual_seed(0)
    N, d, C = 10, 4, 3
    X, Y = torch.randn(N, d, dtype=D), torch.randn(N, C, dtype=D)
    model = nn.Linear(d, C).double()
    loss = nn.MSELoss(reduction=reduction)
    ref = dense_ggn(model, loss, X, Y)
    # weight and bias together: the whole layer block, which is the whole GGN
    joint = hc.KFACOperator(model, loss, (X, Y), separate_bias=False)
    assert torch.allclose(joint.to_dense(), ref, atol=1e-13, rtol=1e-12)
    assert torch.allclose(joint.to_dense(), hc.GGNOperator(model, loss, (X, Y)).to_dense(), atol=1e-13, rtol=1e-12)
    # closed form: loss = c sum (f - y)^2, GGN = 2c I ⊗ sum [x 1][x 1]^T = (2c N) I ⊗ (sum [x 1][x 1]^T / N)
    c = 1 / (N * C) if reduction == "mean" else 1.0
    A, G = joint.factors[""]
    X1 = torch.cat([X, torch.ones(N, 1, dtype=D)], 1)
    assert torch.allclose(A, X1.T @ X1 / N, atol=1e-14, rtol=1e-12)
    assert torch.allclose(G, 2 * c * N * torch.eye(C, dtype=D), atol=1e-14, rtol=1e-12)
    # separate blocks: each equals the GGN's own block (GGNOperator restricted to that parameter)
    sep = hc.KFACOperator(model, loss, (X, Y))
    assert sep.keys == ["weight", "bias"]
    ggn = hc.GGNOperator(model, loss, (X, Y))
    assert torch.allclose(sep.block("weight").to_dense(), ggn.with_params([model.weight]).to_dense(), atol=1e-13,
                          rtol=1e-12)
    assert torch.allclose(sep.block("bias").to_dense(), ggn.with_params([model.bias]).to_dense(), atol=1e-13,
                          rtol=1e-12)
    assert_blocks_equal(sep, ref)


@pytest.mark.parametrize("separate_bias", [True, False])
def test_deep_linear_network_blocks_are_exact_with_mse_for_any_batch(separate_bias):
    # D = d outputs / d layer outputs is the same for every sample of a linear network, so G ⊗ A is exact
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3), nn.Linear(3, 2)).double()
    X, Y = torch.randn(10, 4, dtype=D), torch.randn(10, 2, dtype=D)
    op = hc.KFACOperator(model, nn.MSELoss(), (X, Y), separate_bias=separate_bias)
    assert_blocks_equal(op, dense_ggn(model, nn.MSELoss(), X, Y))


@pytest.mark.parametrize("separate_bias", [True, False])
def test_deep_linear_network_one_sample_is_exact_for_cross_entropy(separate_bias):
    # with one sample, sum_n (D^T H D) ⊗ a a^T has one term: exact whatever the loss
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)).double()
    X, y = torch.randn(1, 4, dtype=D), torch.tensor([2])
    loss = nn.CrossEntropyLoss()
    op = hc.KFACOperator(model, loss, (X, y), separate_bias=separate_bias)
    assert_blocks_equal(op, dense_ggn(model, loss, X, y))
    # the empirical type, one sample: the empirical Fisher's blocks
    emp = hc.KFACOperator(model, loss, (X, y), type="empirical", separate_bias=separate_bias)
    assert_blocks_equal(emp, dense_ef(model, loss, X, y))
    # and with a nonlinearity too (one sample)
    tanh = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    assert_blocks_equal(hc.KFACOperator(tanh, loss, (X, y), separate_bias=separate_bias), dense_ggn(tanh, loss, X, y))


def test_one_sample_loss_not_convex_in_the_outputs_gives_the_indefinite_ggn_block():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, Y = torch.randn(1, 3, dtype=D), torch.randn(1, 2, dtype=D)

    def loss(o, t):
        return torch.cos(3 * o * t).sum()

    op = hc.KFACOperator(model, loss, (X, Y), separate_bias=False)
    ref = dense_ggn(model, loss, X, Y)
    assert_blocks_equal(op, ref)
    assert float(op.eigenvalues()[0]) < -1e-3  # indefinite, as the GGN of a non-convex loss


def test_linear_over_positions_expand_is_exact_for_per_position_mse():
    # a deep linear network applied at every position, MSE over all positions: KFAC-expand is exact
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3)).double()
    X, Y = torch.randn(6, 7, 4, dtype=D), torch.randn(6, 7, 3, dtype=D)
    op = hc.KFACOperator(model, nn.MSELoss(), (X, Y), approx="expand")
    ref = dense_ggn(model, nn.MSELoss(), X, Y)
    assert_blocks_equal(op, ref)
    A, _ = op.factors["0"]
    rows = X.reshape(-1, 4)
    assert torch.allclose(A, rows.T @ rows / rows.shape[0], atol=1e-14, rtol=1e-12)  # averaged over all N*T rows
    # reduce is not exact here (it averages inputs over positions before the outer product)
    red = hc.KFACOperator(model, nn.MSELoss(), (X, Y), approx="reduce")
    idx, b = red.blocks[0]
    assert float((b.to_dense() - block(ref, idx)).abs().max()) > 1e-3


class MeanOverPositions(nn.Module):
    def forward(self, x):
        return x.mean(1)


def test_linear_over_positions_then_pooling_reduce_is_exact():
    # one loss term per sample after averaging positions: KFAC-reduce is exact for the shared layer
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(4, 5), MeanOverPositions(), nn.Linear(5, 3)).double()
    X, Y = torch.randn(8, 6, 4, dtype=D), torch.randn(8, 3, dtype=D)
    ref = dense_ggn(model, nn.MSELoss(), X, Y)
    red = hc.KFACOperator(model, nn.MSELoss(), (X, Y), approx="reduce")
    assert_blocks_equal(red, ref)
    exp = hc.KFACOperator(model, nn.MSELoss(), (X, Y), approx="expand")
    idx, b = exp.blocks[0]
    assert float((b.to_dense() - block(ref, idx)).abs().max()) > 1e-3


def test_conv2d_layer_with_mse_expand_is_exact_and_reduce_is_exact_after_global_pooling():
    torch.manual_seed(6)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Flatten()).double()
    X = torch.randn(5, 2, 6, 6, dtype=D)
    Y = torch.randn(5, 3 * 3 * 3, dtype=D)
    for sep in (True, False):
        op = hc.KFACOperator(conv, nn.MSELoss(), (X, Y), separate_bias=sep)
        assert_blocks_equal(op, dense_ggn(conv, nn.MSELoss(), X, Y))
    pooled = nn.Sequential(nn.Conv2d(2, 3, 3, padding="same"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(3, 2)).double()
    Y2 = torch.randn(5, 2, dtype=D)
    red = hc.KFACOperator(pooled, nn.MSELoss(), (X, Y2), approx="reduce")
    assert_blocks_equal(red, dense_ggn(pooled, nn.MSELoss(), X, Y2))


def test_closed_form_output_curvature_equals_the_generic_loss_hessian_path():
    # nn losses use closed forms; a plain callable goes through the loss's own Hessian w.r.t. the outputs
    torch.manual_seed(7)
    mlp = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X = torch.randn(7, 4, dtype=D)
    y = torch.tensor([0, 2, 1, -100, 2, 0, 1])
    cases = [
        (nn.CrossEntropyLoss(), y.clamp(min=0), "mean"),
        (nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.1), y.clamp(min=0), "sum"),
        (nn.CrossEntropyLoss(ignore_index=-100), y, "mean"),
        (nn.CrossEntropyLoss(), torch.softmax(torch.randn(7, 3, dtype=D), 1), "mean"),
        (nn.MSELoss(), torch.randn(7, 3, dtype=D), "mean"),
        (nn.BCEWithLogitsLoss(reduction="sum"), torch.rand(7, 3, dtype=D), "sum"),
    ]
    for loss, Y, red in cases:
        fast = hc.KFACOperator(mlp, loss, (X, Y), separate_bias=False).to_dense()
        generic = hc.KFACOperator(mlp, lambda o, t, loss=loss: loss(o, t), (X, Y), reduction=red,
                                  separate_bias=False).to_dense()
        assert torch.allclose(fast, generic, atol=1e-14 * float(fast.abs().max()) * 10, rtol=1e-12), loss
    # per-position cross-entropy (outputs (B, C, T)): the same, and EKFAC's corrections agree too
    seq = nn.Sequential(nn.Linear(4, 3)).double()
    Xs = torch.randn(5, 6, 4, dtype=D)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = seq

        def forward(self, x):
            return self.net(x).transpose(1, 2)

    ys = torch.randint(0, 3, (5, 6))
    ce = nn.CrossEntropyLoss()
    for cls in (hc.KFACOperator, hc.EKFACOperator):
        fast = cls(Seq(), ce, (Xs, ys)).to_dense()
        generic = cls(Seq(), lambda o, t: ce(o, t), (Xs, ys)).to_dense()
        assert torch.allclose(fast, generic, atol=1e-13, rtol=1e-12)
