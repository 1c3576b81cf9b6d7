"""Every method side by side, in one process: dense Hessians, block products, fixed costs of a product, exact
diagonals, traces and top eigenvalues of hessian_core against PyTorch's built-ins (torch.func) and the peer
libraries (curvlinops, BackPACK, PyHessian, hessian-eigenthings), with ratios, peak memory and growth plots.

    .venv/bin/python benchmarks/run.py            # full run: writes benchmarks/RESULTS.md and growth.png
    .venv/bin/python benchmarks/run.py --quick    # smoke run on tiny problems, prints only

Peers are the optional extra ``bench``; one that is not installed is skipped with a printed note. All in
float64, on the same inputs; every answer is compared with an independent reference (relative max-abs
difference). Ratios are ``their time / our time`` (above 1: we are faster), medians of interleaved repeats
in one process with the allocator's default settings, so that the load of a shared machine hits every method
alike, each timed call right after an untimed one of the same method; peak memory is measured apart, one
fresh process per method (see ``measure.py``).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from measure import interleaved, peak_bytes, setup_malloc  # noqa: E402

import hessian_core as hc  # noqa: E402

D = torch.float64
OURS = "hessian_core"
#: built-ins are skipped when their vmapped intermediates would exceed this (estimate, bytes)
BUILTIN_LIMIT = 2.5e9
BLOCK = 8  # columns of the block products


# -- problems: specs are JSON lists, so that a child process can rebuild the same problem ---------------
def mlp(sizes, act=nn.Tanh):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1]).to(D)


def ln_mlp(sizes):
    """Linear - LayerNorm - GELU blocks, a Linear head."""
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1])).to(D)


def _trained_bn(model):
    """BatchNorm with running statistics and affine parameters away from their defaults."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=g, dtype=D))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=D))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=D))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g, dtype=D))
    return model.eval()


def make_problem(spec):
    kind = spec[0]
    torch.manual_seed(spec[-1] if kind == "growth" else 0)
    if kind in ("mlp", "tiny"):
        sizes, n = spec[1], spec[2]
        return dict(spec=spec, name=f"MLP {'-'.join(map(str, sizes))} tanh, N={n}, MSE", model=mlp(sizes),
                    loss=nn.MSELoss(), X=torch.randn(n, sizes[0], dtype=D), Y=torch.randn(n, sizes[-1], dtype=D))
    if kind == "ln_mlp":
        sizes, n = spec[1], spec[2]
        return dict(spec=spec, name=f"MLP {'-'.join(map(str, sizes))} LayerNorm+GELU, N={n}, CE",
                    model=ln_mlp(sizes), loss=nn.CrossEntropyLoss(), X=torch.randn(n, sizes[0], dtype=D),
                    Y=torch.randint(0, sizes[-1], (n,)))
    if kind == "cnn":  # the tanh CNN of earlier runs
        n = spec[1]
        model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3),
                              nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)).to(D)
        return dict(spec=spec, name=f"CNN conv4-tanh-pool-conv8-relu-fc10, 8x8, N={n}, CE", model=model,
                    loss=nn.CrossEntropyLoss(), X=torch.randn(n, 1, 8, 8, dtype=D), Y=torch.randint(0, 10, (n,)))
    if kind == "cnn_bn":
        n, c = spec[1], spec[2]
        model = _trained_bn(nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c, 2 * c, 3), nn.BatchNorm2d(2 * c), nn.ReLU(), nn.Flatten(), nn.Linear(2 * c * 4, 10)).to(D))
        return dict(spec=spec, name=f"CNN conv{c}-BN-relu-pool-conv{2 * c}-BN-relu-fc10, 8x8, N={n}, CE",
                    model=model, loss=nn.CrossEntropyLoss(), X=torch.randn(n, 1, 8, 8, dtype=D),
                    Y=torch.randint(0, 10, (n,)))
    if kind == "relu_cnn":
        n, c, channels = spec[1], spec[2], spec[3]
        model = nn.Sequential(nn.Conv2d(channels, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(c * 4, 10)).to(D)
        return dict(spec=spec, name=f"ReLU CNN {channels}x8x8, conv{c}-conv{c}-fc10, N={n}, CE", model=model,
                    loss=nn.CrossEntropyLoss(), X=torch.randn(n, channels, 8, 8, dtype=D),
                    Y=torch.randint(0, 10, (n,)))
    if kind == "growth":  # an MLP 20-w-w-5 with N samples
        w, n = spec[1], spec[2]
        return make_problem(["mlp", [20, w, w, 5], n])
    raise ValueError(spec)


def numel(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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


def reference_hessian(pb):
    """Loop of double backwards (torch.autograd.functional.hessian, not vectorized): right where the vmapped
    built-ins are not (LayerNorm)."""
    f, theta0 = flat_loss(pb)
    return torch.autograd.functional.hessian(f, theta0)


def loop_hessian(pb):
    model, loss, X, Y = pb["model"], pb["loss"], pb["X"], pb["Y"]
    params = list(model.parameters())
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss(model(X), Y), params, create_graph=True)])
    return torch.stack([torch.cat([r.reshape(-1) for r in torch.autograd.grad(g[i], params, retain_graph=True)])
                        for i in range(g.numel())])


