"""Values that real MATLAB sends, and the wrappers' answers to them, in GNU Octave against the strict
doubles of tests/octave/ (issue 20): string options at any depth, input normalization given as a function
handle, the default loss, crossentropy on non-probabilities, doubles too large for an integer, requests
over the -v7 limit, the empty State of a stateless network, pythonw.exe, hessiancoreSetup's pyenv
discipline, and error messages in MATLAB's terms.

Every numeric result is compared with an independent float64 computation: the network written by hand
in torch and differentiated with torch.autograd.functional.hessian.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from octave_session import error_of, learnables, session, unpack

from bridge import api
from hessian_core.errors import InvalidInputError


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    yield from session(tmp_path_factory.mktemp("hcserver"))


def hessian_of(f, theta):
    return torch.autograd.functional.hessian(f, theta).numpy()


def softmax_net(theta, shapes, X):
    W, b = unpack(theta, shapes)
    return torch.softmax(W @ X + b, dim=0)


def tanh_net(theta, shapes, X):
    W1, b1, W2, b2 = unpack(theta, shapes)
    return W2 @ torch.tanh(W1 @ X + b1) + b2


# -- strings everywhere ------------------------------------------------------------------------------------
def test_string_options_at_any_depth_reach_python_as_text(eng):
    eng.eval("""
        rand('state', 3); randn('state', 3);
        sNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(2) softmaxLayer]);
        sX = randn(3, 4); sT = full(sparse([1 2 2 1], 1:4, 1, 2, 4));
        sCE = dlhessian(sNet, sX, sT, string('Loss'), string('crossentropy'), 'DataFormat', string('CB'), ...
                        'TargetFormat', string('CB'), 'Output', string('matrix'), 'DataType', string('double'));
        sL2 = dlhessian(sNet, dlarray(sX, 'CB'), dlarray(sT, 'CB'), 'Loss', string('l2loss'), ...
                        'LossOptions', struct('NormalizationFactor', string('all-elements')));
        sDeep = dlhessian(sNet, dlarray(sX, 'CB'), dlarray(sT, 'CB'), 'Loss', 'l2loss', 'PythonOptions', ...
                          struct('loss_options', struct('NormalizationFactor', string('all-elements'))));
        sTr = dlhessianTrace(sNet, dlarray(sX, 'CB'), dlarray(sT, 'CB'), 'Method', string('hutchinson'), ...
                             'NumMatvecs', 4, 'Seed', 1);
        sTop = dlhessianEigs(sNet, dlarray(sX, 'CB'), dlarray(sT, 'CB'), 1, 'Which', string('largest'));
        sSpec = dlnetworkToSpec(sNet);
    """)
    w = eng.workspace
    theta, shapes = learnables(w["sSpec"])
    X, T = torch.as_tensor(w["sX"]), torch.as_tensor(w["sT"])
    ce = hessian_of(lambda th: -(T * torch.log(softmax_net(th, shapes, X))).sum() / 4, theta)
    l2 = hessian_of(lambda th: ((softmax_net(th, shapes, X) - T) ** 2).sum() / T.numel(), theta)
    np.testing.assert_allclose(w["sCE"], ce, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["sL2"], l2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["sDeep"], l2, rtol=1e-9, atol=1e-12)  # a string two structs deep
    assert np.isfinite(w["sTr"]) and w["sTop"] == pytest.approx(np.linalg.eigvalsh(ce)[-1], rel=1e-7)


def test_strings_are_converted_before_saving_and_the_double_cannot_be_saved(eng, tmp_path):
    # The string double is as unsaveable as a MATLAB string is unreadable for scipy.io.loadmat.
    ident, msg = error_of(eng, f"hcQ.s = string('x'); save('-v7', '{tmp_path / 'bad.mat'}', '-struct', 'hcQ')")
    assert "MAT file" in msg  # Octave's save error carries no identifier
    eng.eval("hcV = hcTestPrivate('hcPlainOption', struct('a', string({'p', 'q'}), 'b', {{string('r'), 1}}, "
             "'c', struct('d', string('deep'))), 'opt');")
    eng.eval(f"save('-v7', '{tmp_path / 'ok.mat'}', '-struct', 'hcV');")
    back = scipy.io.loadmat(tmp_path / "ok.mat", simplify_cells=True)
    assert list(back["a"]) == ["p", "q"] and back["b"][0] == "r" and back["c"]["d"] == "deep"


@pytest.mark.parametrize("value, what", [
    ("@sin", "function handle"),
    ("sparse([1 0; 0 1])", "sparse"),
    ("1 + 2i", "complex"),
    ("dlnetwork([featureInputLayer(1) fullyConnectedLayer(1)])", "dlnetwork"),
    ("struct('x', {1, 2})", "struct array"),
    ("['ab'; 'cd']", "several rows"),
])
def test_values_that_cannot_cross_are_refused_by_name(eng, value, what):
    eng.eval("rNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]); rX = dlarray(ones(2, 3), 'CB');")
    ident, msg = error_of(eng, f"dlhessian(rNet, rX, rX, 'Loss', 'l2loss', 'LossOptions', struct('Mode', {{{value}}}))")
    assert ident == "hessiancore:invalidInput" and "'LossOptions'.Mode" in msg and what in msg, msg


# -- input normalization as a function handle --------------------------------------------------------------
def test_normalization_handle_is_applied_in_matlab(eng):
    eng.eval("""
        rand('state', 4); randn('state', 4);
        mu = [1; -2; 0.5]; sd = [2; 0.5; 4];
        nNet = dlnetwork([featureInputLayer(3, 'Normalization', @(x) (x - mu) ./ sd) fullyConnectedLayer(4) ...
                          tanhLayer fullyConnectedLayer(2)]);
        nX = 3 * randn(3, 5) + 1; nT = randn(2, 5);
        nH = dlhessian(nNet, dlarray(nX, 'CB'), dlarray(nT, 'CB'));
        nHbc = dlhessian(nNet, nX', nT, 'DataFormat', 'BC', 'TargetFormat', 'CB');
        nSpec = dlnetworkToSpec(nNet);
    """)
    w = eng.workspace
    theta, shapes = learnables(w["nSpec"])
    mu, sd = np.array([[1.0], [-2.0], [0.5]]), np.array([[2.0], [0.5], [4.0]])
    Xn, T = torch.as_tensor((w["nX"] - mu) / sd), torch.as_tensor(w["nT"])
    ref = hessian_of(lambda th: ((tanh_net(th, shapes, Xn) - T) ** 2).sum() / 10, theta)
    np.testing.assert_allclose(w["nH"], ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["nHbc"], ref, rtol=1e-9, atol=1e-12)  # B x C data: permuted, then normalized
    raw = hessian_of(lambda th: ((tanh_net(th, shapes, torch.as_tensor(w["nX"])) - T) ** 2).sum() / 10, theta)
    assert not np.allclose(raw, ref, rtol=1e-3)  # dropping the normalization would be visible
    # The exported spec carries the handle, never a silent 'none': Python refuses it by name.
    assert w["nSpec"]["Layers"][0]["Normalization"].startswith("function_handle:")
    with pytest.raises(InvalidInputError, match="function handle"):
        api.hessian(w["nSpec"], w["nX"], w["nT"])


def test_normalization_handle_that_changes_the_size_is_refused(eng):
    eng.eval("bNet = dlnetwork([featureInputLayer(3, 'Normalization', @(x) x(1:2, :)) fullyConnectedLayer(1)]);")
    ident, msg = error_of(eng, "dlhessian(bNet, dlarray(ones(3, 4), 'CB'), dlarray(ones(1, 4), 'CB'))")
    assert ident == "hessiancore:invalidInput" and "Normalization function" in msg and "size" in msg


# -- the default loss, and crossentropy on probabilities only -----------------------------------------------
def test_default_loss_is_crossentropy_after_softmax_else_mse(eng):
    eng.eval("""
        rand('state', 5); randn('state', 5);
        dNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3) softmaxLayer]);
        dX = randn(3, 4); dT = full(sparse([1 3 2 3], 1:4, 1, 3, 4));
        dH = dlhessian(dNet, dlarray(dX, 'CB'), dlarray(dT, 'CB'));
        mNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3)]);
        mH = dlhessian(mNet, dlarray(dX, 'CB'), dlarray(dT, 'CB'));
        dSpec = dlnetworkToSpec(dNet); mSpec = dlnetworkToSpec(mNet);
    """)
    w = eng.workspace
    X, T = torch.as_tensor(w["dX"]), torch.as_tensor(w["dT"])
    theta, shapes = learnables(w["dSpec"])
    ce = hessian_of(lambda th: -(T * torch.log(softmax_net(th, shapes, X))).sum() / 4, theta)
    half_mse = hessian_of(lambda th: ((softmax_net(th, shapes, X) - T) ** 2).sum() / 8, theta)
    np.testing.assert_allclose(w["dH"], ce, rtol=1e-9, atol=1e-12)
    assert not np.allclose(w["dH"], half_mse, rtol=1e-2)
    theta, shapes = learnables(w["mSpec"])

    def linear(th):
        W, b = unpack(th, shapes)
        return ((W @ X + b - T) ** 2).sum() / 8

    lin = hessian_of(linear, theta)
    np.testing.assert_allclose(w["mH"], lin, rtol=1e-9, atol=1e-12)


def test_crossentropy_without_softmax_names_softmax_layer(eng):
    eng.eval("xNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3)]); randn('state', 6); "
             "xX = dlarray(3 * randn(3, 4), 'CB'); xT = dlarray(eye(3, 4), 'CB');")
    ident, msg = error_of(eng, "dlhessian(xNet, xX, xT, 'Loss', 'crossentropy')")
    assert ident == "hessiancore:invalidInput"
    assert "takes probabilities" in msg and "softmaxLayer" in msg and msg.startswith("dlhessian: ")


# -- numbers and sizes that do not fit ---------------------------------------------------------------------
def test_huge_doubles_give_matlab_errors_not_overflows(eng):
    eng.eval("hNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) tanhLayer fullyConnectedLayer(1)]); "
             "randn('state', 7); hX = dlarray(randn(2, 5), 'CB'); hT = dlarray(randn(1, 5), 'CB');")
    ident, msg = error_of(eng, "dlnewtonUpdate(hNet, hX, hT, 'LearnRate', 1e300)")
    assert ident == "hessiancore:nonFinite" and "'LearnRate'" in msg and msg.startswith("dlnewtonUpdate: ")
    ident, msg = error_of(eng, "dlhessianTrace(hNet, hX, hT, 'Seed', 1e300)")
    assert ident == "hessiancore:invalidInput" and "2^53" in msg
    ident, msg = error_of(eng, "dlhessianTrace(hNet, hX, hT, 'NumMatvecs', 1e9)")  # refused before any work
    assert ident == "hessiancore:memoryBudget" and "'NumMatvecs'" in msg and "'MemoryBudget'" in msg


def test_request_over_the_v7_limit_is_refused(eng, tmp_path):
    eng.eval("hcReq = struct('Format', 'x', 'X', {{ones(100, 100)}}, 'T', {{1}});")
    ident, msg = error_of(eng, f"hcTestPrivate('hcSaveRequest', '{tmp_path / 'r.mat'}', hcReq, 50000)")
    assert ident == "hessiancore:memoryBudget" and "request's X" in msg and "-v7" in msg
    assert not (tmp_path / "r.mat").exists()
    assert error_of(eng, f"hcTestPrivate('hcSaveRequest', '{tmp_path / 'r.mat'}', hcReq, 2^31)")[0] == ""
    assert sorted(name for name, *_ in scipy.io.whosmat(tmp_path / "r.mat")) == ["Format", "T", "X"]


@pytest.mark.parametrize("columns", [
    "string(cell(0, 1)), string(cell(0, 1)), cell(0, 1)",  # what the double builds
    "zeros(0, 1), zeros(0, 1), zeros(0, 1)",
    "cell(0, 1), cell(0, 1), cell(0, 1)",
    "zeros(0, 0), zeros(0, 0), zeros(0, 0)",
])
def test_empty_state_table_of_a_stateless_network(eng, columns):
    eng.eval("zNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(1)]); "
             "zNet.State = table(" + columns + ", 'VariableNames', {'Layer', 'Parameter', 'Value'}); "
             "zSize = size(zNet.State); zSpec = dlnetworkToSpec(zNet); "
             "zH = dlhessian(zNet, dlarray([1 2; 3 4], 'CB'), dlarray([1 0], 'CB'));")
    assert tuple(eng.workspace["zSize"].reshape(-1)) == (0, 3)
    state = eng.workspace["zSpec"]["State"]
    assert len(state["Layer"]) == 0 and len(state["Value"]) == 0
    assert eng.workspace["zH"].shape == (3, 3)


# -- Python executables and setup --------------------------------------------------------------------------
def test_pythonw_becomes_the_console_python(eng, tmp_path):
    (tmp_path / "pythonw.exe").touch()
    (tmp_path / "python.exe").touch()
    eng.eval(f"hcP = hcTestPrivate('hcConsolePython', '{tmp_path / 'pythonw.exe'}'); "
             f"hcQ = hcTestPrivate('hcConsolePython', '{tmp_path / 'python.exe'}');")
    assert eng.workspace["hcP"] == str(tmp_path / "python.exe") and eng.workspace["hcQ"] == str(tmp_path / "python.exe")
    (tmp_path / "python.exe").unlink()
    ident, msg = error_of(eng, f"hcTestPrivate('hcConsolePython', '{tmp_path / 'pythonw.exe'}')")
    assert ident == "hessiancore:setup" and "hessiancoreSetup('Python'" in msg


def test_setup_changes_pyenv_only_when_saving(eng, tmp_path):
    """hcChooseTransport's MATLAB branch with a pyenv double that records its calls: reading pyenv is fine;
    pyenv('Version', ...) persists across MATLAB sessions, so only 'Save', true may call it."""
    (tmp_path / "pyenv.m").write_text(
        "function env = pyenv(varargin)\n"
        "    % Records its calls; Python 3.11 configured but not loaded.\n"
        "    global hcPyenvCalls\n"
        "    hcPyenvCalls{end + 1} = varargin;\n"
        "    env = struct('Executable', '/usr/bin/python3.11', 'Status', 'NotLoaded', 'Version', '3.11');\n"
        "end\n")
    eng.eval(f"addpath('{tmp_path}'); global hcPyenvCalls; hcPyenvCalls = {{}};")
    try:
        def choose(requested, python, version, apply):
            eng.eval("hcPyenvCalls = {}; [hcTr, hcNotes] = hcTestPrivate('hcChooseTransport', "
                     f"'{requested}', '{python}', '{version}', 'R2024a', false, {str(apply).lower()}); "
                     "hcCalls = hcPyenvCalls;")
            return eng.workspace["hcTr"], eng.workspace["hcNotes"], eng.workspace["hcCalls"]

        tr, notes, calls = choose("auto", "/venv/bin/python", "3.11.4", False)
        assert tr == "server" and len(calls) == 0  # the default never touches pyenv
        tr, notes, calls = choose("py", "/venv/bin/python", "3.11.4", False)
        assert tr == "py" and all(len(c) == 0 for c in calls)  # read only
        assert "pyenv('Version', '/venv/bin/python'" in "".join(notes)
        tr, notes, calls = choose("py", "/venv/bin/python", "3.11.4", True)
        assert tr == "py" and any(list(c) == ["Version", "/venv/bin/python", "ExecutionMode", "OutOfProcess"]
                                  for c in calls)
        tr, notes, calls = choose("py", "/venv/bin/python", "3.13.0", True)  # R2024a supports 3.9-3.11
        assert tr == "server" and all(len(c) == 0 for c in calls)
    finally:
        eng.eval(f"rmpath('{tmp_path}'); clear global hcPyenvCalls;")


# -- errors in MATLAB's terms ------------------------------------------------------------------------------
def test_option_errors_list_names_once_and_say_what_is_allowed(eng):
    eng.eval("oNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]); oX = dlarray(ones(2, 3), 'CB');")
    ident, msg = error_of(eng, "dlhessian(oNet, oX, oX, 'NoSuchOption', 1)")
    assert ident == "hessiancore:invalidOption" and msg.count("dlhessian") == 1
    assert msg.count("LossOptions") == 1 and "'NoSuchOption'" in msg
    ident, msg = error_of(eng, "dlhessian(oNet, oX, oX, 'Output', 'cube')")
    assert msg == "dlhessian: 'Output' must be 'matrix' or 'table'; got 'cube'."
    ident, msg = error_of(eng, "dlnewtonUpdate(oNet, oX, oX, 'Damping', -1)")
    assert msg == "dlnewtonUpdate: 'Damping' must be a finite number >= 0; got -1."
    ident, msg = error_of(eng, "dlhessianEigs(oNet, oX, oX, 2, 'Which', 'middle')")
    assert "'largest', 'smallest', 'largestabs', 'bothends'" in msg and "@" not in msg


def test_memory_budget_refusal_names_matlab_functions(eng):
    eng.eval("bNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]); "
             "bX = dlarray(ones(3, 4), 'CB'); bT = dlarray(ones(2, 4), 'CB');")
    ident, msg = error_of(eng, "dlhessian(bNet, bX, bT, 'MemoryBudget', 1000)")
    assert ident == "hessiancore:memoryBudget" and msg.startswith("dlhessian: ")
    for name in ("dlhvp", "dlhessianEigs", "dlhessianDiag", "'MemoryBudget'"):
        assert name in msg, msg
    for python_word in ("HessianOperator", "memory_budget", "eigsh", "torch", "Error:"):
        assert python_word not in msg, msg


# -- the dlnetwork and layer doubles fail where MATLAB fails ------------------------------------------------
@pytest.mark.parametrize("call, ident", [
    ("featureInputLayer(0)", "hessiancoreTest:invalidProperty"),
    ("featureInputLayer(3, 'Normalization', 'bogus')", "hessiancoreTest:invalidProperty"),
    ("featureInputLayer(3, 'Mean', [1 2 3])", "hessiancoreTest:invalidProperty"),  # documented numFeatures-by-1
    ("imageInputLayer([4 4 3], 'Mean', ones(1, 1, 2))", "hessiancoreTest:invalidProperty"),
    ("imageInputLayer([4 4 3 2])", "hessiancoreTest:invalidProperty"),
    ("fullyConnectedLayer(2.5)", "hessiancoreTest:invalidProperty"),
    ("fullyConnectedLayer(2, 'Bias', ones(3, 1))", "hessiancoreTest:invalidProperty"),
    ("convolution2dLayer(3, 4, 'Padding', [1 2 3])", "hessiancoreTest:invalidProperty"),
    ("batchNormalizationLayer('Epsilon', 1e-7)", "hessiancoreTest:invalidProperty"),
    ("layerNormalizationLayer('OperationDimension', 'time')", "hessiancoreTest:invalidProperty"),
    ("dropoutLayer(1)", "hessiancoreTest:invalidProperty"),
    ("geluLayer('Approximation', 'sigmoid')", "hessiancoreTest:invalidProperty"),
    ("lstmLayer(4, 'OutputMode', 'first')", "hessiancoreTest:invalidProperty"),
    ("gruLayer(4, 'ResetGateMode', 'never')", "hessiancoreTest:invalidProperty"),
    ("additionLayer(1)", "hessiancoreTest:invalidProperty"),
    ("averagePooling2dLayer(2, 'PaddingValue', 1)", "hessiancoreTest:invalidProperty"),
    ("reluLayer('Scale', 2)", "hessiancoreTest:nameValue"),
    ("dlnetwork([featureInputLayer(3) fullyConnectedLayer(2, 'Weights', ones(2, 4))])", "dlnetwork:initialize"),
    ("dlnetwork([sequenceInputLayer(3) convolution2dLayer(3, 2)])", "hessiancoreTest:format"),
    ("dlnetwork([featureInputLayer(3, 'Name', 'a') fullyConnectedLayer(2, 'Name', 'a')])", "dlnetwork:names"),
])
def test_layer_and_network_doubles_validate_like_the_documented_constructors(eng, call, ident):
    assert error_of(eng, call)[0] == ident


def test_network_double_is_uninitialized_until_initialize(eng):
    eng.eval("uNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(2)], 'Initialize', false); "
             "uBefore = uNet.Initialized; uEmpty = isempty(uNet.Learnables.Value{1}); "
             "uSize = uNet.Layers(2).InputSize;")
    assert not eng.workspace["uBefore"] and eng.workspace["uEmpty"] and eng.workspace["uSize"] == "auto"
    ident, msg = error_of(eng, "dlhessian(uNet, dlarray(ones(3, 2), 'CB'), dlarray(ones(2, 2), 'CB'))")
    assert ident == "hessiancore:invalidInput" and "initialize" in msg
    eng.eval("uNet = initialize(uNet); uAfter = uNet.Initialized; uW = size(uNet.Learnables.Value{1}); "
             "uSize = uNet.Layers(2).InputSize; uClass = class(uNet.Learnables.Layer);")
    assert eng.workspace["uAfter"] and tuple(eng.workspace["uW"].reshape(-1)) == (2, 3)
    assert eng.workspace["uSize"] == 3 and eng.workspace["uClass"] == "string"
    # a network whose input is not an input layer needs an example input
    eng.eval("vNet = dlnetwork([fullyConnectedLayer(2) tanhLayer]); vBefore = vNet.Initialized;")
    assert not eng.workspace["vBefore"]
    assert error_of(eng, "initialize(vNet)")[0] == "dlnetwork:initialize"
    eng.eval("vNet = initialize(vNet, dlarray(ones(5, 1), 'CB')); vW = size(vNet.Learnables.Value{1});")
    assert tuple(eng.workspace["vW"].reshape(-1)) == (2, 5)


def test_every_translated_layer_class_has_a_double_that_exports_and_translates(eng):
    """Networks built from the doubles cover every class of bridge.layers.REGISTRY; the exported spec is
    accepted by the bridge, and the output has the size the double's own size inference predicts."""
    from bridge.layers import REGISTRY

    eng.eval("""
        rand('state', 8); randn('state', 8);
        aNet = dlnetwork([imageInputLayer([8 8 2], 'Normalization', 'zscore', 'Mean', reshape([0.1 0.2], 1, 1, 2), ...
                          'StandardDeviation', 2) convolution2dLayer(3, 4, 'Padding', 'same', 'Stride', [1 2]) ...
                          batchNormalizationLayer reluLayer maxPooling2dLayer(2, 'Stride', 2) ...
                          averagePooling2dLayer(2, 'Padding', 1, 'PaddingValue', 'mean') layerNormalizationLayer ...
                          eluLayer(0.5) geluLayer('Approximation', 'tanh') swishLayer dropoutLayer(0.2) ...
                          flattenLayer fullyConnectedLayer(3) softmaxLayer]);
        bNet = dlnetwork([image3dInputLayer([4 4 3 2], 'Normalization', 'none') flattenLayer fullyConnectedLayer(2)]);
        cNet = dlnetwork([imageInputLayer([5 5 1], 'Normalization', 'none') globalMaxPooling2dLayer ...
                          globalAveragePooling2dLayer flattenLayer fullyConnectedLayer(2) sigmoidLayer]);
        dNet = dlnetwork;
        dNet = addLayers(dNet, [featureInputLayer(4, 'Name', 'in') fullyConnectedLayer(3, 'Name', 'a') ...
                                additionLayer(2, 'Name', 'add') concatenationLayer(1, 2, 'Name', 'cat') ...
                                depthConcatenationLayer(2, 'Name', 'depth') leakyReluLayer(0.1) tanhLayer ...
                                fullyConnectedLayer(2)]);
        dNet = addLayers(dNet, fullyConnectedLayer(3, 'Name', 'b'));
        dNet = addLayers(dNet, fullyConnectedLayer(2, 'Name', 'c'));
        dNet = addLayers(dNet, fullyConnectedLayer(1, 'Name', 'd'));
        dNet = connectLayers(dNet, 'in', 'b'); dNet = connectLayers(dNet, 'b', 'add/in2');
        dNet = connectLayers(dNet, 'in', 'c'); dNet = connectLayers(dNet, 'c', 'cat/in2');
        dNet = connectLayers(dNet, 'in', 'd'); dNet = connectLayers(dNet, 'd', 'depth/in2');
        dNet = initialize(dNet);
        eNet = dlnetwork([sequenceInputLayer(3) lstmLayer(4) gruLayer(3, 'OutputMode', 'last') fullyConnectedLayer(2)]);
        specs = {dlnetworkToSpec(aNet), dlnetworkToSpec(bNet), dlnetworkToSpec(cNet), dlnetworkToSpec(dNet), ...
                 dlnetworkToSpec(eNet)};
    """)
    specs = eng.workspace["specs"]
    covered = {lay["Class"].rsplit(".", 1)[-1] for s in specs for lay in s["Layers"]}
    assert covered == set(REGISTRY), sorted(set(REGISTRY) - covered)
    rng = np.random.default_rng(0)
    inputs = [(rng.standard_normal((8, 8, 2, 3)), "SSCB", (3, 3)),
              (rng.standard_normal((4, 4, 3, 2, 3)), "SSSCB", (2, 3)),
              (rng.standard_normal((5, 5, 1, 3)), "SSCB", (2, 3)),
              (rng.standard_normal((4, 3)), "CB", (2, 3)),
              (rng.standard_normal((3, 3, 6)), "CBT", (2, 3))]
    for spec, (x, fmt, shape) in zip(specs, inputs):
        Y, out_fmt = api.predict(spec, x, x_format=fmt)
        assert Y.shape == shape and out_fmt == "CB"


