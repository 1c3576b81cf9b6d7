"""The MATLAB toolbox run for real in GNU Octave (through oct2py, via bridge.octave_engine), against the
test doubles of dlnetwork, dlarray, the layers and table in tests/octave/.

End-to-end: the real .m wrappers call Python through the .mat protocol -- answered by a worker thread of
this test process ('server' transport: the Python start-up is paid once), and once through the
'subprocess' transport (a real ``python -m`` per call; tests/test_matlab/test_cli.py has more). Every result is
compared with an independent float64 computation: the same small network written by hand in torch and
differentiated with torch.autograd.functional.hessian, numpy's dense eigh/solve.

Octave missing: skipped locally, FAILS when the environment variable CI is set.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io
import torch
from octave_session import session, unpack

from bridge.octave_engine import MatlabExecutionError, OctaveObject
from bridge.transport import codec


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    """One Octave session for the module; a request worker thread serving its 'server' transport."""
    yield from session(tmp_path_factory.mktemp("hcserver"))


# -- an independent reference: the network of the tests, by hand, in float64 torch --------------------
def tanh_net_loss(theta, X, T, shapes):
    """featureInput(3) -> fc -> tanh -> fc, MATLAB's mse = sum((Y - T).^2) / (2 N)."""
    W1, b1, W2, b2 = unpack(theta, shapes)
    Y = W2 @ torch.tanh(W1 @ X + b1) + b2
    return ((Y - T) ** 2).sum() / (2 * X.shape[1])


def softmax_ce_loss(theta, X, T, shapes):
    """featureInput -> fc -> softmax, MATLAB's crossentropy = -sum(T .* log(Y)) / N."""
    W, b = unpack(theta, shapes)
    Y = torch.softmax(W @ X + b, dim=0)
    return -(T * torch.log(Y)).sum() / X.shape[1]


def learnables(spec):
    values = [np.asarray(v, dtype=np.float64) for v in spec["Learnables"]["Value"]]
    values = [v.reshape(1, 1) if v.ndim == 0 else v for v in values]
    theta = torch.as_tensor(np.concatenate([v.reshape(-1, order="F") for v in values]))
    return theta, [v.shape for v in values]


# -- the test doubles and the exporter/importer (no Python subprocess) --------------------------------
def test_dlarray_double_permutes_to_documented_order(eng):
    eng.eval("hcA = dlarray(reshape(1:6, 2, 3), 'BC'); hcD = extractdata(hcA); hcF = dims(hcA);")
    assert eng.workspace["hcF"] == "CB"
    # reshape(1:6, 2, 3) labelled B x C is stored transposed, C x B
    np.testing.assert_array_equal(eng.workspace["hcD"], np.arange(1, 7).reshape(2, 3, order="F").T)


def test_exporter_spec_matches_network(eng):
    eng.eval("rand('state', 1); hcNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) "
             "leakyReluLayer(0.2) fullyConnectedLayer(2, 'Name', 'out')]);")
    spec = eng.dlnetworkToSpec(eng.workspace["hcNet"])
    assert spec["Format"] == "hessiancore.network/1"
    assert [lay["Class"] for lay in spec["Layers"]] == [
        "nnet.cnn.layer.FeatureInputLayer", "nnet.cnn.layer.FullyConnectedLayer", "nnet.cnn.layer.LeakyReLULayer",
        "nnet.cnn.layer.FullyConnectedLayer"]
    assert [lay["Name"] for lay in spec["Layers"]] == ["input", "fc", "leakyrelu", "out"]
    assert spec["Layers"][1]["InputSize"] == 3 and spec["Layers"][1]["OutputSize"] == 4
    assert spec["Layers"][2]["Scale"] == pytest.approx(0.2)
    assert "Weights" not in spec["Layers"][1]  # learnables travel in Learnables only
    assert spec["Learnables"]["Layer"] == ["fc", "fc", "out", "out"]
    assert spec["Learnables"]["Parameter"] == ["Weights", "Bias", "Weights", "Bias"]
    assert [np.shape(v) for v in spec["Learnables"]["Value"]] == [(4, 3), (4, 1), (2, 4), (2, 1)]
    eng.eval("hcW = double(extractdata(hcNet.Learnables.Value{3}));")
    np.testing.assert_array_equal(spec["Learnables"]["Value"][2], eng.workspace["hcW"])
    assert spec["Connections"] == {"Source": ["input", "fc", "leakyrelu"], "Destination": ["fc", "leakyrelu", "out"]}
    assert spec["InputNames"] == ["input"] and spec["OutputNames"] == ["out"]
    # the bridge's own parser accepts it, and its index map is Learnables order, column-major
    from bridge import api
    from bridge.spec import normalize_spec

    assert [r.parameter for r in normalize_spec(spec).learnables] == ["Weights", "Bias", "Weights", "Bias"]
    imap = api.index_map(spec)
    assert imap["layer"] == ["fc"] * 16 + ["out"] * 10
    assert imap["index"] == [*range(1, 13), *range(1, 5), *range(1, 9), 1, 2]


