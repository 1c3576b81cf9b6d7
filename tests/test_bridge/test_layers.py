"""Every layer translator against an independent float64 computation written from MATLAB's formulas
(explicit MATLAB subscripts for convolution, padding, pooling and flattening; written-out gate equations
for LSTM/GRU), compared as exact Hessians of the loss with respect to the Learnables."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matlab_refs import conv2d_loops, fc, flatten_cm, half_mse, layer, make_spec, ref_hessian, unpack

from bridge import api

rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape)


def check(spec, learn, X, T, f, x_format, rtol=1e-10, **opts):
    """The bridge's Hessian and loss equal the reference's."""
    H = api.hessian(spec, X, T, x_format=x_format, **opts)
    H_ref = ref_hessian(f, learn)
    scale = max(np.abs(H_ref).max(), 1e-12)
    np.testing.assert_allclose(H, H_ref, rtol=rtol, atol=rtol * scale)
    theta = torch.tensor(np.concatenate([np.asarray(v).flatten(order="F") for _, _, v in learn]))
    assert api.loss_value(spec, X, T, x_format=x_format, **opts) == pytest.approx(float(f(theta)), rel=1e-12)
    assert np.abs(H_ref).max() > 1e-6  # a non-trivial comparison


# -- convolution, padding, flattening ------------------------------------------------------------------
def test_conv2d_stride_dilation_asymmetric_padding_then_fc_column_major():
    Hh, Ww, C, B = 5, 6, 2, 3
    mean = randn(Hh, Ww, C)
    learn = [("conv", "Weights", randn(2, 3, C, 2)), ("conv", "Bias", randn(1, 1, 2)),
             ("fc", "Weights", randn(2, 30) * 0.3), ("fc", "Bias", randn(2, 1))]
    layers = [layer("img", "ImageInputLayer", InputSize=[Hh, Ww, C], Normalization="zerocenter", Mean=mean),
              layer("conv", "Convolution2DLayer", FilterSize=[2, 3], NumFilters=2, Stride=[2, 1],
                    DilationFactor=[1, 2], PaddingSize=[1, 0, 2, 1], PaddingMode="manual", PaddingValue=0.5),
              layer("act", "TanhLayer"), layer("fc", "FullyConnectedLayer", OutputSize=2)]
    X, T = randn(Hh, Ww, C, B), randn(2, B)
    Xt, Tt, Mt = torch.tensor(X), torch.tensor(T), torch.tensor(mean)

    def f(theta):
        Wc, bc, Wf, bf = unpack(theta, learn)
        Y = conv2d_loops(Xt - Mt[..., None], Wc, bc, stride=(2, 1), dilation=(1, 2), pad=(1, 0, 2, 1),
                         pad_value=0.5)
        return half_mse(fc(Wf, bf, flatten_cm(torch.tanh(Y))), Tt, B)

    check(make_spec(layers, learn), learn, X, T, f, "SSCB")


def test_conv2d_same_padding_puts_the_extra_row_bottom_right():
    Hh, Ww, B = 5, 5, 2
    learn = [("conv", "Weights", randn(2, 2, 1, 2)), ("conv", "Bias", randn(1, 1, 2)),
             ("fc", "Weights", randn(2, 18) * 0.3), ("fc", "Bias", randn(2, 1))]
    layers = [layer("img", "ImageInputLayer", InputSize=[Hh, Ww, 1], Normalization="none"),
              layer("conv", "Convolution2DLayer", FilterSize=[2, 2], NumFilters=2, Stride=[2, 2],
                    PaddingMode="same"),
              layer("sig", "SigmoidLayer"), layer("flat", "FlattenLayer"),
              layer("fc", "FullyConnectedLayer", OutputSize=2)]
    X, T = randn(Hh, Ww, B), randn(2, B)  # a single channel: MATLAB drops nothing here but C = 1
    Xt, Tt = torch.tensor(X)[:, :, None, :], torch.tensor(T)

    def f(theta):
        Wc, bc, Wf, bf = unpack(theta, learn)
        Y = conv2d_loops(Xt, Wc, bc, stride=(2, 2), pad=(0, 1, 0, 1))  # ceil(5/2) = 3: 1 extra, bottom/right
        return half_mse(fc(Wf, bf, flatten_cm(torch.sigmoid(Y))), Tt, B)

    check(make_spec(layers, learn), learn, X.reshape(Hh, Ww, 1, B), T, f, "SSCB")


def pool_loops(X, size, stride, pad, kind):
    """MATLAB 2-D pooling by subscripts on X (H x W x C x B); kind 'max', 'avg0' (pads count) or 'avgmean'."""
    H, W, C, B = X.shape
    t, b, lf, r = pad
    fill = -math.inf if kind == "max" else 0.0
    Xp = torch.full((H + t + b, W + lf + r, C, B), fill, dtype=X.dtype)
    Xp[t:t + H, lf:lf + W] = X
    real = torch.zeros(H + t + b, W + lf + r)
    real[t:t + H, lf:lf + W] = 1
    Ho, Wo = (H + t + b - size[0]) // stride[0] + 1, (W + lf + r - size[1]) // stride[1] + 1
    out = torch.zeros(Ho, Wo, C, B, dtype=X.dtype)
    rows = []
    for i in range(Ho):
        cols = []
        for j in range(Wo):
            win = Xp[i * stride[0]:i * stride[0] + size[0], j * stride[1]:j * stride[1] + size[1]]
            if kind == "max":
                cols.append(win.amax(dim=(0, 1)))
            elif kind == "avg0":
                cols.append(win.sum(dim=(0, 1)) / (size[0] * size[1]))
            else:
                n = real[i * stride[0]:i * stride[0] + size[0], j * stride[1]:j * stride[1] + size[1]].sum()
                cols.append(win.sum(dim=(0, 1)) / n)
        rows.append(torch.stack(cols))
    out = torch.stack(rows)
    return out


def test_batchnorm_pooling_layernorm_global_pooling():
    Hh, Ww, C, B = 5, 4, 2, 3
    tm, tv = randn(1, 1, C), rng.uniform(0.5, 2.0, (1, 1, C))
    learn = [("bn", "Offset", randn(1, 1, C)), ("bn", "Scale", randn(1, 1, C)),
             ("ln", "Offset", randn(1, 1, C)), ("ln", "Scale", randn(1, 1, C)),
             ("fc", "Weights", randn(2, 2 * C)), ("fc", "Bias", randn(2, 1))]
    layers = [layer("img", "ImageInputLayer", InputSize=[Hh, Ww, C], Normalization="none"),
              layer("bn", "BatchNormalizationLayer", NumChannels=C, Epsilon=1e-3),
              layer("mp", "MaxPooling2DLayer", PoolSize=[2, 2], Stride=[1, 1], PaddingSize=[1, 0, 0, 1]),
              layer("ap", "AveragePooling2DLayer", PoolSize=[2, 3], Stride=[2, 1], PaddingSize=[0, 1, 1, 1],
                    PaddingValue="mean"),
              layer("ap0", "AveragePooling2DLayer", PoolSize=[2, 2], Stride=[1, 1], PaddingSize=[1, 0, 1, 0],
                    PaddingValue=0),
              layer("ln", "LayerNormalizationLayer", NumChannels=C, Epsilon=1e-5),
              layer("gap", "GlobalAveragePooling2DLayer"), layer("gmp", "GlobalMaxPooling2DLayer"),
              layer("cat", "DepthConcatenationLayer", NumInputs=2), layer("fc", "FullyConnectedLayer", OutputSize=2)]
    conns = [("img", "bn"), ("bn", "mp"), ("mp", "ap"), ("ap", "ap0"), ("ap0", "ln"), ("ln", "gap"), ("ln", "gmp"),
             ("gap", "cat/in1"), ("gmp", "cat/in2"), ("cat", "fc")]
    state = [("bn", "TrainedMean", tm), ("bn", "TrainedVariance", tv)]
    X, T = randn(Hh, Ww, C, B), randn(2, B)
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        bo, bs, lo, ls, Wf, bf = unpack(theta, learn)
        Y = bs.reshape(C, 1) * (Xt - torch.tensor(tm).reshape(C, 1)) / torch.sqrt(torch.tensor(tv).reshape(C, 1)
                                                                                   + 1e-3) + bo.reshape(C, 1)
        Y = pool_loops(Y, (2, 2), (1, 1), (1, 0, 0, 1), "max")
        Y = pool_loops(Y, (2, 3), (2, 1), (0, 1, 1, 1), "avgmean")
        Y = pool_loops(Y, (2, 2), (1, 1), (1, 0, 1, 0), "avg0")
        mu = Y.mean(dim=(0, 1, 2), keepdim=True)  # per observation over S and C ('auto' for images)
        var = ((Y - mu) ** 2).mean(dim=(0, 1, 2), keepdim=True)
        Y = ls.reshape(C, 1) * (Y - mu) / torch.sqrt(var + 1e-5) + lo.reshape(C, 1)
        feats = torch.cat([Y.mean(dim=(0, 1)), Y.amax(dim=(0, 1))], dim=0)  # depth concat: channels
        return half_mse(fc(Wf, bf, feats), Tt, B)

    check(make_spec(layers, learn, conns, state=state), learn, X, T, f, "SSCB")


# -- input normalization -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["zerocenter", "zscore", "rescale-symmetric", "rescale-zero-one", "none"])
def test_image_input_normalization(norm):
    Hh, Ww, C, B = 3, 2, 2, 4
    props = {"Mean": randn(1, 1, C), "StandardDeviation": rng.uniform(0.5, 2, (1, 1, C)),
             "Min": -1.5, "Max": randn(Hh, Ww, C) + 3.0}
    learn = [("fc", "Weights", randn(2, Hh * Ww * C)), ("fc", "Bias", randn(2, 1))]
    layers = [layer("img", "ImageInputLayer", InputSize=[Hh, Ww, C], Normalization=norm, **props),
              layer("sw", "SwishLayer"), layer("fc", "FullyConnectedLayer", OutputSize=2)]
    X, T = randn(Hh, Ww, C, B), randn(2, B)
    Xt, Tt = torch.tensor(X), torch.tensor(T)
    mean, std = torch.tensor(props["Mean"])[..., None], torch.tensor(props["StandardDeviation"])[..., None]
    lo, hi = props["Min"], torch.tensor(props["Max"])[..., None]
    Z = {"zerocenter": Xt - mean, "zscore": (Xt - mean) / std, "rescale-symmetric": 2 * (Xt - lo) / (hi - lo) - 1,
         "rescale-zero-one": (Xt - lo) / (hi - lo), "none": Xt}[norm]

    def f(theta):
        Wf, bf = unpack(theta, learn)
        return half_mse(fc(Wf, bf, flatten_cm(Z * torch.sigmoid(Z))), Tt, B)

    check(make_spec(layers, learn), learn, X, T, f, "SSCB")


# -- activations -----------------------------------------------------------------------------------------
ACTS = {
    "ReLULayer": ({}, torch.relu),
    "LeakyReLULayer": ({"Scale": 0.2}, lambda x: torch.where(x >= 0, x, 0.2 * x)),
    "ELULayer": ({"Alpha": 0.7}, lambda x: torch.where(x >= 0, x, 0.7 * (torch.exp(torch.clamp(x, max=0)) - 1))),
    "GELULayer": ({"Approximation": "none"}, lambda x: x / 2 * (1 + torch.erf(x / math.sqrt(2)))),
    "GELULayer-tanh": ({"Approximation": "tanh"},
                       lambda x: x / 2 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "SigmoidLayer": ({}, lambda x: 1 / (1 + torch.exp(-x))),
    "TanhLayer": ({}, lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x))),
    "SwishLayer": ({}, lambda x: x / (1 + torch.exp(-x))),
}


@pytest.mark.parametrize("name", sorted(ACTS))
def test_activation_then_softmax_crossentropy(name):
    props, act = ACTS[name]
    B = 5
    learn = [("fc1", "Weights", randn(4, 3)), ("fc1", "Bias", randn(4, 1)),
             ("fc2", "Weights", randn(3, 4)), ("fc2", "Bias", randn(3, 1))]
    layers = [layer("in", "FeatureInputLayer", InputSize=3), layer("fc1", "FullyConnectedLayer", OutputSize=4),
              layer("act", name.split("-")[0], **props), layer("drop", "DropoutLayer", Probability=0.5),
              layer("fc2", "FullyConnectedLayer", OutputSize=3), layer("sm", "SoftmaxLayer")]
    X = randn(3, B)
    T = np.eye(3)[:, rng.integers(0, 3, B)]  # one-hot C x B
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        W1, b1, W2, b2 = unpack(theta, learn)
        Z = fc(W2, b2, act(fc(W1, b1, Xt)))
        P = torch.exp(Z) / torch.exp(Z).sum(dim=0, keepdim=True)  # softmax over C
        return -(Tt * torch.log(P)).sum() / B

    check(make_spec(layers, learn), learn, X, T, f, "CB", loss="crossentropy")


# -- DAG: addition, concatenation, feature-input normalization, batch/layer norm on 'CB' -------------------
def test_dag_through_connections():
    B = 4
    mean, std = randn(3, 1), rng.uniform(0.5, 2, (3, 1))
    tm, tv = randn(4, 1), rng.uniform(0.5, 2, (4, 1))
    learn = [("fa", "Weights", randn(4, 3)), ("fa", "Bias", randn(4, 1)),
             ("fb", "Weights", randn(4, 3)), ("fb", "Bias", randn(4, 1)),
             ("bn", "Offset", randn(4, 1)), ("bn", "Scale", randn(4, 1)),
             ("ln", "Offset", randn(4, 1)), ("ln", "Scale", randn(4, 1)),
             ("fc", "Weights", randn(4, 3)), ("fc", "Bias", randn(4, 1)),
             ("out", "Weights", randn(2, 8)), ("out", "Bias", randn(2, 1))]
    # Layers deliberately not in topological order; connections shuffled.
    layers = [layer("out", "FullyConnectedLayer", OutputSize=2),
              layer("cat", "ConcatenationLayer", Dim=1, NumInputs=2),
              layer("in", "FeatureInputLayer", InputSize=3, Normalization="zscore", Mean=mean,
                    StandardDeviation=std),
              layer("fa", "FullyConnectedLayer", OutputSize=4), layer("fb", "FullyConnectedLayer", OutputSize=4),
              layer("add", "AdditionLayer", NumInputs=2), layer("bn", "BatchNormalizationLayer"),
              layer("ln", "LayerNormalizationLayer"), layer("fc", "FullyConnectedLayer", OutputSize=4),
              layer("elu", "ELULayer")]
    conns = [("cat", "out"), ("in", "fb"), ("add", "bn"), ("in", "fa"), ("fa", "add/in1"), ("fb", "add/in2"),
             ("bn", "elu"), ("elu", "cat/in1"), ("in", "fc"), ("fc", "ln"), ("ln", "cat/in2")]
    state = [("bn", "TrainedMean", tm), ("bn", "TrainedVariance", tv)]
    spec = make_spec(layers, learn, conns, state=state, inputs=["in"], outputs=["out"])
    X, T = randn(3, B), randn(2, B)
    Xt, Tt = torch.tensor(X), torch.tensor(T)
    Z = (Xt - torch.tensor(mean)) / torch.tensor(std)

    def f(theta):
        Wa, ba, Wb, bb, bo, bs, lo, ls, Wc, bc, Wo, bout = unpack(theta, learn)
        A = fc(Wa, ba, Z) + fc(Wb, bb, Z)
        A = bs * (A - torch.tensor(tm)) / torch.sqrt(torch.tensor(tv) + 1e-5) + bo
        A = torch.where(A >= 0, A, torch.exp(torch.clamp(A, max=0)) - 1)
        L = fc(Wc, bc, Z)
        mu = L.mean(dim=0, keepdim=True)
        L = ls * (L - mu) / torch.sqrt(((L - mu) ** 2).mean(dim=0, keepdim=True) + 1e-5) + lo
        return half_mse(fc(Wo, bout, torch.cat([A, L], dim=0)), Tt, B)

    check(spec, learn, X, T, f, "CB")


# -- recurrent -----------------------------------------------------------------------------------------
def lstm_ref(X, W, R, b, h0, c0, H):
    """MATLAB lstmLayer: X is C x B x T; gates [input; forget; cell candidate; output]."""
    h, c, hs = h0.reshape(H, 1), c0.reshape(H, 1), []
    for t in range(X.shape[2]):
        z = W @ X[:, :, t] + R @ h + b.reshape(-1, 1)
        i, fg = torch.sigmoid(z[:H]), torch.sigmoid(z[H:2 * H])
        g, o = torch.tanh(z[2 * H:3 * H]), torch.sigmoid(z[3 * H:])
        c = fg * c + i * g
        h = o * torch.tanh(c)
        hs.append(h)
    return hs


@pytest.mark.parametrize("mode", ["last", "sequence"])
def test_lstm_with_nonzero_initial_state(mode):
    C, H, B, Tn = 2, 3, 3, 4
    learn = [("lstm", "InputWeights", randn(4 * H, C) * 0.5), ("lstm", "RecurrentWeights", randn(4 * H, H) * 0.5),
             ("lstm", "Bias", randn(4 * H, 1)), ("fc", "Weights", randn(2, H)), ("fc", "Bias", randn(2, 1))]
    h0, c0 = randn(H, 1), randn(H, 1)
    layers = [layer("seq", "SequenceInputLayer", InputSize=C),
              layer("lstm", "LSTMLayer", NumHiddenUnits=H, OutputMode=mode),
              layer("fc", "FullyConnectedLayer", OutputSize=2)]
    state = [("lstm", "HiddenState", h0), ("lstm", "CellState", c0)]
    X = randn(C, B, Tn)
    T = randn(2, B) if mode == "last" else randn(2, B, Tn)
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        W, R, b, Wf, bf = unpack(theta, learn)
        hs = lstm_ref(Xt, W, R, b, torch.tensor(h0), torch.tensor(c0), H)
        if mode == "last":
            return half_mse(fc(Wf, bf, hs[-1]), Tt, B)
        Y = torch.stack([fc(Wf, bf, h) for h in hs], dim=2)  # C x B x T
        return half_mse(Y, Tt, B)

    check(make_spec(layers, learn, state=state), learn, X, T, f, "CBT", t_format="CB" if mode == "last" else "CBT")


@pytest.mark.parametrize("reset", ["after-multiplication", "before-multiplication",
                                   "recurrent-bias-after-multiplication"])
def test_gru_reset_gate_modes(reset):
    C, H, B, Tn = 2, 2, 3, 3
    nb = 6 * H if reset.startswith("recurrent") else 3 * H
    learn = [("gru", "InputWeights", randn(3 * H, C) * 0.5), ("gru", "RecurrentWeights", randn(3 * H, H) * 0.5),
             ("gru", "Bias", randn(nb, 1)), ("fc", "Weights", randn(1, H)), ("fc", "Bias", randn(1, 1))]
    h0 = randn(H, 1)
    layers = [layer("seq", "SequenceInputLayer", InputSize=C),
              layer("gru", "GRULayer", NumHiddenUnits=H, OutputMode="sequence", ResetGateMode=reset),
              layer("fc", "FullyConnectedLayer", OutputSize=1)]
    X, T = randn(C, B, Tn), randn(1, B, Tn)
    Xt, Tt = torch.tensor(X), torch.tensor(T)

    def f(theta):
        W, R, b, Wf, bf = unpack(theta, learn)
        bW, bR = (b[:3 * H], b[3 * H:]) if nb == 6 * H else (b, torch.zeros(3 * H, 1, dtype=b.dtype))
        h, ys = torch.tensor(h0), []
        for t in range(Tn):
            x = Xt[:, :, t]
            r = torch.sigmoid(W[:H] @ x + bW[:H] + R[:H] @ h + bR[:H])
            z = torch.sigmoid(W[H:2 * H] @ x + bW[H:2 * H] + R[H:2 * H] @ h + bR[H:2 * H])
            if reset == "before-multiplication":
                n = torch.tanh(W[2 * H:] @ x + bW[2 * H:] + R[2 * H:] @ (r * h))
            else:
                n = torch.tanh(W[2 * H:] @ x + bW[2 * H:] + r * (R[2 * H:] @ h + bR[2 * H:]))
            h = (1 - z) * n + z * h
            ys.append(fc(Wf, bf, h))
        return half_mse(torch.stack(ys, dim=2), Tt, B)

    check(make_spec(layers, learn, state=[("gru", "HiddenState", h0)]), learn, X, T, f, "CBT")


def test_data_format_permutation_and_single_learnables():
    """X given as 'BC' (batch first) is permuted by the bridge; float32 learnables compute in float64."""
    learn = [("fc", "Weights", randn(2, 3).astype(np.float32).astype(np.float64)), ("fc", "Bias", randn(2, 1))]
    spec = make_spec([layer("in", "FeatureInputLayer", InputSize=3), layer("fc", "FullyConnectedLayer",
                                                                           OutputSize=2)], learn)
    spec["Learnables"]["Value"][0] = spec["Learnables"]["Value"][0].astype(np.float32)
    X, T = randn(3, 5), randn(2, 5)
    H1 = api.hessian(spec, X, T)
    H2 = api.hessian(spec, X.T.copy(), T.T.copy(), x_format="BC", t_format="BC")
    np.testing.assert_allclose(H1, H2, rtol=1e-14)
    Xt, Tt = torch.tensor(X), torch.tensor(T)
    check(spec, learn, X, T, lambda th: half_mse(fc(*unpack(th, learn), Xt), Tt, 5), "CB")