def curvlinops_op(pb):
    from curvlinops import HessianLinearOperator

    model = pb["model"]
    return HessianLinearOperator(model, pb["loss"], [p for p in model.parameters() if p.requires_grad],
                                 [(pb["X"], pb["Y"])], check_deterministic=False)


def have(mod):
    return importlib.util.find_spec(mod) is not None


def note(msg):
    print(f"  note: {msg}")


# -- method sets (by section; a child process rebuilds one to measure its memory) ----------------------
def dense_methods(pb):
    f, theta0 = flat_loss(pb)
    P, N = theta0.numel(), pb["X"].shape[0]
    data = (pb["X"], pb["Y"])
    act = sum(t.numel() for t in _activations(pb)) // N
    fns = {
        f"{OURS} (auto)": lambda: hc.hessian(pb["model"], pb["loss"], data, progress=False),
        f"{OURS} (generic)": lambda: hc.hessian(pb["model"], pb["loss"], data, progress=False, strategy="generic"),
    }
    if 8.0 * P * (P + N * act) * 2 < BUILTIN_LIMIT:
        fns.update({
            "torch.func.hessian": lambda: torch.func.hessian(f)(theta0),
            "jacrev(jacrev)": lambda: jacrev(jacrev(f))(theta0),
            "autograd.functional (vectorize=True)": lambda: torch.autograd.functional.hessian(f, theta0,
                                                                                               vectorize=True),
        })
    if have("curvlinops") and P <= 4000:
        fns["curvlinops (H @ I)"] = lambda: curvlinops_op(pb) @ torch.eye(P, dtype=D)
    if P <= 2000 and N <= 256:
        fns["per-element loop"] = lambda: loop_hessian(pb)
    return fns


def _activations(pb):
    out = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: out.append(o)) for m in pb["model"].modules()]
    with torch.no_grad():
        pb["model"](pb["X"])
    for h in hooks:
        h.remove()
    return [o for o in out if isinstance(o, torch.Tensor)]


def product_methods(pb):
    """A block of BLOCK columns against BLOCK single products (each a fresh graph, as outside reuse())."""
    model, loss, data = pb["model"], pb["loss"], (pb["X"], pb["Y"])
    P = numel(model)
    g = torch.Generator().manual_seed(1)
    V = torch.randn(P, BLOCK, dtype=D, generator=g)
    op = hc.HessianOperator(model, loss, data, progress=False)
    fns = {f"{OURS} op @ V ({BLOCK} columns)": lambda: op @ V,
           f"{OURS} {BLOCK} x op.matvec": lambda: torch.stack([op.matvec(V[:, j]) for j in range(BLOCK)], 1),
           f"{OURS} one op.matvec": lambda: op.matvec(V[:, 0])}
    if have("curvlinops"):
        Hc = curvlinops_op(pb)
        fns[f"curvlinops H @ V ({BLOCK} columns)"] = lambda: Hc @ V
        fns[f"curvlinops {BLOCK} x H @ v"] = lambda: torch.stack([Hc @ V[:, j] for j in range(BLOCK)], 1)
    f, theta0 = flat_loss(pb)

    def func_block():  # reverse-over-reverse: forward mode trips on some torch losses
        _, pullback = torch.func.vjp(torch.func.grad(f), theta0)
        return torch.func.vmap(pullback)(V.T)[0].T

    fns[f"torch.func vmap(vjp(grad)) ({BLOCK} columns)"] = func_block
    return fns


