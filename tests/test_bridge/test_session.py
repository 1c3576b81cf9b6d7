"""MatlabSession through the fake ``matlab.engine`` (tests/fake_matlab): pull a dlnetwork and data by
variable name, compute, push a Newton update back; engine fidelity and errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from matlab_refs import (
    layer,
    make_spec,
)

from bridge import MatlabSession, api
from bridge.engine import MatlabCallError, MatlabNotAvailableError, import_engine
from hessian_core.errors import InvalidInputError

rng = np.random.default_rng(11)
LEARN = [("fc1", "Weights", rng.standard_normal((4, 3))), ("fc1", "Bias", rng.standard_normal((4, 1))),
         ("fc2", "Weights", rng.standard_normal((2, 4))), ("fc2", "Bias", rng.standard_normal((2, 1)))]
LAYERS = [layer("in", "FeatureInputLayer", InputSize=3.0, Normalization="none"),
          layer("fc1", "FullyConnectedLayer", OutputSize=4.0), layer("relu", "ReLULayer"),
          layer("fc2", "FullyConnectedLayer", OutputSize=2.0)]
X = rng.standard_normal((3, 6))
T = rng.standard_normal((2, 6))


def fake_net(me, single=True):
    b = me._backend
    values = [b.MArray(np.asarray(v, dtype=np.float32 if single else np.float64), "single" if single else "double")
              for _, _, v in LEARN]
    return b.Dlnetwork([dict(d) for d in LAYERS], [r[0] for r in LEARN], [r[1] for r in LEARN], values,
                       connections=[("in", "fc1"), ("fc1", "relu"), ("relu", "fc2")],
                       input_names=["in"], output_names=["fc2"])


def as_spec(values):
    return make_spec(LAYERS, [(lay, par, v) for (lay, par, _), v in zip(LEARN, values)])


def workspace(session):
    return session.engine._process.ws


def test_pull_compute_push_round_trip(fake_matlab):
    me = fake_matlab
    s = MatlabSession()  # starts the (fake) MATLAB through bridge.engine
    ws = workspace(s)
    ws["net"] = fake_net(me)
    ws["X"] = me._backend.Dlarray.create(X, "CB")
    ws["T"] = me._backend.MArray(T.copy())  # targets as a plain array: take the output format
    ws["other"] = me._backend.MArray(np.arange(3.0))
    single = [np.asarray(v, np.float32).astype(np.float64) for _, _, v in LEARN]
    np.testing.assert_allclose(s.hessian(), api.hessian(as_spec(single), X, T), rtol=1e-13, atol=1e-15)

    before = ws["net"]
    result = s.newton_update(damping=1e-2, lr=0.5)
    after = ws["net"]
    # exactly the Learnables changed, to the returned values, in the network's own precision
    assert after is not before and after.layers == before.layers and after.connections == before.connections
    assert after.learn_layer == before.learn_layer and after.learn_param == before.learn_param
    for new, old, val in zip(after.learn_value, before.learn_value, result["values"]):
        assert new.cls == "single" and new.data.shape == old.data.shape
        np.testing.assert_array_equal(new.data, val.reshape(new.data.shape).astype(np.float32))
        assert not np.array_equal(new.data, old.data)
    np.testing.assert_array_equal(ws["other"].data, np.arange(3.0).reshape(1, 3))
    assert not [k for k in ws if k.startswith("hc")]  # temporaries cleared
    ref = api.newton_update(as_spec(single), X, T, damping=1e-2, lr=0.5)
    for a, b in zip(result["values"], ref["values"]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert result["loss_after"] < result["loss_before"]
    # pulling again sees the pushed values
    pulled = s.pull_spec("net")["Learnables"]["Value"]
    np.testing.assert_allclose(np.asarray(pulled[2]), result["values"][2], rtol=1e-6)


def test_cell_array_of_minibatches_and_dropped_batch_dimension(fake_matlab):
    me = fake_matlab
    s = MatlabSession(engine=me.start_matlab())
    ws = workspace(s)
    ws["net"] = fake_net(me, single=False)
    D = me._backend.Dlarray
    ws["Xc"] = me._backend.MCell([D.create(X[:, :4], "CB"), D.create(X[:, 4:5], "CB"), D.create(X[:, 5:], "CB")])
    ws["Tc"] = me._backend.MCell([D.create(T[:, :4], "CB"), D.create(T[:, 4:5], "CB"), D.create(T[:, 5:], "CB")])
    data, fmt = s.pull_data("Xc")
    assert fmt == "CB" and [np.asarray(d).shape for d in data] == [(3, 4), (3, 1), (3, 1)]
    H = s.hessian(net="net", X="Xc", T="Tc")
    np.testing.assert_allclose(H, api.hessian(as_spec([v for _, _, v in LEARN]), X, T), rtol=1e-12, atol=1e-14)


def test_engine_factory_and_unformatted_data(fake_matlab):
    me = fake_matlab
    made = []

    def factory():
        made.append(me.start_matlab())
        return made[-1]

    s = MatlabSession(engine_factory=factory)
    assert not made  # lazy
    ws = workspace(s)
    ws["net"] = fake_net(me, single=False)
    ws["Xraw"], ws["T"] = me._backend.MArray(X.copy()), me._backend.MArray(T.copy())
    with pytest.raises(InvalidInputError, match="x_format"):
        s.diagonal(X="Xraw")
    d = s.diagonal(X="Xraw", x_format="CB")
    np.testing.assert_allclose(d, api.diagonal(as_spec([v for _, _, v in LEARN]), X, T), rtol=1e-12)
    assert len(made) == 1
    s.close()
    assert made[0]._process.alive is False


def test_matlab_errors_and_bad_names(fake_matlab):
    me = fake_matlab
    s = MatlabSession(engine=me.start_matlab())
    with pytest.raises(MatlabCallError, match="nope"):
        s.pull_spec("nope")
    with pytest.raises(InvalidInputError, match="variable name"):
        s.pull_spec("net; delete('x')")
    ws = workspace(s)
    ws["net"] = fake_net(me)
    with pytest.raises(MatlabCallError, match="updateLearnables"):
        s.push_learnables([np.zeros((4, 3))], "net")  # wrong count: MATLAB's error, wrapped


def test_connect_to_shared_sessions(fake_matlab):
    me = fake_matlab
    proc = me.share_engine("hcShared")
    s = MatlabSession(connect="hcShared")
    assert s.engine._process is proc
    s.close()
    assert proc.alive  # a shared session is not ours to quit
    with pytest.raises(InvalidInputError, match="hcShared"):
        _ = MatlabSession(connect="missing").engine


def test_fake_engine_is_faithful(fake_matlab):
    """The behaviours the bridge must survive, as the real engine has them."""
    import matlab

    me = fake_matlab
    eng = me.start_matlab()
    with pytest.raises(TypeError, match="Reduction"):
        eng.sqrt(4.0, nargout=1, Reduction="sum")  # name-value pairs are positional in the Engine
    with pytest.raises(TypeError):
        eng.sqrt(4.0, nargout=1.0)
    assert eng.sqrt(4.0) == 2.0 and isinstance(eng.sqrt(4.0), float)
    eng.workspace["n"] = 3
    assert eng._process.ws["n"].cls == "int64"  # int -> int64
    eng.workspace["c"] = [1.0, "a"]
    assert type(eng._process.ws["c"]).__name__ == "MCell"  # list -> cell
    with pytest.raises(NameError):
        eng.workspace["missing"]
    with pytest.raises(me.MatlabExecutionError):
        eng.eval("y = undefinedThing(1);", nargout=0)
    A = matlab.double([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], size=(2, 3))  # flat + size: column-major
    assert A.size == (2, 3) and A[0][1] == 3.0 and list(A.noncomplex()) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(np.asarray(A), [[1, 3, 5], [2, 4, 6]])
    eng.exit()
    with pytest.raises(me.RejectedExecutionError):
        eng.sqrt(4.0)


def test_missing_matlab_engine_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matlab", None)  # import matlab -> ImportError
    monkeypatch.setitem(sys.modules, "matlab.engine", None)
    with pytest.raises(MatlabNotAvailableError, match=r"pip install hessiancore\[matlab\] needs a MATLAB install"):
        import_engine()
    with pytest.raises(MatlabNotAvailableError):
        _ = MatlabSession().engine


def test_array_converter_without_engine_api_falls_back_to_numpy(monkeypatch):
    # Without the Engine API, `matlab` may still import as the namespace package of our matlab/ folder.
    import types

    from bridge.session import to_matlab_double

    monkeypatch.setitem(sys.modules, "matlab", types.ModuleType("matlab"))
    out = to_matlab_double(np.arange(6.0).reshape(2, 3))
    assert isinstance(out, np.ndarray) and out.flags.f_contiguous
    assert np.array_equal(out, np.arange(6.0).reshape(2, 3))


def test_array_converter_uses_matlab_double_when_present(fake_matlab):
    import matlab
    from bridge.session import to_matlab_double

    out = to_matlab_double(np.arange(6.0).reshape(2, 3))
    assert isinstance(out, matlab.double) and tuple(out.size) == (2, 3)
    assert out[1][2] == 5.0  # MATLAB subscripts read column-major storage correctly
