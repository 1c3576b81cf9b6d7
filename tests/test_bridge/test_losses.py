"""MATLAB loss definitions against their documented formulas, and global normalization over unequal
minibatches for each (the core's normalization contract declared by the bridge's losses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matlab_refs import fc, layer, make_spec, ref_hessian, theta_of, unpack

from bridge import api
from hessian_core.errors import InvalidInputError

rng = np.random.default_rng(3)
B, K = 7, 3
LEARN = [("fc", "Weights", rng.standard_normal((K, 4))), ("fc", "Bias", rng.standard_normal((K, 1)))]
X = rng.standard_normal((4, B))
Xt = torch.tensor(X)


def net(head=None):
    layers = [layer("in", "FeatureInputLayer", InputSize=4), layer("fc", "FullyConnectedLayer", OutputSize=K)]
    if head:
        layers.append(layer("head", head))
    return make_spec(layers, LEARN)


def out(theta, head):
    Z = fc(*unpack(theta, LEARN), Xt)
    if head == "SoftmaxLayer":
        return torch.exp(Z) / torch.exp(Z).sum(0, keepdim=True)
    if head == "SigmoidLayer":
        return 1 / (1 + torch.exp(-Z))
    return Z


onehot = np.eye(K)[:, rng.integers(0, K, B)]
labels = rng.integers(0, 2, (K, B)).astype(float)
Treg = rng.standard_normal((K, B)) * 2

# name, options, head, targets, formula(Y, T) -- written from the MathWorks pages
CASES = [
    ("mse", None, None, Treg, lambda Y, T: ((Y - T) ** 2).sum() / (2 * B)),
    ("l2loss", None, None, Treg, lambda Y, T: ((Y - T) ** 2).sum() / B),
    ("l2loss", {"NormalizationFactor": "all-elements"}, None, Treg, lambda Y, T: ((Y - T) ** 2).sum() / (K * B)),
    ("l2loss", {"NormalizationFactor": "none"}, None, Treg, lambda Y, T: ((Y - T) ** 2).sum()),
    ("l1loss", None, None, Treg, lambda Y, T: (Y - T).abs().sum() / B),
    ("huber", None, None, Treg,
     lambda Y, T: torch.where((Y - T).abs() <= 1, 0.5 * (Y - T) ** 2, (Y - T).abs() - 0.5).sum() / B),
    ("huber", {"TransitionPoint": 0.5, "NormalizationFactor": "all-elements"}, None, Treg,
     lambda Y, T: torch.where((Y - T).abs() <= 0.5, 0.5 * (Y - T) ** 2, 0.5 * (Y - T).abs() - 0.125).sum() / (K * B)),
    ("crossentropy", None, "SoftmaxLayer", onehot, lambda Y, T: -(T * torch.log(Y)).sum() / B),
    ("crossentropy", {"NormalizationFactor": "none"}, "SoftmaxLayer", onehot, lambda Y, T: -(T * torch.log(Y)).sum()),
    ("crossentropy", {"ClassificationMode": "multilabel"}, "SigmoidLayer", labels,
     lambda Y, T: -(T * torch.log(Y) + (1 - T) * torch.log(1 - Y)).sum() / B),
    ("binary-crossentropy", None, "SigmoidLayer", labels,
     lambda Y, T: -(T * torch.log(Y) + (1 - T) * torch.log(1 - Y)).sum() / B),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_loss_matches_the_matlab_formula_and_normalizes_globally(case):
    name, options, head, T, formula = case
    spec, Tt = net(head), torch.tensor(T)

    def f(theta):
        return formula(out(theta, head), Tt)

    H = api.hessian(spec, X, T, loss=name, loss_options=options)
    H_ref = ref_hessian(f, LEARN)
    np.testing.assert_allclose(H, H_ref, rtol=1e-11, atol=1e-12 * np.abs(H_ref).max())
    assert api.loss_value(spec, X, T, loss=name, loss_options=options) == pytest.approx(
        float(f(theta_of(LEARN))), rel=1e-13)
    # unequal minibatches (5 and 2) are normalized globally: the same as one batch of 7
    H_parts = api.hessian(spec, [X[:, :5], X[:, 5:]], [T[:, :5], T[:, 5:]], loss=name, loss_options=options)
    np.testing.assert_allclose(H_parts, H, rtol=1e-11, atol=1e-12 * np.abs(H).max())


def test_index_crossentropy_equals_crossentropy_on_one_hot_targets():
    idx = (onehot.argmax(0) + 1).reshape(1, B).astype(float)  # 1-based class indices, 1 x B
    spec = net("SoftmaxLayer")
    np.testing.assert_allclose(api.hessian(spec, X, idx, loss="index-crossentropy"),
                               api.hessian(spec, X, onehot, loss="crossentropy"), rtol=1e-12, atol=1e-14)
    bad = idx.copy()
    bad[0, 0] = K + 1
    with pytest.raises(InvalidInputError, match="1-based"):
        api.hessian(spec, X, bad, loss="index-crossentropy")


def test_loss_option_errors():
    with pytest.raises(InvalidInputError, match="Reduction"):
        api.hessian(net(), X, Treg, loss="l2loss", loss_options={"Reduction": "none"})
    with pytest.raises(InvalidInputError, match="NormalizationFactor"):
        api.hessian(net(), X, Treg, loss="l2loss", loss_options={"NormalizationFactor": "mask-included"})
    with pytest.raises(InvalidInputError, match="size"):
        api.hessian(net(), X, Treg[:2], loss="mse")