FIXED_CALLS = 100  # products per timed call of the fixed-cost methods (sub-millisecond each: amortize the timer)


def fixed_cost_methods(pb):
    """One product right after an in-place parameter update (as in a Newton or Hessian-free step); each
    method makes FIXED_CALLS of them per call."""
    model, loss, X, Y = pb["model"], pb["loss"], pb["X"], pb["Y"]
    params = [p for p in model.parameters() if p.requires_grad]
    P = numel(model)
    v = torch.randn(P, dtype=D, generator=torch.Generator().manual_seed(1))
    vs = list(torch.split(v, [p.numel() for p in params]))
    vs = [t.reshape(p.shape) for t, p in zip(vs, params)]
    op = hc.HessianOperator(model, loss, (X, Y), progress=False)

    def update():
        with torch.no_grad():
            params[0].add_(1e-12)

    def raw():
        update()
        grads = torch.autograd.grad(loss(model(X), Y), params, create_graph=True)
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, vs)])

    def ours():
        update()
        return op.matvec(v)

    kept = hc.HessianOperator(model, loss, (X, Y), progress=False)
    scope = kept.reuse()  # a scope left open (and referenced): its graph is kept across the timed calls
    scope.__enter__()

    fns = {"raw autograd double backward (after update)": raw,
           f"{OURS} op.matvec (after update)": ours,
           f"{OURS} hvp (new operator each call)": lambda: (update(), hc.hvp(model, loss, (X, Y), v,
                                                                               progress=False))[1]}
    fns[f"{OURS} op.matvec inside op.reuse(), unchanged parameters (kept graph)"] = lambda: (scope, kept.matvec(v))[1]
    X32 = X.float()
    op32 = hc.HessianOperator(model, loss, (X32, Y.float()), progress=False)
    fns[f"{OURS} op.matvec, float32 data into the float64 model"] = lambda: (update(), op32.matvec(v))[1]
    if have("curvlinops"):
        Hc = curvlinops_op(pb)
        fns["curvlinops H @ v (after update)"] = lambda: (update(), Hc @ v)[1]
    f, theta0 = flat_loss(pb)
    fns["torch.func vjp(grad) (after update)"] = lambda: (update(), torch.func.vjp(torch.func.grad(f), theta0)[1](v))[1]
    return {name: _repeated(fn) for name, fn in fns.items()}


def _repeated(fn):
    def run():
        for _ in range(FIXED_CALLS - 1):
            fn()
        return fn()

    return run


def diagonal_methods(pb):
    model, loss, data = pb["model"], pb["loss"], (pb["X"], pb["Y"])
    P = numel(model)
    op = hc.HessianOperator(model, loss, data, progress=False)
    fns = {f"{OURS} diagonal (auto)": op.diagonal}
    if P <= 4000:
        gen = hc.HessianOperator(model, loss, data, progress=False, strategy="generic")
        fns[f"{OURS} diagonal (generic)"] = gen.diagonal
    if have("backpack"):
        fns["BackPACK DiagHessian"] = backpack_diag(pb)
    return fns


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


