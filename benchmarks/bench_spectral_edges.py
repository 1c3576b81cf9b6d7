"""Both ends of a network Hessian's spectrum, the condition number of its singular GGN and of the indefinite
Hessian, and the log-scale density near zero: previous and current defaults, in one run.

Problem: a 64-32-32-10 tanh MLP (P = 3466) trained 300 Adam steps on 1797 samples of digits-like synthetic
data (64 features in [0, 16], 10 classes from a random teacher, 10% label noise), cross-entropy, float64.
The exact Hessian and GGN are formed once (``hc.hessian``, ``GGNOperator.to_dense``) and the spectral
routines run on them as dense operators: the products counted are the same as through the matrix-free
operators, at a fraction of the time (seconds are therefore not reported). Reference: ``eigvalsh``.

"Previous" is what the defaults were before: ``ncv = max(20, 2k + 2b, 12b)`` for eigsh; for the condition
number ``eigsh(which="BE", k=2)`` with those defaults (blocks of 2, ``max_matvecs = 1200``) run to
convergence; for the log density ``mass_near_zero`` counted only nodes with ``|theta| <= 1e-8 max|theta|``.

    python benchmarks/bench_spectral_edges.py [--quick]
"""

from __future__ import annotations

import argparse
import warnings

import torch
from bench_newton import problem as newton_problem


def problem(quick: bool = False):
    """The digits-like MLP of ``bench_newton.py``, trained 300 Adam steps (loss about 0.005)."""
    return newton_problem(quick, steps=300)


def run(quick: bool = False) -> list[dict]:
    import hessian_core as hc

    model, loss_fn, X, y = problem(quick)
    H = hc.hessian(model, loss_fn, (X, y))
    G = hc.GGNOperator(model, loss_fn, (X, y)).to_dense()
    H, G = (H + H.T) / 2, (G + G.T) / 2
    evH, evG = torch.linalg.eigvalsh(H), torch.linalg.eigvalsh(G)
    P = H.shape[0]
    rows = []
    warnings.simplefilter("ignore", RuntimeWarning)

    def err(res, ref):
        return float((res.values - ref).abs().max())

    for which, k, b in (("LA", 6, None), ("SA", 6, None), ("SA", 6, 1), ("SA", 1, None)):
        bb = min(k, 4) if b is None else b
        ref = evH[-k:] if which == "LA" else evH[:k]
        old = hc.eigsh(H, k=k, which=which, seed=0, block_size=b, ncv=max(20, 2 * k + 2 * bb, 12 * bb))
        new = hc.eigsh(H, k=k, which=which, seed=0, block_size=b)
        label = f"eigsh k={k} {which}" + (f" block_size={b}" if b else "")
        rows.append({"what": label, "before": old.num_matvecs, "after": new.num_matvecs,
                     "note": f"converged {int(old.converged.sum())}/{k} -> {int(new.converged.sum())}/{k}, "
                             f"error {err(old, ref):.0e} -> {err(new, ref):.0e}, stopped={new.stopped}"})
    spec = hc.ParamSpec(model)
    for name, M, ev in (("GGN (singular)", G, evG), ("Hessian (indefinite)", H, evH)):
        old = hc.eigsh(M, k=2, which="BE", seed=0, ncv=24, max_matvecs=1200)
        psd = True if name.startswith("GGN") else None
        for invariances in (False, True):
            # as a dense operator that knows the parameters (the invariance directions are built from them)
            op = hc.DenseOperator(M, params=spec)
            new = hc.condition_number(op, seed=0, psd=psd, invariances=invariances)
            rows.append({"what": f"condition_number {name}" + (", invariances" if invariances else ""),
                         "before": old.num_matvecs, "after": new.num_matvecs,
                         "note": f"-> {float(new):.3g}, stopped={new.stopped}, lower bound {new.lower_bound:.3g}; "
                                 f"eigvalsh min {float(ev[0]):.2e} max {float(ev[-1]):.3g}"})
    for invariances in (False, True):
        ld = hc.logdet(hc.DenseOperator(G, params=spec), seed=0, psd=True, invariances=invariances)
        rows.append({"what": "logdet GGN" + (", invariances" if invariances else ""), "before": None,
                     "after": ld.num_matvecs, "note": ld.reason})
    dens = hc.spectral_density(H, num_probes=4, num_iters=80, log=True, seed=0)
    q = dens.quadrature
    old_mass = float((q.weights[q.nodes.abs() <= 1e-8 * q.nodes.abs().max()]).sum() / q.num_probes)
    share = float((evH.abs() <= dens.zero_width).double().mean())
    rows.append({"what": "log density mass_near_zero", "before": old_mass, "after": dens.mass_near_zero,
                 "note": f"|lambda| <= {dens.zero_width:.2g} holds {share:.3f} of the eigenvalues (eigvalsh)"})
    return [{"P": P, **r} for r in rows]


def _fmt(x) -> str:
    return "-" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller model")
    rows = run(ap.parse_args(argv).quick)
    print(f"P = {rows[0]['P']}, float64; products (before -> after)")
    for r in rows:
        before, after = (_fmt(r["before"]), _fmt(r["after"]))
        print(f"  {r['what']:50s} {before:>8} -> {after:<8} {r['note']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
