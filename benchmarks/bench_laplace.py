"""Laplace log marginal likelihood: hessian_core.Laplace vs laplace-torch 0.3 on the same trained model and data,
in one run (float64, CPU): structures full / diag / last-layer / kron (KFAC), classification (cross-entropy)
and regression (MSE with sigma_noise), laplace-torch's GGN backends (curvlinops, its default; ASDL; BackPACK).

Each value is compared with an independent float64 reference written here from the definition (per-sample
Jacobians of the whole batch by ``torch.func.jacrev``, the GGN ``sum_n J_n^T H_n J_n`` with the closed-form
output Hessians, ``torch.logdet``; for kron the KFAC blocks ``G ⊗ A`` of each Linear layer with
``G = sum_n B_n^T H_n B_n`` (``B_n`` the Jacobian of the outputs w.r.t. the layer's output, read off the bias
columns of ``J_n``) and ``A`` the mean of the layer inputs' outer products, a block ``G`` per bias). Times
include everything from the model to the number (building the curvature and the log-determinant); medians
of interleaved repeats (``measure.interleaved``), ratio = their time / ours (above 1: we are faster). Peak
memory: extra resident memory during one call. Also the prior precision optimization (structures full and
kron): ours (L-BFGS-B on the exact Laplace evidence) against laplace-torch's default (Adam, 100 steps on
``log_marginal_likelihood``), with the evidence each reaches.

    python benchmarks/bench_laplace.py [--quick] [--repeats 3] [--structures full,diag,last_layer,kron]
                                       [--optimize full,kron]

``run(quick=False) -> list[dict]`` is the entry point for other scripts.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import warnings

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from measure import interleaved, peak_bytes  # noqa: E402

import hessian_core as hc  # noqa: E402

D = torch.float64
PRIOR = 0.5
SIGMA = 0.7
STRUCTURES = {"full": ("all", "full"), "diag": ("all", "diag"), "last_layer": ("last_layer", "full"),
              "kron": ("all", "kron")}


def problem(task: str, quick: bool):
    """A tanh MLP trained a little (Adam) on synthetic data, with a DataLoader of unequal batches."""
    torch.manual_seed(0)
    d_in, width, out, n = (8, 16, 3, 300) if quick else (10, 32, 4, 1000)
    X = torch.randn(n, d_in, dtype=D)
    if task == "classification":
        y = (X[:, :out] + 0.5 * torch.randn(n, out, dtype=D)).argmax(1)
        loss_fn = nn.CrossEntropyLoss()
    else:
        y = torch.sin(X[:, :out]) + SIGMA * torch.randn(n, out, dtype=D)
        loss_fn = nn.MSELoss()
    model = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                          nn.Linear(width, out)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=128)
    return model, loss_fn, loader, X, y


def reference(model, task, X, y, structure) -> float:
    """Laplace evidence from the definition: -NLL - prior term + log det ratio, GGN from per-sample Jacobians."""
    names = [n for n, _ in model.named_parameters()]
    if structure == "last_layer":
        names = names[-2:]
    params = {n: p.detach() for n, p in model.named_parameters()}
    theta = torch.cat([params[n].reshape(-1) for n in names])

    def f(sub, x):
        return functional_call(model, {**params, **sub}, (x[None],))[0]

    J = vmap(jacrev(f), in_dims=(None, 0))({n: params[n] for n in names}, X)
    J = torch.cat([J[n].reshape(X.shape[0], -1, params[n].numel()) for n in names], 2)  # (N, C, P)
    out = model(X).detach()
    if task == "classification":
        p = torch.softmax(out, 1)
        Hout = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        nll = float(nn.functional.cross_entropy(out, y, reduction="sum"))
    else:
        Hout = torch.eye(out.shape[1], dtype=D).expand(out.shape[0], -1, -1) / SIGMA ** 2
        nll = float(((out - y) ** 2).sum() / (2 * SIGMA ** 2) + out.numel() / 2 * math.log(2 * math.pi * SIGMA ** 2))
    P = theta.numel()
    if structure == "kron":
        logdet = kron_logdet(model, X, J, Hout, names, params)
    else:
        G = torch.einsum("ncp,ncd,ndq->pq", J, Hout, J)
        Lam = G + PRIOR * torch.eye(P, dtype=D)
        logdet = float(torch.logdet(Lam)) if structure != "diag" else float(Lam.diagonal().log().sum())
    return -nll - 0.5 * PRIOR * float(theta @ theta) + 0.5 * P * math.log(PRIOR) - 0.5 * logdet


def kron_logdet(model, X, J, Hout, names, params) -> float:
    """log det of the KFAC posterior precision, block by block from the definition: per Linear layer, the
    weight block ``G ⊗ A + prior I`` and the bias block ``G + prior I``, ``G = sum_n B_n^T H_n B_n`` with
    ``B_n = d f_n / d z_n`` (the bias columns of ``J_n``), ``A = mean_n a_n a_n^T`` (``a_n`` the layer input)."""
    inputs = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, key=key: inputs.__setitem__(key, args[0].detach()))
             for key, m in model.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model(X)
    for h in hooks:
        h.remove()
    offsets = dict(zip(names, torch.cumsum(torch.tensor([0] + [params[n].numel() for n in names]), 0).tolist()))
    total = 0.0
    for key, a in inputs.items():
        b0 = offsets[f"{key}.bias"]
        B = J[:, :, b0:b0 + params[f"{key}.bias"].numel()]  # (N, C, out)
        G = torch.einsum("nco,ncd,ndp->op", B, Hout, B)
        A = a.T @ a / a.shape[0]
        eye = torch.eye(G.shape[0] * A.shape[0], dtype=D)
        total += float(torch.logdet(torch.kron(G.contiguous(), A.contiguous()) + PRIOR * eye))
        total += float(torch.logdet(G + PRIOR * torch.eye(G.shape[0], dtype=D)))
    return total


def methods(model, task, loss_fn, loader, structure):
    from laplace import Laplace as LaplaceTorch
    from laplace.curvature import AsdlGGN, BackPackGGN, CurvlinopsGGN

    subset, hstruct = STRUCTURES[structure]
    likelihood = "classification" if task == "classification" else "regression"
    noise = {"sigma_noise": SIGMA} if task == "regression" else {}

    def ours():
        la = hc.Laplace(model, loss_fn, loader, structure=structure, prior_precision=PRIOR, progress=False, **noise)
        return float(la.log_marginal_likelihood())

    def theirs(backend):
        def fn():
            la = LaplaceTorch(copy.deepcopy(model), likelihood, subset_of_weights=subset, hessian_structure=hstruct,
                              prior_precision=PRIOR, backend=backend, **noise)
            la.fit(loader)
            return float(la.log_marginal_likelihood())
        return fn

    out = {"hessian_core": ours, "laplace-torch (curvlinops)": theirs(CurvlinopsGGN)}
    if subset == "all":  # the last-layer variant runs its own feature extractor; one backend is enough there
        out["laplace-torch (asdl)"] = theirs(AsdlGGN)
        out["laplace-torch (backpack)"] = theirs(BackPackGGN)
    return out


def prior_optimization(model, task, loss_fn, loader, structure="full"):
    """Time and evidence reached by tuning the prior precision (structure full or kron)."""
    from laplace import Laplace as LaplaceTorch

    likelihood = "classification" if task == "classification" else "regression"
    noise = {"sigma_noise": SIGMA} if task == "regression" else {}
    ours = hc.Laplace(model, loss_fn, loader, structure=structure, prior_precision=PRIOR, progress=False, **noise)
    theirs = LaplaceTorch(copy.deepcopy(model), likelihood, subset_of_weights="all", hessian_structure=structure,
                          prior_precision=PRIOR, **noise)
    theirs.fit(loader)

    def ours_fn():
        ours.prior_precision = PRIOR
        ours.optimize_prior_precision()
        return float(ours.log_marginal_likelihood()), float(ours.prior_precision)

    def theirs_fn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.optimize_prior_precision(pred_type="glm", method="marglik", init_prior_prec=PRIOR,
                                            prior_structure="scalar")
        return float(theirs.log_marginal_likelihood()), float(theirs.prior_precision)

    return {"hessian_core (L-BFGS-B)": ours_fn, "laplace-torch (Adam x100)": theirs_fn}


def run(quick: bool = False, repeats: int = 3, structures=tuple(STRUCTURES), optimize=("full", "kron")) -> list[dict]:
    rows = []
    for task in ("classification", "regression"):
        model, loss_fn, loader, X, y = problem(task, quick)
        P = sum(p.numel() for p in model.parameters())
        print(f"\n[{task}] MLP P={P}, N={X.shape[0]} in batches of 128, prior precision {PRIOR}"
              + (f", sigma_noise {SIGMA}" if task == "regression" else ""))
        print(f"{'structure':<11} {'method':<27} {'log marginal lik.':>19} {'rel.err':>8} {'seconds':>8} "
              f"{'ratio':>6} {'peak MiB':>9}")
        for structure in structures:
            ref = reference(model, task, X, y, structure)
            fns = methods(model, task, loss_fn, loader, structure)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                times, results = interleaved(fns, repeats)
                peaks = {name: peak_bytes(fn) for name, fn in fns.items()}
            base = times["hessian_core"]
            for name in fns:
                value = results[name]
                if isinstance(value, Exception):
                    print(f"{structure:<11} {name:<27} failed: {type(value).__name__}: {str(value)[:60]}")
                    rows.append(dict(task=task, structure=structure, method=name, error=repr(value)))
                    continue
                err = abs(value - ref) / abs(ref)
                peak = peaks[name]
                print(f"{structure:<11} {name:<27} {value:>19.10f} {err:>8.1e} {times[name]:>8.3f} "
                      f"{times[name] / base:>6.2f} {peak / 2**20 if peak is not None else float('nan'):>9.1f}")
                rows.append(dict(task=task, structure=structure, method=name, value=value, reference=ref,
                                 rel_err=err, seconds=times[name], ratio=times[name] / base, peak=peak))
        for structure in optimize:
            fns = prior_optimization(model, task, loss_fn, loader, structure)
            times, results = interleaved(fns, repeats)
            base = times["hessian_core (L-BFGS-B)"]
            print(f"prior precision optimization (structure {structure}, after fitting):")
            for name in fns:
                value, prec = results[name]
                print(f"  {name:<27} evidence {value:>15.6f} at prior precision {prec:.6g}, {times[name]:.3f} s "
                      f"(ratio {times[name] / base:.1f})")
                rows.append(dict(task=task, structure=f"optimize {structure}", method=name, value=value, prior=prec,
                                 seconds=times[name], ratio=times[name] / base))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--structures", default=",".join(STRUCTURES),
                        help="comma-separated, of " + ", ".join(STRUCTURES))
    parser.add_argument("--optimize", default="full,kron",
                        help="structures whose prior optimization is timed ('' for none)")
    args = parser.parse_args()
    structures = [s for s in args.structures.split(",") if s]
    optimize = [s for s in args.optimize.split(",") if s]
    unknown = sorted(set(structures + optimize) - set(STRUCTURES))
    if unknown:
        parser.error(f"unknown structures {unknown}; choose from {list(STRUCTURES)}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    run(args.quick, args.repeats, structures, optimize)