def test_dag_and_recurrent_networks_from_the_doubles_match_torch(eng):
    """Hessians of a DAG (addition, concatenation) and of an LSTM -> GRU network built with the doubles,
    against the same networks written by hand in torch from MATLAB's documented equations."""
    eng.eval("""
        rand('state', 9); randn('state', 9);
        gNet = dlnetwork;
        gNet = addLayers(gNet, [featureInputLayer(2, 'Name', 'in') fullyConnectedLayer(2, 'Name', 'a') ...
                                tanhLayer('Name', 't') additionLayer(2, 'Name', 'add') ...
                                concatenationLayer(1, 2, 'Name', 'cat') fullyConnectedLayer(1, 'Name', 'out')]);
        gNet = addLayers(gNet, fullyConnectedLayer(2, 'Name', 'b'));
        gNet = connectLayers(gNet, 'in', 'b'); gNet = connectLayers(gNet, 'b', 'add/in2');
        gNet = connectLayers(gNet, 'in', 'cat/in2');
        gNet = initialize(gNet);
        gX = randn(2, 5); gT = randn(1, 5);
        gH = dlhessian(gNet, dlarray(gX, 'CB'), dlarray(gT, 'CB')); gSpec = dlnetworkToSpec(gNet);
        qNet = dlnetwork([sequenceInputLayer(2) lstmLayer(3) gruLayer(2, 'OutputMode', 'last') fullyConnectedLayer(1)]);
        qX = randn(2, 3, 4); qT = randn(1, 3);
        qH = dlhessian(qNet, dlarray(qX, 'CBT'), dlarray(qT, 'CB')); qSpec = dlnetworkToSpec(qNet);
    """)
    w = eng.workspace
    assert w["gSpec"]["Learnables"]["Layer"] == ["a", "a", "out", "out", "b", "b"]
    theta, shapes = learnables(w["gSpec"])
    X, T = torch.as_tensor(w["gX"]), torch.as_tensor(w["gT"])

    def dag(th):
        Wa, ba, Wo, bo, Wb, bb = unpack(th, shapes)
        added = torch.tanh(Wa @ X + ba) + (Wb @ X + bb)
        Y = Wo @ torch.cat([added, X], dim=0) + bo
        return ((Y - T) ** 2).sum() / (2 * X.shape[1])

    np.testing.assert_allclose(w["gH"], hessian_of(dag, theta), rtol=1e-9, atol=1e-12)

    theta, shapes = learnables(w["qSpec"])
    Xs, T = torch.as_tensor(w["qX"]), torch.as_tensor(w["qT"])
    state = [torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1)) for v in w["qSpec"]["State"]["Value"]]

    def recurrent(th):
        Wl, Rl, bl, Wg, Rg, bg, Wf, bf = unpack(th, shapes)
        bl, bg = bl.reshape(-1), bg.reshape(-1)
        h, c = state[0][:, None].expand(3, 3), state[1][:, None].expand(3, 3)  # H x B
        H = 3
        hs = []
        for t in range(Xs.shape[2]):  # LSTM gates: input, forget, cell candidate, output
            z = Wl @ Xs[:, :, t] + Rl @ h + bl[:, None]
            i, f, g, o = (torch.sigmoid(z[:H]), torch.sigmoid(z[H:2 * H]), torch.tanh(z[2 * H:3 * H]),
                          torch.sigmoid(z[3 * H:]))
            c = f * c + i * g
            h = o * torch.tanh(c)
            hs.append(h)
        G = 2
        hg = state[2][:, None].expand(G, 3)
        for x in hs:  # GRU gates: reset, update, candidate; 'after-multiplication'
            wx, rh = Wg @ x + bg[:, None], Rg @ hg
            r, u = torch.sigmoid(wx[:G] + rh[:G]), torch.sigmoid(wx[G:2 * G] + rh[G:2 * G])
            cand = torch.tanh(wx[2 * G:] + r * rh[2 * G:])
            hg = (1 - u) * cand + u * hg
        Y = Wf @ hg + bf
        return ((Y - T) ** 2).sum() / (2 * 3)

    np.testing.assert_allclose(w["qH"], hessian_of(recurrent, theta), rtol=1e-8, atol=1e-11)
