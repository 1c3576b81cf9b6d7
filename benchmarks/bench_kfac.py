"""KFAC and EKFAC: construction and inverse-product time against curvlinops and BackPACK, and quality against
the exact GGN (relative Frobenius error, top-eigenvalue error, CG iterations when used as a preconditioner).

    python benchmarks/bench_kfac.py            # full run, prints the tables
    python benchmarks/bench_kfac.py --write    # ... and writes benchmarks/kfac.md
    python benchmarks/bench_kfac.py --quick    # smaller problems, fewer repeats (smoke run)

Timing: every method runs once as warm-up (its answer is kept and compared with ours), then the methods run
round-robin and the median is reported (``measure.interleaved``); ratios are *their time / our time* (above
1: hessian_core is faster). All float64, CPU, one batch, the same model and data for every method.
Peers: curvlinops-for-pytorch 3.0.1 (``KFACLinearOperator``, ``EKFACLinearOperator``,
``KFACInverseLinearOperator(use_exact_damping=True)``), backpack-for-pytorch 1.7.1 (``KFLR`` = exact
output curvature, ``KFAC`` = one Monte Carlo sample; factors only, no operator, ``nn.Sequential`` only).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import warnings

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from measure import interleaved  # noqa: E402

import hessian_core as hc  # noqa: E402

D = torch.float64
DAMPING = 1e-3


# -- problems -------------------------------------------------------------------------------------
class TokenMLP(nn.Module):
    """A two-layer MLP applied at every position of a sequence; per-token logits as (B, C, T)."""

    def __init__(self, d, h, c):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, c))

    def forward(self, x):
        return self.net(x).transpose(1, 2)


def trained(model, loss_fn, X, y, steps=30):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model


def timing_problems(quick):
    torch.manual_seed(0)
    n_mlp, n_cnn, n_seq = (128, 32, 16) if quick else (512, 128, 64)
    mlp = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 10)).to(D)
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * 8 * 8, 10)).to(D)
    seq = TokenMLP(32, 64, 10).to(D)
    ce = nn.CrossEntropyLoss()
    return [
        ("MLP 784-256-10 tanh", f"N={n_mlp}, CE", mlp, ce, torch.randn(n_mlp, 784, dtype=D),
         torch.randint(0, 10, (n_mlp,))),
        ("CNN conv16-pool-conv32-fc10, 3x16x16", f"N={n_cnn}, CE", cnn, ce, torch.randn(n_cnn, 3, 16, 16, dtype=D),
         torch.randint(0, 10, (n_cnn,))),
        ("token MLP 32-64-10 over T=16", f"N={n_seq}, CE per token", seq, ce, torch.randn(n_seq, 16, 32, dtype=D),
         torch.randint(0, 10, (n_seq, 16))),
    ]


def quality_problems(quick):
    torch.manual_seed(1)
    ce = nn.CrossEntropyLoss()
    n = 128 if quick else 256
    X = torch.randn(n, 20, dtype=D)
    y = (X[:, :5] + 0.5 * torch.randn(n, 5, dtype=D)).argmax(1)
    mlp = trained(nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).to(D),
                  ce, X, y)
    Xc = torch.randn(n // 2, 1, 8, 8, dtype=D)
    yc = (Xc.mean((1, 2, 3)) * 10).long().clamp(-2, 2) + 2
    cnn = trained(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3),
                                nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 5)).to(D), ce, Xc, yc)
    Xs = torch.randn(n // 4, 6, 8, dtype=D)
    ys = (Xs[..., :5] + 0.5 * torch.randn(n // 4, 6, 5, dtype=D)).argmax(-1)
    seq = trained(TokenMLP(8, 16, 5).to(D), ce, Xs, ys)
    Y = torch.randn(n, 5, dtype=D)
    mse = nn.MSELoss()
    reg = trained(nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5)).to(D), mse, X, Y)
    return [
        ("MLP 20-32-32-5 tanh", f"N={n}, CE", mlp, ce, X, y),
        ("CNN conv4-pool-conv8-fc5, 1x8x8", f"N={n // 2}, CE", cnn, ce, Xc, yc),
        ("token MLP 8-16-5 over T=6", f"N={n // 4}, CE per token", seq, ce, Xs, ys),
        ("MLP 20-32-5 tanh", f"N={n}, MSE", reg, mse, X, Y),
    ]


# -- peers ----------------------------------------------------------------------------------------
def have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def curvlinops_kfac(model, loss_fn, X, y, fisher_type="type-2", ekfac=False, approx="expand"):
    import curvlinops

    cls = curvlinops.EKFACLinearOperator if ekfac else curvlinops.KFACLinearOperator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = cls(model, loss_fn, list(model.parameters()), [(X, y)], fisher_type=fisher_type, kfac_approx=approx,
                 check_deterministic=False, num_data=X.shape[0])
        if ekfac:
            op._maybe_compute_ekfac()
        else:
            op.compute_kronecker_factors()
    return op


def backpack_factors(model, loss_fn, X, y, mc: bool):
    """BackPACK's KFLR (or KFAC with one MC sample) factors, on a copy of the model (``extend`` changes it)."""
    from backpack import backpack, extend
    from backpack.extensions import KFAC, KFLR

    m = extend(copy.deepcopy(model))
    lf = extend(copy.deepcopy(loss_fn))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with backpack(KFAC(mc_samples=1) if mc else KFLR()):
            lf(m(X), y).backward()
    return [p.kfac if mc else p.kflr for p in m.parameters()]


