"""The bridge's rules for what MATLAB sends, without Octave: the default loss, crossentropy only on
probabilities, counts that do not fit, budgets checked before work, MATLAB error identifiers from one
table with messages in MATLAB's terms, and translators that read only the properties they declare.
References: hand-written float64 torch losses and torch.autograd.functional.hessian.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bridge import api
from bridge.identifiers import PYTHON_ERRORS, RequestError, error_identifier, matlab_error
from bridge.layers import REGISTRY
from bridge.layers.base import Translator
from bridge.losses import LOSSES, default_loss
from bridge.spec import LayerSpec
from bridge.transport import codec, fallback
from hessian_core.errors import HessianCoreError, InvalidInputError, MemoryBudgetError, NonFiniteError


def _spec(with_softmax: bool, W=None):
    W = np.array([[0.3, -0.2, 0.1], [0.05, 0.4, -0.3]]) if W is None else W
    layers = [{"Name": "in", "Class": "nnet.cnn.layer.FeatureInputLayer", "InputSize": 3.0},
              {"Name": "fc", "Class": "nnet.cnn.layer.FullyConnectedLayer", "OutputSize": 2.0}]
    if with_softmax:
        layers.append({"Name": "sm", "Class": "nnet.cnn.layer.SoftmaxLayer"})
    return {"Format": "hessiancore.network/1", "Layers": layers,
            "Learnables": {"Layer": ["fc", "fc"], "Parameter": ["Weights", "Bias"],
                           "Value": [W, np.array([[0.1], [-0.1]])]}}


X = np.random.default_rng(1).standard_normal((3, 6))
T = np.eye(2)[:, [0, 1, 1, 0, 1, 0]]


def _theta():
    W = torch.tensor([[0.3, -0.2, 0.1], [0.05, 0.4, -0.3]], dtype=torch.float64)
    return torch.cat([W.T.reshape(-1), torch.tensor([0.1, -0.1], dtype=torch.float64)])


def _logits(th):
    return th[:6].reshape(3, 2).T @ torch.as_tensor(X) + th[6:].reshape(2, 1)


def test_default_loss_rule():
    assert default_loss("nnet.cnn.layer.SoftmaxLayer") == "crossentropy"
    assert default_loss("nnet.cnn.layer.FullyConnectedLayer") == "mse"
    assert default_loss("nnet.cnn.layer.SigmoidLayer") == "mse"
    Tt = torch.as_tensor(T)
    ce = torch.autograd.functional.hessian(
        lambda th: -(Tt * torch.log_softmax(_logits(th), 0)).sum() / 6, _theta()).numpy()
    np.testing.assert_allclose(api.hessian(_spec(True), X, T), ce, rtol=1e-10, atol=1e-13)
    half = torch.autograd.functional.hessian(lambda th: ((_logits(th) - Tt) ** 2).sum() / 12, _theta()).numpy()
    np.testing.assert_allclose(api.hessian(_spec(False), X, T), half, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("loss, layer", [("crossentropy", "softmaxLayer"), ("binary-crossentropy", "sigmoidLayer")])
def test_probability_losses_refuse_other_outputs_before_work(loss, layer):
    with pytest.raises(InvalidInputError, match=rf"takes probabilities.*layer 'fc', FullyConnectedLayer.*{layer}"):
        api.hessian(_spec(False, W=np.full((2, 3), 3.0)), X, T, loss=loss)
    assert loss in LOSSES


def test_counts_that_do_not_fit_and_budgets_checked_first():
    assert codec._option(1e300) == 1e300 and isinstance(codec._option(1e300), float)
    assert codec._option(3.0) == 3 and isinstance(codec._option(3.0), int)
    with pytest.raises(InvalidInputError, match="2\\^53"):
        api.trace(_spec(False), X, T, num_matvecs=1e300)
    with pytest.raises(MemoryBudgetError, match="num_matvecs"):
        api.trace(_spec(False), X, T, num_matvecs=1e9)  # refused before any product
    with pytest.raises(MemoryBudgetError):
        api.eigs(_spec(False), X, T, k=10_000, memory_budget=1000)
    with pytest.raises(NonFiniteError, match="lr"):
        api.newton_update(_spec(False), X, T, lr=1e300)


def test_identifiers_come_from_the_table_not_class_names():
    class RenamedInvalid(InvalidInputError):
        pass

    class SomethingError(HessianCoreError):
        pass

    assert error_identifier(RenamedInvalid("x")) == "hessiancore:invalidInput"
    assert error_identifier(SomethingError("x")) == "hessiancore:python"  # no identifier made up from a name
    assert error_identifier(RequestError("x")) == "hessiancore:request"
    assert error_identifier(NonFiniteError("x")) == "hessiancore:nonFinite"
    assert error_identifier(MemoryError()) == "hessiancore:memoryBudget"
    assert error_identifier(ZeroDivisionError()) == "hessiancore:python"
    order = [cls for cls, _ in PYTHON_ERRORS]
    for i, a in enumerate(order):  # a subclass never comes after its base: the first match is the right one
        assert not any(issubclass(a, b) for b in order[:i]), a


def test_messages_speak_matlab():
    ident, msg = matlab_error(MemoryBudgetError(
        "the dense 26 x 26 Hessian matrix (torch.float64) needs 5.3 KiB, more than the memory budget of 1000 B. "
        "Use HessianOperator(...).matvec, hessian_blocks or eigsh, or raise memory_budget= if the machine has it"),
        "hessian")
    assert ident == "hessiancore:memoryBudget" and msg.startswith("dlhessian: ")
    for name in ("dlhvp", "dlhessianEigs", "dlhessianTrace", "dlhessianDiag", "'MemoryBudget'", "(double)"):
        assert name in msg
    for word in ("HessianOperator", "memory_budget", "eigsh", "torch"):
        assert word not in msg
    ident, msg = matlab_error(InvalidInputError("loss_options ['X'] are not supported"), "eigs")
    assert msg == "dlhessianEigs: 'LossOptions' ['X'] are not supported"
    ident, msg = matlab_error(ZeroDivisionError("division by zero"), "hvp")
    assert ident == "hessiancore:python" and "please report" in msg


def test_translators_read_only_declared_properties():
    class Sneaky(Translator):
        properties = ("Alpha",)

        def setup(self, learn, state):
            self.layer.number("Beta", 1.0)

    layer = LayerSpec({"Name": "s", "Class": "nnet.cnn.layer.SneakyLayer", "Alpha": 1.0, "Beta": 2.0}, 0)
    with pytest.raises(RuntimeError, match="reads 'Beta'.*declare it"):
        Sneaky(layer, {}, {})
    for name, cls in REGISTRY.items():
        assert isinstance(cls.properties, tuple) and len(set(cls.properties)) == len(cls.properties), name


def test_fallback_default_loss_follows_the_output_layer():
    class Engine:
        def __init__(self, out_class):
            self.workspace, self.out_class = {}, out_class

        def eval(self, code, nargout=0):
            if code.startswith("hcOut__"):
                self.workspace["hcOut__"] = self.out_class
            elif code.startswith("hcP__"):
                self.workspace.update(hcP__=8.0, hcIsCell__=0.0, hcNB__=1.0)

    assert fallback.EngineHvp(Engine("nnet.cnn.layer.SoftmaxLayer")).loss == "crossentropy"
    assert fallback.EngineHvp(Engine("nnet.cnn.layer.FullyConnectedLayer")).loss == "mse"
    assert fallback.EngineHvp(Engine("nnet.cnn.layer.SoftmaxLayer"), loss="l2loss").loss == "l2loss"


@pytest.mark.parametrize("T_good, T_bad, loss, size, need", [
    (T, np.zeros((3, 6)), "mse", "3x6", "the size of the output"),
    (T, np.zeros((1, 6)), "l2loss", "1x6", "the size of the output"),
    (1.0 + T.argmax(0).reshape(1, 6), T, "index-crossentropy", "2x6", "one class index per observation"),
])
def test_target_size_mismatch_in_matlab_terms(T_good, T_bad, loss, size, need):
    """T of the wrong size is refused before any work with its size in MATLAB's order (C x B for 'CB',
    not torch's B x C), the output layer, and the minibatch counted from 1 (here the second)."""
    api.loss_value(_spec(True), [X, X], [T_good, T_good], loss=loss)   # the right sizes are accepted
    with pytest.raises(InvalidInputError) as e:
        api.hessian(_spec(True), [X, X], [T_good, T_bad], loss=loss)
    ident, msg = matlab_error(e.value, "hessian")
    assert ident == "hessiancore:invalidInput"
    assert msg.startswith(f"dlhessian: minibatch 2: T has size {size} but the network output (layer 'sm', "
                          "SoftmaxLayer) has size 2x6 (format 'CB')")
    assert need in msg and "torch" not in msg and "batch 0" not in msg


