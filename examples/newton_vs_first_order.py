"""Newton-CG and Hessian-free against SGD and Adam on a small regression network: iterations and seconds
to a target loss.

    python examples/newton_vs_first_order.py [PNG_PATH] [--quick]   (default /tmp/newton_vs_first_order.png)

Problem (made here, no download): 256 points ``x`` evenly in [-3, 3], target ``y = sin(2x) + 0.1 x^2``;
a float64 MLP 1-16-16-1 with tanh (321 parameters), mean squared error, full batch for the gradient.
Every method starts from the same initialization (``torch.manual_seed(1)``). SGD and Adam get the best
learning rate of a small grid (each grid point run, the fastest to the target kept). Iterations are
``step`` calls; the count to the target is the number of updates before the loss is below it. Seconds are
wall-clock on this machine, including everything a step does (CG products, line searches).
"""

from __future__ import annotations

import math
import sys
import time

import torch
from torch import nn

from hessian_core.optim import HessianFree, Newton, NewtonCG

D = torch.float64
TARGET = 1e-3


def data(n: int = 256):
    X = torch.linspace(-3, 3, n, dtype=D)[:, None]
    return X, torch.sin(2 * X) + 0.1 * X ** 2


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).to(D)


def train(make_opt, max_steps: int, first_order: bool) -> dict:
    """Run until the loss is below TARGET / 10 or ``max_steps``; losses, seconds, and costs."""
    X, Y = data()
    model = make_model()
    loss_fn = nn.MSELoss()
    opt = make_opt(model, loss_fn, X, Y)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(X), Y)
        if first_order:
            loss.backward()
        return loss

    losses, times, start = [], [], time.perf_counter()
    for _ in range(max_steps):
        losses.append(float(opt.step(closure).detach()))
        times.append(time.perf_counter() - start)
        if not math.isfinite(losses[-1]) or losses[-1] < TARGET / 10:
            break
    hit = next((k for k, v in enumerate(losses) if v < TARGET), None)
    per_step = sorted(b - a for a, b in zip([0.0] + times, times))
    state = {} if first_order else opt.state[next(model.parameters())]
    return {"losses": losses, "times": [0.0] + times[:-1], "steps_to_target": hit,
            "seconds_to_target": None if hit is None else ([0.0] + times)[hit],
            "ms_per_step": 1000 * per_step[len(per_step) // 2] if per_step else math.nan,
            "closure_evals": state.get("closure_evals", len(losses)),
            "products": state.get("hvps", state.get("curvature_products", 0))}


def best_of(name: str, make, lrs, max_steps: int) -> dict:
    runs = []
    for lr in lrs:
        r = train(lambda m, f, X, Y, lr=lr: make(m.parameters(), lr), max_steps, first_order=True)
        r["name"] = f"{name} (lr={lr:g})"
        runs.append(r)
        print(f"  {r['name']}: {_fmt(r)}", flush=True)
    # fewest steps to the target; among runs that never reach it, the lowest final loss
    return min(runs, key=lambda r: (r["steps_to_target"] if r["steps_to_target"] is not None else math.inf,
                                    r["losses"][-1] if math.isfinite(r["losses"][-1]) else math.inf))


def _fmt(r: dict) -> str:
    if r["steps_to_target"] is None:
        return f"target not reached in {len(r['losses'])} steps (final loss {r['losses'][-1]:.2e})"
    return f"{r['steps_to_target']} steps, {r['seconds_to_target']:.2f} s to loss < {TARGET:g}"


def hessian_free(model, loss_fn, X, Y):
    gen = torch.Generator().manual_seed(0)

    def curvature_batch():  # a fresh random quarter of the data for the curvature, every step
        idx = torch.randperm(len(X), generator=gen)[: len(X) // 4]
        return X[idx], Y[idx]

    return HessianFree(model.parameters(), model=model, loss_fn=loss_fn, curvature_data=curvature_batch,
                       max_cg_iters=50)


def main(png: str = "/tmp/newton_vs_first_order.png", quick: bool = False) -> list[dict]:
    first_steps = 2000 if quick else 5000
    X, Y = data()
    with torch.no_grad():
        print(f"initial loss {float(nn.MSELoss()(make_model()(X), Y)):.4f}, target loss {TARGET:g}")
    results = [
        best_of("SGD", lambda p, lr: torch.optim.SGD(p, lr=lr), [0.1, 0.3] if quick else
                [0.03, 0.1, 0.3, 0.5], first_steps),
        best_of("Adam", lambda p, lr: torch.optim.Adam(p, lr=lr), [1e-2, 3e-2] if quick else
                [3e-3, 1e-2, 3e-2, 1e-1], first_steps),
    ]
    for name, make in [("NewtonCG (trust region)", lambda m, f, X, Y: NewtonCG(m.parameters())),
                       ("HessianFree (GGN, 1/4 curvature batch)", hessian_free),
                       ("Newton (dense, LM damping)",
                        lambda m, f, X, Y: Newton(m.parameters(), damping=1e-3, adaptive_damping=True))]:
        r = train(make, 300, first_order=False)
        r["name"] = name
        print(f"  {name}: {_fmt(r)}", flush=True)
        results.append(r)

    cols = ("steps", 6), ("seconds", 8), ("ms/step", 8), ("loss evals", 10), ("products", 9)
    header = f"{'method':42s} " + " ".join(f"{name:>{width}s}" for name, width in cols)
    print("\n" + header)
    for r in results:
        steps = "-" if r["steps_to_target"] is None else str(r["steps_to_target"])
        secs = "-" if r["seconds_to_target"] is None else f"{r['seconds_to_target']:.2f}"
        print(f"{r['name']:42s} {steps:>6s} {secs:>8s} {r['ms_per_step']:>8.1f} {r['closure_evals']:>10d} "
              f"{r['products']:>9d}")
    print("(steps and seconds to the target; ms/step is the median; loss evaluations and curvature products\n"
          " count the whole run, which goes on to the target / 10)")
    plot(results, png)
    return results


def plot(results: list[dict], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        a.loglog(range(1, len(r["losses"]) + 1), r["losses"], label=r["name"])
        b.loglog(r["times"][1:], r["losses"][1:], label=r["name"])  # loss after k updates vs their time
    for ax, xlabel in ((a, "step"), (b, "wall-clock seconds (log)")):
        ax.axhline(TARGET, color="gray", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training MSE")
    a.set_title("loss per iteration")
    b.set_title("loss per second (shared CPU)")
    b.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"plot saved to {png}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(*args[:1], quick="--quick" in sys.argv)
