"""The exact GGN diagonal by backpropagated square-root factors (``GGNOperator.diagonal`` and Laplace's
``structure="diag"`` on Sequentials), against the GGN written out as ``J^T H_L J`` from autograd Jacobians."""

import pytest
import torch
from reference import explicit_ggn
from torch import nn

import hessian_core as hc

D = torch.float64


def mlp():
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Softplus(), nn.Linear(5, 3)).to(D)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 2), nn.BatchNorm2d(4),
                         nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 3)).to(D).eval()


def batches(kind, sizes):
    g = torch.Generator().manual_seed(1)
    out = []
    for n in sizes:
        if kind == "mlp":
            out.append((torch.randn(n, 4, generator=g, dtype=D), torch.randn(n, 3, generator=g, dtype=D)))
        else:
            out.append((torch.randn(n, 1, 8, 8, generator=g, dtype=D), torch.randint(0, 3, (n,), generator=g)))
    return out


def reference(model, loss_fn, data):
    """Global normalization written out: a mean loss is the count-weighted mean of the batch GGNs."""
    mean = getattr(loss_fn, "reduction", "mean") == "mean"
    total = sum(y.shape[0] for _, y in data)
    G = sum((y.shape[0] / total if mean else 1.0) * explicit_ggn(model, loss_fn, x, y) for x, y in data)
    return G.diagonal()


@pytest.mark.parametrize("kind, loss_fn", [("mlp", nn.MSELoss()), ("mlp", nn.MSELoss(reduction="sum")),
                                           ("mlp", nn.HuberLoss(delta=0.5)),  # no closed-form factor
                                           ("cnn", nn.CrossEntropyLoss()),
                                           ("cnn", nn.CrossEntropyLoss(reduction="sum"))])
def test_structured_ggn_diagonal_is_exact(kind, loss_fn):
    torch.manual_seed(0)
    model = mlp() if kind == "mlp" else cnn()
    data = batches(kind, [5, 3])  # unequal batches: normalized once, globally
    G = hc.GGNOperator(model, loss_fn, data)
    d = G.diagonal()
    assert G.last_path.startswith("structured"), G.last_path
    ref = reference(model, loss_fn, data)
    torch.testing.assert_close(d, ref, rtol=1e-11, atol=1e-14 * float(ref.abs().max()))
    # and the same as the unit-vector products of the generic operator
    torch.testing.assert_close(d, hc.GGNOperator(model, loss_fn, data, mc_samples=None).to_dense().diagonal(),
                               rtol=1e-11, atol=1e-14 * float(ref.abs().max()))


def test_other_models_fall_back_to_products_and_say_so():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)) + x)

    torch.manual_seed(0)
    model = Residual().to(D)
    (x, y), = batches("mlp", [6])
    G = hc.GGNOperator(model, nn.MSELoss(), (x, y))
    d = G.diagonal()
    assert G.last_path.startswith("products with unit vectors"), G.last_path
    torch.testing.assert_close(d, explicit_ggn(model, nn.MSELoss(), x, y).diagonal())


def test_parameter_subset_and_laplace_diag():
    torch.manual_seed(0)
    model = mlp()
    (x, y), = batches("mlp", [7])
    names = ["2.weight", "4.bias"]
    G = hc.GGNOperator(model, nn.MSELoss(), (x, y), params=names)
    torch.testing.assert_close(G.diagonal(), explicit_ggn(model, nn.MSELoss(), x, y, names=names).diagonal())
    assert G.last_path.startswith("structured")
    # Laplace's diagonal posterior precision: diag of the Gaussian log-likelihood's GGN (sigma = 1: half the
    # GGN of the summed squared error) plus the prior
    la = hc.Laplace(model, nn.MSELoss(reduction="sum"), (x, y), structure="diag", prior_precision=0.5)
    ggn_sum = explicit_ggn(model, nn.MSELoss(reduction="sum"), x, y).diagonal()
    cov = la.posterior_covariance()
    variances = cov if cov.dim() == 1 else cov.diagonal()
    torch.testing.assert_close(1.0 / variances, ggn_sum / 2 + 0.5, rtol=1e-10, atol=1e-12)