def trace_methods(pb):
    model, loss, data = pb["model"], pb["loss"], (pb["X"], pb["Y"])
    fns = {f"{OURS} exact trace (diagonal().sum())":
           lambda: float(hc.HessianOperator(model, loss, data, progress=False).diagonal().sum()),
           f"{OURS} Hutchinson, 100 products":
           lambda: float(hc.trace(hc.HessianOperator(model, loss, data, progress=False), num_matvecs=100,
                                  method="hutchinson", seed=0))}
    if have("pyhessian"):
        from pyhessian import hessian as PyHessian

        def pyh():
            torch.manual_seed(0)
            est = PyHessian(copy.deepcopy(model), loss, data=data, cuda=False).trace(maxIter=100, tol=1e-3)
            return float(sum(est) / len(est))

        fns["PyHessian trace (Hutchinson, tol 1e-3)"] = pyh
    return fns


def growth_methods(pb):
    f, theta0 = flat_loss(pb)
    model, loss, X, Y = pb["model"], pb["loss"], pb["X"], pb["Y"]
    params = list(model.parameters())
    v = torch.randn(theta0.numel(), dtype=D, generator=torch.Generator().manual_seed(1))
    vs = [t.reshape(p.shape) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]
    op = hc.HessianOperator(model, loss, (X, Y), progress=False)

    def raw():
        grads = torch.autograd.grad(loss(model(X), Y), params, create_graph=True)
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, vs)])

    # products FIXED_CALLS at a time (sub-millisecond each; after a dense Hessian the first one runs cold)
    fns = {"dense: hessian_core": lambda: hc.hessian(model, loss, (X, Y), progress=False),
           "product: hessian_core op.matvec": _repeated(lambda: op.matvec(v)),
           "product: raw double backward": _repeated(raw)}
    if 8.0 * theta0.numel() * (theta0.numel() + X.shape[0] * 200) * 2 < BUILTIN_LIMIT:
        fns["dense: torch.func.hessian"] = lambda: torch.func.hessian(f)(theta0)
    return fns


SECTIONS = {"dense": dense_methods, "products": product_methods, "fixed": fixed_cost_methods,
            "diagonal": diagonal_methods, "trace": trace_methods, "growth": growth_methods}


