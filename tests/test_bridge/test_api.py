"""bridge.api on the reference network of the network spec (docs/bridge.md): exact values, MATLAB ordering,
carriers, minibatch normalization, every entry point, and clear errors."""

from __future__ import annotations

import array

import numpy as np
import pytest
import scipy.io
import torch
from matlab_refs import (
    fc,
    half_mse,
    layer,
    make_spec,
    ref_hessian,
    theta_of,
    unpack,
)

from bridge import api
from hessian_core.errors import InvalidInputError

rng = np.random.default_rng(42)
W1, b1 = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
W2, b2 = rng.standard_normal((2, 4)), rng.standard_normal((2, 1))
LEARN = [("fc1", "Weights", W1), ("fc1", "Bias", b1), ("fc2", "Weights", W2), ("fc2", "Bias", b2)]
LAYERS = [layer("in", "FeatureInputLayer", InputSize=3.0, Normalization="none"),
          layer("fc1", "FullyConnectedLayer", OutputSize=4.0), layer("relu", "ReLULayer"),
          layer("fc2", "FullyConnectedLayer", OutputSize=2.0)]
B = 6
X = rng.standard_normal((3, B))
T = rng.standard_normal((2, B))


def spec():
    return make_spec(LAYERS, LEARN)


def ref_loss(X, T):
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        W1, b1, W2, b2 = unpack(theta, LEARN)
        return half_mse(fc(W2, b2, torch.relu(fc(W1, b1, Xt))), Tt, Xt.shape[1])

    return f


def test_reference_spec_hessian_is_exact():
    """network-spec.md: the Hessian of sum((Y-T).^2)/(2B) w.r.t. [W1(:); b1(:); W2(:); b2(:)]."""
    H = api.hessian(spec(), X, T)
    H_ref = ref_hessian(ref_loss(X, T), LEARN)
    assert H.shape == (26, 26) and H.dtype == np.float64
    np.testing.assert_allclose(H, H_ref, rtol=1e-12, atol=1e-13)
    assert api.loss_value(spec(), X, T) == pytest.approx(float(ref_loss(X, T)(theta_of(LEARN))), rel=1e-14)


def _loss_at(values, X, T):
    learn = [(lay, par, v) for (lay, par, _), v in zip(LEARN, values)]
    return api.loss_value(make_spec(LAYERS, learn), X, T)


def test_ordering_by_finite_differences_on_value_entries():
    """Perturb Value{i}(k) (MATLAB linear index) in the spec; the matching Hessian row is index_map's row."""
    H = api.hessian(spec(), X, T)
    imap = api.index_map(spec())
    assert imap["layer"][:12] == ["fc1"] * 12 and imap["parameter"][12] == "Bias" and imap["index"][13] == 2
    h = 1e-4

    def bumped(i, k, di, j, m, dj):
        vals = [v.copy() for _, _, v in LEARN]
        for row, lin, delta in ((i, k, di), (j, m, dj)):
            vals[row][np.unravel_index(lin - 1, vals[row].shape, order="F")] += delta  # MATLAB's linear index
        return vals

    def row_of(i, k):
        return next(r for r in range(len(imap["index"]))
                    if imap["layer"][r] == LEARN[i][0] and imap["parameter"][r] == LEARN[i][1]
                    and imap["index"][r] == k)

    # (Value{1}(2), Value{1}(5)) = (W1(2,1), W1(1,2)): the row-major ordering would swap rows 2 and 4.
    for (i, k), (j, m) in [((0, 2), (0, 5)), ((0, 5), (2, 3)), ((2, 7), (3, 2)), ((0, 6), (0, 6))]:
        fd = sum(si * sj * _loss_at(bumped(i, k, si * h, j, m, sj * h), X, T)
                 for si in (1, -1) for sj in (1, -1)) / (4 * h * h)
        r, s = row_of(i, k), row_of(j, m)
        assert fd == pytest.approx(H[r, s], rel=1e-5, abs=1e-7)
    # The test can fail: a row-major reading of W1 puts W1(1,2) at linear position 2, which has another value.
    r_cm, r_rm = row_of(0, 5), row_of(0, 2)
    assert abs(H[r_cm, r_cm] - H[r_rm, r_rm]) > 1e-3