def backpack_dense(factors, sizes):
    P = sum(sizes)
    out = torch.zeros(P, P, dtype=D)
    a = 0
    for f, n in zip(factors, sizes):
        out[a:a + n, a:a + n] = torch.kron(f[0], f[1]) if len(f) == 2 else f[0]
        a += n
    return out


# -- timing ---------------------------------------------------------------------------------------
def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def time_problem(name, setting, model, loss_fn, X, y, repeats):
    rows = []
    data = [(X, y)]
    sequential = isinstance(model, nn.Sequential)
    P = sum(p.numel() for p in model.parameters())

    def ours(t="exact", ekfac=False):
        cls = hc.EKFACOperator if ekfac else hc.KFACOperator
        return lambda: cls(model, loss_fn, data, type=t, progress=False)

    groups = {
        "KFAC construction (exact output curvature)": {
            "hessian_core": ours(),
            **({"curvlinops": lambda: curvlinops_kfac(model, loss_fn, X, y)} if have("curvlinops") else {}),
            **({"BackPACK KFLR": lambda: backpack_factors(model, loss_fn, X, y, mc=False)}
               if sequential and have("backpack") else {}),
        },
        "KFAC construction (1 MC sample)": {
            "hessian_core": ours("mc"),
            **({"curvlinops": lambda: curvlinops_kfac(model, loss_fn, X, y, fisher_type="mc")}
               if have("curvlinops") else {}),
            **({"BackPACK KFAC": lambda: backpack_factors(model, loss_fn, X, y, mc=True)}
               if sequential and have("backpack") else {}),
        },
    }
    if X.dim() != 3:  # curvlinops' EKFAC takes 2d outputs only
        groups["EKFAC construction (exact output curvature)"] = {
            "hessian_core": ours(ekfac=True),
            **({"curvlinops": lambda: curvlinops_kfac(model, loss_fn, X, y, ekfac=True)} if have("curvlinops") else {}),
        }
    for group, fns in groups.items():
        med, res = interleaved(fns, repeats)
        check = agreement(group, res, model)
        for method, secs in med.items():
            rows.append(dict(problem=name, setting=setting, P=P, what=group, method=method, seconds=secs,
                             ratio=secs / med["hessian_core"], check=check.get(method, "")))
    # inverse: setup (eigendecompositions) and products with 1 and 32 vectors
    op = hc.KFACOperator(model, loss_fn, data, progress=False)

    def our_inverse():
        for _, b in op.blocks:
            b._eig = None  # the eigendecompositions are cached per block: time them every time
        return op.inverse(DAMPING)

    inv_fns = {"hessian_core": our_inverse}
    if have("curvlinops"):
        import curvlinops

        theirs = curvlinops_kfac(model, loss_fn, X, y)

        def their_inverse():
            inv = curvlinops.KFACInverseLinearOperator(theirs, damping=DAMPING, use_exact_damping=True)
            inv @ torch.zeros(P, 1, dtype=D)  # curvlinops decomposes the factors at the first product
            return inv

        inv_fns["curvlinops"] = their_inverse
    med, res = interleaved(inv_fns, repeats)
    ours_inv = res["hessian_core"]
    for method, secs in med.items():
        rows.append(dict(problem=name, setting=setting, P=P, what="inverse setup (damping 1e-3, exact)",
                         method=method, seconds=secs, ratio=secs / med["hessian_core"], check=""))
    for k in (1, 32):
        V = torch.randn(P, k, dtype=D)
        fns = {"hessian_core": lambda V=V: ours_inv @ V}
        if "curvlinops" in res:
            fns["curvlinops"] = lambda V=V: res["curvlinops"] @ V
        med, out = interleaved(fns, repeats * 4)
        check = {}
        if "curvlinops" in out:
            check["curvlinops"] = f"rel. diff {rel(out['curvlinops'], out['hessian_core']):.0e}"
        for method, secs in med.items():
            rows.append(dict(problem=name, setting=setting, P=P, what=f"inverse product, {k} vector(s)", method=method,
                             seconds=secs, ratio=secs / med["hessian_core"], check=check.get(method, "")))
    return rows


