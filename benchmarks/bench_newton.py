"""Dense Newton step at P = 3466 (a 64-32-32-10 tanh MLP on 1797 samples of synthetic digits-like data,
float64, CPU): ``hessian_core.optim.Newton`` against ``hc.hessian`` plus one factorization, in one run.

What is timed (seconds, one run each, in this order, on the same model and data):

* ``hc.hessian``: the functional dense Hessian (structured path for a Linear chain);
* ``cholesky`` and ``eigh`` of that Hessian (the factorizations a Newton step may need);
* ``newton_direction``: the direction the optimizer solves for (Cholesky; at an indefinite Hessian the
  smallest eigenvalue by Lanczos on the dense matrix and a shifted Cholesky, no ``eigh``);
* ``Newton(model=..., curvature_data=...)``: one optimizer step with the model-based Hessian (the closure's
  gradient, the core's dense Hessian, the direction, one trial point of the line search);
* ``Newton(params)`` (closure only): one step with the Hessian from ``P`` products through the closure's
  graph (batched double backward), the only path before this change; skipped with ``--quick``;
* ``before``: what the optimizer did before (closure Hessian, failed Cholesky, ``eigh``), estimated as the
  closure step's Hessian time plus ``eigh``.

The target: a dense Newton step costs at most about 1.5x (``hc.hessian`` + one factorization).

    python benchmarks/bench_newton.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

REPEATS = 3


def problem(quick: bool = False, steps: int = 100):
    """Digits-like data: 64 features in [0, 16] (standardized), 10 classes from a random teacher with 10%
    label noise; a 64-32-32-10 tanh MLP trained ``steps`` Adam steps (so the Hessian is not at
    initialization). Also the problem of ``bench_spectral_edges.py`` (300 steps)."""
    torch.manual_seed(0)
    n, width = (600, 16) if quick else (1797, 32)
    raw = torch.rand(n, 64, dtype=torch.float64) * 16
    teacher = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    with torch.no_grad():
        y = teacher((raw - 8) / 4).argmax(1)
    flip = torch.rand(n) < 0.1
    y[flip] = torch.randint(0, 10, (int(flip.sum()),))
    X = (raw - raw.mean(0)) / raw.std(0)
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, 10)).double()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, loss_fn, X, y


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def run(quick: bool = False) -> list[dict]:
    import hessian_core as hc
    from hessian_core.operators import ClosureHessianOperator
    from hessian_core.optim import Newton
    from hessian_core.optim.dense_solve import newton_direction

    model, loss_fn, X, y = problem(quick)
    params = list(model.parameters())
    P = sum(p.numel() for p in params)
    start = [p.detach().clone() for p in params]

    def reset():
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)

    def closure():
        return loss_fn(model(X), y)

    rows = []
    hc.hessian(model, loss_fn, (X[:64], y[:64]))  # first-call costs (vmap, structured setup) out of the timing
    # The machine may be shared: every timing is repeated REPEATS times, interleaved, the fastest kept.
    best: dict[str, float] = {}

    def timed(key, fn):
        out, t = _timed(fn)
        best[key] = min(best.get(key, float("inf")), t)
        return out

    for _ in range(1 if quick else REPEATS):
        H = timed("hessian", lambda: hc.hessian(model, loss_fn, (X, y)))
        reset()
        opt = Newton(params, model=model, loss_fn=loss_fn, curvature_data=(X, y), progress=False)
        timed("model step", lambda opt=opt: opt.step(closure))
        last = opt.state[params[0]]["last"]
        reset()
        if not quick:
            timed("closure hessian", lambda: ClosureHessianOperator(closure, params, progress=False).to_dense())
            opt = Newton(params, progress=False)
            timed("closure step", lambda opt=opt: opt.step(closure))
            reset()
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(closure(), params)])
    d = timed("direction", lambda: newton_direction(H, g))
    A = H + d.shift * torch.eye(P, dtype=H.dtype)  # the positive definite matrix the step factorizes
    info = timed("cholesky", lambda: torch.linalg.cholesky_ex(A)[1])
    timed("eigh", lambda: torch.linalg.eigh(H))
    rows += [
        {"what": "hc.hessian", "seconds": best["hessian"]},
        {"what": f"cholesky of H + shift I (shift {d.shift:.2g}, info {int(info)})", "seconds": best["cholesky"]},
        {"what": "eigh", "seconds": best["eigh"]},
        {"what": f"newton_direction ({d.method})", "seconds": best["direction"]},
        {"what": f"Newton(model=...) step ({last['method']}, alpha={last.get('alpha')})",
         "seconds": best["model step"]},
        {"what": "ratio: Newton(model=...) step / (hc.hessian + cholesky)",
         "seconds": best["model step"] / (best["hessian"] + best["cholesky"])},
        {"what": "ratio: Newton(model=...) step / (hc.hessian + eigh)",
         "seconds": best["model step"] / (best["hessian"] + best["eigh"])},
    ]
    if not quick:
        rows += [
            {"what": "closure Hessian (P products through the closure's graph)", "seconds": best["closure hessian"]},
            {"what": "Newton(params) step (closure only)", "seconds": best["closure step"]},
            {"what": "before: closure Hessian + eigh (the previous optimizer at this point)",
             "seconds": best["closure hessian"] + best["eigh"]},
            {"what": "ratio: before / Newton(model=...) step",
             "seconds": (best["closure hessian"] + best["eigh"]) / best["model step"]},
        ]
    return [{"P": P, **r} for r in rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller model, and no closure-only step")
    args = ap.parse_args(argv)
    rows = run(args.quick)
    print(f"P = {rows[0]['P']}, float64, CPU, {torch.get_num_threads()} threads")
    for r in rows:
        unit = "" if r["what"].startswith("ratio") else " s"
        print(f"  {r['what']:72s} {r['seconds']:9.2f}{unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
