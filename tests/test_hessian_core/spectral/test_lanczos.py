"""eigsh against dense float64 eigvalsh: network Hessians (indefinite), both ends, repeated and clustered
eigenvalues, no ghost copies, recomputed residuals, every accepted operator type, bad input."""

import numpy as np
import pytest
import torch
from reference import autograd_hessian, spectrum_matrix
from scipy.sparse.linalg import aslinearoperator
from torch import nn

import hessian_core as hc
from hessian_core.errors import InvalidInputError

WHICH = ["LA", "SA", "LM", "BE"]


def wanted(ref, which, k):
    """The k eigenvalues eigsh must return, ascending, from the full ascending spectrum ``ref``."""
    if which == "LA":
        sel = ref[-k:]
    elif which == "SA":
        sel = ref[:k]
    elif which == "LM":
        sel = ref[torch.argsort(ref.abs(), descending=True)[:k]]
    else:
        sel = torch.cat([ref[: k // 2], ref[len(ref) - (k + 1) // 2 :]])
    return torch.sort(sel).values


@pytest.fixture(scope="module")
def net():
    """A tanh MLP with cross-entropy at random weights: P = 83, indefinite Hessian."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    X = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    loss_fn = nn.CrossEntropyLoss()
    H = autograd_hessian(model, loss_fn, X, y)
    return model, loss_fn, (X, y), H


def test_reference_is_indefinite_and_matches_core(net):
    model, loss_fn, data, H = net
    ref = torch.linalg.eigvalsh(H)
    assert ref[0] < -1e-3 * ref[-1] and ref[-1] > 0
    torch.testing.assert_close(hc.hessian(model, loss_fn, data), H, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("which, matrix_free", [("LA", True), ("BE", True), ("SA", False), ("LM", False)])
def test_network_hessian_both_ends(net, which, matrix_free):
    """On the HessianOperator itself (LA, BE), or on the dense Hessian of the same network (SA, LM: cheaper)."""
    model, loss_fn, data, H = net
    op = hc.HessianOperator(model, loss_fn, data, progress=False) if matrix_free else hc.hessian(model, loss_fn, data)
    k = 5
    res = hc.eigsh(op, k=k, which=which, seed=0)
    ref = torch.linalg.eigvalsh(H)
    torch.testing.assert_close(res.values, wanted(ref, which, k), rtol=1e-9, atol=1e-9 * float(ref.abs().max()))
    assert bool(res.converged.all())
    # residuals: recomputed independently with the dense Hessian, and small
    indep = torch.linalg.vector_norm(H @ res.vectors - res.vectors * res.values, dim=0)
    torch.testing.assert_close(res.residuals, indep, rtol=1e-4, atol=1e-12)
    assert float(res.residuals.max()) <= 1e-7 * float(ref.abs().max())
    torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(k, dtype=torch.float64), atol=1e-10, rtol=0)
    assert res.num_matvecs < 83 * 4  # far from forming the matrix many times over


def test_param_vectors_and_model_untouched(net):
    model, loss_fn, data, _ = net
    before = [p.detach().clone() for p in model.parameters()]
    op = hc.HessianOperator(model, loss_fn, data, progress=False)
    res = hc.eigsh(op, k=2, which="LA", seed=0)
    pv = res.param_vectors
    assert len(pv) == 2
    for i, tensors in enumerate(pv):
        assert [t.shape for t in tensors] == [p.shape for p in model.parameters()]
        torch.testing.assert_close(torch.cat([t.reshape(-1) for t in tensors]), res.vectors[:, i])
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b) and p.grad is None


def test_pyhessian_pitfall_sign():
    """Spectrum {-5, 3}: the largest eigenvalue is 3 (power iteration reports -5, the largest magnitude)."""
    A = spectrum_matrix([-5.0] * 30 + [3.0] * 30)
    assert float(hc.eigsh(A, k=1, which="LA", seed=0).values[0]) == pytest.approx(3.0, abs=1e-10)
    assert float(hc.eigsh(A, k=1, which="SA", seed=0).values[0]) == pytest.approx(-5.0, abs=1e-10)
    assert float(hc.eigsh(A, k=1, which="LM", seed=0).values[0]) == pytest.approx(-5.0, abs=1e-10)


def test_repeated_eigenvalues_with_blocks_no_ghosts():
    """A triple top eigenvalue: blocks of 3 and the default (min(k, 4)) find all copies, and exactly as many
    copies as exist."""
    g = torch.Generator().manual_seed(3)
    rest = torch.rand(117, generator=g, dtype=torch.float64) * 4 - 2
    values = torch.cat([torch.full((3,), 5.0, dtype=torch.float64), rest])
    A = spectrum_matrix(values)
    ref = torch.linalg.eigvalsh(A)
    for block_size in (3, None):
        for which in WHICH:
            res = hc.eigsh(A, k=6, which=which, block_size=block_size, seed=0)
            torch.testing.assert_close(res.values, wanted(ref, which, 6), rtol=0, atol=1e-8)
        res = hc.eigsh(A, k=6, which="LA", block_size=block_size, seed=0)
        assert int((res.values - 5.0).abs().lt(1e-8).sum()) == 3


def test_clustered_eigenvalues_resolved():
    """Top eigenvalues 1e-6 apart are resolved (single vector), no value repeated."""
    g = torch.Generator().manual_seed(4)
    top = 10.0 - 1e-6 * torch.arange(4, dtype=torch.float64)
    A = spectrum_matrix(torch.cat([top, torch.rand(146, generator=g, dtype=torch.float64) * 8 - 8]))
    ref = torch.linalg.eigvalsh(A)
    res = hc.eigsh(A, k=4, which="LA", seed=0, tol=1e-10)
    torch.testing.assert_close(res.values, ref[-4:], rtol=0, atol=1e-9)
    assert float(torch.diff(res.values).min()) > 5e-7


def test_no_ghosts_over_many_restarts():
    """k = 12 with a small basis (many restarts): exactly the 12 largest, each once."""
    g = torch.Generator().manual_seed(5)
    A = spectrum_matrix(torch.randn(200, generator=g, dtype=torch.float64))
    ref = torch.linalg.eigvalsh(A)
    res = hc.eigsh(A, k=12, which="LA", ncv=26, seed=1)
    torch.testing.assert_close(res.values, ref[-12:], rtol=0, atol=1e-9)
    assert bool(res.converged.all())


def test_operator_types_agree(net):
    model, loss_fn, data, H = net
    ref = torch.linalg.eigvalsh(H)[-3:]
    op = hc.HessianOperator(model, loss_fn, data, progress=False)
    for x in (op, H, H.numpy(), aslinearoperator(H.numpy()), op.to_scipy()):
        torch.testing.assert_close(hc.eigsh(x, k=3, seed=0).values, ref, rtol=1e-9, atol=1e-10)


def test_ggn_top_and_psd(net):
    model, loss_fn, data, _ = net
    G = hc.GGNOperator(model, loss_fn, data, progress=False)
    dense = torch.linalg.eigvalsh(G.to_dense())
    res = hc.eigsh(G, k=3, which="LA", seed=0)
    torch.testing.assert_close(res.values, dense[-3:], rtol=1e-8, atol=1e-10)
    # the bottom of a PSD GGN is a cluster at 0 (slow to converge): on the dense GGN, looser tol
    low = hc.eigsh(G.to_dense(), k=1, which="SA", seed=0, tol=1e-6)
    assert float(dense[0]) <= float(low.values[0]) + 1e-12  # a Rayleigh quotient is >= lambda_min
    assert float(low.values[0] - dense[0]) <= float(low.residuals[0]) + 1e-12
    assert float(low.values[0]) > -1e-6 * float(dense[-1])


def test_small_problem_dense_path():
    A = spectrum_matrix([-2.0, -1.0, 0.5, 1.0, 4.0])
    res = hc.eigsh(A, k=2, which="BE", seed=0)
    torch.testing.assert_close(res.values, torch.tensor([-2.0, 4.0], dtype=torch.float64))
    assert res.num_matvecs == 5


@pytest.mark.filterwarnings("ignore:eigsh:RuntimeWarning")
def test_seed_reproducible_and_global_rng():
    A = spectrum_matrix(torch.linspace(-1, 1, 80))
    a = hc.eigsh(A, k=2, seed=7, max_matvecs=25, tol=1e-14)
    b = hc.eigsh(A, k=2, seed=7, max_matvecs=25, tol=1e-14)
    assert torch.equal(a.vectors, b.vectors)
    torch.manual_seed(11)
    c = hc.eigsh(A, k=2, max_matvecs=25, tol=1e-14)
    torch.manual_seed(11)
    d = hc.eigsh(A, k=2, max_matvecs=25, tol=1e-14)
    assert torch.equal(c.vectors, d.vectors)


def test_budget_exhausted_warns_and_reports():
    A = spectrum_matrix(torch.linspace(0, 1, 300) ** 3)
    with pytest.warns(RuntimeWarning, match="converged"):
        res = hc.eigsh(A, k=3, which="SA", max_matvecs=30, seed=0)
    assert not bool(res.converged.all())
    assert res.num_matvecs <= 30
    indep = torch.linalg.vector_norm(A @ res.vectors - res.vectors * res.values, dim=0)
    torch.testing.assert_close(res.residuals, indep, rtol=1e-6, atol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"which": "XX"}, "which"),
        ({"k": 0}, "k must"),
        ({"k": 41}, "k must"),
        ({"block_size": 0}, "block_size"),
        ({"tol": -1.0}, "tol"),
        ({"k": 10, "ncv": 11}, "ncv"),
    ],
)
def test_bad_arguments(kwargs, match):
    A = spectrum_matrix(torch.linspace(-1, 1, 40))
    with pytest.raises(InvalidInputError, match=match):
        hc.eigsh(A, **kwargs)


def test_bad_operators():
    with pytest.raises(InvalidInputError, match="not symmetric"):
        hc.eigsh(torch.triu(torch.ones(30, 30, dtype=torch.float64)), k=1)
    with pytest.raises(InvalidInputError, match="square"):
        hc.eigsh(np.ones((3, 4)), k=1)
    with pytest.raises(InvalidInputError, match="cannot use"):
        hc.eigsh("H", k=1)


def test_float32_with_millions_of_parameters():
    """float32 at P = 2M (a small language model): the rank cut of the block orthonormalization once grew
    with P past 1 and replaced every Krylov direction by a random one (top eigenvalues came out ~1e-4)."""
    P = 2_000_000
    d = torch.full((P,), 1e-3)
    d[:5] = torch.tensor([9.0, 7.0, 5.0, 3.0, 2.0])
    op = hc.FunctionOperator(lambda V: d[:, None] * V, P, torch.float32)
    r = hc.eigsh(op, k=3, which="LA", tol=1e-4, seed=0)
    torch.testing.assert_close(r.values, torch.tensor([5.0, 7.0, 9.0]), rtol=1e-4, atol=0)
    assert bool(r.converged.all())