def agreement(group, res, model) -> dict:
    """Relative difference of each peer's dense KFAC from ours (exact-type groups only: MC draws differ)."""
    if "MC" in group or isinstance(res.get("hessian_core"), Exception):
        return {}
    P = sum(p.numel() for p in model.parameters())
    if P > 6000:
        return {}
    ours = res["hessian_core"].to_dense()
    out = {}
    if "curvlinops" in res and not isinstance(res["curvlinops"], Exception):
        out["curvlinops"] = f"rel. diff {rel(res['curvlinops'] @ torch.eye(P, dtype=D), ours):.0e}"
    for k, v in res.items():
        if k.startswith("BackPACK") and not isinstance(v, Exception):
            dense = backpack_dense(v, [p.numel() for p in model.parameters()])
            out[k] = f"rel. diff {rel(dense, ours):.0e}"
    return out


# -- quality --------------------------------------------------------------------------------------
def quality_problem(name, setting, model, loss_fn, X, y):
    """Each approximation against the exact GGN and against the GGN's own blocks of the same structure (the
    best any block-diagonal approximation of that structure can do): relative Frobenius errors, relative
    error of the top eigenvalue, and CG iterations on the damped GGN with it as a preconditioner."""
    data = [(X, y)]
    G = hc.GGNOperator(model, loss_fn, data, progress=False).to_dense()
    P = G.shape[0]
    methods = {
        "KFAC exact, expand": lambda: hc.KFACOperator(model, loss_fn, data),
        "KFAC exact, reduce": lambda: hc.KFACOperator(model, loss_fn, data, approx="reduce"),
        "KFAC exact, expand, weight+bias joint": lambda: hc.KFACOperator(model, loss_fn, data, separate_bias=False),
        "KFAC mc (1 sample)": lambda: hc.KFACOperator(model, loss_fn, data, type="mc"),
        "KFAC mc (16 samples)": lambda: hc.KFACOperator(model, loss_fn, data, type="mc", mc_samples=16),
        "KFAC empirical": lambda: hc.KFACOperator(model, loss_fn, data, type="empirical"),
        "EKFAC exact": lambda: hc.EKFACOperator(model, loss_fn, data),
        "EKFAC exact, weight+bias joint": lambda: hc.EKFACOperator(model, loss_fn, data, separate_bias=False),
    }
    if have("curvlinops"):
        methods["curvlinops KFAC type-2"] = lambda: curvlinops_kfac(model, loss_fn, X, y) @ torch.eye(P, dtype=D)
    if isinstance(model, nn.Sequential) and have("backpack"):
        sizes = [p.numel() for p in model.parameters()]
        methods["BackPACK KFLR"] = lambda: backpack_dense(backpack_factors(model, loss_fn, X, y, mc=False), sizes)
    separate = hc.KFACOperator(model, loss_fn, data).blocks
    top = float(torch.linalg.eigvalsh(G)[-1])
    rows = []
    for label, blocks in (("GGN's own blocks (weight, bias)", separate),
                          ("GGN's own blocks (layer)",
                           hc.KFACOperator(model, loss_fn, data, separate_bias=False).blocks)):
        B = own_blocks(G, blocks)
        rows.append(dict(problem=name, setting=setting, P=P, method=label, fro=rel_fro(B, G), fro_blocks=0.0,
                         top=abs(float(torch.linalg.eigvalsh(B)[-1]) - top) / top, top_blocks=0.0,
                         cg=cg_iterations(G, B)))
    for method, fn in methods.items():
        K = fn()
        B = own_blocks(G, K.blocks if isinstance(K, hc.LinearOperator) else separate)
        K = K.to_dense() if isinstance(K, hc.LinearOperator) else K
        top_K, top_B = float(torch.linalg.eigvalsh(K)[-1]), float(torch.linalg.eigvalsh(B)[-1])
        rows.append(dict(problem=name, setting=setting, P=P, method=method, fro=rel_fro(K, G), fro_blocks=rel_fro(K, B),
                         top=abs(top_K - top) / top, top_blocks=abs(top_K - top_B) / top_B, cg=cg_iterations(G, K)))
    rows.append(dict(problem=name, setting=setting, P=P, method="no preconditioner", fro=None, fro_blocks=None,
                     top=None, top_blocks=None, cg=cg_iterations(G, None)))
    return rows


