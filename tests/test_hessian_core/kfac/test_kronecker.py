"""Kronecker blocks against dense torch.kron / eigh / solve / slogdet (float64)."""

import math

import pytest
import torch

from hessian_core import InvalidInputError
from hessian_core.kfac import (
    DiagonalOperator,
    EigenOperator,
    FactoredBlockOperator,
    KroneckerEigenOperator,
    KroneckerOperator,
)

D = torch.float64


def spd(n, seed, shift=0.1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n + 2, generator=g, dtype=D)
    return X @ X.T / n + shift * torch.eye(n, dtype=D)


def eye(n):
    return torch.eye(n, dtype=D)


def test_products_dense_diagonal_trace_eigenvalues_match_torch_kron():
    A, G = spd(3, 0), spd(4, 1)
    op = KroneckerOperator(A, G)
    K = torch.kron(G, A)
    V = torch.randn(12, 5, dtype=D)
    assert torch.allclose(op @ V, K @ V, atol=1e-13, rtol=1e-12)
    assert torch.allclose(op.to_dense(), K, atol=1e-14, rtol=1e-12)
    assert torch.allclose(op.diagonal(), K.diagonal(), atol=1e-14, rtol=1e-12)
    assert math.isclose(op.trace(), float(K.trace()), rel_tol=1e-13)
    assert torch.allclose(op.eigenvalues(), torch.linalg.eigvalsh(K), atol=1e-13, rtol=1e-12)
    # the row-major weight convention: (G ⊗ A) vec(V) = vec(G V A)
    W = torch.randn(4, 3, dtype=D)
    assert torch.allclose(op.matvec(W.reshape(-1)), (G @ W @ A).reshape(-1), atol=1e-13, rtol=1e-12)


@pytest.mark.parametrize("damping", [0.0, 1e-3, 0.7])
def test_inverse_is_the_exact_inverse_of_the_damped_block_and_logdet_matches(damping):
    A, G = spd(3, 2), spd(5, 3)
    op = KroneckerOperator(A, G)
    K = torch.kron(G, A) + damping * eye(15)
    inv = op.inverse(damping)
    assert (inv.to_dense() @ K - eye(15)).abs().max() < 1e-10
    V = torch.randn(15, 3, dtype=D)
    assert torch.allclose(inv @ (K @ V), V, atol=1e-10, rtol=1e-12)
    sign, logabs = torch.linalg.slogdet(K)
    assert sign > 0 and math.isclose(op.logdet(damping), float(logabs), rel_tol=1e-12, abs_tol=1e-12)
    # the inverse's inverse is the damped block again
    assert torch.allclose(inv.inverse().to_dense(), K, atol=1e-10, rtol=1e-12)


def test_pi_split_is_martens_grosse_factored_tikhonov():
    A, G = spd(3, 4), spd(4, 5) * 7.0
    op = KroneckerOperator(A, G)
    damping = 0.05
    pi = math.sqrt((float(A.trace()) / 3) / (float(G.trace()) / 4))
    damped = torch.kron(G + math.sqrt(damping) / pi * eye(4), A + pi * math.sqrt(damping) * eye(3))
    assert math.isclose(op.pi(), pi, rel_tol=1e-14)
    assert torch.allclose(op.damped(damping, "pi").to_dense(), damped, atol=1e-13, rtol=1e-12)
    assert (op.inverse(damping, "pi").to_dense() @ damped - eye(12)).abs().max() < 1e-10
    assert math.isclose(op.logdet(damping, "pi"), float(torch.linalg.slogdet(damped)[1]), rel_tol=1e-12)
    # not the same matrix as the exactly damped block
    assert (op.damped(damping, "pi").to_dense() - (torch.kron(G, A) + damping * eye(12))).abs().max() > 1e-3
    # a bias block (1x1 input factor) is damped exactly either way
    bias = KroneckerOperator(torch.ones(1, 1, dtype=D), G)
    assert torch.allclose(bias.inverse(damping, "pi").to_dense(), torch.linalg.inv(G + damping * eye(4)), atol=1e-12,
                          rtol=1e-12)


