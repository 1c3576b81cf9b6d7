"""loss_fn checks on the first batch: a loss cut from the outputs, and a custom loss that broadcasts them
against the targets, are errors; ordinary broadcasting inside a loss (one-hot targets, weights, pairwise
terms written with explicit dimensions) is not."""

import pytest
import torch
from reference import autograd_hessian
from torch import nn

import hessian_core as hc

D = torch.float64


def model_and_data(out=1):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, out)).to(D), torch.randn(6, 3, dtype=D)


@pytest.mark.parametrize("loss_fn", [
    lambda o, t: torch.tensor(0.5, dtype=D),
    lambda o, t: ((o - t[:, None]) ** 2).mean().detach(),
    lambda o, t: torch.tensor(((o - t[:, None]) ** 2).mean().item()),
])
def test_a_loss_that_does_not_depend_on_the_outputs_is_refused(loss_fn):
    """It used to give an all-zero Hessian without a word."""
    model, X = model_and_data()
    with pytest.raises(hc.InvalidInputError, match="does not depend on the model outputs"):
        hc.hessian(model, loss_fn, (X, torch.randn(6, dtype=D)))


def test_a_custom_loss_that_broadcasts_outputs_against_targets_is_refused():
    """(6, 1) - (6,) is (6, 6): torch's MSELoss warns about it, a hand-written loss did not."""
    model, X = model_and_data()
    Y = torch.randn(6, dtype=D)
    with pytest.raises(hc.InvalidInputError, match=r"broadcasts a \(6, 1\) tensor against a \(6,\) one into \(6, 6\)"):
        hc.hessian(model, lambda o, t: ((o - t) ** 2).mean(), (X, Y))
    with pytest.raises(hc.InvalidInputError, match="broadcasts"):
        hc.HessianOperator(model, lambda o, t: (t - o).abs().sum(), (X, Y))
    with pytest.raises(hc.InvalidInputError, match="broadcasts"):
        hc.hessian(model, lambda o, t: nn.functional.mse_loss(o, t), (X, Y))


def test_ordinary_broadcasting_in_a_loss_is_accepted():
    model, X = model_and_data(out=3)
    y = torch.randint(0, 3, (6,))
    w = torch.tensor([1.0, 2.0, 0.5], dtype=D)

    def one_hot_weighted(o, t):  # (6, 1) == (3,) builds one-hot targets; o * w scales columns
        onehot = (t[:, None] == torch.arange(3)).to(o.dtype)
        return (((o - onehot) ** 2) * w).mean()

    def pairwise(o, t):  # explicit dimensions: (6, 1, 3) - (1, 6, 3)
        return ((o[:, None, :] - o[None, :, :]) ** 2).mean() + nn.functional.cross_entropy(o, t)

    for loss_fn in (one_hot_weighted, pairwise):
        H = hc.hessian(model, loss_fn, (X, y))
        torch.testing.assert_close(H, autograd_hessian(model, loss_fn, X, y), rtol=1e-10, atol=1e-12)


def test_a_loss_that_writes_into_its_input_still_works():
    model, X = model_and_data()
    Y = torch.randn(6, 1, dtype=D)

    def clamped(o, t):
        o = o.clone()
        o.clamp_(-10, 10)
        return ((o - t) ** 2).mean()

    def inplace(o, t):
        o.mul_(1.0)  # in place on the model output itself
        return ((o - t) ** 2).mean()

    for loss_fn in (clamped, inplace):
        H = hc.hessian(model, loss_fn, (X, Y))
        torch.testing.assert_close(H, autograd_hessian(model, nn.MSELoss(), X, Y), rtol=1e-10, atol=1e-12)
