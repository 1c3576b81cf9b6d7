"""A GPT-2-style language model (random init, 16M parameters on CPU, 51M on a GPU): time and peak memory
of the gradient, Hessian-vector product, GGN-vector product and top-5 Hessian eigenvalues, hessian_core
against raw double backward, curvlinops and hessian-eigenthings on the same model and batch, in one run;
then how the costs grow with the sequence length and the width.

    python benchmarks/bench_transformer.py [--device cpu|cuda] [--quick] [--no-peers] [--no-eigen]
                                           [--no-growth] [--repeats N]

The model is nanoGPT's: token and position embeddings, pre-LayerNorm blocks of causal self-attention written
with ``F.scaled_dot_product_attention`` and a GELU MLP, the output projection tied to the token embedding
(vocabulary 50257). The loss is next-token cross-entropy (hessian_core: ``CausalLMLoss``; the peers: the
same ``F.cross_entropy`` on shifted, flattened logits). Everything is float32.

Peers run as a user would call them first (the model as it is: PyTorch picks a fused attention kernel,
which has no double backward and no forward mode); when that fails the failure is recorded and they run
again with the user's fix, ``sdpa_kernel(SDPBackend.MATH)`` around every call. The raw double backward
(``autograd.grad(create_graph=True)`` twice) needs that fix too: it is the reference for the HVP.

Time: on CPU, seconds of process CPU time with one torch thread (the machine is shared; CPU time is what a
method costs, wall time is what the neighbours cost); on CUDA, wall time after synchronizing. Medians of
interleaved repeats. Peak memory: on CPU the resident-set high-water mark above the level before the
call (:mod:`measure`), on CUDA ``torch.cuda.max_memory_allocated`` above the level before. Results include
what each method returns (a flat vector for hessian_core: one more copy of the parameters).

Targets (issue 14): HVP within 1.3x of raw double backward; GGN product at most ~1.5x a gradient's peak.
On a machine without CUDA, ``--device cuda`` says so and stops. Runs in about 15 minutes on the 2-core CPU
(``--quick``: a 2M-parameter model, a minute), under 5 minutes on an H200.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import malloc_peak_bytes, peak_bytes  # noqa: E402

PRESETS = {
    # vocab, width, layers, heads, batch, sequence; growth: sequence lengths and widths
    "cpu": dict(vocab=50257, d=256, layers=4, heads=4, B=2, T=128, Ts=(64, 128, 256), ds=(128, 256, 384), Bs=(8,)),
    "cuda": dict(vocab=50257, d=512, layers=8, heads=8, B=8, T=512, Ts=(256, 512, 1024), ds=(256, 512, 768),
                 Bs=(32,)),
    "quick": dict(vocab=8192, d=128, layers=2, heads=4, B=2, T=64, Ts=(32, 64), ds=(64, 128), Bs=(4,)),
}


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc, self.out = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x):
        B, T, d = x.shape
        qkv = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in qkv)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """Logits ``(B, T, vocab)`` of token ids ``(B, T)``."""

    def __init__(self, vocab, d, layers, heads, context=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.wte.weight.T


class Shifted(nn.Module):
    """What the peers get: logits of positions 0..T-2, flattened ``(B (T - 1), vocab)``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        logits = self.model(ids)
        return logits[:, :-1].reshape(-1, logits.shape[-1])


def math_sdpa():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


# -- measurement ------------------------------------------------------------------------------------