def own_blocks(G, blocks):
    """``G`` restricted to the diagonal blocks ``[(positions, op)]``."""
    B = torch.zeros_like(G)
    for idx, _ in blocks:
        B[idx[:, None], idx[None, :]] = G[idx[:, None], idx[None, :]]
    return B


def rel_fro(K, G) -> float:
    return float((K - G).norm() / G.norm())


def cg_iterations(G, K, tol=1e-6):
    """CG iterations for (G + d I) x = b, d = 1e-3 lambda_max(G), preconditioned by (K + d I)^-1 (or none)."""
    import numpy as np
    import scipy.sparse.linalg as sla

    d = 1e-3 * float(torch.linalg.eigvalsh(G)[-1])
    A = G.numpy() + d * np.eye(G.shape[0])
    M = None if K is None else np.linalg.inv(K.numpy() + d * np.eye(G.shape[0]))
    b = np.random.default_rng(0).standard_normal(G.shape[0])
    its = []
    _, info = sla.cg(A, b, M=M, rtol=tol, maxiter=20 * G.shape[0], callback=its.append)
    return len(its) if info == 0 else f">{len(its)}"


# -- report ---------------------------------------------------------------------------------------
def timing_table(rows) -> str:
    lines = ["| problem | P | what | method | median s | time / ours | check |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['problem']}, {r['setting']} | {r['P']} | {r['what']} | {r['method']} | "
                     f"{r['seconds']:.4f} | {r['ratio']:.2f} | {r['check']} |")
    return "\n".join(lines)


def quality_table(rows) -> str:
    lines = ["| problem | P | method | Frobenius error vs GGN | vs GGN's blocks | top eigenvalue error vs GGN | "
             "vs GGN's blocks | CG iterations |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = ["-" if r[k] is None else fmt.format(r[k]) for k, fmt in
                 (("fro", "{:.3f}"), ("fro_blocks", "{:.3f}"), ("top", "{:.1e}"), ("top_blocks", "{:.1e}"))]
        lines.append(f"| {r['problem']}, {r['setting']} | {r['P']} | {r['method']} | {' | '.join(cells)} | {r['cg']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="write benchmarks/kfac.md")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    load0 = os.getloadavg()[0]
    timing = []
    for prob in timing_problems(args.quick):
        timing += time_problem(*prob, repeats)
        print(timing_table([r for r in timing if r["problem"] == prob[0]]), flush=True)
    quality = []
    for prob in quality_problems(args.quick):
        quality += quality_problem(*prob)
        print(quality_table([r for r in quality if r["problem"] == prob[0]]), flush=True)
    load1 = os.getloadavg()[0]
    header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
              f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, float64, "
              f"{repeats} repeats; load average {load0:.1f} at start and {load1:.1f} at end"
              f"{' (quick)' if args.quick else ''}.")
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kfac.md")
        with open(path) as fh:
            text = fh.read()
        start, end = "<!-- generated: start -->", "<!-- generated: end -->"
        body = (f"{start}\n{header}\n\n### Time\n\n{timing_table(timing)}\n\n### Quality\n\n"
                f"{quality_table(quality)}\n{end}")
        text = text[:text.index(start)] + body + text[text.index(end) + len(end):]
        with open(path, "w") as fh:
            fh.write(text)
        print(f"wrote {path}")
    else:
        print(header)


if __name__ == "__main__":
    main()