def test_minibatches_normalize_globally():
    """A cell array of unequal minibatches (4 and 2) gives exactly the Hessian of the 6 observations."""
    H_full = api.hessian(spec(), X, T)
    H_cell = api.hessian(spec(), [X[:, :4], X[:, 4:]], [T[:, :4], T[:, 4:]])
    np.testing.assert_allclose(H_cell, H_full, rtol=1e-12, atol=1e-14)
    H_equal_weights = (api.hessian(spec(), X[:, :4], T[:, :4]) + api.hessian(spec(), X[:, 4:], T[:, 4:])) / 2
    assert np.abs(H_equal_weights - H_full).max() > 1e-3  # the wrong (mean of means) answer differs


def test_entry_points_agree_with_the_dense_hessian():
    H = ref_hessian(ref_loss(X, T), LEARN)
    v = rng.standard_normal(26)
    np.testing.assert_allclose(api.hvp(spec(), X, T, v), H @ v, rtol=1e-11, atol=1e-12)
    # v as one array per Learnables row in MATLAB shapes (flattened column-major by the bridge)
    parts = [v[:12].reshape(4, 3, order="F"), v[12:16].reshape(4, 1), v[16:24].reshape(2, 4, order="F"), v[24:]]
    np.testing.assert_allclose(api.hvp(spec(), X, T, parts), H @ v, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(api.diagonal(spec(), X, T), np.diag(H), rtol=1e-11, atol=1e-13)
    blocks = api.blocks(spec(), X, T)
    cuts = [0, 12, 16, 24, 26]
    for blk, a, b in zip(blocks, cuts[:-1], cuts[1:]):
        np.testing.assert_allclose(blk, H[a:b, a:b], rtol=1e-11, atol=1e-13)
    lam = np.linalg.eigvalsh(H)
    e = api.eigs(spec(), X, T, k=3, which="LA")
    np.testing.assert_allclose(np.sort(e["values"]), lam[-3:], rtol=1e-8, atol=1e-10)
    assert e["vectors"].shape == (26, 3) and np.all(e["residuals"] < 1e-6)
    np.testing.assert_allclose(H @ e["vectors"], e["vectors"] * e["values"], atol=1e-6)
    tr = api.trace(spec(), X, T, num_matvecs=60, seed=0)
    assert tr["trace"] == pytest.approx(np.trace(H), abs=max(5 * tr["stderr"], 1e-8))


def test_learnables_output_is_matlab_shaped():
    d = api.diagonal(spec(), X, T, output="learnables")
    assert [a.shape for a in d] == [(4, 3), (4, 1), (2, 4), (2, 1)]
    flat = api.diagonal(spec(), X, T)
    np.testing.assert_array_equal(d[0], flat[:12].reshape(4, 3, order="F"))
    Hb = api.hessian(spec(), X, T, output="learnables")
    H = api.hessian(spec(), X, T)
    np.testing.assert_array_equal(Hb[0][2], H[:12, 16:24])
    e = api.eigs(spec(), X, T, k=2, output="learnables")
    assert e["vectors"][0].shape == (4, 3, 2)


def test_newton_update_matches_a_damped_solve():
    H = ref_hessian(ref_loss(X, T), LEARN)
    theta = theta_of(LEARN).requires_grad_(True)
    g = torch.autograd.grad(ref_loss(X, T)(theta), theta)[0].numpy()
    damping = 4.0
    A = H + damping * np.eye(26)
    assert np.linalg.eigvalsh(A).min() > 0  # the plain damped system applies at this point
    out = api.newton_update(spec(), X, T, damping=damping, lr=0.7)
    new = theta_of(LEARN).numpy() - 0.7 * np.linalg.solve(A, g)
    got = np.concatenate([v.flatten(order="F") for v in out["values"]])
    np.testing.assert_allclose(got, new, rtol=1e-9, atol=1e-11)
    assert [v.shape for v in out["values"]] == [(4, 3), (4, 1), (2, 4), (2, 1)]
    assert out["loss_before"] == pytest.approx(float(ref_loss(X, T)(theta_of(LEARN))), rel=1e-13)
    learn_new = [(lay, par, v) for (lay, par, _), v in zip(LEARN, out["values"])]
    assert out["loss_after"] == pytest.approx(api.loss_value(make_spec(LAYERS, learn_new), X, T), rel=1e-13)


def test_spec_carriers_give_the_same_hessian(tmp_path):
    H = api.hessian(spec(), X, T)
    # loadmat(simplify_cells=True): cells -> lists, structs -> dicts, squeezed sizes (b1 becomes (4,))
    path = tmp_path / "net.mat"
    s = spec()
    mat = {"spec": {**s, "Layers": np.array([dict(d) for d in s["Layers"]], dtype=object),
                    "Learnables": {**s["Learnables"], "Value": np.array(s["Learnables"]["Value"] + [None],
                                                                            dtype=object)[:-1],
                                   "Layer": np.array(s["Learnables"]["Layer"], dtype=object),
                                   "Parameter": np.array(s["Learnables"]["Parameter"], dtype=object)},
                    "InputNames": np.array(["in"], dtype=object), "OutputNames": np.array(["fc2"], dtype=object),
                    "Connections": np.zeros((0, 0))}}
    scipy.io.savemat(path, mat)
    loaded = scipy.io.loadmat(path, simplify_cells=True)["spec"]
    np.testing.assert_allclose(api.hessian(loaded, X, T), H, rtol=1e-13, atol=1e-15)
    # oct2py: Struct (a dict) and Cell (an object ndarray, 1 x N)
    from oct2py.io import Cell, Struct

    def cell(items):
        c = np.empty((1, len(items)), dtype=object).view(Cell)
        for i, it in enumerate(items):
            c[0, i] = it
        return c

    o = Struct(Format=s["Format"], Layers=cell([Struct(d) for d in s["Layers"]]), InputNames=cell(["in"]),
               OutputNames=cell(["fc2"]), Connections=np.zeros((0, 0)),
               Learnables=Struct(Layer=cell(s["Learnables"]["Layer"]), Parameter=cell(s["Learnables"]["Parameter"]),
                                 Value=cell(s["Learnables"]["Value"])))
    np.testing.assert_allclose(api.hessian(o, X, T), H, rtol=1e-13, atol=1e-15)
    # memoryviews with MATLAB's (column-major) strides, array.array for vectors, float32 (single) values
    vals = [memoryview(np.asfortranarray(W1)), array.array("d", b1.ravel()), W2.astype(np.float32),
            b2.tolist()]
    m = make_spec(LAYERS, LEARN)
    m["Learnables"]["Value"] = vals
    H32 = api.hessian(m, memoryview(np.asfortranarray(X)), T)
    learn32 = [LEARN[0], LEARN[1], ("fc2", "Weights", W2.astype(np.float32).astype(np.float64)), LEARN[3]]
    np.testing.assert_allclose(H32, ref_hessian(_ref_with(learn32), learn32), rtol=1e-12, atol=1e-13)


def _ref_with(learn):
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        W1, b1, W2, b2 = unpack(theta, learn)
        return half_mse(fc(W2, b2, torch.relu(fc(W1, b1, Xt))), Tt, B)

    return f


def test_matlab_double_like_values(fake_matlab):
    import matlab

    s = spec()
    s["Learnables"]["Value"] = [matlab.double(v.flatten(order="F").tolist(), size=v.shape) for v in
                                s["Learnables"]["Value"]]
    Xm = matlab.double(X.tolist())  # nested rows: 3 x B
    np.testing.assert_allclose(api.hessian(s, Xm, T), api.hessian(spec(), X, T), rtol=1e-14, atol=1e-15)


def test_dropped_trailing_batch_dimension():
    """A batch of one arrives 3 x 1 (or as a vector 3,): the bridge restores B = 1."""
    H1 = api.hessian(spec(), X[:, :1], T[:, :1])
    np.testing.assert_allclose(api.hessian(spec(), X[:, 0], T[:, 0]), H1, rtol=1e-14)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(Format="other/1"), "Format"),
    (lambda s: s["Layers"].__setitem__(2, layer("relu", "SpatialDropoutLayer")), "'relu'.*SpatialDropoutLayer"),
    (lambda s: s["Layers"][1].pop("OutputSize") and s["Learnables"]["Value"].__setitem__(0, np.zeros((5, 3))),
     "fc1.*Bias"),
    (lambda s: s["Learnables"]["Value"].__setitem__(1, np.zeros((3, 1))), "'fc1'.*Bias"),
    (lambda s: s["Learnables"]["Parameter"].__setitem__(1, "Offset"), "'fc1'.*Offset"),
    (lambda s: s["Layers"][0].pop("InputSize"), "'in'.*InputSize"),
    (lambda s: s["Learnables"]["Value"].__setitem__(2, np.full((2, 4), np.nan)), "fc2/Weights.*NaN"),
])
def test_bad_specs_name_the_layer_and_field(mutate, message):
    s = spec()
    s["Layers"] = [dict(d) for d in s["Layers"]]
    mutate(s)
    with pytest.raises(InvalidInputError, match=message):
        api.hessian(s, X, T)


