"""The seed example of issue 4: gradient descent vs Newton on a 5x5 parameter matrix fitted to a target.

    python examples/newton_seed.py [PNG_PATH]      (default /tmp/newton_seed.png)

The model, exactly: ``torch.manual_seed(0)``; ``W = torch.rand(5, 5)`` is the parameter, then
``T = torch.rand(5, 5)`` the target (float32, torch's default); loss ``((W - T) ** 2).mean()``; no input
matrix. Both optimizers run 40 ``step(closure)`` calls with learning rate 0.1; the value recorded for step
k is what ``step`` returns, the loss at the start of that step (the ``torch.optim`` convention), so the
final value is the loss after 39 updates. The Hessian is ``(2/25) I``: Newton scales the residual by 0.9
per step (loss x0.81), gradient descent by ``1 - 0.1 * 2/25 = 0.992`` (loss x0.984).
"""

from __future__ import annotations

import sys

import torch

from hessian_core.optim import Newton


def run(make_opt, steps: int = 40, lr: float = 0.1) -> tuple[list[float], float]:
    """Losses returned by ``steps`` calls of ``step``, and the loss after the last update."""
    torch.manual_seed(0)
    W = torch.rand(5, 5, requires_grad=True)
    T = torch.rand(5, 5)
    opt = make_opt([W], lr)

    def closure():
        opt.zero_grad()
        loss = ((W - T) ** 2).mean()
        loss.backward()  # for SGD; Newton accepts the same closure
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    return losses, float(((W.detach() - T) ** 2).mean())


def main(png: str = "/tmp/newton_seed.png") -> None:
    gd, gd_after = run(lambda p, lr: torch.optim.SGD(p, lr=lr))
    newton, newton_after = run(lambda p, lr: Newton(p, lr=lr))
    print("step   gradient descent   Newton (lr=0.1)")
    for k in (0, 1, 2, 5, 10, 20, 30, 39):
        print(f"{k + 1:4d}   {gd[k]:16.4f}   {newton[k]:15.3e}")
    print(f"initial {gd[0]:.4f}; final (40th step's loss) GD {gd[-1]:.4f}, Newton {newton[-1]:.2e}")
    print(f"after the 40th update: GD {gd_after:.4f}, Newton {newton_after:.2e}")
    _, full = run(lambda p, lr: Newton(p, lr=1.0), steps=1)
    print(f"one Newton step with lr=1 solves the quadratic: loss {gd[0]:.4f} -> {full:.1e}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = range(1, 41)
    ax.semilogy(steps, gd, label=f"gradient descent (final {gd[-1]:.4f})")
    ax.semilogy(steps, newton, label=f"Newton, lr=0.1 (final {newton[-1]:.2e})")
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared error")
    ax.set_title("5x5 matrix fitted to a target, lr = 0.1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"plot saved to {png}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