# -- memory in child processes ----------------------------------------------------------------------
def peak_in_subprocess(section, spec, method) -> int | None:
    """Peak memory of one method in a fresh process (after one warm-up call), allocator tuned for measuring
    there only (``measure.setup_malloc``), so that neither the other methods nor that setting enter."""
    cmd = [sys.executable, os.path.abspath(__file__), "--peak", section, json.dumps(spec), method,
           "--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        note(f"peak of {method} not measured: {out.stderr.strip().splitlines()[-1:]}")
        return None


def _peak_child(section, spec, method):
    setup_malloc()
    warnings.filterwarnings("ignore")
    pb = make_problem(json.loads(spec))
    fn = SECTIONS[section](pb)[method]
    fn()
    print(peak_bytes(fn))


# -- measuring -------------------------------------------------------------------------------------
def rel_diff(a, ref) -> float:
    if not isinstance(a, torch.Tensor) or ref is None:
        return float("nan")
    return float((a.reshape(ref.shape) - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def measure(section, pb, repeats, ours, ref=None, memory=False, exclude=(), rel=True):
    """Time every method of ``section`` on ``pb``; rows with ratio to ``ours``, error against ``ref`` (a
    tensor, a method name, or a function of the results) and, with ``memory``, the peak of each method."""
    fns = {k: fn for k, fn in SECTIONS[section](pb).items() if k not in exclude}
    med, res = interleaved(fns, repeats)
    if callable(ref):
        ref = ref(res)
    elif isinstance(ref, str):
        ref = res.get(ref)
    rows = []
    for name in fns:
        failed = isinstance(res[name], Exception)
        pk = peak_in_subprocess(section, pb["spec"], name) if memory and not failed and med[name] < 5 else None
        rows.append(dict(problem=pb["name"], P=numel(pb["model"]), N=pb["X"].shape[0], method=name,
                         seconds=med[name], ratio=med[name] / med[ours],
                         err=rel_diff(res[name], ref) if rel else res[name], peak=pk,
                         failed=str(res[name]).splitlines()[0] if failed else None))
        print_row(rows[-1])
    return rows


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def print_row(r):
    extra = f"  peak {r['peak'] / 2**20:8.2f} MiB" if r.get("peak") is not None else ""
    if r.get("failed"):
        extra += f"  FAILED: {r['failed']}"
    err = r["err"] if isinstance(r["err"], float) else float("nan")
    print(f"  {r['method']:<56} {r['seconds']:9.5f} s  x{r['ratio']:7.2f}  diff {err:.1e}{extra}")


# -- sections --------------------------------------------------------------------------------------
def section_dense(problems, repeats, memory):
    rows = []
    for pb in problems:
        print(f"\n[dense Hessian] {pb['name']}, P={numel(pb['model'])}")
        ref = reference_hessian(pb)
        rows += measure("dense", pb, repeats, f"{OURS} (auto)", ref, memory)
        P = numel(pb["model"])
        for r in rows[-len(SECTIONS["dense"](pb)):]:
            r["size_h"] = P * P * 8
    return rows


def section_products(pb, repeats, memory):
    print(f"\n[block products] {pb['name']}, P={numel(pb['model'])}")
    f, theta0 = flat_loss(pb)
    V = torch.randn(theta0.numel(), BLOCK, dtype=D, generator=torch.Generator().manual_seed(1))
    ref = torch.stack([torch.autograd.functional.hvp(f, theta0, V[:, j])[1] for j in range(BLOCK)], 1)
    rows = measure("products", pb, repeats, f"{OURS} op @ V ({BLOCK} columns)", None, memory, rel=False)
    for r in rows:  # the single product answers one column
        got = r["err"]
        r["err"] = rel_diff(got, ref[:, :1] if r["method"].endswith("one op.matvec") else ref)
    op = hc.HessianOperator(pb["model"], pb["loss"], (pb["X"], pb["Y"]), progress=False)
    op @ V
    rows.append(dict(problem=pb["name"], P=numel(pb["model"]), N=pb["X"].shape[0], method="(chosen by op.plan())",
                     seconds=float("nan"), ratio=float("nan"), err=float("nan"), peak=None,
                     failed=None, note=op.plan()["block products"]))
    print(f"  block products: {rows[-1]['note']}")
    return rows


def section_fixed(pb, repeats):
    print(f"\n[fixed costs of a product] {pb['name']}, P={numel(pb['model'])}")
    rows = measure("fixed", pb, repeats, "raw autograd double backward (after update)", None, rel=False)
    for r in rows:  # the parameters move by 1e-12 per call: the answers are checked elsewhere
        r["err"] = float("nan")
        r["seconds"] /= FIXED_CALLS
    return rows


def section_diagonal(problems, repeats):
    rows = []
    for pb in problems:
        print(f"\n[exact diagonal] {pb['name']}, P={numel(pb['model'])}")
        ref = reference_hessian(pb).diagonal() if numel(pb["model"]) <= 4000 else f"{OURS} diagonal (generic)"
        rows += measure("diagonal", pb, repeats, f"{OURS} diagonal (auto)", ref)
    return rows


def section_trace(problems, repeats, memory):
    rows = []
    for pb in problems:
        print(f"\n[trace] {pb['name']}, P={numel(pb['model'])}")
        exact = float(torch.trace(reference_hessian(pb)))
        got = measure("trace", pb, repeats, f"{OURS} Hutchinson, 100 products", None, memory, rel=False)
        for r in got:
            r["err"] = abs(r["err"] - exact) / abs(exact) if isinstance(r["err"], float) else float("nan")
        rows += got
    return rows


def section_growth(quick, memory, repeats):
    """Time and memory of the dense Hessian and of one product against P (widths) and N (batch sizes)."""
    widths = [8, 16, 32] if quick else [8, 16, 32, 48, 64]
    batches = [8, 64] if quick else [8, 64, 256, 1024]
    rows = []
    for axis, specs in (("P", [["growth", w, 64, 0] for w in widths]),
                        ("N", [["growth", 32, n, 0] for n in batches])):
        for spec in specs:
            pb = make_problem(spec)
            print(f"\n[growth in {axis}] {pb['name']}, P={numel(pb['model'])}")
            pb["spec"] = spec
            med, _ = interleaved(SECTIONS["growth"](pb), repeats)
            for name, sec in med.items():
                sec = sec / FIXED_CALLS if name.startswith("product") else sec
                pk = peak_in_subprocess("growth", spec, name) if memory else None
                rows.append(dict(axis=axis, P=numel(pb["model"]), N=pb["X"].shape[0], method=name, seconds=sec,
                                 peak=pk))
                print(f"  {name:<40} {sec:9.5f} s" + (f"  peak {pk / 2**20:8.2f} MiB" if pk else ""))
    return rows


def plot_growth(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        note("matplotlib not installed: growth plot skipped")
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, axis in enumerate(("P", "N")):
        sub = [r for r in rows if r["axis"] == axis]
        for name in dict.fromkeys(r["method"] for r in sub):
            pts = sorted((r[axis], r["seconds"], r["peak"]) for r in sub if r["method"] == name)
            style = "-" if name.startswith("dense") else "--"
            axes[0][col].plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
            mem = [(p[0], p[2] / 2**20) for p in pts if p[2]]
            if mem:
                axes[1][col].plot([m[0] for m in mem], [m[1] for m in mem], style, marker="o", label=name)
        for row, what in enumerate(("seconds", "peak MiB")):
            ax = axes[row][col]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(sorted({r[axis] for r in sub}))
            ax.set_xlabel(f"{axis} ({'parameters, MLP 20-w-w-5, N=64' if axis == 'P' else 'samples, P=1893'})")
            ax.set_ylabel(what)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Growth: dense Hessian and one Hessian-vector product (float64, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def section_eigen(quick):
    path = os.path.join(HERE, "bench_eigen.py")
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


# -- output ----------------------------------------------------------------------------------------
def table(rows, cols):
    head = "| " + " | ".join(c for c, _ in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(fn(r) for _, fn in cols) + " |\n" for r in rows)


def _mib(r):
    if r.get("peak") is None:
        return "-"
    size = r.get("size_h")
    return f"{r['peak'] / 2**20:.2f}" + (f" ({r['peak'] / size:.2f}x H)" if size else "")


TIME_COLS = [
    ("problem", lambda r: r["problem"]), ("P", lambda r: str(r["P"])), ("method", lambda r: r["method"]),
    ("median s", lambda r: "failed" if r.get("failed") else (r.get("note") or f"{r['seconds']:.5f}")),
    ("time / ours", lambda r: "" if r.get("note") else f"{r['ratio']:.2f}"),
    ("rel. diff", lambda r: "" if r.get("note") else f"{r['err']:.1e}"),
]
MEM_COLS = TIME_COLS + [("peak MiB", _mib)]


def _find(rows, problem, start):
    return next((r for r in rows if r["problem"] == problem and r["method"].startswith(start)), None)


def targets(dense, products, fixed, diag):
    out = []
    builtins = ("torch.func.hessian", "jacrev(jacrev)", "autograd.functional (vectorize=True)")
    for problem in dict.fromkeys(r["problem"] for r in dense):
        ours = _find(dense, problem, f"{OURS} (auto)")
        tried = [r for r in dense if r["problem"] == problem and r["method"] in builtins and not r.get("failed")]
        wrong = [r["method"] for r in tried if not r["err"] <= 1e-8]  # a wrong answer is no competitor
        cands = [r for r in tried if r["method"] not in wrong]
        if not cands:
            continue
        best = min(cands, key=lambda r: r["seconds"])
        need = 6.0 if ("BN" in problem or "LayerNorm" in problem) else 3.0
        out.append(f"- dense Hessian ({problem}): fastest correct built-in `{best['method']}` takes "
                   f"{best['ratio']:.2f}x our "
                   f"time (target >= {need:g}x): **{'met' if best['ratio'] >= need else 'NOT met'}**"
                   + (f"; not counted, wrong answers (rel. diff > 1e-8) from {', '.join(wrong)}" if wrong else "")
                   + (f"; our peak {ours['peak'] / ours['size_h']:.2f} x |H|" if ours and ours.get("peak") else ""))
    for problem in dict.fromkeys(r["problem"] for r in products):
        block = _find(products, problem, f"{OURS} op @ V")
        loop = _find(products, problem, f"{OURS} {BLOCK} x op.matvec")
        one = _find(products, problem, f"{OURS} one op.matvec")
        t = block["seconds"] / loop["seconds"]
        line = (f"- block product ({problem}): `op @ V` with {BLOCK} columns takes {t:.2f}x the time of {BLOCK} "
                f"matvecs (target <= 1.0x): **{'met' if t <= 1.0 else 'NOT met'}**")
        if block.get("peak") and one.get("peak"):
            m = block["peak"] / one["peak"]
            line += f"; peak {m:.2f}x one matvec's (target <= 3x): **{'met' if m <= 3 else 'NOT met'}**"
        out.append(line)
    for problem in dict.fromkeys(r["problem"] for r in fixed):
        ours = _find(fixed, problem, f"{OURS} op.matvec (after update)")
        out.append(f"- product after an in-place update ({problem}): {ours['ratio']:.2f}x a raw autograd double "
                   f"backward (target <= 1.5x): **{'met' if ours['ratio'] <= 1.5 else 'NOT met'}**")
    for r in diag:
        if r["method"].startswith("BackPACK") and not r.get("failed") and "ReLU" in r["problem"]:
            ok = r["ratio"] >= 1 and r["err"] <= 1e-8
            out.append(f"- exact diagonal ({r['problem']}): BackPACK takes {r['ratio']:.2f}x our time, agreeing to "
                       f"{r['err']:.1e} (targets >= 1x, <= 1e-8): **{'met' if ok else 'NOT met'}**")
    return "\n".join(out)


def write_markdown(path, meta, dense, products, fixed, diag, trace, growth, figure, eigen):
    parts = [
        "# Benchmark results\n\n",
        "Generated by `benchmarks/run.py` (do not edit by hand). ", meta, "\n\n",
        "Ratios are *their time / our time* (above 1: hessian_core is faster), medians of interleaved repeats "
        "in one process on a machine shared with other jobs, with the allocator's default settings, so absolute "
        "times are noisy and ratios are what to read. Each timed call follows an untimed call of the same method "
        "(except methods slower than 3 s), so no method pays for page faults on memory the method before it "
        "gave back to the kernel (on this machine about 10 us a page: our 57 ms LayerNorm Hessian took 150 ms "
        "right after torch.func.hessian). `rel. diff` is max|A - ref| / max|ref| against an "
        "independent float64 reference (a loop of double backwards for dense Hessians and diagonals, autograd "
        "HVPs for products, the exact trace for traces). Peak memory: resident-set high-water mark during the "
        "call above the level before it, result included, each method in a fresh process (method in "
        "`benchmarks/measure.py`).\n\n",
        "## Targets\n\n", targets(dense, products, fixed, diag), "\n\n",
        "## Dense Hessian\n\n",
        "Peers: PyTorch's built-ins and curvlinops (its operator applied to the identity). torch.func.hessian and "
        "jacrev(jacrev) give wrong (asymmetric) Hessians for LayerNorm networks in torch 2.13 (see rel. diff).\n\n",
        table(dense, MEM_COLS), "\n",
        f"## Block products: `op @ V` with {BLOCK} columns against {BLOCK} products\n\n",
        "Each `op.matvec` outside `op.reuse()` builds its own graph (one forward and backward) as a product after "
        "a parameter change must; `op @ V` builds one graph per batch and applies the columns by the faster "
        "(measured once per operator) of a loop of double backwards and batched double backwards.\n\n",
        table(products, MEM_COLS), "\n",
        "## Fixed costs of one product (tiny model)\n\n",
        "Parameters are changed in place before each call (except inside `op.reuse()`, where nothing may change), "
        "so every method rebuilds its graph.\n\n", table(fixed, TIME_COLS[:5]), "\n",
        "## Exact diagonal vs BackPACK DiagHessian\n\n", table(diag, TIME_COLS), "\n",
        "## Trace vs PyHessian (rel. diff: error against the exact trace)\n\n", table(trace, MEM_COLS), "\n",
        "## Growth with P and N\n\n",
        (f"![growth]({os.path.basename(figure)})\n\n" if figure else ""),
        table(growth, [("axis", lambda r: r["axis"]), ("P", lambda r: str(r["P"])), ("N", lambda r: str(r["N"])),
                       ("method", lambda r: r["method"]), ("median s", lambda r: f"{r['seconds']:.5f}"),
                       ("peak MiB", lambda r: f"{r['peak'] / 2**20:.2f}" if r.get("peak") else "-")]), "\n",
    ]
    if eigen:
        keys = list(dict.fromkeys(k for r in eigen for k in r))
        parts += ["## Top-5 eigenvalues (from `bench_eigen.run`)\n\n",
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
    ap.add_argument("--peak", nargs=3, metavar=("SECTION", "SPEC", "METHOD"), help=argparse.SUPPRESS)  # child
    args = ap.parse_args(argv)
    # Peers' own warnings (BackPACK hooks, PyHessian's create_graph backward) are not results.
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    if args.peak:
        _peak_child(*args.peak)
        return
    repeats = args.repeats or (2 if args.quick else 5)
    memory = not args.no_memory
    load0 = os.getloadavg()
    if args.quick:
        dense_pbs = [make_problem(["cnn_bn", 8, 2]), make_problem(["ln_mlp", [5, 8, 8, 3], 16])]
        product_pb, fixed_pb = make_problem(["cnn_bn", 8, 2]), make_problem(["tiny", [10, 12, 5], 8])
        diag_pbs = [make_problem(["relu_cnn", 8, 4, 1])]
        trace_pbs = [make_problem(["cnn_bn", 8, 2])]
    else:
        dense_pbs = [make_problem(["cnn_bn", 32, 4]), make_problem(["ln_mlp", [20, 32, 32, 5], 64]),
                     make_problem(["mlp", [20, 32, 32, 5], 64]), make_problem(["cnn", 32])]
        product_pb, fixed_pb = make_problem(["cnn_bn", 32, 4]), make_problem(["tiny", [10, 12, 5], 8])
        diag_pbs = [make_problem(["relu_cnn", 32, 8, 1]), make_problem(["relu_cnn", 32, 16, 3]),
                    make_problem(["mlp", [20, 32, 32, 5], 64])]
        trace_pbs = [make_problem(["cnn_bn", 32, 4])]
    dense = section_dense(dense_pbs, repeats, memory)
    products = section_products(product_pb, repeats, memory)
    fixed = section_fixed(fixed_pb, max(repeats, 20))
    diag = section_diagonal(diag_pbs, repeats)
    trace = section_trace(trace_pbs, repeats, memory)
    growth = section_growth(args.quick, memory, repeats)
    eigen = [] if args.no_eigen else section_eigen(args.quick)
    print("\nTargets:\n" + targets(dense, products, fixed, diag))
    out = args.out or (None if args.quick else os.path.join(HERE, "RESULTS.md"))
    if out:
        figure = plot_growth(growth, os.path.join(os.path.dirname(os.path.abspath(out)), "growth.png"))
        load1 = os.getloadavg()
        meta = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
                f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
                f"{args.threads}, float64, {repeats} repeats; load average {load0[0]:.1f} at start and "
                f"{load1[0]:.1f} at end.")
        write_markdown(out, meta, dense, products, fixed, diag, trace, growth, figure, eigen)
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
