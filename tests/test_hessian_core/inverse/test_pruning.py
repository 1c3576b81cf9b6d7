"""OBD / OBS saliencies and HAWQ-style sensitivities against their dense definitions (autograd Hessians), the
OBS update against the constrained quadratic minimizer, and pruning on copies of the model."""

import importlib.util
import pathlib

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64
EXAMPLE = pathlib.Path(__file__).resolve().parents[3] / "examples" / "pruning_by_curvature.py"


def small_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(16, 3, dtype=D), torch.randint(0, 2, (16,))
    return model, nn.CrossEntropyLoss(), X, y


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_obd_saliencies_are_half_diag_times_w_squared():
    model, loss_fn, X, y = small_problem()
    H = autograd_hessian(model, loss_fn, X, y)
    got = hc.obd_saliencies(model, loss_fn, [(X[:6], y[:6]), (X[6:], y[6:])])
    assert [t.shape for t in got] == [p.shape for p in model.parameters()]
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in got]), 0.5 * H.diagonal() * flat(model) ** 2,
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["dense", "cg"])
def test_obs_saliencies_and_updates_match_the_dense_inverse(method):
    model, loss_fn, X, y = small_problem()
    H = autograd_hessian(model, loss_fn, X, y)
    damping = 0.2 + max(0.0, -float(torch.linalg.eigvalsh(H)[0]))
    Hinv = torch.linalg.inv(H + damping * torch.eye(H.shape[0], dtype=D))
    w = flat(model)
    cand = torch.tensor([0, 3, 5, 11, 13, 20])
    obs = hc.obs_saliencies(model, loss_fn, (X, y), cand, damping=damping, method=method, tol=1e-13)
    torch.testing.assert_close(obs.saliencies, w[cand] ** 2 / (2 * Hinv.diagonal()[cand]), rtol=1e-9, atol=0)
    for i, q in enumerate(cand.tolist()):
        dw = obs.update(i)
        torch.testing.assert_close(dw, -w[q] / Hinv[q, q] * Hinv[:, q], rtol=1e-9, atol=1e-13)
        assert abs(float(w[q] + dw[q])) < 1e-12  # the weight is removed exactly
    # removing a set jointly: the minimizer of the quadratic model with w_Q = 0, from the KKT system
    sub = [0, 2, 4]
    Q = cand[sub]
    A = H + damping * torch.eye(H.shape[0], dtype=D)
    E = torch.zeros(H.shape[0], 3, dtype=D)
    E[Q, torch.arange(3)] = 1
    K = torch.cat([torch.cat([A, E], 1), torch.cat([E.T, torch.zeros(3, 3, dtype=D)], 1)])
    rhs = torch.cat([torch.zeros(H.shape[0], dtype=D), -w[Q]])
    dw_ref = torch.linalg.solve(K, rhs)[:H.shape[0]]
    dw, increase = obs.joint_update(sub)
    torch.testing.assert_close(dw, dw_ref, rtol=1e-9, atol=1e-12)
    assert increase == pytest.approx(float(0.5 * dw_ref @ A @ dw_ref), rel=1e-9)


def test_obs_default_candidates_and_refusals():
    model, loss_fn, X, y = small_problem()
    obs = hc.obs_saliencies(model, loss_fn, (X, y), damping=5.0)
    assert obs.indices.tolist() == list(range(12)) + list(range(16, 24))  # the two weight matrices
    H = autograd_hessian(model, loss_fn, X, y)
    lam_min = float(torch.linalg.eigvalsh(H)[0])
    assert lam_min < 0
    with pytest.raises(hc.InvalidInputError, match="not positive definite"):
        hc.obs_saliencies(model, loss_fn, (X, y), damping=0.0, method="dense")
    with pytest.raises(hc.InvalidInputError, match="positive definite"):
        hc.obs_saliencies(model, loss_fn, (X, y), damping=0.0, method="cg")
    with pytest.raises(hc.InvalidInputError, match="candidates"):
        hc.obs_saliencies(model, loss_fn, (X, y), [100], damping=1.0)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_trace_sensitivities_are_exact_block_traces(granularity):
    model, loss_fn, X, y = small_problem()
    d = autograd_hessian(model, loss_fn, X, y).diagonal()
    w = flat(model)
    res = hc.trace_sensitivities(model, loss_fn, (X, y), granularity)
    if granularity == "layer":
        blocks = {("0", None): torch.arange(0, 16), ("2", None): torch.arange(16, 26)}
    else:  # a row of the weight and the bias entry of that output
        blocks = {("0", c): torch.cat([torch.arange(3 * c, 3 * c + 3), torch.tensor([12 + c])]) for c in range(4)}
        blocks.update({("2", c): torch.cat([torch.arange(16 + 4 * c, 20 + 4 * c), torch.tensor([24 + c])])
                       for c in range(2)})
    assert len(res) == len(blocks)
    assert [r.score for r in res] == sorted((r.score for r in res), reverse=True)
    for r in res:
        pos = blocks[(r.module, r.channel)]
        assert r.positions.tolist() == pos.tolist()
        assert r.trace == pytest.approx(float(d[pos].sum()), rel=1e-12)
        assert r.score == pytest.approx(float(d[pos].sum()) / pos.numel() * float((w[pos] ** 2).sum()), rel=1e-12)