def test_exporter_conv_batchnorm_properties_and_state(eng):
    eng.eval("hcCnn = dlnetwork([imageInputLayer([6 5 2], 'Normalization', 'none') "
             "convolution2dLayer([3 2], 4, 'Padding', [1 1 0 1], 'Stride', [2 1]) batchNormalizationLayer reluLayer]);")
    spec = eng.dlnetworkToSpec(eng.workspace["hcCnn"])
    conv = spec["Layers"][1]
    assert conv["Class"] == "nnet.cnn.layer.Convolution2DLayer"
    np.testing.assert_array_equal(conv["FilterSize"], [[3, 2]])
    np.testing.assert_array_equal(conv["PaddingSize"], [[1, 1, 0, 1]])
    np.testing.assert_array_equal(conv["Stride"], [[2, 1]])
    assert conv["NumChannels"] == 2 and conv["NumFilters"] == 4 and conv["PaddingMode"] == "manual"
    assert spec["Layers"][2]["Epsilon"] == pytest.approx(1e-5)
    assert np.shape(spec["Learnables"]["Value"][0]) == (3, 2, 2, 4)  # FH x FW x C x NF
    assert np.shape(spec["Learnables"]["Value"][1]) == (1, 1, 4)
    assert spec["State"]["Parameter"] == ["TrainedMean", "TrainedVariance"]
    np.testing.assert_array_equal(np.asarray(spec["State"]["Value"][1]).reshape(-1), np.ones(4))


def test_update_learnables_round_trip_keeps_storage(eng):
    eng.eval("hcNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) fullyConnectedLayer(1)]);")
    net = eng.workspace["hcNet"]
    values = [np.arange(6.0).reshape(3, 2) / 7, np.array([[1.0], [2.0], [3.0]]), np.array([[4.0, 5.0, 6.0]]), 0.25]
    net2 = eng.updateLearnables(net, values)
    assert isinstance(net2, OctaveObject) and net2.class_name == "dlnetwork"
    eng.workspace["hcNet2"] = net2
    eng.eval("hcCls = class(extractdata(hcNet2.Learnables.Value{1})); hcIsDl = isa(hcNet2.Learnables.Value{4}, "
             "'dlarray'); hcW = double(extractdata(hcNet2.Learnables.Value{1}));")
    assert eng.workspace["hcCls"] == "single" and eng.workspace["hcIsDl"]  # storage of the old values kept
    np.testing.assert_allclose(eng.workspace["hcW"], values[0], rtol=1e-7)
    # a flat P-vector (column-major per row) is the same update
    flat = np.concatenate([np.asarray(v, dtype=float).reshape(-1, order="F") for v in values])
    spec3 = eng.dlnetworkToSpec(eng.updateLearnables(net, flat))
    np.testing.assert_allclose(spec3["Learnables"]["Value"][2], values[2], rtol=1e-7)


@pytest.mark.parametrize("values, ident", [
    ([1.0, 2.0], "hessiancore:invalidInput"),
    ([np.ones((3, 2)), np.ones((3, 1)), np.ones((1, 3)), np.ones((1, 2))], "hessiancore:invalidInput"),
    ([np.ones((3, 2)), np.full((3, 1), np.nan), np.ones((1, 3)), 1.0], "hessiancore:nonFinite"),
])
def test_update_learnables_rejects_bad_values_and_leaves_net(eng, values, ident):
    eng.eval("hcNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) fullyConnectedLayer(1)]); "
             "hcBefore = dlnetworkToSpec(hcNet);")
    eng.workspace["hcVals"] = values
    eng.eval("try, hcNet = updateLearnables(hcNet, hcVals); hcId = ''; catch hcErr, hcId = hcErr.identifier; end; "
             "hcSame = isequal(dlnetworkToSpec(hcNet), hcBefore);")
    assert eng.workspace["hcId"] == ident
    assert eng.workspace["hcSame"]


