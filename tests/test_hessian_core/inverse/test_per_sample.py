"""Per-sample derivatives through the objective's forward against autograd on one sample at a time, and the
GGN from square-root factors against GGNOperator (unequal batches, mean and sum, a loss that is not convex)."""

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.inverse import per_sample
from hessian_core.objective import Objective

D = torch.float64


def wavy(outputs, targets):  # not convex in the outputs: signed GGN factors needed
    return ((outputs - targets) ** 2).mean() + 3 * torch.cos(3 * outputs).mean()


LOSSES = {"mse": nn.MSELoss(), "ce": nn.CrossEntropyLoss(), "mse-sum": nn.MSELoss(reduction="sum"),
          "bce": nn.BCEWithLogitsLoss(), "wavy": wavy}


def targets(name, n, g):
    if name == "ce":
        return torch.randint(0, 3, (n,), generator=g)
    if name == "bce":
        return torch.rand(n, 3, generator=g, dtype=D)
    return torch.randn(n, 3, generator=g, dtype=D)


@pytest.mark.parametrize("name", list(LOSSES))
def test_ggn_from_factors_equals_the_ggn_operator(name):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X, y = torch.randn(10, 4, generator=g, dtype=D), targets(name, 10, g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=4)  # 4, 4, 2
    objective = Objective(model, LOSSES[name], loader, progress=False)
    ref = hc.GGNOperator(model, LOSSES[name], loader).to_dense()
    torch.testing.assert_close(per_sample.ggn(objective), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(per_sample.ggn(objective, diagonal=True), ref.diagonal(), rtol=1e-12, atol=1e-14)
    if name == "wavy":
        assert float(torch.linalg.eigvalsh(ref)[0]) < -1e-6  # the signed factors were needed


def test_per_sample_gradients_and_jacobians_match_autograd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X, y = torch.randn(6, 3, dtype=D), torch.randint(0, 2, (6,))
    objective = Objective(model, nn.CrossEntropyLoss(), (X, y))
    ctx = next(iter(objective.contexts()))
    losses, G = per_sample.losses_and_gradients(objective, ctx, 1, 5)
    f, J = per_sample.jacobians(objective, X[1:5])
    params = list(model.parameters())
    for k, i in enumerate(range(1, 5)):
        loss = nn.CrossEntropyLoss()(model(X[i:i + 1]), y[i:i + 1])
        assert float(losses[k]) == pytest.approx(float(loss.detach()), rel=1e-14)
        grad = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(G[:, k], grad, rtol=1e-13, atol=1e-15)
        out = model(X[i:i + 1])[0]
        rows = [torch.cat([t.reshape(-1) for t in torch.autograd.grad(out[c], params, retain_graph=True)])
                for c in range(2)]
        torch.testing.assert_close(J[k], torch.stack(rows), rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(f[k], out.detach())
    assert all(p.grad is None for p in params)


def test_a_model_that_mixes_samples_is_refused():
    class BatchMean(nn.Module):  # the output of a sample depends on the whole batch
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2).double()

        def forward(self, x):
            return self.lin(x - x.mean(0, keepdim=True))

    X, y = torch.randn(8, 3, dtype=D), torch.randint(0, 2, (8,))
    with pytest.raises(hc.InvalidInputError, match="treats samples independently"):
        per_sample.ggn(Objective(BatchMean(), nn.CrossEntropyLoss(), (X, y)))
