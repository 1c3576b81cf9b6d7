"""EKFAC's eigenvalues are the exact diagonal of the curvature in its Kronecker eigenbasis: diag(Q^T C Q) with
Q = Q_G ⊗ Q_A and C the dense exact GGN (or empirical Fisher) block, computed independently (torch.func)."""

import math

import pytest
import torch
from kfac_refs import block, dense_ef, dense_ggn
from torch import nn

import hessian_core as hc

D = torch.float64


def assert_projected_diagonal(op, ref, tol=1e-12):
    for key, (idx, b) in zip(op.keys, op.blocks):
        Q = torch.kron(b.QG, b.QA)
        want = torch.diagonal(Q.T @ block(ref, idx) @ Q)
        err = float((b.values.reshape(-1) - want).abs().max())
        assert err <= tol * float(want.abs().max()), (key, err)


def mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


@pytest.mark.parametrize("separate_bias", [True, False])
def test_ekfac_diagonal_is_the_exact_projected_ggn_diagonal_mlp(separate_bias):
    torch.manual_seed(0)
    model = mlp()
    X, y = torch.randn(12, 4, dtype=D), torch.randint(0, 3, (12,))
    loss = nn.CrossEntropyLoss()
    op = hc.EKFACOperator(model, loss, (X, y), separate_bias=separate_bias)
    ref = dense_ggn(model, loss, X, y)
    assert_projected_diagonal(op, ref)
    # the eigenbasis is KFAC's: eigenvectors of its factors
    kfac = hc.KFACOperator(model, loss, (X, y), separate_bias=separate_bias)
    for name, (A, G) in kfac.factors.items():
        QA, QG = op.eigenbases[name]
        assert torch.allclose(QA.T @ A @ QA, torch.diag(torch.linalg.eigvalsh(A)), atol=1e-13, rtol=1e-12)
        assert torch.allclose(QG.T @ G @ QG, torch.diag(torch.linalg.eigvalsh(G)), atol=1e-13, rtol=1e-12)
    # consequences: the trace is the GGN's, and in Frobenius norm EKFAC is at least as close as KFAC
    assert math.isclose(op.trace(), float(ref.trace()), rel_tol=1e-12)
    for (idx, e), (_, k) in zip(op.blocks, kfac.blocks):
        R = block(ref, idx)
        assert float((e.to_dense() - R).norm()) <= float((k.to_dense() - R).norm()) + 1e-14


def test_ekfac_projected_diagonal_conv_and_per_position_losses():
    torch.manual_seed(1)
    cnn = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 2, stride=2), nn.Flatten(),
                        nn.Linear(2 * 2 * 2, 3)).double()
    X, y = torch.randn(6, 2, 4, 4, dtype=D), torch.randint(0, 3, (6,))
    loss = nn.CrossEntropyLoss()
    for approx in ("expand", "reduce"):
        assert_projected_diagonal(hc.EKFACOperator(cnn, loss, (X, y), approx=approx), dense_ggn(cnn, loss, X, y))

    # a Linear over positions whose outputs mix the positions, with one loss term per position
    class Mixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.mix = nn.Linear(5, 5)
            self.b = nn.Linear(4, 3)

        def forward(self, x):  # (B, T=5, 3)
            h = torch.tanh(self.a(x))
            h = self.mix(h.transpose(1, 2)).transpose(1, 2)  # across positions
            return self.b(h).transpose(1, 2)  # (B, C=3, T) for per-position cross-entropy

    model = Mixer().double()
    Xs, ys = torch.randn(4, 5, 3, dtype=D), torch.randint(0, 3, (4, 5))
    assert_projected_diagonal(hc.EKFACOperator(model, loss, (Xs, ys)), dense_ggn(model, loss, Xs, ys))


def test_ekfac_empirical_is_the_projected_empirical_fisher_and_signs_of_indefinite_losses():
    torch.manual_seed(2)
    model = mlp()
    X, Y = torch.randn(9, 4, dtype=D), torch.randn(9, 3, dtype=D)
    for reduction in ("mean", "sum"):
        loss = nn.MSELoss(reduction=reduction)
        op = hc.EKFACOperator(model, loss, (X, Y), type="empirical")
        assert_projected_diagonal(op, dense_ef(model, loss, X, Y, reduction))

    def wavy(o, t):  # not convex in the outputs: the output Hessian has both signs
        return torch.cos(2 * o * t).mean()

    op = hc.EKFACOperator(model, wavy, (X, Y))
    ref = dense_ggn(model, wavy, X, Y)
    assert_projected_diagonal(op, ref)
    assert float(op.eigenvalues()[0]) < 0


def test_ekfac_inverse_and_logdet_are_exact():
    torch.manual_seed(3)
    model = mlp()
    X, y = torch.randn(10, 4, dtype=D), torch.randint(0, 3, (10,))
    op = hc.EKFACOperator(model, nn.CrossEntropyLoss(), (X, y))
    K = op.to_dense()
    eye = torch.eye(K.shape[0], dtype=D)
    for damping in (1e-4, 1e-1):
        assert (op.inverse(damping).to_dense() @ (K + damping * eye) - eye).abs().max() < 1e-10
        assert math.isclose(op.logdet(damping), float(torch.linalg.slogdet(K + damping * eye)[1]), rel_tol=1e-11)
    assert torch.allclose(op.eigenvalues(), torch.linalg.eigvalsh(K), atol=1e-13, rtol=1e-12)