def test_request_file_restores_shapes_in_python(eng, tmp_path):
    """What hcRequest writes, read as the matfile transport reads it: batch of one, 1x1 bias, one row."""
    path = str(tmp_path / "req.mat")
    eng.eval("hcNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(1)]); "
             "hcOpts = hcTestPrivate('hcParseOptions', 'dlhvp', {'Loss', 'l2loss', 'MemoryBudget', 2e9}); "
             "hcReq = hcTestPrivate('hcRequest', 'hvp', hcNet, dlarray([1; 2; 3], 'CB'), dlarray(7, 'CB'), hcOpts, "
             "{(1:4)'});")
    eng.eval(f"save('{path}', '-struct', 'hcReq', '-v7');")
    name, args, kwargs = codec.decode(scipy.io.loadmat(path, simplify_cells=True))
    spec, X, T, v = args
    assert name == "hvp" and X.shape == (3, 1) and T.shape == (1, 1) and v.shape == (4, 1)
    assert [np.shape(a) for a in spec["Learnables"]["Value"]] == [(1, 3), (1, 1)]
    assert kwargs == {"x_format": "CB", "t_format": "CB", "loss": "l2loss", "dtype": "float64",
                      "memory_budget": 2000000000}
    from bridge.spec import normalize_spec

    assert [r.value.shape for r in normalize_spec(spec).learnables] == [(1, 3), (1, 1)]


@pytest.mark.parametrize("call, ident", [
    ("dlhessian(hcNet, hcX, hcX, 'Output', 'cube')", "hessiancore:invalidOption"),
    ("dlhessian(hcNet, hcX, hcX, 'NoSuchOption', 1)", "hessiancore:invalidOption"),
    ("dlhessian(hcNet, extractdata(hcX), hcX)", "hessiancore:invalidInput"),        # unformatted, no DataFormat
    ("dlhessian(hcNet, hcX, hcX, 'DataFormat', 'BC')", "hessiancore:invalidInput"),  # contradicts dims(X)
    ("dlhessian(hcNet, {hcX, hcX}, hcX)", "hessiancore:invalidInput"),             # cell X, single T
    ("dlhvp(hcNet, hcX, hcX, ones(5, 1))", "hessiancore:invalidInput"),             # wrong length
    ("dlhessianEigs(hcNet, hcX, hcX, 0)", "hessiancore:invalidInput"),
    ("dlnewtonUpdate(hcNet, hcX, hcX, 'Damping', -1)", "hessiancore:invalidOption"),
    ("dlhessian(42, hcX, hcX)", "hessiancore:invalidInput"),
    ("dlhessian(hcNet, hcX, hcX, 'Transport', 'py')", "hessiancore:transport"),     # py. is MATLAB-only
])
def test_bad_input_raises_named_errors_before_python(eng, call, ident):
    eng.eval("hcNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]); hcX = dlarray(ones(2, 3), 'CB');")
    eng.eval(f"try, {call}; hcId = ''; catch hcErr, hcId = hcErr.identifier; hcMsg = hcErr.message; end")
    assert eng.workspace["hcId"] == ident, eng.workspace["hcMsg"]


def test_output_table_shapes_without_python(eng):
    eng.eval("hcNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3)]); "
             "hcT = hcTestPrivate('hcToLearnables', hcNet, reshape(1:18, 9, 2), true); "
             "hcV1 = extractdata(hcT.Value{1}); "
             "hcBack = hcTestPrivate('hcFromLearnables', hcNet, hcTestPrivate('hcToLearnables', hcNet, (1:9)', false), "
             "'v');")
    np.testing.assert_array_equal(eng.workspace["hcV1"], np.arange(1, 19).reshape(9, 2, order="F")[:6].reshape(
        3, 2, 2, order="F"))
    np.testing.assert_array_equal(eng.workspace["hcBack"].reshape(-1), np.arange(1, 10))


