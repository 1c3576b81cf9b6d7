"""The seed example of issue 4, reproduced exactly through hessian_core.optim.Newton.

The model: ``torch.manual_seed(0); W = torch.rand(5, 5)`` (the parameter), then ``T = torch.rand(5, 5)``
(the target), loss ``((W - T) ** 2).mean()``, no input matrix; default float32. 40 calls of
``opt.step(closure)``, each returning the loss at the start of the step (torch.optim convention): the 40th
value, after 39 updates, is the "final" loss. The Hessian is ``(2/25) I``, so Newton with ``lr`` scales the
residual by ``1 - lr`` per step and the loss by ``(1 - lr)^2``: the closed form the test checks against.
"""

import torch
from torch import nn

from hessian_core.optim import Newton


def run_seed(make_opt, dtype=torch.float32, steps=40):
    torch.manual_seed(0)
    W = torch.rand(5, 5).to(dtype).requires_grad_()
    T = torch.rand(5, 5).to(dtype)
    opt = make_opt([W])

    def closure():
        opt.zero_grad()
        loss = ((W - T) ** 2).mean()
        loss.backward()  # the usual torch closure; Newton needs no backward but accepts one
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    return losses, W, T


def test_seed_example_exact():
    gd, _, _ = run_seed(lambda p: torch.optim.SGD(p, lr=0.1))
    newton, _, _ = run_seed(lambda p: Newton(p, lr=0.1))
    assert f"{gd[0]:.4f}" == "0.1446" and f"{newton[0]:.4f}" == "0.1446"
    assert f"{gd[-1]:.4f}" == "0.0773"
    assert f"{newton[-1]:.2e}" == "3.90e-05"
    # the whole Newton curve is the closed form l0 * 0.81^k
    closed = [newton[0] * 0.81 ** k for k in range(40)]
    torch.testing.assert_close(torch.tensor(newton), torch.tensor(closed), rtol=1e-4, atol=0)


def test_seed_example_float64_and_full_step():
    newton, _, _ = run_seed(lambda p: Newton(p, lr=0.1), dtype=torch.float64)
    assert f"{newton[0]:.4f}" == "0.1446" and f"{newton[-1]:.2e}" == "3.90e-05"
    losses, W, T = run_seed(lambda p: Newton(p, lr=1.0), dtype=torch.float64, steps=1)
    torch.testing.assert_close(W.detach(), T, rtol=0, atol=1e-15)  # one full step solves the quadratic
    assert float(((W - T) ** 2).mean()) < 1e-30


def test_full_step_solves_least_squares():
    """A quadratic with a non-diagonal Hessian: y = X W^T + b, MSE. One step = the lstsq solution."""
    torch.manual_seed(0)
    D = torch.float64
    X, Y = torch.randn(20, 4, dtype=D), torch.randn(20, 3, dtype=D)
    model = nn.Linear(4, 3).to(D)
    opt = Newton(model.parameters())
    opt.step(lambda: nn.functional.mse_loss(model(X), Y))
    A = torch.cat([X, torch.ones(20, 1, dtype=D)], dim=1)
    sol = torch.linalg.lstsq(A, Y).solution  # (5, 3): rows W^T then b
    torch.testing.assert_close(model.weight.detach(), sol[:4].T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.bias.detach(), sol[4], rtol=1e-10, atol=1e-12)