def test_bad_data_and_options():
    with pytest.raises(InvalidInputError, match="InputSize"):
        api.hessian(spec(), X[:2], T)
    with pytest.raises(InvalidInputError, match="format"):
        api.hessian(spec(), X, T, x_format="CU")
    with pytest.raises(InvalidInputError, match="observations"):
        api.hessian(spec(), X, T[:, :3])
    with pytest.raises(InvalidInputError, match="minibatches"):
        api.hessian(spec(), [X, X], [T])
    with pytest.raises(InvalidInputError, match="not supported"):
        api.hessian(spec(), X, T, loss="hinge")
    with pytest.raises(InvalidInputError, match="P = 26"):
        api.hvp(spec(), X, T, np.ones(25))
    with pytest.raises(TypeError, match="colour"):
        api.hessian(spec(), X, T, colour="red")
    s = spec()
    before = [v.copy() for v in s["Learnables"]["Value"]]
    api.newton_update(s, X, T)
    for a, b in zip(s["Learnables"]["Value"], before):  # the caller's spec is never modified
        np.testing.assert_array_equal(a, b)


def test_predict_dtype_and_memory_budget():
    from hessian_core.errors import MemoryBudgetError

    Y, fmt = api.predict(spec(), X)
    assert fmt == "CB"
    np.testing.assert_allclose(Y, W2 @ np.maximum(W1 @ X + b1, 0) + b2, rtol=1e-13)
    H64 = api.hessian(spec(), X, T)
    H32 = api.hessian(spec(), X, T, dtype="single")
    assert H32.dtype == np.float64 and np.abs(H32 - H64).max() < 1e-4 * np.abs(H64).max()
    assert np.abs(H32 - H64).max() > 0  # really computed in float32
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        api.hessian(spec(), X, T, memory_budget=1000)