# -- end to end: the wrappers, Python through the subprocess transport ---------------------------------
@pytest.fixture(scope="module")
def tanh_problem(eng):
    """One network and minibatch; every wrapper run once in Octave; results pulled into Python."""
    eng.eval("""
        rand('state', 7); randn('state', 7);
        pNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
        pXraw = randn(5, 3); pX = dlarray(pXraw, 'BC');          % the double stores it as 'CB' 3 x 5
        pT = dlarray(randn(2, 5), 'CB');
        pSpec = dlnetworkToSpec(pNet);
        pH = dlhessian(pNet, pX, pT);
        pD = dlhessianDiag(pNet, pX, pT);
        pV = (1:26)' / 26;
        pHv = dlhvp(pNet, pX, pT, pV);
        [pVecs, pVals, pInfo] = dlhessianEigs(pNet, pX, pT, 3, 'Which', 'smallest');
        [pTopVecs, pTopVals, pTopInfo] = dlhessianEigs(pNet, pX, pT, 3, 'Which', 'largest');
        pLM = dlhessianEigs(pNet, pX, pT, 4, 'Which', 'largestabs');
        [pTr, pSe] = dlhessianTrace(pNet, pX, pT, 'NumMatvecs', 81, 'Seed', 3);
        [pNet2, pNewton] = dlnewtonUpdate(pNet, pX, pT, 'Damping', 2, 'LearnRate', 0.8);
        pSpec2 = dlnetworkToSpec(pNet2);
    """)
    w = eng.workspace
    spec = w["pSpec"]
    theta, shapes = learnables(spec)
    X = torch.as_tensor(w["pXraw"]).T  # given B x C: the reference uses C x B, as MATLAB stores it
    eng.eval("pTd = extractdata(pT);")
    T = torch.as_tensor(w["pTd"])
    f = lambda th: tanh_net_loss(th, X, T, shapes)  # noqa: E731
    H = torch.autograd.functional.hessian(f, theta).numpy()
    g = torch.autograd.functional.jacobian(f, theta).numpy()
    out = {k: w[k] for k in ("pH", "pD", "pV", "pHv", "pVecs", "pVals", "pInfo", "pTr", "pSe", "pNewton", "pSpec2",
                             "pTopVecs", "pTopVals", "pTopInfo", "pLM")}
    return out, H, g, theta.numpy(), shapes, f


def test_dlhessian_matches_autograd(tanh_problem):
    out, H, *_ = tanh_problem
    assert out["pH"].shape == (26, 26)
    np.testing.assert_allclose(out["pH"], H, rtol=1e-9, atol=1e-12)


def test_dlhessiandiag_and_dlhvp_match_autograd(tanh_problem):
    out, H, *_ = tanh_problem
    np.testing.assert_allclose(out["pD"].reshape(-1), np.diag(H), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["pHv"].reshape(-1), H @ out["pV"].reshape(-1), rtol=1e-9, atol=1e-12)