def test_singular_and_indefinite_blocks_are_refused_or_reported():
    A = torch.diag(torch.tensor([1.0, 0.0, 2.0], dtype=D))  # singular input factor (a dead input)
    op = KroneckerOperator(A, spd(2, 6))
    with pytest.raises(InvalidInputError, match="singular"):
        op.inverse(0.0)
    assert op.logdet(0.0) == -math.inf
    assert math.isfinite(op.logdet(1e-3))
    Gi = torch.diag(torch.tensor([1.0, -2.0], dtype=D))  # a loss not convex in the outputs
    ind = KroneckerOperator(spd(3, 7), Gi)
    with pytest.raises(InvalidInputError, match="not real"):
        ind.logdet(0.0)
    K = torch.kron(Gi, spd(3, 7))
    assert (ind.inverse(0.0).to_dense() @ K - eye(6)).abs().max() < 1e-10  # invertible, though indefinite
    with pytest.raises(InvalidInputError, match="damping"):
        op.inverse(-1.0)
    with pytest.raises(InvalidInputError, match="split"):
        op.inverse(1.0, split="heuristic")
    with pytest.raises(InvalidInputError, match="symmetric"):
        KroneckerOperator(torch.randn(3, 3, dtype=D) + 5 * eye(3), spd(2, 0))


def test_eigenbasis_operator_matches_its_dense_form():
    QA = torch.linalg.qr(torch.randn(3, 3, dtype=D)).Q
    QG = torch.linalg.qr(torch.randn(4, 4, dtype=D)).Q
    S = torch.rand(4, 3, dtype=D) + 0.1
    op = KroneckerEigenOperator(QG, QA, S)
    Q = torch.kron(QG, QA)
    dense = Q @ torch.diag(S.reshape(-1)) @ Q.T
    V = torch.randn(12, 2, dtype=D)
    assert torch.allclose(op @ V, dense @ V, atol=1e-13, rtol=1e-12)
    assert torch.allclose(op.to_dense(), dense, atol=1e-13, rtol=1e-12)
    assert torch.allclose(op.diagonal(), dense.diagonal(), atol=1e-13, rtol=1e-12)
    assert torch.allclose(op.eigenvalues(), torch.linalg.eigvalsh(dense), atol=1e-13, rtol=1e-12)
    assert (op.inverse(0.3).to_dense() @ (dense + 0.3 * eye(12)) - eye(12)).abs().max() < 1e-10
    assert math.isclose(op.logdet(0.3), float(torch.linalg.slogdet(dense + 0.3 * eye(12))[1]), rel_tol=1e-12)
    with pytest.raises(InvalidInputError, match="no factors"):
        op.inverse(0.3, split="pi")


def test_dense_and_diagonal_blocks():
    M = spd(5, 8)
    e = EigenOperator.from_matrix(M)
    assert torch.allclose(e.to_dense(), M, atol=1e-13, rtol=1e-12)
    assert (e.inverse(0.2).to_dense() @ (M + 0.2 * eye(5)) - eye(5)).abs().max() < 1e-10
    assert math.isclose(e.logdet(0.2), float(torch.linalg.slogdet(M + 0.2 * eye(5))[1]), rel_tol=1e-12)
    d = DiagonalOperator(torch.tensor([1.0, 2.0, 0.5], dtype=D))
    assert torch.allclose(d.inverse(1.0).diagonal(), torch.tensor([0.5, 1 / 3, 1 / 1.5], dtype=D), atol=0,
                          rtol=1e-12)
    assert math.isclose(d.logdet(), math.log(1.0), abs_tol=1e-15)


def test_block_diagonal_of_factored_blocks_places_permuted_blocks_and_inverts_them():
    A, G = spd(2, 9), spd(3, 10)
    kron = KroneckerOperator(A, G)
    diag = DiagonalOperator(torch.tensor([3.0, 4.0], dtype=D))
    pos_k = torch.tensor([7, 0, 2, 4, 6, 1])  # any order: the block's row-major matrix entries
    pos_d = torch.tensor([3, 5])
    op = FactoredBlockOperator([(pos_k, kron), (pos_d, diag)], 8, keys=["k", "d"])
    dense = torch.zeros(8, 8, dtype=D)
    dense[pos_k[:, None], pos_k[None, :]] = torch.kron(G, A)
    dense[pos_d[:, None], pos_d[None, :]] = torch.diag(diag.values)
    assert torch.allclose(op.to_dense(), dense, atol=1e-14, rtol=1e-12)
    assert (op.inverse(0.1).to_dense() @ (dense + 0.1 * eye(8)) - eye(8)).abs().max() < 1e-10
    assert math.isclose(op.logdet(0.1), float(torch.linalg.slogdet(dense + 0.1 * eye(8))[1]), rel_tol=1e-12)
    assert math.isclose(op.trace(), float(dense.trace()), rel_tol=1e-13)
    assert torch.allclose(op.eigenvalues(), torch.linalg.eigvalsh(dense), atol=1e-13, rtol=1e-12)
    assert op.block("d") is diag
    with pytest.raises(InvalidInputError, match="cover"):
        FactoredBlockOperator([(pos_k, kron)], 8)
