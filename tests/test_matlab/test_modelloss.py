"""The MATLAB backend ('ModelLoss', 'Backend', 'matlab') run for real in GNU Octave, against the test doubles
in tests/octave/: a recording dlarray with dlfeval/dlgradient (reverse mode, the backward pass itself recorded
with 'EnableHigherDerivatives'), and the dlnetwork/layer doubles computing with it.

Everything is checked against something independent of that code: float64 torch autograd (the same functions
and networks written by hand), the Python backend (hessian_core through the bridge), closed forms (an L2
penalty's Hessian), numpy's dense eig/solve, and the documented values of MathWorks' own examples.

Octave missing: skipped locally, FAILS when the environment variable CI is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from octave_session import session, unpack

ROOT = Path(__file__).resolve().parents[2]

# Model-loss functions and probes, written as a MATLAB user would (files on the Octave path).
HELPERS = {
    "hcmlMse": """
        function loss = hcmlMse(net, X, T)
            loss = mse(forward(net, X), T);
        end""",
    "hcmlCe": """
        function loss = hcmlCe(net, X, T)
            loss = crossentropy(forward(net, X), T);
        end""",
    "hcmlPenalty": """
        function loss = hcmlPenalty(net, X, T)
            % mse plus 0.3 * (sum of squares of every Weights learnable): Hessian + 0.6 I on those rows.
            loss = mse(forward(net, X), T);
            tbl = net.Learnables;
            for i = 1:numel(tbl.Value)
                if strcmp(tbl.Parameter(i), 'Weights')
                    loss = loss + 0.3 * sum(tbl.Value{i}.^2, 'all');
                end
            end
        end""",
    "hcmlGuarded": """
        function [loss, gradients] = hcmlGuarded(net, X, T)
            loss = mse(forward(net, X), T);
            if nargout > 1
                gradients = dlgradient(loss, net.Learnables);
            end
        end""",
    "hcmlUnguarded": """
        function [loss, gradients] = hcmlUnguarded(net, X, T)
            loss = mse(forward(net, X), T);
            gradients = dlgradient(loss, net.Learnables);
        end""",
    "hcmlNumeric": """
        function loss = hcmlNumeric(net, X, T)
            loss = extractdata(mse(forward(net, X), T));
        end""",
    "hcmlBroken": """
        function loss = hcmlBroken(net, X, T)
            error('mytest:boom', 'boom from the model loss');
        end""",
    "hcmlProd": """
        function loss = hcmlProd(net, X, T)
            tbl = net.Learnables;
            loss = mse(forward(net, X), T) + 0.01 * prod(reshape(tbl.Value{1}, [], 1));
        end""",
    "hcmlAdProbe": """
        function [y, g, H] = hcmlAdProbe(x)
            % A scalar function of 6 variables through most operations of the dlarray double; its
            % gradient and its Hessian by double backpropagation, one column per dlgradient call.
            A = reshape(x(1:4), 2, 2);
            v = x(5:6);
            z = tanh(A * v) + sigmoid(A.' * v) .* exp(0.3 * v);
            w = leakyrelu(z - 0.1, 0.2);
            p = stripdims(softmax(dlarray(z, 'CB')));
            y = sum(log(1 + z.^2)) + sum(w ./ (2 + v.^2)) + mean(sqrt(1 + x.^2)) + sum(p .* [1; 2]) + ...
                x(1)^3 - x(2) / 3 + sum(relu(x - 0.2), 'all');
            g = dlgradient(y, x, 'EnableHigherDerivatives', true);
            n = numel(x);
            H = zeros(n, n);
            for i = 1:n
                H(:, i) = extractdata(dlgradient(g(i), x, 'RetainData', i < n));
            end
        end""",
    "hcmlFlat": """
        function v = hcmlFlat(tbl)
            % [Value{1}(:); Value{2}(:); ...] of a Learnables-shaped table, as doubles.
            parts = cellfun(@(x) double(extractdata(x(:))), tbl.Value, 'UniformOutput', false);
            v = vertcat(parts{:});
        end""",
    "hcmlTable": """
        function tbl = hcmlTable(net, v)
            % The vector v (Learnables order, column-major) as a Learnables-shaped table of dlarray values.
            tbl = net.Learnables;
            values = tbl.Value;
            offset = 0;
            for i = 1:numel(values)
                n = numel(values{i});
                values{i} = dlarray(reshape(v(offset + 1:offset + n), size(values{i})));
                offset = offset + n;
            end
            tbl.Value = values;
        end""",
    "hcmlRosenbrock": """
        function [y, dydx] = hcmlRosenbrock(x)
            y = 100 * (x(2) - x(1).^2).^2 + (1 - x(1)).^2;
            dydx = dlgradient(y, x);
        end""",
    "hcmlCube": """
        function [y, d2] = hcmlCube(x, higher)
            y = x.^3;
            d = dlgradient(y, x, 'EnableHigherDerivatives', higher);
            d2 = dlgradient(d, x);
        end""",
    "hcmlTwice": """
        function [g1, g2] = hcmlTwice(x, retain)
            y = sum(tanh(x).^2);
            g1 = dlgradient(y, x, 'RetainData', retain);
            g2 = dlgradient(y, x);
        end""",
    "hcmlTableGrad": """
        function [g, traced] = hcmlTableGrad(net, X, T)
            g = dlgradient(mse(forward(net, X), T), net.Learnables);
            traced = dlarray.isTraced(net.Learnables.Value{1});
        end""",
    "hcmlMatmulFormatted": """
        function y = hcmlMatmulFormatted(net, X)
            y = sum(extractdata(net.Learnables.Value{1}) * X, 'all');
        end""",
}


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    """One Octave session; the helper functions on its path; a worker thread for the Python backend."""
    helpers = tmp_path_factory.mktemp("hcml")
    for name, code in HELPERS.items():
        (helpers / f"{name}.m").write_text(textwrap.dedent(code).lstrip() + "\n")
    running = session(tmp_path_factory.mktemp("hcmlserver"))
    e = next(running)
    e.eval(f"addpath('{helpers}');")
    yield e
    next(running, None)  # the session's own clean-up


# -- the independent reference: networks written by hand in float64 torch ---------------------------
def learnables(spec):
    values = [np.atleast_2d(np.asarray(v, dtype=np.float64)) for v in spec["Learnables"]["Value"]]
    theta = torch.as_tensor(np.concatenate([v.reshape(-1, order="F") for v in values]))
    return theta, [v.shape for v in values]


def tanh_mse(theta, X, T, shapes):
    """featureInput -> fc -> tanh -> fc, MATLAB's mse = sum((Y - T).^2) / (2 N)."""
    W1, b1, W2, b2 = unpack(theta, shapes)
    Y = W2 @ torch.tanh(W1 @ X + b1) + b2
    return ((Y - T) ** 2).sum() / (2 * X.shape[1])


def softmax_ce(theta, X, T, shapes):
    """featureInput -> fc -> softmax, crossentropy on probabilities = -sum(T .* log(Y)) / N."""
    W, b = unpack(theta, shapes)
    Y = torch.softmax(W @ X + b, dim=0)
    return -(T * torch.log(Y)).sum() / X.shape[1]


def torch_hessian(f, theta):
    return torch.autograd.functional.hessian(f, theta).numpy(), torch.autograd.functional.jacobian(f, theta).numpy()


def spec_of(eng, var):
    return eng.dlnetworkToSpec(eng.workspace[var])


def error_of(eng, call):
    eng.eval(f"try, {call}; hcId = ''; hcMsg = ''; catch hcErr, hcId = hcErr.identifier; hcMsg = hcErr.message; end")
    return eng.workspace["hcId"], eng.workspace["hcMsg"]


# -- the AD doubles themselves --------------------------------------------------------------------------
def test_doubles_reproduce_mathworks_examples(eng):
    """dlgradient page: Rosenbrock at [-1, 2] is 104 with gradient [396 200]; Answers 587696: the second
    derivative of x^3 at 5 with 'EnableHigherDerivatives' is 30."""
    eng.eval("[adF, adG] = dlfeval(@hcmlRosenbrock, dlarray([-1, 2])); adF = extractdata(adF); "
             "adG = extractdata(adG); [~, adD2] = dlfeval(@hcmlCube, dlarray(5), true); adD2 = extractdata(adD2);")
    assert eng.workspace["adF"] == 104
    np.testing.assert_array_equal(eng.workspace["adG"], [[396, 200]])
    assert eng.workspace["adD2"] == 30


def test_doubles_gradient_and_hessian_match_torch(eng):
    """Gradient and Hessian (double backpropagation) of a function through mtimes, transpose, reshape,
    indexing, tanh, sigmoid, exp, log, sqrt, power, rdivide, sum, mean, relu, leakyrelu, softmax,
    stripdims and formatting, against torch.autograd in float64."""
    x0 = np.array([0.3, -0.7, 0.5, 0.9, -0.4, 0.6])
    eng.workspace["adX"] = x0.reshape(-1, 1)
    eng.eval("[adY, adGr, adH] = dlfeval(@hcmlAdProbe, dlarray(adX)); adY = extractdata(adY); "
             "adGr = extractdata(adGr);")

    def f(x):
        A = x[:4].reshape(2, 2).T
        v = x[4:6]
        z = torch.tanh(A @ v) + torch.sigmoid(A.T @ v) * torch.exp(0.3 * v)
        u = z - 0.1
        w = torch.where(u > 0, u, 0.2 * u)
        p = torch.softmax(z, dim=0)
        return (torch.log(1 + z ** 2).sum() + (w / (2 + v ** 2)).sum() + torch.sqrt(1 + x ** 2).mean()
                + (p * torch.tensor([1.0, 2.0], dtype=torch.float64)).sum() + x[0] ** 3 - x[1] / 3
                + torch.relu(x - 0.2).sum())

    x = torch.as_tensor(x0)
    H, g = torch_hessian(f, x)
    assert eng.workspace["adY"] == pytest.approx(float(f(x)), rel=1e-13)
    np.testing.assert_allclose(eng.workspace["adGr"].reshape(-1), g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(eng.workspace["adH"], H, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("loss, options, last", [
    ("l2loss", "struct('NormalizationFactor', 'all-elements')", "fullyConnectedLayer(2)"),
    ("huber", "struct('TransitionPoint', 0.5)", "fullyConnectedLayer(2)"),
    ("l1loss", "struct('NormalizationFactor', 'none')", "fullyConnectedLayer(2)"),
    ("binary-crossentropy", "struct()", "fullyConnectedLayer(2) sigmoidLayer"),
])
def test_matlab_backend_named_losses_equal_python_backend(eng, loss, options, last):
    """'Backend', 'matlab' with a loss name and its options, over minibatches of 2 and 4: MATLAB's own loss
    function (the double's) and its normalization across minibatches equal the Python bridge's."""
    eng.eval(f"""
        rand('state', 5); randn('state', 5);
        lNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3) tanhLayer {last}]);
        lXs = {{dlarray(randn(3, 2), 'CB'), dlarray(randn(3, 4), 'CB')}};
        lTs = {{dlarray(rand(2, 2), 'CB'), dlarray(rand(2, 4), 'CB')}};
        lHm = dlhessian(lNet, lXs, lTs, 'Backend', 'matlab', 'Loss', '{loss}', 'LossOptions', {options});
        lHp = dlhessian(lNet, lXs, lTs, 'Loss', '{loss}', 'LossOptions', {options});
    """)
    H = eng.workspace["lHp"]
    assert np.abs(H).max() > 1e-3
    np.testing.assert_allclose(eng.workspace["lHm"], H, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("call, ident, text", [
    # dlgradient page: call it from inside a function passed to dlfeval
    ("dlgradient(dlarray(2), dlarray(2))", "dlgradient:notInDlfeval", "dlfeval"),
    # Answers 587696: a second derivative without 'EnableHigherDerivatives' is an error
    ("dlfeval(@hcmlCube, dlarray(5), false)", "dlgradient:notTraced", "not traced"),
    # Answers 2051972: the message for a non-scalar value to differentiate
    ("dlfeval(@(x) dlgradient(x .* 2, x), dlarray([1; 2]))", "dlgradient:nonScalar",
     "Value to differentiate is non-scalar. It must be a traced real dlarray scalar."),
    # dlgradient page, RetainData: the trace is discarded after a call without it
    ("dlfeval(@hcmlTwice, dlarray([1; 2]), false)", "dlgradient:traceDiscarded", "RetainData"),
    # Answers 649423: mtimes takes a formatted dlarray only with an unformatted scalar
    ("dlfeval(@hcmlMatmulFormatted, dlnetwork([featureInputLayer(2) fullyConnectedLayer(2)]), "
     "dlarray(ones(2, 3), 'CB'))", "dlarray:mtimesFormatted", "formatted"),
    # Answers 587696: no higher derivatives through prod
    ("dlfeval(@(x) dlgradient(dlgradient(prod(x), x, 'EnableHigherDerivatives', true) * [1 1]', x), "
     "dlarray([2; 3]))", "dlgradient:higherDerivatives", "prod"),
])
def test_doubles_fail_where_matlab_fails(eng, call, ident, text):
    got, msg = error_of(eng, call)
    assert got == ident, msg
    assert text in msg


def test_doubles_retain_data_and_learnables_tables(eng):
    """With 'RetainData', true the trace serves a second dlgradient; the gradient of net.Learnables is a
    table with its Layer and Parameter rows, shaped like the learnables; dlfeval's outputs are untraced
    while its inputs were traced."""
    eng.eval("""
        [adA, adB] = dlfeval(@hcmlTwice, dlarray([1; 2]), true);
        adSame = isequal(extractdata(adA), extractdata(adB));
        adNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
        [adG, adTraced] = dlfeval(@hcmlTableGrad, adNet, dlarray(randn(3, 5), 'CB'), dlarray(randn(2, 5), 'CB'));
        adIsTable = isa(adG, 'table'); adLayers = cellstr(adG.Layer); adParams = cellstr(adG.Parameter);
        adSizes = cellfun(@size, adG.Value, 'UniformOutput', false);
        adOutTraced = dlarray.isTraced(adG.Value{1}); adClass = class(adG.Value{1});
    """)
    w = eng.workspace
    assert w["adSame"] and w["adIsTable"] and w["adTraced"] and not w["adOutTraced"]
    assert w["adLayers"] == ["fc", "fc", "fc_1", "fc_1"] and w["adParams"] == ["Weights", "Bias"] * 2
    assert [tuple(np.ravel(s).astype(int)) for s in w["adSizes"]] == [(4, 3), (4, 1), (2, 4), (2, 1)]
    assert w["adClass"] == "dlarray"


# -- the MATLAB backend against torch, the Python backend and closed forms ------------------------------
@pytest.fixture(scope="module")
def tanh_case(eng):
    """A featureInput(3) -> fc(4) -> tanh -> fc(2) network (single-precision learnables, as MATLAB
    initializes them), one minibatch of 5, every function through 'ModelLoss' and the Python backend."""
    eng.eval("""
        rand('state', 7); randn('state', 7);
        mNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
        mX = dlarray(randn(3, 5), 'CB'); mT = dlarray(randn(2, 5), 'CB');
        mXd = extractdata(mX); mTd = extractdata(mT);
        mSpec = dlnetworkToSpec(mNet);
        mH = dlhessian(mNet, mX, mT, 'ModelLoss', @hcmlMse);
        mHname = dlhessian(mNet, mX, mT, 'Backend', 'matlab', 'Loss', 'mse');
        mHguard = dlhessian(mNet, mX, mT, 'ModelLoss', @hcmlGuarded);
        mHpy = dlhessian(mNet, mX, mT);
        mHpen = dlhessian(mNet, mX, mT, 'ModelLoss', @hcmlPenalty);
        mD = dlhessianDiag(mNet, mX, mT, 'ModelLoss', @hcmlMse);
        mDt = dlhessianDiag(mNet, mX, mT, 'ModelLoss', @hcmlMse, 'Output', 'table');
        mDtW = extractdata(mDt.Value{1});
        mV = (1:26)' / 26;
        mHv = dlhvp(mNet, mX, mT, mV, 'ModelLoss', @hcmlMse);
        mHvT = dlhvp(mNet, mX, mT, hcmlTable(mNet, mV), 'ModelLoss', @hcmlMse);
        mHvTisTable = isa(mHvT, 'table'); mHvTflat = hcmlFlat(mHvT);
        mHt = dlhessian(mNet, mX, mT, 'ModelLoss', @hcmlMse, 'Output', 'table');
        mHtB2 = extractdata(mHt.Value{4});
        mSpecAfter = dlnetworkToSpec(mNet);
        mClassAfter = class(extractdata(mNet.Learnables.Value{1}));
    """)
    w = eng.workspace
    theta, shapes = learnables(w["mSpec"])
    X, T = torch.as_tensor(w["mXd"]), torch.as_tensor(w["mTd"])
    H, g = torch_hessian(lambda th: tanh_mse(th, X, T, shapes), theta)
    return w, H, g, theta.numpy(), shapes


def test_modelloss_hessian_equals_torch_and_python_backend(tanh_case):
    w, H, *_ = tanh_case
    assert w["mH"].shape == (26, 26)
    # float64: the network's single-precision learnables are cast (a copy), so agreement is to 1e-9
    np.testing.assert_allclose(w["mH"], H, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["mH"], w["mHpy"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["mHname"], w["mHpy"], rtol=1e-9, atol=1e-12)   # 'Backend', 'matlab', 'Loss'
    np.testing.assert_allclose(w["mHguard"], H, rtol=1e-9, atol=1e-12)          # extra outputs ignored


def test_modelloss_l2_penalty_adds_its_closed_form_hessian(tanh_case):
    w, H, *_ = tanh_case
    weights = np.zeros(26)
    weights[:12] = 1      # fc Weights (4 x 3)
    weights[16:24] = 1    # fc_1 Weights (2 x 4); the biases are not penalized
    np.testing.assert_allclose(w["mHpen"], w["mH"] + 0.6 * np.diag(weights), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w["mHpen"], H + 0.6 * np.diag(weights), rtol=1e-9, atol=1e-12)


def test_modelloss_diagonal_hvp_and_table_forms(tanh_case):
    w, H, *_ = tanh_case
    np.testing.assert_allclose(w["mD"].reshape(-1), np.diag(H), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["mDtW"], np.diag(H)[:12].reshape(3, 4).T, rtol=1e-9, atol=1e-12)
    v = w["mV"].reshape(-1)
    np.testing.assert_allclose(w["mHv"].reshape(-1), H @ v, rtol=1e-9, atol=1e-12)
    assert w["mHvTisTable"]
    np.testing.assert_allclose(w["mHvTflat"].reshape(-1), H @ v, rtol=1e-9, atol=1e-12)
    # table output: rows of fc_1/Bias (2 x 1 learnable) as a [2 1 26] array
    np.testing.assert_allclose(w["mHtB2"].reshape(2, 26, order="F"), H[24:26], rtol=1e-9, atol=1e-12)


def test_modelloss_leaves_the_network_unchanged(tanh_case):
    w, *_ = tanh_case
    assert w["mClassAfter"] == "single"
    for a, b in zip(w["mSpec"]["Learnables"]["Value"], w["mSpecAfter"]["Learnables"]["Value"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("which", ["largest", "smallest", "largestabs", "bothends"])
def test_modelloss_eigenpairs_match_dense_eig(eng, tanh_case, which):
    w, H, *_ = tanh_case
    eng.eval(f"[eV, eD, eInfo] = dlhessianEigs(mNet, mX, mT, 4, 'ModelLoss', @hcmlMse, 'Which', '{which}'); "
             "eR = sqrt(sum((mH * eV - eV * eD).^2, 1));")
    V, D, info = eng.workspace["eV"], eng.workspace["eD"], eng.workspace["eInfo"]
    dense = np.linalg.eigvalsh(w["mH"])
    want = {"largest": dense[::-1][:4], "smallest": dense[:4],
            "largestabs": dense[np.argsort(-np.abs(dense))][:4],
            "bothends": np.concatenate([dense[::-1][:2], dense[:2][::-1]])}[which]
    values = np.diag(D)
    if which == "bothends":
        values = np.sort(values)[::-1]
        want = np.sort(want)[::-1]
    np.testing.assert_allclose(values, want, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(V, axis=0), 1, rtol=1e-10)
    np.testing.assert_allclose(w["mH"] @ V, V @ D, atol=1e-7)
    # residuals recomputed and reported like the Python side: ||H v - lambda v|| per pair
    np.testing.assert_allclose(info["Residuals"].reshape(-1), eng.workspace["eR"].reshape(-1), atol=1e-9)
    assert np.all(info["Residuals"] < 1e-7)
    np.testing.assert_allclose(info["Values"].reshape(-1), np.diag(D), rtol=0, atol=0)


def test_modelloss_trace_hutchpp_exact_when_the_sketch_spans(eng, tanh_case):
    w, H, *_ = tanh_case
    eng.eval("[tT, tSe, tInfo] = dlhessianTrace(mNet, mX, mT, 'ModelLoss', @hcmlMse, 'NumMatvecs', 78, 'Seed', 5);")
    assert eng.workspace["tT"] == pytest.approx(np.trace(H), rel=1e-9)
    # 26 sketch probes span R^26: the trace is exact after 2 x 26 products, and no further probe is drawn
    # (the Python backend's hutch++ stops there too and reports the 52 products it made)
    assert eng.workspace["tSe"] == 0 and eng.workspace["tInfo"]["NumMatvecs"] == 52


@pytest.mark.parametrize("method, matvecs", [("hutchinson", 2), ("hutch++", 6)])
def test_modelloss_trace_is_unbiased_over_seeds(eng, method, matvecs):
    """Over 30 seeds the mean of the estimates is within 4 standard errors (of that mean) of the exact
    trace from torch; the seeds give different estimates, the same seed the same one, and the caller's
    random stream is left where it was."""
    eng.eval(f"""
        rand('state', 4); randn('state', 4);
        uNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) tanhLayer fullyConnectedLayer(1)]);
        uX = dlarray(randn(2, 6), 'CB'); uT = dlarray(randn(1, 6), 'CB'); uSpec = dlnetworkToSpec(uNet);
        uXd = extractdata(uX); uTd = extractdata(uT);
        rng(11, 'twister'); uBefore = rand(1, 3); rng(11, 'twister');
        uEst = zeros(1, 30);
        for s = 1:30
            uEst(s) = dlhessianTrace(uNet, uX, uT, 'ModelLoss', @hcmlMse, 'Method', '{method}', ...
                                     'NumMatvecs', {matvecs}, 'Seed', s);
        end
        uAfter = rand(1, 3);
        uAgain = dlhessianTrace(uNet, uX, uT, 'ModelLoss', @hcmlMse, 'Method', '{method}', ...
                                'NumMatvecs', {matvecs}, 'Seed', 1);
    """)
    w = eng.workspace
    theta, shapes = learnables(w["uSpec"])
    X, T = torch.as_tensor(w["uXd"]), torch.as_tensor(w["uTd"])
    H, _ = torch_hessian(lambda th: tanh_mse(th, X, T, shapes), theta)
    est = w["uEst"].reshape(-1)
    assert np.std(est) > 1e-3 * abs(np.trace(H))         # random, not exact
    assert abs(est.mean() - np.trace(H)) < 4 * est.std(ddof=1) / np.sqrt(est.size)
    assert w["uAgain"] == est[0]
    np.testing.assert_array_equal(w["uAfter"], w["uBefore"])   # the caller's stream was restored


def test_modelloss_newton_step_is_the_damped_solve(eng, tanh_case):
    w, H, g, theta, shapes = tanh_case
    eng.eval("[nNet, nInfo] = dlnewtonUpdate(mNet, mX, mT, 'ModelLoss', @hcmlMse, 'Damping', 2, 'LearnRate', 0.8); "
             "nSpec = dlnetworkToSpec(nNet); nSpecOld = dlnetworkToSpec(mNet); "
             "nClass = class(extractdata(nNet.Learnables.Value{1}));")
    new = theta - 0.8 * np.linalg.solve(H + 2 * np.eye(26), g)
    got, _ = learnables(eng.workspace["nSpec"])
    np.testing.assert_allclose(got.numpy(), new, rtol=2e-6, atol=1e-7)   # written back in single precision
    assert eng.workspace["nClass"] == "single"
    X, T = torch.as_tensor(w["mXd"]), torch.as_tensor(w["mTd"])
    info = eng.workspace["nInfo"]
    assert info["LossBefore"] == pytest.approx(float(tanh_mse(torch.as_tensor(theta), X, T, shapes)), rel=1e-10)
    assert info["LossAfter"] == pytest.approx(float(tanh_mse(torch.as_tensor(new), X, T, shapes)), rel=1e-8)
    old, _ = learnables(eng.workspace["nSpecOld"])
    np.testing.assert_array_equal(old.numpy(), theta)   # the network passed in is unchanged


def test_modelloss_newton_indefinite_is_shifted_like_the_python_backend(eng):
    """An indefinite Hessian with tiny damping: both backends solve with H + shift I,
    shift = max(damping, 2 |lambda_min|) + sqrt(eps) |lambda|_max (a descent direction)."""
    eng.eval("""
        rand('state', 3); randn('state', 3);
        iNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) tanhLayer fullyConnectedLayer(1)]);
        iX = dlarray(randn(2, 6), 'CB'); iT = dlarray(3 * randn(1, 6), 'CB');
        iXd = extractdata(iX); iTd = extractdata(iT); iSpec = dlnetworkToSpec(iNet);
        [iNetM, iInfoM] = dlnewtonUpdate(iNet, iX, iT, 'ModelLoss', @hcmlMse, 'Damping', 1e-3);
        [iNetP, iInfoP] = dlnewtonUpdate(iNet, iX, iT, 'Damping', 1e-3);
        iSpecM = dlnetworkToSpec(iNetM); iSpecP = dlnetworkToSpec(iNetP);
    """)
    w = eng.workspace
    theta, shapes = learnables(w["iSpec"])
    X, T = torch.as_tensor(w["iXd"]), torch.as_tensor(w["iTd"])
    H, g = torch_hessian(lambda th: tanh_mse(th, X, T, shapes), theta)
    lam = np.linalg.eigvalsh(H)
    assert lam[0] < -0.5   # indefinite
    shift = max(1e-3, 2 * -lam[0]) + np.sqrt(np.finfo(float).eps) * np.abs(lam).max()
    new = theta.numpy() - np.linalg.solve(H + shift * np.eye(H.shape[0]), g)
    got_m, _ = learnables(w["iSpecM"])
    got_p, _ = learnables(w["iSpecP"])
    np.testing.assert_allclose(got_m.numpy(), new, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got_m.numpy(), got_p.numpy(), rtol=2e-6, atol=1e-6)
    assert w["iInfoM"]["LossAfter"] < w["iInfoM"]["LossBefore"]
    assert w["iInfoM"]["LossAfter"] == pytest.approx(w["iInfoP"]["LossAfter"], rel=1e-6)


def test_modelloss_two_unequal_minibatches_equal_one_concatenated(eng):
    """Minibatches of 3 and 5 observations: the Hessian of all 8 (each minibatch weighted by its
    observations), not the mean of the two; an L2 penalty added to each minibatch's loss enters once."""
    eng.eval("""
        rand('state', 11); randn('state', 11);
        bNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer fullyConnectedLayer(2)]);
        bX1 = randn(3, 3); bX2 = randn(3, 5); bT1 = randn(2, 3); bT2 = randn(2, 5);
        bXs = {dlarray(bX1, 'CB'), dlarray(bX2, 'CB')}; bTs = {dlarray(bT1, 'CB'), dlarray(bT2, 'CB')};
        bXc = dlarray([bX1, bX2], 'CB'); bTc = dlarray([bT1, bT2], 'CB');
        bHs = dlhessian(bNet, bXs, bTs, 'ModelLoss', @hcmlMse);
        bHc = dlhessian(bNet, bXc, bTc, 'ModelLoss', @hcmlMse);
        bH1 = dlhessian(bNet, bXs{1}, bTs{1}, 'ModelLoss', @hcmlMse);
        bH2 = dlhessian(bNet, bXs{2}, bTs{2}, 'ModelLoss', @hcmlMse);
        bPs = dlhessian(bNet, bXs, bTs, 'ModelLoss', @hcmlPenalty);
        bPc = dlhessian(bNet, bXc, bTc, 'ModelLoss', @hcmlPenalty);
        bHvs = dlhvp(bNet, {bX1, bX2}, {bT1, bT2}, (1:26)', 'ModelLoss', @hcmlMse, 'DataFormat', 'CB', ...
                     'TargetFormat', 'CB');
        bHpy = dlhessian(bNet, bXs, bTs);
    """)
    w = eng.workspace
    np.testing.assert_allclose(w["bHs"], w["bHc"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w["bHs"], (3 * w["bH1"] + 5 * w["bH2"]) / 8, rtol=1e-10, atol=1e-12)
    assert not np.allclose(w["bHs"], (w["bH1"] + w["bH2"]) / 2, rtol=1e-3)
    np.testing.assert_allclose(w["bPs"], w["bPc"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w["bHvs"].reshape(-1), w["bHc"] @ np.arange(1, 27), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w["bHs"], w["bHpy"], rtol=1e-9, atol=1e-12)


def test_matlab_backend_crossentropy_table_equals_python_and_torch(eng):
    eng.eval("""
        rand('state', 3); randn('state', 3);
        cNet = dlnetwork([featureInputLayer(3) fullyConnectedLayer(3) softmaxLayer]);
        cX = randn(3, 4); cT = full(sparse([1 3 2 3], 1:4, 1, 3, 4)); cSpec = dlnetworkToSpec(cNet);
        cHm = dlhessian(cNet, dlarray(cX, 'CB'), dlarray(cT, 'CB'), 'ModelLoss', @hcmlCe, 'Output', 'table');
        cHn = dlhessian(cNet, dlarray(cX, 'CB'), dlarray(cT, 'CB'), 'Backend', 'matlab', 'Loss', 'crossentropy');
        cHp = dlhessian(cNet, dlarray(cX, 'CB'), dlarray(cT, 'CB'), 'Loss', 'crossentropy', 'Output', 'table');
        cWm = extractdata(cHm.Value{1}); cWp = extractdata(cHp.Value{1});
        cBm = extractdata(cHm.Value{2}); cBp = extractdata(cHp.Value{2});
    """)
    w = eng.workspace
    theta, shapes = learnables(w["cSpec"])
    H, _ = torch_hessian(lambda th: softmax_ce(th, torch.as_tensor(w["cX"]), torch.as_tensor(w["cT"]), shapes), theta)
    assert w["cWm"].shape == (3, 3, 12) and w["cBm"].shape == (3, 1, 12)
    np.testing.assert_allclose(w["cWm"], w["cWp"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["cBm"], w["cBp"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["cWm"].reshape(9, 12, order="F"), H[:9], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(w["cHn"], H, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("call, ident, text", [
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlMse, 'Backend', 'python')", "hessiancore:invalidOption", "Backend"),
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlMse, 'Loss', 'mse')", "hessiancore:invalidOption", "not both"),
    ("dlhessian(eNet, eX, eT, 'ModelLoss', 'hcmlMse')", "hessiancore:invalidOption", "modelloss"),
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlNumeric)", "hessiancore:invalidInput", "dlarray scalar"),
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlBroken)", "hessiancore:modelLoss", "boom from the model loss"),
    # the training function's own dlgradient discards the trace (dlgradient page, RetainData)
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlUnguarded)", "hessiancore:modelLoss", "nargout > 1"),
    # first derivatives fine, second not: named (Answers 587696: no higher derivatives through prod)
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlProd)", "hessiancore:higherDerivatives", "prod"),
    ("dlhessian(eNet, eX, eT, 'ModelLoss', @hcmlMse, 'MemoryBudget', 1000)", "hessiancore:memoryBudget", "dlhvp"),
    ("dlhessianTrace(eNet, eX, eT, 'ModelLoss', @hcmlMse, 'Method', 'xtrace')", "hessiancore:invalidOption",
     "hutch++"),
    ("dlhessian(eNet, {eX, eX}, eT, 'ModelLoss', @hcmlMse)", "hessiancore:invalidInput", "cell arrays"),
    ("dlhessian(eNet, {extractdata(eX), extractdata(eX)}, {eT, eT}, 'ModelLoss', @hcmlMse)",
     "hessiancore:invalidInput", "observations"),
    ("dlhessian(eNet, extractdata(eX), eT, 'Backend', 'matlab')", "hessiancore:invalidInput", "format"),
    ("dlhessian(eNet, eX, eT, 'Backend', 'matlab', 'Loss', 'nosuchloss')", "hessiancore:invalidOption",
     "nosuchloss"),
    ("dlhessianEigs(eNet, eX, eT, 30, 'ModelLoss', @hcmlMse)", "hessiancore:invalidInput", "exceeds"),
])
def test_modelloss_errors_are_named(eng, call, ident, text):
    eng.eval("eNet = dlnetwork([featureInputLayer(2) fullyConnectedLayer(3) tanhLayer fullyConnectedLayer(2)]); "
             "eX = dlarray(randn(2, 4), 'CB'); eT = dlarray(randn(2, 4), 'CB');")
    got, msg = error_of(eng, call)
    assert got == ident, msg
    assert text.lower() in msg.lower(), msg


def test_modelloss_single_precision_on_request(eng, tanh_case):
    w, H, *_ = tanh_case
    eng.eval("sH = dlhessian(mNet, mX, mT, 'ModelLoss', @hcmlMse, 'DataType', 'single'); sCls = class(sH);")
    assert eng.workspace["sCls"] == "double"
    err = np.abs(eng.workspace["sH"] - H).max() / np.abs(H).max()
    assert 1e-10 < err < 1e-4   # computed in single precision, returned as double


# -- examples/trainWithHessian.m, run by octave-cli ------------------------------------------------------
def test_example_train_with_hessian_runs_with_modelloss(tmp_path):
    """The custom training loop example, smaller, with its own modelLoss: the curvature at the last
    iteration matches torch's Hessian of the final network on the last minibatch."""
    exe = shutil.which("octave-cli")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("octave-cli is not installed (CI is set: the MATLAB toolbox tests must run)")
        pytest.skip("octave-cli is not installed")
    text = (ROOT / "examples" / "trainWithHessian.m").read_text()
    for old, new in {"numObservations = 2000;": "numObservations = 200;", "numEpochs = 3;": "numEpochs = 1;",
                     "miniBatchSize = 128;": "miniBatchSize = 48;", "checkEvery = 10;": "checkEvery = 5;",
                     "fullyConnectedLayer(32)": "fullyConnectedLayer(6)"}.items():
        assert old in text, old
        text = text.replace(old, new)
    # Octave runs a script's functions only when they are defined before use: modelLoss gets its own file.
    split = text.index("function [loss, gradients] = modelLoss")
    (tmp_path / "modelLoss.m").write_text(text[split:])
    (tmp_path / "example.m").write_text(text[:split])
    (tmp_path / "driver.m").write_text(
        f"addpath('{ROOT / 'matlab'}'); addpath('{ROOT / 'tests' / 'octave'}');\n"
        "run('example.m');\n"
        "theta = cellfun(@(x) double(extractdata(x(:))), net.Learnables.Value, 'UniformOutput', false);\n"
        "theta = vertcat(theta{:});\n"
        "Xd = double(extractdata(X)); Td = double(extractdata(T));\n"
        "save('-v7', 'out.mat', 'theta', 'Xd', 'Td', 'top', 'tr', 'iteration');\n")
    proc = subprocess.run([exe, "--no-gui", "--quiet", "--no-init-file", "driver.m"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)
    errors = [ln for ln in proc.stderr.splitlines() if "error" in ln and "ignoring const execution_exception" not in ln]
    assert proc.returncode == 0 and not errors, proc.stdout + proc.stderr
    assert len(re.findall(r"^iteration", proc.stdout, flags=re.M)) == 1   # iterations 5 of 5 (200 / 48)
    out = scipy.io.loadmat(tmp_path / "out.mat", simplify_cells=True)
    assert out["iteration"] == 5
    theta, shapes = torch.as_tensor(out["theta"], dtype=torch.float64), [(6, 8), (6, 1), (4, 6), (4, 1)]
    X, T = torch.as_tensor(out["Xd"]), torch.as_tensor(out["Td"])

    def ce(th):  # featureInput(8) -> fc(6) -> relu -> fc(4) -> softmax, crossentropy on probabilities
        W1, b1, W2, b2 = unpack(th, shapes)
        Y = torch.softmax(W2 @ torch.relu(W1 @ X + b1) + b2, dim=0)
        return -(T * torch.log(Y)).sum() / X.shape[1]

    H, _ = torch_hessian(ce, theta)
    lam = np.sort(np.linalg.eigvalsh(H))[::-1]
    np.testing.assert_allclose(np.ravel(out["top"]), lam[:3], rtol=1e-7, atol=1e-9)
    assert out["tr"] == pytest.approx(np.trace(H), rel=0.5)   # a 60-product Hutch++ estimate