def test_dlhessianeigs_matches_dense_eigh(tanh_problem):
    out, H, *_ = tanh_problem
    w, U = np.linalg.eigh(H)
    np.testing.assert_allclose(np.diag(out["pVals"]), w[:3], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(out["pInfo"]["Values"].reshape(-1), w[:3], rtol=1e-7, atol=1e-9)
    V = out["pVecs"]
    assert V.shape == (26, 3)
    np.testing.assert_allclose(H @ V, V * w[:3], atol=1e-6)
    assert np.all(out["pInfo"]["Residuals"] < 1e-6)


def test_dlhessianeigs_orders_like_eigs(tanh_problem):
    out, H, *_ = tanh_problem
    w = np.linalg.eigvalsh(H)
    top = w[::-1][:3]  # 'largest': largest first, as MATLAB's eigs
    np.testing.assert_allclose(np.diag(out["pTopVals"]), top, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(H @ out["pTopVecs"], out["pTopVecs"] * top, atol=1e-6)
    assert np.all(out["pTopInfo"]["Residuals"] < 1e-6)
    by_magnitude = w[np.argsort(-np.abs(w))][:4]  # 'largestabs': by descending magnitude
    np.testing.assert_allclose(out["pLM"].reshape(-1), by_magnitude, rtol=1e-7, atol=1e-9)


def test_dlhessiantrace_exact_when_sketch_spans(tanh_problem):
    out, H, *_ = tanh_problem
    assert out["pTr"] == pytest.approx(np.trace(H), rel=1e-8)


def test_dlnewtonupdate_is_the_damped_newton_step(tanh_problem):
    out, H, g, theta, shapes, f = tanh_problem
    A = H + 2 * np.eye(26)
    assert np.linalg.eigvalsh(A)[0] > 0  # positive definite: the plain damped step, no shift
    new = theta - 0.8 * np.linalg.solve(A, g)
    got, _ = learnables(out["pSpec2"])
    np.testing.assert_allclose(got.numpy(), new, rtol=2e-6, atol=1e-7)  # stored back in single precision
    assert out["pNewton"]["LossBefore"] == pytest.approx(float(f(torch.as_tensor(theta))), rel=1e-10)
    assert out["pNewton"]["LossAfter"] == pytest.approx(float(f(torch.as_tensor(new))), rel=1e-8)
    assert out["pNewton"]["LossAfter"] < out["pNewton"]["LossBefore"]


def test_crossentropy_table_output(eng):
    eng.eval("""
        rand('state', 3); randn('state', 3);
        cNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3) softmaxLayer]);
        cX = randn(3, 4); cT = full(sparse([1 3 2 3], 1:4, 1, 3, 4));
        cH = dlhessian(cNet, dlarray(cX, 'CB'), dlarray(cT, 'CB'), 'Loss', 'crossentropy', 'Output', 'table');
        cW = extractdata(cH.Value{1}); cB = extractdata(cH.Value{2}); cSpec = dlnetworkToSpec(cNet);
    """)
    w = eng.workspace
    theta, shapes = learnables(w["cSpec"])
    X, T = torch.as_tensor(w["cX"]), torch.as_tensor(w["cT"])
    H = torch.autograd.functional.hessian(lambda th: softmax_ce_loss(th, X, T, shapes), theta).numpy()
    assert w["cW"].shape == (3, 3, 12) and w["cB"].shape == (3, 1, 12)
    # row block of W (9 rows, column-major) reshaped to [3 3 12]
    np.testing.assert_allclose(w["cW"].reshape(9, 12, order="F"), H[:9], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["cB"].reshape(3, 12, order="F"), H[9:], rtol=1e-9, atol=1e-12)


def test_python_errors_arrive_with_identifiers_through_a_real_subprocess(eng):
    eng.eval("eNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]); eX = dlarray(ones(2, 3), 'CB'); "
             "try, dlhessian(eNet, eX, eX, 'LossOptions', struct('Bogus', 1), 'Transport', 'subprocess'); eId = ''; "
             "catch eErr, eId = eErr.identifier; eMsg = eErr.message; end")
    assert eng.workspace["eId"] == "hessiancore:invalidInput"
    # the message speaks MATLAB: the wrapper and the option's MATLAB name, no Python class or keyword
    msg = eng.workspace["eMsg"]
    assert msg.startswith("dlhessian: ") and "'LossOptions'" in msg and "Bogus" in msg
    assert "Error" not in msg and "loss_options" not in msg


def test_server_transport_without_worker_fails_clearly(eng, tmp_path):
    eng.eval("eNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]); eX = dlarray(ones(2, 3), 'CB'); "
             "hcOldFolder = getenv('HESSIANCORE_SERVERFOLDER');")
    eng.eval(f"setenv('HESSIANCORE_SERVERFOLDER', '{tmp_path}'); setenv('HESSIANCORE_SERVERTIMEOUT', '0.2'); "
             "try, dlhessian(eNet, eX, eX); eId = ''; catch eErr, eId = eErr.identifier; eMsg = eErr.message; end; "
             "setenv('HESSIANCORE_SERVERFOLDER', hcOldFolder); setenv('HESSIANCORE_SERVERTIMEOUT', '300');")
    assert eng.workspace["eId"] == "hessiancore:transport"
    assert "--serve" in eng.workspace["eMsg"]


def test_setup_reports_exactly_what_to_fix(eng):
    eng.eval("sBad = hessiancoreSetup('Python', '/nonexistent/bin/python3', 'Save', false, 'Verbose', false); "
             f"sGood = hessiancoreSetup('Python', '{sys.executable}', 'Save', false, 'Verbose', false);")
    bad, good = eng.workspace["sBad"], eng.workspace["sGood"]
    assert not bad["Ok"] and "Fix:" in bad["Problems"][0] and "/nonexistent/bin/python3" in bad["Problems"][0]
    assert good["Ok"] and good["Problems"] == [] and good["Bridge"] == "ok"
    assert good["Transport"] == "server" and good["Release"].startswith("Octave")
    assert good["PythonVersion"] == ".".join(map(str, sys.version_info[:3]))


# -- the Octave-backed engine: the matlab.engine interface, and MatlabSession through it ---------------
def test_engine_interface(eng):
    assert eng.size(np.zeros((3, 5)), nargout=2) == (3.0, 5.0)
    assert eng.eval("hcZ = 1;") is None and eng.workspace["hcZ"] == 1.0
    assert "hcZ" in eng.workspace
    fut = eng.plus(1.0, 2.0, background=True)
    assert fut.done() and fut.result() == 3.0
    with pytest.raises(NameError):
        eng.workspace["hcNoSuchVariable"]
    with pytest.raises(MatlabExecutionError, match="hcNoSuchFunction"):
        eng.hcNoSuchFunction(1.0)
    eng.workspace["hcS"] = {"a": [1.0, "x"], "b": np.arange(3.0)}
    s = eng.workspace["hcS"]
    assert s["a"] == [1.0, "x"] and np.shape(s["b"]) == (1, 3)


def test_matlab_session_through_octave_engine(eng):
    from bridge import MatlabSession

    eng.eval("rand('state', 5); randn('state', 5); "
             "net = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) tanhLayer fullyConnectedLayer(1)]); "
             "X = dlarray(randn(2, 6), 'CB'); T = dlarray(randn(1, 6), 'CB'); sBefore = dlnetworkToSpec(net); "
             "sXd = extractdata(X); sTd = extractdata(T);")
    # array_converter: see the report (import matlab finds the repo's matlab/ folder from the repo root)
    session = MatlabSession(engine=eng, array_converter=lambda a: np.asfortranarray(np.atleast_2d(a)))
    H = session.hessian()
    theta, shapes = learnables(eng.workspace["sBefore"])
    X, T = torch.as_tensor(eng.workspace["sXd"]), torch.as_tensor(eng.workspace["sTd"])
    ref = torch.autograd.functional.hessian(lambda th: tanh_net_loss(th, X, T, shapes), theta).numpy()
    np.testing.assert_allclose(H, ref, rtol=1e-9, atol=1e-12)
    res = session.newton_update(damping=1.0)  # pushes the new values into the Octave workspace's net
    after, _ = learnables(eng.dlnetworkToSpec(eng.workspace["net"]))
    np.testing.assert_allclose(after.numpy(), np.concatenate(
        [np.asarray(v).reshape(-1, order="F") for v in res["values"]]), rtol=1e-6)


def test_fallback_driver_through_the_octave_engine(eng, tmp_path):
    """bridge.transport.fallback's engine protocol (workspace pushes, eval'd calls, minibatch cells, two
    outputs) against a real interpreter. MATLAB's dlgradient is not available here, so a stand-in
    hcFallbackHvp with the closed-form Hessian of a linear least-squares layer, (1/N) A A' with
    A = [X; 1], takes the place of the double backpropagation; Python weights the minibatches."""
    from bridge.transport.fallback import fallback_eigs, fallback_operator

    (tmp_path / "hcFallbackHvp.m").write_text(
        "function [hv, n] = hcFallbackHvp(net, X, T, loss, v)\n"
        "    A = [extractdata(X); ones(1, size(X, 2))];\n"
        "    n = size(A, 2);\n"
        "    hv = A * (A' * v(:)) / n;\n"
        "end\n")
    eng.eval(f"addpath('{tmp_path}'); randn('state', 2); fNet = dlnetwork([featureInputLayer(3) "
             "fullyConnectedLayer(1)]); fX1 = randn(3, 2); fX2 = randn(3, 6); "
             "fX = {dlarray(fX1, 'CB'), dlarray(fX2, 'CB')}; fT = {dlarray(randn(1, 2), 'CB'), "
             "dlarray(randn(1, 6), 'CB')};")
    try:
        A = np.vstack([np.hstack([eng.workspace["fX1"], eng.workspace["fX2"]]), np.ones((1, 8))])
        H = A @ A.T / 8  # all 8 observations together: the minibatches of 2 and 6 weighted 2:6
        op = fallback_operator(eng, net="fNet", X="fX", T="fT", loss="mse")
        V = np.random.default_rng(1).standard_normal((4, 2))
        np.testing.assert_allclose(op.matmat(V), H @ V, rtol=1e-12)
        res = fallback_eigs(eng, net="fNet", X="fX", T="fT", k=1, which="LA")
        assert res["values"][0] == pytest.approx(np.linalg.eigvalsh(H)[-1], rel=1e-10)
        assert "hcV__" not in eng.workspace  # temporaries cleared
    finally:
        eng.eval(f"rmpath('{tmp_path}');")