class Meter:
    """Time (CPU seconds of this process, or CUDA wall time) and peak memory of one call."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def seconds(self, fn) -> float:
        gc.collect()
        self.sync()
        clock = time.perf_counter if self.cuda else time.process_time
        t0 = clock()
        out = fn()
        self.sync()
        dt = clock() - t0
        del out
        return dt

    def peak(self, fn) -> float | None:
        if not self.cuda:  # malloc's own accounting (repeatable in-process); the resident set where missing
            peak = malloc_peak_bytes(fn)
            return peak_bytes(fn) if peak is None else peak
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return peak


def measure_all(meter, fns: dict, repeats: int) -> dict:
    """``{name: (seconds, peak bytes, result or exception)}``; every method called once (warm-up, result
    kept), then ``repeats`` interleaved timed rounds (median), then once more for the peak."""
    results, times = {}, {n: [] for n in fns}
    for name, fn in fns.items():
        try:
            results[name] = _flat(fn())
        except Exception as e:  # noqa: BLE001 - a method failing is a result to report
            results[name] = e
        print(f"  warm-up {name}: {'failed' if isinstance(results[name], Exception) else 'ok'}", flush=True)
    for _ in range(repeats):
        for name, fn in fns.items():
            if not isinstance(results[name], Exception):
                times[name].append(meter.seconds(fn))
    out = {}
    for name, fn in fns.items():
        if isinstance(results[name], Exception):
            out[name] = (None, None, results[name])
        else:
            out[name] = (statistics.median(times[name]), meter.peak(fn), results[name])
    return out


def _flat(x):
    if isinstance(x, torch.Tensor):
        return x.detach().reshape(-1)
    return torch.cat([t.detach().reshape(-1) for t in x])


def describe(e: Exception) -> str:
    line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {line[:110]}"


# -- the methods ------------------------------------------------------------------------------------

def problem(cfg, device, seed=0):
    torch.manual_seed(seed)
    model = GPT(cfg["vocab"], cfg["d"], cfg["layers"], cfg["heads"]).to(device)
    ids = torch.randint(0, cfg["vocab"], (cfg["B"], cfg["T"]), device=device)
    return model, ids


def shifted_loss(logits, ids):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def products(model, ids, v, peers: bool):
    """``{name: fn}`` of gradient, HVP and GGN-vector products on one model and batch."""
    import hessian_core as hc

    params = list(model.parameters())
    vs = [t.reshape(p.shape) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]
    loss = hc.CausalLMLoss()

    def gradient():
        return torch.autograd.grad(shifted_loss(model(ids), ids), params)

    def raw_hvp():
        with math_sdpa():
            g = torch.autograd.grad(shifted_loss(model(ids), ids), params, create_graph=True)
            return torch.autograd.grad(g, params, vs)

    H = hc.HessianOperator(model, loss, (ids, ids), progress=False)
    G = hc.GGNOperator(model, loss, (ids, ids), progress=False)
    G_autograd = hc.GGNOperator(model, lambda out, y: loss(out, y), (ids, ids), count_fn=loss.count_fn,
                                progress=False)
    MC = hc.GGNOperator(model, loss, (ids, ids), mc_samples=1, progress=False)
    fns = {
        "gradient (torch, fused attention)": gradient,
        "HVP: raw double backward (math SDPA)": raw_hvp,
        "HVP: hessian_core": lambda: H.matvec(v),
        "GGN-vector: hessian_core (closed form)": lambda: G.matvec(v),
        "GGN-vector: hessian_core (autograd loss Hessian)": lambda: G_autograd.matvec(v),
        "MC Fisher-vector (1 sample): hessian_core": lambda: MC.matvec(v),
    }
    if peers:
        fns.update(peer_products(model, ids, params, vs))
    return fns


def peer_products(model, ids, params, vs):
    """curvlinops and hessian-eigenthings, as they are and with math attention set by the user."""
    fns = {}
    data = [(ids, ids[:, 1:].reshape(-1))]
    shifted = Shifted(model)
    try:
        from curvlinops import GGNLinearOperator, HessianLinearOperator

        for kind, cls in (("HVP", HessianLinearOperator), ("GGN-vector", GGNLinearOperator)):
            op = cls(shifted, nn.CrossEntropyLoss(), params, data, check_deterministic=False, progressbar=False)
            fns[f"{kind}: curvlinops"] = lambda op=op: op @ vs
            fns[f"{kind}: curvlinops + math SDPA by the user"] = lambda op=op: _in_math(lambda: op @ vs)
    except ImportError as e:
        print(f"  curvlinops not installed ({e}); pip install hessiancore[bench]")
    try:
        import hessian_eigenthings as he

        batches = [(ids, ids)]
        Hp = he.HessianOperator(model, batches, lambda m, b: shifted_loss(m(b[0]), b[1]))
        Gp = he.GGNOperator(model, batches, lambda m, b: m(b[0]), lambda out, b: shifted_loss(out, b[1]))
        flat = torch.cat([t.reshape(-1) for t in vs])
        for kind, op in (("HVP", Hp), ("GGN-vector", Gp)):
            fns[f"{kind}: hessian-eigenthings"] = lambda op=op: op.matvec(flat)
            fns[f"{kind}: hessian-eigenthings + math SDPA by the user"] = \
                lambda op=op: _in_math(lambda: op.matvec(flat))
    except ImportError as e:
        print(f"  hessian-eigenthings not installed ({e}); pip install hessiancore[bench]")
    return fns


def _in_math(fn):
    with math_sdpa():
        return fn()


def table_products(results, reference_names) -> list[str]:
    base_t, base_m, _ = results["gradient (torch, fused attention)"]
    hvp_t, hvp_m, hvp_ref = results["HVP: raw double backward (math SDPA)"]
    ggn_ref = results["GGN-vector: hessian_core (autograd loss Hessian)"][2]
    rows = ["| method | time (s) | x gradient | x raw HVP | peak (MiB) | x gradient's peak | "
            "rel. diff. to reference |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, (t, m, r) in results.items():
        if isinstance(r, Exception):
            rows.append(f"| {name} | failed | | | | | {describe(r)} |")
            continue
        ref = hvp_ref if name.startswith("HVP") else ggn_ref if name.startswith("GGN") else None
        diff = ""
        if isinstance(ref, torch.Tensor) and ref is not r:
            diff = f"{float((r - ref).norm() / ref.norm()):.1e}"
        ratio_hvp = f"{t / hvp_t:.2f}" if name.startswith("HVP") and hvp_t else ""
        peak = "n/a" if m is None else f"{m / 2**20:.0f}"
        peak_ratio = "" if m is None or not base_m else f"{m / base_m:.2f}"
        rows.append(f"| {name} | {t:.2f} | {t / base_t:.2f} | {ratio_hvp} | {peak} | {peak_ratio} | {diff} |")
    return rows


# -- eigenvalues ------------------------------------------------------------------------------------

def eigen(model, ids, meter, peers: bool, tol: float):
    """Top-5 Hessian eigenvalues: hessian_core.eigsh, hessian-eigenthings' Lanczos with as many products,
    scipy's eigsh on curvlinops' operator; residuals ``||H v - lambda v|| / |lambda|`` recomputed after."""
    import hessian_core as hc

    loss = hc.CausalLMLoss()
    H = hc.HessianOperator(model, loss, (ids, ids), progress=False)
    rows = ["| method | time (s) | products | top-5 eigenvalues | max rel. residual |", "|---|---:|---:|---|---:|"]

    def residual(vals, vecs):
        HV = H.matmat(vecs)
        return max(float((HV[:, i] - vals[i] * vecs[:, i]).norm() / abs(vals[i])) for i in range(len(vals)))

    def row(name, fn):
        try:
            box = {}
            t = meter.seconds(lambda: box.setdefault("r", fn()))
            vals, vecs, n = box["r"]
            order = torch.argsort(vals, descending=True)
            vals, vecs = vals[order], vecs[:, order]
            rows.append(f"| {name} | {t:.1f} | {n} | {', '.join(f'{float(x):.4g}' for x in vals)} | "
                        f"{residual(vals, vecs):.1e} |")
            return n
        except Exception as e:  # noqa: BLE001 - a failure is a result
            rows.append(f"| {name} | failed | | {describe(e)} | |")
            return None

    def ours():
        r = hc.eigsh(H, k=5, which="LA", tol=tol, seed=0)
        return r.values, r.vectors, r.num_matvecs

    n = row(f"hessian_core.eigsh(k=5, which='LA', tol={tol:g})", ours) or 60
    if peers:
        try:
            import hessian_eigenthings as he

            op = he.HessianOperator(model, [(ids, ids)], lambda m, b: shifted_loss(m(b[0]), b[1]))

            def theirs():
                with math_sdpa():
                    r = he.lanczos(op, k=5, which="LA", max_iter=n, seed=0)
                return torch.as_tensor(r.eigenvalues), torch.as_tensor(r.eigenvectors).reshape(H.size, -1), n

            row(f"hessian-eigenthings lanczos(k=5, which='LA', max_iter={n}) + math SDPA", theirs)
        except ImportError:
            pass
        try:
            import numpy as np
            import scipy.sparse.linalg as sla
            from curvlinops import HessianLinearOperator

            op = HessianLinearOperator(Shifted(model), nn.CrossEntropyLoss(), list(model.parameters()),
                                       [(ids, ids[:, 1:].reshape(-1))], check_deterministic=False)
            count = [0]
            A = op.to_scipy()

            def mv(x):
                count[0] += 1
                with math_sdpa():
                    return A @ x

            def scipys():
                lin = sla.LinearOperator(A.shape, matvec=mv, dtype=np.float32)
                vals, vecs = sla.eigsh(lin, k=5, which="LA", tol=tol)
                return torch.as_tensor(vals), torch.as_tensor(vecs).to(ids.device), count[0]

            row(f"scipy eigsh(k=5, which='LA', tol={tol:g}) on curvlinops + math SDPA", scipys)
        except ImportError:
            pass
    return rows


# -- growth -----------------------------------------------------------------------------------------

def growth(cfg, device, meter, repeats):
    """Gradient, HVP and GGN-vector product of hessian_core as the sequence, the width and the batch grow."""
    rows = ["| model | parameters | tokens | gradient (s) | HVP (s) | GGN (s) | gradient peak (MiB) | "
            "HVP peak / gradient's | GGN peak / gradient's |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    settings = ([dict(cfg, T=T) for T in cfg["Ts"]] + [dict(cfg, d=d) for d in cfg["ds"] if d != cfg["d"]]
                + [dict(cfg, B=B) for B in cfg["Bs"]])
    for c in settings:
        model, ids = problem(c, device)
        P = sum(p.numel() for p in model.parameters())
        v = torch.randn(P, device=device)
        fns = products(model, ids, v, peers=False)
        keep = ("gradient (torch, fused attention)", "HVP: hessian_core", "GGN-vector: hessian_core (closed form)")
        res = measure_all(meter, {k: fns[k] for k in keep}, repeats)
        (tg, mg, _), (th, mh, _), (tG, mG, _) = (res[k] for k in keep)
        peak = "n/a" if mg is None else f"{mg / 2**20:.0f}"
        rh = "" if mg is None or mh is None else f"{mh / mg:.2f}"
        rG = "" if mg is None or mG is None else f"{mG / mg:.2f}"
        rows.append(f"| d={c['d']}, B={c['B']}, T={c['T']} | {P / 1e6:.1f}M | {c['B'] * c['T']} | {tg:.2f} | "
                    f"{th:.2f} | {tG:.2f} | {peak} | {rh} | {rG} |")
        del model, ids, fns, res
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a small model, to check the script")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--no-eigen", action="store_true")
    ap.add_argument("--no-growth", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance of the eigensolvers")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device is available on this machine (torch.cuda.is_available() is False); "
              "nothing measured. Run on CPU with --device cpu.")
        return 1
    if device.type == "cpu":
        torch.set_num_threads(1)
    cfg = PRESETS["quick" if args.quick else "cuda" if device.type == "cuda" else "cpu"]
    meter = Meter(device)
    model, ids = problem(cfg, device)
    P = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} thread"
    what = (f"GPT: vocab {cfg['vocab']}, width {cfg['d']}, {cfg['layers']} layers, {cfg['heads']} heads, "
            f"{P / 1e6:.1f}M parameters; batch {cfg['B']} x {cfg['T']} tokens; float32 on {device} ({where}); "
            f"torch {torch.__version__}")
    print(what, flush=True)
    t0 = time.perf_counter()
    v = torch.randn(P, device=device, generator=torch.Generator(device).manual_seed(1))
    results = measure_all(meter, products(model, ids, v, peers=not args.no_peers), args.repeats)
    out = [f"## {what}", "", "### Products (one vector)", ""] + table_products(results, None)
    if not args.no_eigen:
        print("eigenvalues ...", flush=True)
        out += ["", "### Top-5 Hessian eigenvalues", ""] + eigen(model, ids, meter, not args.no_peers, args.tol)
    del model, ids
    if not args.no_growth:
        print("growth ...", flush=True)
        out += ["", "### Growth with sequence length, width and batch (hessian_core)", ""] + growth(cfg, device, meter,
                                                                                             args.repeats)
    out += ["", f"({time.perf_counter() - t0:.0f} s wall for the whole run)"]
    print("\n" + "\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