def test_single_grayscale_image_with_both_trailing_dimensions_dropped():
    """One H x W x 1 x 1 image arrives from MATLAB as H x W: C = 1 and B = 1 are restored."""
    learn = [("fc", "Weights", rng.standard_normal((2, 12))), ("fc", "Bias", rng.standard_normal((2, 1)))]
    s = make_spec([layer("img", "ImageInputLayer", InputSize=[3, 4], Normalization="none"),
                   layer("fc", "FullyConnectedLayer", OutputSize=2)], learn)
    img, t = rng.standard_normal((3, 4)), rng.standard_normal((2, 1))
    H = api.hessian(s, img, t, x_format="SSCB")
    x = torch.tensor(img.flatten(order="F"))[:, None]  # column-major flatten of H x W x 1

    def f(theta):
        W, b = unpack(theta, learn)
        return half_mse(fc(W, b, x), torch.tensor(t), 1)

    np.testing.assert_allclose(H, ref_hessian(f, learn), rtol=1e-12, atol=1e-14)


def test_squeezed_learnables_from_loadmat_keep_their_matlab_shape():
    """A one-output FC: loadmat squeezes Weights 1 x 4 to (4,) and Bias 1 x 1 to a scalar."""
    learn = [("fc1", "Weights", W1), ("fc1", "Bias", b1), ("fc2", "Weights", W2[:1]), ("fc2", "Bias", b2[:1])]
    layers = LAYERS[:3] + [layer("fc2", "FullyConnectedLayer", OutputSize=1.0)]
    s = make_spec(layers, learn)
    s["Learnables"]["Value"][2] = W2[0].copy()
    s["Learnables"]["Value"][3] = float(b2[0, 0])
    out = api.newton_update(s, X, T[:1], damping=10.0)
    assert [v.shape for v in out["values"]] == [(4, 3), (4, 1), (1, 4), (1, 1)]
    np.testing.assert_allclose(api.hessian(s, X, T[:1]), api.hessian(make_spec(layers, learn), X, T[:1]), rtol=1e-14)


def test_translated_networks_take_the_structured_paths_and_say_so():
    """MatlabNetwork is no nn.Sequential: its traced calls (column-major views of the Learnables included)
    still reach the structured dense Hessian and diagonal, with the same values as the generic products."""
    from hessian_core.operators import HessianOperator

    info = api.plan(spec(), X, T)
    assert info["dense"].startswith("structured") and info["diagonal"].startswith("structured")
    assert info["parameters"] == 26
    pb = api.prepare(spec(), X, T)
    op = pb.operator()
    H = op.to_dense()
    assert op.last_path.startswith("structured: graph") and "Kronecker" in op.last_path
    generic = HessianOperator(pb.objective(), strategy="generic").to_dense()
    np.testing.assert_allclose(H.numpy(), generic.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(op.diagonal().numpy(), np.diag(generic.numpy()), rtol=1e-12, atol=1e-13)