def test_core_loss_failures_are_reworded_for_matlab():
    """The core's "loss_fn(outputs (4, 2) float64, ...) failed on batch 0: InvalidInputError: ..." names
    torch shapes and a 0-based batch: MATLAB users read "the loss failed on minibatch 1: ..."."""
    _, msg = matlab_error(InvalidInputError(
        "loss_fn(outputs (4, 2) float64, targets (4, 3) float64) failed on batch 0: InvalidInputError: bad T"), "hvp")
    assert msg == "dlhvp: the loss failed on minibatch 1: bad T"
    _, msg = matlab_error(NonFiniteError("the loss on batch 2 is nan; the curvature is undefined there"), "hvp")
    assert msg == "dlhvp: the loss on minibatch 3 is nan; the curvature is undefined there"


def test_project_cites_no_file_users_do_not_have():
    """Docstrings and docs cite MathWorks pages, never the development notes folder (shared/), which is not
    shipped."""
    root = Path(__file__).resolve().parents[2]
    files = [*root.joinpath("bridge").rglob("*.py"), *root.joinpath("hessian_core").rglob("*.py"),
             *root.joinpath("matlab").rglob("*.m"), *root.joinpath("docs").glob("*.md"), root / "README.md"]
    offenders = [str(f.relative_to(root)) for f in files if "shared/" in f.read_text()]
    assert offenders == []
