"""Every method side by side, in one process: dense Hessian, HVP, exact diagonal, trace and top eigenvalues
of hessian_core against PyTorch's built-ins and the peer libraries, with ratios and peak memory.

    .venv/bin/python benchmarks/run.py            # full run, writes benchmarks/RESULTS.md (several minutes)
    .venv/bin/python benchmarks/run.py --quick    # smoke run on tiny problems, prints only

Peers are the optional extra ``bench`` (curvlinops-for-pytorch, backpack-for-pytorch, pyhessian,
hessian-eigenthings); one that is not installed is skipped with a printed note. All in float64, on the
same inputs; every answer is compared with an independent reference (relative max-abs difference).
Ratios are ``their time / our time`` (above 1: we are faster), medians of interleaved repeats in one
process, so that the load of a shared machine hits every method alike (see ``measure.py``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import warnings

import torch
from torch import nn
from torch.func import functional_call, jacrev

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from measure import MALLOC_SET, interleaved, peak_bytes  # noqa: E402

import hessian_core as hc  # noqa: E402

D = torch.float64
OURS = "hessian_core"
#: built-ins are skipped when their vmapped intermediates would exceed this (estimate, bytes)
BUILTIN_LIMIT = 2.5e9


# -- problems -------------------------------------------------------------------------------------
def mlp(sizes, act=nn.Tanh):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).to(D)


def cnn(classes=10):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, classes)).to(D)


def mlp_problem(sizes, n, seed=0):
    torch.manual_seed(seed)
    model = mlp(sizes)
    return dict(spec=["mlp", list(sizes), n], name=f"MLP {'-'.join(map(str, sizes))} tanh, N={n}, MSE",
                model=model, loss=nn.MSELoss(),
                X=torch.randn(n, sizes[0], dtype=D), Y=torch.randn(n, sizes[-1], dtype=D), act=sum(sizes) * 3)


def cnn_problem(n, seed=0):
    torch.manual_seed(seed)
    return dict(spec=["cnn", n], name=f"CNN conv4-tanh-pool-conv8-relu-fc10, 8x8, N={n}, CE", model=cnn(),
                loss=nn.CrossEntropyLoss(),
                X=torch.randn(n, 1, 8, 8, dtype=D), Y=torch.randint(0, 10, (n,)), act=4 * 64 * 3 + 32 * 3 + 10)


def numel(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# -- methods --------------------------------------------------------------------------------------
def flat_loss(pb):
    model, loss, X, Y = pb["model"], pb["loss"], pb["X"], pb["Y"]
    named = [(n, p.shape) for n, p in model.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        params, o = {}, 0
        for n, s in named:
            params[n] = theta[o:o + s.numel()].reshape(s)
            o += s.numel()
        return loss(functional_call(model, params, (X,)), Y)

    return f, theta0


def loop_hessian(pb):
    model, loss, X, Y = pb["model"], pb["loss"], pb["X"], pb["Y"]
    params = list(model.parameters())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss(model(X), Y), params, create_graph=True)])
    return torch.stack([torch.cat([r.reshape(-1) for r in torch.autograd.grad(g[i], params, retain_graph=True)])
                        for i in range(g.numel())])


def dense_methods(pb):
    f, theta0 = flat_loss(pb)
    P, N = theta0.numel(), pb["X"].shape[0]
    data = (pb["X"], pb["Y"])
    fns = {
        f"{OURS} (auto)": lambda: hc.hessian(pb["model"], pb["loss"], data, progress=False),
        f"{OURS} (generic)": lambda: hc.hessian(pb["model"], pb["loss"], data, progress=False, strategy="generic"),
    }
    if 8.0 * P * (P + N * pb["act"]) * 2 < BUILTIN_LIMIT:
        fns.update({
            "torch.func.hessian": lambda: torch.func.hessian(f)(theta0),
            "jacrev(jacrev)": lambda: jacrev(jacrev(f))(theta0),
            "autograd.functional (vectorize=True)": lambda: torch.autograd.functional.hessian(f, theta0,
                                                                                               vectorize=True),
        })
    if P <= 2000 and N <= 256:
        fns["autograd.functional (loop)"] = lambda: torch.autograd.functional.hessian(f, theta0)
        fns["per-element loop"] = lambda: loop_hessian(pb)
    return fns


def make_problem(spec):
    return mlp_problem(spec[1], spec[2]) if spec[0] == "mlp" else cnn_problem(spec[1])


def peak_in_subprocess(spec, method) -> int | None:
    """Peak memory of one dense-Hessian method, measured in a fresh process (after one warm-up call), so
    that the allocator state left by the other methods does not enter the number."""
    cmd = [sys.executable, os.path.abspath(__file__), "--peak", json.dumps(spec), method,
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        note(f"peak of {method} not measured: {out.stderr.strip().splitlines()[-1:]}")
        return None


def _peak_child(spec, method):
    pb = make_problem(json.loads(spec))
    fn = dense_methods(pb)[method]
    fn()
    print(peak_bytes(fn))


def rel_diff(a, ref) -> float:
    if not isinstance(a, torch.Tensor):
        return float("nan")
    return float((a.reshape(ref.shape) - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def note(msg):
    print(f"  note: {msg}")


def have(mod):
    return importlib.util.find_spec(mod) is not None


# -- sections -------------------------------------------------------------------------------------
def section_dense(problems, repeats, memory):
    rows = []
    for pb in problems:
        P = numel(pb["model"])
        print(f"\n[dense Hessian] {pb['name']}, P={P}")
        fns = dense_methods(pb)
        med, res = interleaved(fns, repeats)
        ref = res[f"{OURS} (generic)"]
        independent = next((k for k in ("autograd.functional (vectorize=True)", "torch.func.hessian")
                            if isinstance(res.get(k), torch.Tensor)), None)
        if independent:
            ref = res[independent]
        ours = med[f"{OURS} (auto)"]
        size_h = P * P * 8
        for name in fns:
            measurable = memory and not isinstance(res[name], Exception) and med[name] < 3
            pk = peak_in_subprocess(pb["spec"], name) if measurable else None
            rows.append(dict(problem=pb["name"], P=P, N=pb["X"].shape[0], method=name,
                             seconds=med[name], ratio=med[name] / ours, err=rel_diff(res[name], ref),
                             peak=pk, peak_ratio=(pk / size_h if pk is not None else None),
                             failed=str(res[name]).splitlines()[0] if isinstance(res[name], Exception) else None))
            print_row(rows[-1])
    return rows


def section_hvp(problems, repeats):
    rows = []
    if not have("curvlinops"):
        note("curvlinops-for-pytorch not installed: HVP comparison skipped (pip install curvlinops-for-pytorch)")
    for pb in problems:
        model, loss, data = pb["model"], pb["loss"], [(pb["X"], pb["Y"])]
        P = numel(model)
        print(f"\n[HVP] {pb['name']}, P={P}")
        v = torch.randn(P, dtype=D, generator=torch.Generator().manual_seed(1))
        op = hc.HessianOperator(model, loss, data, progress=False)
        fns = {f"{OURS} HessianOperator.matvec": lambda op=op, v=v: op.matvec(v),
               # cold: a new operator per product, so no forward/backward graph is reused between calls
               f"{OURS} hvp (new operator each call)":
               lambda model=model, loss=loss, data=data, v=v: hc.hvp(model, loss, data, v, progress=False)}
        if have("curvlinops"):
            from curvlinops import HessianLinearOperator
            Hc = HessianLinearOperator(model, loss, list(model.parameters()), data, check_deterministic=False)
            fns["curvlinops HessianLinearOperator @ v"] = lambda Hc=Hc, v=v: Hc @ v
        med, res = interleaved(fns, repeats)
        ref = _autograd_hvp(pb, v)
        ours = med[f"{OURS} HessianOperator.matvec"]
        for name in fns:
            rows.append(dict(problem=pb["name"], P=P, N=pb["X"].shape[0], method=name, seconds=med[name],
                             ratio=med[name] / ours, err=rel_diff(res[name], ref)))
            print_row(rows[-1])
    return rows


def _autograd_hvp(pb, v):
    f, theta0 = flat_loss(pb)
    return torch.autograd.functional.hvp(f, theta0, v)[1]


def backpack_diag(pb):
    from backpack import backpack, extend
    from backpack.extensions import DiagHessian

    model, loss = extend(copy.deepcopy(pb["model"])), extend(copy.deepcopy(pb["loss"]))

    def run():
        model.zero_grad()
        value = loss(model(pb["X"]), pb["Y"])
        with backpack(DiagHessian()):
            value.backward()
        return torch.cat([p.diag_h.reshape(-1) for p in model.parameters()])

    return run


def section_diagonal(problems, repeats):
    rows = []
    if not have("backpack"):
        note("backpack-for-pytorch not installed: diagonal comparison skipped (pip install backpack-for-pytorch)")
    for pb in problems:
        model, loss, data = pb["model"], pb["loss"], (pb["X"], pb["Y"])
        P = numel(model)
        print(f"\n[exact diagonal] {pb['name']}, P={P}")
        op = hc.HessianOperator(model, loss, data, progress=False)
        gen = hc.HessianOperator(model, loss, data, progress=False, strategy="generic")
        fns = {f"{OURS} diagonal (auto)": op.diagonal}
        if P <= 3000:
            fns[f"{OURS} diagonal (generic)"] = gen.diagonal
        if have("backpack"):
            fns["BackPACK DiagHessian"] = backpack_diag(pb)
        med, res = interleaved(fns, repeats)
        ref = res.get(f"{OURS} diagonal (generic)")
        if ref is None:
            ref = res[f"{OURS} diagonal (auto)"]
            note("reference for the diagonal: ours (generic path skipped at this P)")
        ours = med[f"{OURS} diagonal (auto)"]
        for name in fns:
            rows.append(dict(problem=pb["name"], P=P, N=pb["X"].shape[0], method=name, seconds=med[name],
                             ratio=med[name] / ours, err=rel_diff(res[name], ref),
                             failed=str(res[name]).splitlines()[0] if isinstance(res[name], Exception) else None))
            print_row(rows[-1])
    return rows


def section_trace(problems, repeats):
    rows = []
    if not have("pyhessian"):
        note("pyhessian not installed: trace comparison skipped (pip install pyhessian)")
    for pb in problems:
        model, loss, data = pb["model"], pb["loss"], (pb["X"], pb["Y"])
        P = numel(model)
        print(f"\n[trace] {pb['name']}, P={P}")
        exact = float(torch.trace(hc.hessian(model, loss, data, progress=False, strategy="generic")))
        fns = {f"{OURS} exact trace (diagonal().sum())":
               lambda model=model, loss=loss, data=data:
               float(hc.HessianOperator(model, loss, data, progress=False).diagonal().sum())}
        if have("pyhessian"):
            from pyhessian import hessian as PyHessian

            def pyh(model=model, loss=loss, data=data):
                torch.manual_seed(0)
                est = PyHessian(copy.deepcopy(model), loss, data=data, cuda=False).trace(maxIter=100, tol=1e-3)
                return float(sum(est) / len(est))

            fns["PyHessian trace (Hutchinson, tol 1e-3)"] = pyh
        med, res = interleaved(fns, repeats)
        ours = med[next(iter(fns))]
        for name in fns:
            val = res[name]
            err = abs(val - exact) / abs(exact) if isinstance(val, float) else float("nan")
            rows.append(dict(problem=pb["name"], P=P, N=pb["X"].shape[0], method=name, seconds=med[name],
                             ratio=med[name] / ours, err=err))
            print_row(rows[-1])
    return rows


def section_eigen(quick):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_eigen.py")
    if not os.path.exists(path):
        note("benchmarks/bench_eigen.py not present: eigenvalue comparison skipped")
        return []
    import bench_eigen

    print("\n[top eigenvalues] via bench_eigen.run")
    try:
        rows = bench_eigen.run(quick=quick)
    except Exception as e:  # noqa: BLE001 - report, keep the other sections
        note(f"bench_eigen.run failed: {type(e).__name__}: {e}")
        return []
    for r in rows:
        print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.items()))
    return rows


# -- output ---------------------------------------------------------------------------------------
def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_row(r):
    extra = ""
    if r.get("peak") is not None:
        extra = f"  peak {r['peak'] / 2**20:7.1f} MiB ({r['peak_ratio']:.2f} x |H|)"
    if r.get("failed"):
        extra += f"  FAILED: {r['failed']}"
    print(f"  {r['method']:<42} {r['seconds']:8.4f} s  x{r['ratio']:7.2f}  rel.diff {r['err']:.1e}{extra}")


def table(rows, cols):
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(fn(r) for _, fn in cols) + " |\n" for r in rows)


def _mib(r):
    return f"{r['peak'] / 2**20:.1f} ({r['peak_ratio']:.2f}x)" if r.get("peak") is not None else "-"


TIME_COLS = [
    ("problem", lambda r: r["problem"]), ("P", lambda r: str(r["P"])), ("method", lambda r: r["method"]),
    ("median s", lambda r: "failed" if r.get("failed") else f"{r['seconds']:.4f}"),
    ("time / ours", lambda r: f"{r['ratio']:.2f}"), ("rel. diff", lambda r: f"{r['err']:.1e}"),
]


def targets(dense, cnn_rows, hvp, diag):
    out = []

    def best_builtin(rows, problem):
        b = [r for r in rows if r["problem"] == problem and not r["method"].startswith(OURS)
             and r["method"] not in ("per-element loop", "autograd.functional (loop)") and not r.get("failed")]
        return min(b, key=lambda r: r["seconds"]) if b else None

    for label, rows, need in (("dense Hessian, MLP", dense, 3.0), ("dense Hessian, small CNN", cnn_rows, 1.0)):
        for problem in dict.fromkeys(r["problem"] for r in rows):
            b = best_builtin(rows, problem)
            if b:
                out.append(f"- {label} ({problem}): fastest built-in `{b['method']}` takes {b['ratio']:.2f}x our "
                           f"time (target >= {need:g}x): **{'met' if b['ratio'] >= need else 'NOT met'}**")
    for r in hvp:
        if r["method"].startswith("curvlinops"):
            cold = next(c for c in hvp if c["problem"] == r["problem"] and "new operator" in c["method"])
            out.append(f"- HVP, cold ({r['problem']}): curvlinops takes {r['seconds'] / cold['seconds']:.2f}x the time "
                       "of a new hessian_core operator per product (no graph reuse)")
    for label, rows, peer in (("HVP", hvp, "curvlinops"), ("exact diagonal", diag, "BackPACK")):
        for r in rows:
            if r["method"].startswith(peer) and not r.get("failed"):
                out.append(f"- {label} ({r['problem']}): {peer} takes {r['ratio']:.2f}x our time (target >= 1x): "
                           f"**{'met' if r['ratio'] >= 1 else 'NOT met'}**")
    for r in dense:
        if r["method"] == f"{OURS} (auto)" and r.get("peak") is not None:
            out.append(f"- peak memory of the dense Hessian ({r['problem']}): {r['peak_ratio']:.2f} x |H| "
                       f"(target < 2x): **{'met' if r['peak_ratio'] < 2 else 'NOT met'}**")
    return "\n".join(out)


def write_markdown(path, meta, dense, cnn_rows, hvp, diag, trace, eigen):
    mem_cols = TIME_COLS + [("peak MiB (x H)", _mib)]
    parts = [
        "# Benchmark results\n\n",
        "Generated by `benchmarks/run.py` (do not edit by hand). ", meta, "\n\n",
        "Ratios are *their time / our time* (above 1: hessian_core is faster), medians of interleaved repeats "
        "in one process on a machine shared with other jobs, so absolute times are noisy and ratios are what "
        "to read. `rel. diff` is max|A - ref| / max|ref| against an independent float64 reference "
        "(autograd.functional vectorized for dense Hessians, autograd HVP, the generic engine path for "
        "diagonals, the dense trace for traces). Peak memory: resident-set high-water mark during the call "
        "above the level before it, result included (method in `benchmarks/measure.py`).\n\n",
        "## Targets\n\n", targets(dense, cnn_rows, hvp, diag), "\n\n",
        "## Dense Hessian, MLPs (growth with P and with the batch size N)\n\n", table(dense, mem_cols), "\n",
        "## Dense Hessian, small CNN with cross-entropy\n\n", table(cnn_rows, mem_cols), "\n",
        "## Hessian-vector product vs curvlinops\n\n",
        "Both operators are built once and applied repeatedly. With one batch, `HessianOperator` keeps the "
        "forward/backward graph between products (invalidated when parameters or data change), so repeated "
        "products cost one double-backward; the `new operator each call` row rebuilds everything per product.\n\n",
        table(hvp, TIME_COLS), "\n",
        "## Exact diagonal vs BackPACK DiagHessian\n\n", table(diag, TIME_COLS), "\n",
        "## Trace vs PyHessian (Hutchinson estimate; rel. diff is its error against the exact trace)\n\n",
        table(trace, TIME_COLS), "\n",
    ]
    if eigen:
        keys = list(dict.fromkeys(k for r in eigen for k in r))
        parts += ["## Top-5 eigenvalues (from `bench_eigen.run`, the spectral engineer's benchmark)\n\n",
                  table(eigen, [(k, (lambda r, k=k: _fmt(r.get(k, "")))) for k in keys]), "\n"]
    with open(path, "w") as fh:
        fh.write("".join(parts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny problems, 2 repeats, prints only")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 5, quick 2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every method (default 1: stable on a shared machine)")
    ap.add_argument("--out", default=None, help="markdown file (default benchmarks/RESULTS.md unless --quick)")
    ap.add_argument("--no-memory", action="store_true", help="skip peak-memory measurements")
    ap.add_argument("--no-eigen", action="store_true", help="skip the eigenvalue section")
    ap.add_argument("--peak", nargs=2, metavar=("SPEC", "METHOD"), help=argparse.SUPPRESS)  # child process
    args = ap.parse_args(argv)
    # Peers' own warnings (BackPACK hooks, PyHessian's create_graph backward) are not results.
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    if args.peak:
        _peak_child(*args.peak)
        return
    malloc_ok = MALLOC_SET
    repeats = args.repeats or (2 if args.quick else 5)
    load0 = os.getloadavg()
    if args.quick:
        dense_pbs = [mlp_problem((5, 8, 8, 3), 16)]
        cnn_pbs, hvp_pbs = [cnn_problem(8)], [mlp_problem((5, 8, 8, 3), 16), cnn_problem(8)]
        diag_pbs, trace_pbs = [mlp_problem((5, 8, 8, 3), 16)], [mlp_problem((5, 8, 8, 3), 16)]
    else:
        ref = (20, 32, 32, 5)
        dense_pbs = [mlp_problem(ref, 64), mlp_problem((20, 16, 16, 5), 64), mlp_problem((20, 48, 48, 5), 64),
                     mlp_problem(ref, 16), mlp_problem(ref, 256), mlp_problem(ref, 1024)]
        cnn_pbs = [cnn_problem(32)]
        hvp_pbs = [mlp_problem(ref, 64), mlp_problem((784, 256, 10), 256), cnn_problem(32)]
        diag_pbs = [mlp_problem(ref, 64), mlp_problem((784, 128, 10), 128), cnn_problem(32)]
        trace_pbs = [mlp_problem(ref, 64), cnn_problem(32)]
    dense = section_dense(dense_pbs, repeats, memory=not args.no_memory)
    cnn_rows = section_dense(cnn_pbs, repeats, memory=not args.no_memory)
    hvp = section_hvp(hvp_pbs, repeats)
    diag = section_diagonal(diag_pbs, repeats)
    trace = section_trace(trace_pbs, repeats)
    eigen = [] if args.no_eigen else section_eigen(args.quick)
    print("\nTargets:\n" + targets(dense, cnn_rows, hvp, diag))
    out = args.out or (None if args.quick else os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"))
    if out:
        load1 = os.getloadavg()
        meta = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                f"{args.threads}, float64, {repeats} repeats; load average {load0[0]:.1f} at start and "
                f"{load1[0]:.1f} at end{'' if malloc_ok else ' (mallopt unavailable: peaks less exact)'}.")
        write_markdown(out, meta, dense, cnn_rows, hvp, diag, trace, eigen)
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
