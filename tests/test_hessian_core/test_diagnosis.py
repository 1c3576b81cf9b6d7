"""An operation PyTorch cannot differentiate as a curvature needs is named, with the module that calls it."""

import pytest
import torch
from torch import nn

import hessian_core as hc
from hessian_core.diagnosis import parse

D = torch.float64


class Distances(nn.Module):
    def forward(self, h):
        return torch.pdist(h)[:, None]  # _pdist_backward has no derivative in PyTorch


def test_the_operation_and_its_module_are_named():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), Distances(), nn.Linear(1, 2)).to(D)
    X, Y = torch.randn(5, 3, dtype=D), torch.randn(10, 2, dtype=D)
    for run in (lambda: hc.hessian(model, nn.MSELoss(), (X, Y)),
                lambda: hc.GGNOperator(model, nn.MSELoss(), (X, Y)).matvec(torch.ones(20, dtype=D))):
        with pytest.raises(hc.InvalidInputError, match=r"'_pdist_backward' in '2' \(Distances\) has no second "
                                                      r"derivative"):
            run()


def test_once_differentiable_functions_are_named():
    class Clip(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clamp(-1, 1)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, g):
            return g

    class Host(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(torch.tanh(Clip.apply(self.a(x))))

    with pytest.raises(hc.InvalidInputError, match=r"autograd.Function Clip"):
        hc.hessian(Host().to(D), nn.MSELoss(), (torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)))


def test_messages_are_parsed():
    assert parse("derivative for aten::hardsigmoid_backward is not implemented") == ("hardsigmoid_backward",
                                                                                      "second derivative")
    assert parse("Trying to use forward AD with _weight_norm_interface that does not support it")[0] == \
        "_weight_norm_interface"
    assert parse("vmap: we do not yet support aten::rrelu_with_noise. Please file")[0] == "rrelu_with_noise"
    assert parse("something else") == (None, None)