def test_prune_works_on_a_copy_with_the_right_masks():
    model, loss_fn, X, y = small_problem()
    before = flat(model).clone()
    for method in ("magnitude", "obd", "obs"):
        res = hc.prune(model, loss_fn, (X, y), 0.5, method=method, damping=5.0)
        assert torch.equal(flat(model), before) and res.model is not model
        assert res.pruned == 10 and res.sparsity == 0.5
        for p, mask in zip(res.model.parameters(), res.masks.values()):
            assert mask.shape == p.shape and bool((p[~mask] == 0).all())
        assert sum(int((~m).sum()) for m in res.masks.values()) == 10
        assert all(bool(m.all()) for n, m in res.masks.items() if n.endswith("bias"))
        assert res.loss_after == pytest.approx(hc.Objective(res.model, loss_fn, (X, y)).loss())
    for method in ("obd", "obs"):
        layer = hc.prune(model, loss_fn, (X, y), 0.5, method=method, scope="layer", damping=5.0)
        assert int((~layer.masks["0.weight"]).sum()) == 6 and int((~layer.masks["2.weight"]).sum()) == 4
        assert bool((layer.model[0].weight[~layer.masks["0.weight"]] == 0).all())
    chan = hc.prune(model, loss_fn, (X, y), 0.5, method="trace", granularity="channel", scope="layer")
    rows = (chan.model[0].weight == 0).all(1)
    assert int(rows.sum()) == 2 and bool((chan.model[0].bias[rows] == 0).all())
    assert int((chan.model[2].weight == 0).all(1).sum()) == 1
    with pytest.raises(hc.InvalidInputError, match="granularity='channel'"):
        hc.prune(model, loss_fn, (X, y), 0.5, method="trace")


def test_obs_pruning_of_a_quadratic_is_exact_and_beats_magnitude_and_obd():
    """Linear regression: the loss is quadratic, so the OBS prediction is the actual increase."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 8, generator=g, dtype=D) @ torch.randn(8, 8, generator=g, dtype=D)  # correlated inputs
    y = X @ torch.randn(8, 1, generator=g, dtype=D) + 0.1 * torch.randn(50, 1, generator=g, dtype=D)
    model = nn.Linear(8, 1).double()
    Xa = torch.cat([X, torch.ones(50, 1, dtype=D)], 1)
    theta = torch.linalg.lstsq(Xa, y).solution[:, 0]
    with torch.no_grad():
        model.weight.copy_(theta[:8][None])
        model.bias.copy_(theta[8:])
    loss_fn = nn.MSELoss()
    obs = hc.obs_saliencies(model, loss_fn, (X, y), damping=0.0)
    increases = {}
    for method in ("magnitude", "obd", "obs"):
        res = hc.prune(model, loss_fn, (X, y), 0.5, method=method, obs_steps=1000)
        increases[method] = res.loss_after - res.loss_before
    # one weight alone: the actual increase is the OBS saliency
    i = int(obs.saliencies.argmin())
    one = hc.prune(model, loss_fn, (X, y), 1 / 8, method="obs")
    assert one.loss_after - one.loss_before == pytest.approx(float(obs.saliencies[i]), rel=1e-8)
    assert increases["obs"] < increases["obd"] and increases["obs"] < increases["magnitude"]


def test_example_curvature_pruning_beats_magnitude():
    spec = importlib.util.spec_from_file_location("pruning_by_curvature", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    levels = (0.1, 0.2, 0.3, 0.4, 0.5)
    out = example.main(quick=True, sparsities=levels, verbose=False)
    for s in levels:  # OBS, which moves the remaining weights, wins at every sparsity
        assert out[("obs", s)] < out[("obd", s)] and out[("obs", s)] < out[("magnitude", s)]
    # OBD ignores the interactions between the removed weights: better than magnitude overall, not everywhere
    assert sum(out[("obd", s)] for s in levels) < 0.75 * sum(out[("magnitude", s)] for s in levels)
    assert sum(out[("obd", s)] < out[("magnitude", s)] for s in levels) >= 4
