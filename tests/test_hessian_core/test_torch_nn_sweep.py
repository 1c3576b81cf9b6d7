"""Every torch.nn module and loss a user brings, through every entry point: exact or a clear refusal, never a
wrong matrix, never a changed model.

Each case of ``tests/nn_sweep/cases.py`` (the classes of ``torch.nn``, discovered, and the situations users
meet around them) runs through ``hc.hessian``, ``HessianOperator.matvec`` / ``matmat``,
``hessian_diagonal``, ``hessian_blocks`` and ``GGNOperator.matvec``, and through the dense, diagonal and
block computations with ``strategy="structured"`` (the Linear-chain, square-root-factor and traced-graph
paths forced past their cost model; "n/a" where none applies). Results are compared with central
finite differences of PyTorch's *first-order* gradients (two step sizes; never PyTorch's second
derivatives, which are wrong for some modules), and the model's state_dict, ``.grad``, hooks, train/eval
flags and the data are compared bit for bit before and after every call, raised or not.

CI runs a representative subset: every :data:`CI_SUBSET_EVERY`-th case by name, every refusal, and the
cases of :data:`ALWAYS` (each problem the issues reported); ``HC_FULL_SWEEP=1`` runs every case (about two
minutes on two busy cores), and ``HC_SWEEP_REPORT=path.md`` writes the counts and the refusals (what
docs/models.md records).
"""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest
import torch
from nn_sweep.cases import CASES, NOT_LAYERS, discovered
from nn_sweep.harness import Reference, changes, finite_difference, state_of
from torch.nn.utils import parametrize

import hessian_core as hc

# The sweep exercises what PyTorch warns about (KLDivLoss's 'mean', vmap fallbacks, deprecated modules).
pytestmark = pytest.mark.filterwarnings("ignore")

ENTRY_POINTS = ("hessian", "matvec", "matmat", "diagonal", "blocks", "ggn")
#: the structured paths forced (``strategy="structured"``, past the cost model): where one takes a case, it must
#: agree with the finite differences too; where none applies the outcome is "n/a"
STRUCTURED = ("structured dense", "structured diagonal", "structured blocks")
TOLERANCE = 1e-6  # relative to the reference's largest entry; wrong answers seen were 1e-3 .. 1
KINK = 1e-3  # finite differences at two steps disagreeing by more (relative): the point sits on a kink
CI_SUBSET_EVERY = 3
#: name prefixes always in the CI subset: the cases the issues reported as wrong, changed or raw
ALWAYS = ("Embedding", "weight_norm", "spectral_norm[parametrizations, train]", "parametrize.cached", "Hardsigmoid",
          "ReLU[inplace, Linear chain]", "RReLU", "GaussianNLLLoss", "CosineEmbeddingLoss", "TripletMarginLoss",
          "MultiMarginLoss", "MultiLabelMarginLoss", "CTCLoss", "KLDivLoss[batchmean", "CrossEntropyLoss[ignore",
          "NLLLoss[", "buffers", "input written", "MinMaxObserver", "F.dropout", "randn_like",
          "FractionalMaxPool2d", "checkpoint", "full backward hook", "autograd.Function", "dict output",
          "LSTM[pack", "CrossMapLRN2d", "BatchNorm1d[train", "LinearCrossEntropyLoss", "DataParallel",
          "TransformerEncoderLayer[train")
FULL = os.environ.get("HC_FULL_SWEEP") == "1"
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "models.md")


def selected() -> list[str]:
    names = sorted(CASES)
    if FULL or CI_SUBSET_EVERY == 1:
        return names
    return [n for i, n in enumerate(names)
            if i % CI_SUBSET_EVERY == 0 or CASES[n][1] is not None or n.startswith(ALWAYS)]


def _call(entry: str, setup, options, vectors):
    m, loss, data = setup.model, setup.loss_fn, setup.data
    if entry in STRUCTURED:
        entry = entry.split()[1] if entry != "structured dense" else "hessian"
        options = {**options, "strategy": "structured"}
    if entry == "hessian":
        return hc.hessian(m, loss, data, **options)
    if entry == "matvec":
        return hc.HessianOperator(m, loss, data, **options).matvec(vectors[:, 0])
    if entry == "matmat":
        return hc.HessianOperator(m, loss, data, **options).matmat(vectors)
    if entry == "diagonal":
        return torch.cat([d.reshape(-1) for d in hc.hessian_diagonal(m, loss, data, **options)])
    if entry == "blocks":
        return hc.hessian_blocks(m, loss, data, **options)
    return hc.GGNOperator(m, loss, data, **options).matvec(vectors[:, 0])


def _expected(entry: str, H: torch.Tensor, G, vectors, ref: Reference):
    if entry in STRUCTURED:
        entry = entry.split()[1] if entry != "structured dense" else "hessian"
    if entry == "hessian":
        return H
    if entry == "matvec":
        return H @ vectors[:, 0]
    if entry == "matmat":
        return H @ vectors
    if entry == "diagonal":
        return torch.diagonal(H)
    if entry == "blocks":
        sizes = [p.numel() for p in ref.params]
        offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        return [H[a:b, a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return G @ vectors[:, 0]


def _error(result, expected) -> float:
    if isinstance(expected, list):
        if not isinstance(result, list) or len(result) != len(expected):
            return float("inf")
        return max(_error(r, e) for r, e in zip(result, expected))
    if result.shape != expected.shape:
        return float("inf")
    scale = max(float(expected.abs().max()) if expected.numel() else 0.0, 1e-3)
    return float((result - expected).abs().max()) / scale


def run_case(name: str) -> dict[str, tuple[str, str]]:
    """``{entry point: (status, detail)}`` with status one of exact, refused, raw, wrong, changed."""
    build, _ = CASES[name]
    torch.manual_seed(0)
    setup = build()
    options = dict(setup.options)
    cached = options.pop("_cached", False)
    seed = options.get("seed", 0) * 1_000_003  # what hessian_core fixes for batch 0 of a random forward
    references: dict = {}

    def reference(what):
        if what not in references:
            ref = Reference(setup, seed)
            matrix, kink = finite_difference(ref, what)
            assert kink < KINK, f"{name}: the finite differences sit on a kink ({kink:.1e}); change the case's data"
            references[what] = (matrix, ref)
        return references[what]

    outcomes = {}
    for entry in ENTRY_POINTS + STRUCTURED:
        before = state_of(setup.model, setup.data)
        P = sum(p.numel() for p in setup.model.parameters() if p.requires_grad
                and not isinstance(p, torch.nn.parameter.UninitializedParameter))
        vectors = torch.randn(P, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        try:
            with parametrize.cached() if cached else _nothing():
                result = _call(entry, setup, options, vectors)
        except hc.HessianCoreError as e:
            if entry in STRUCTURED and "cannot use the structured path" in str(e):
                outcome = ("n/a", str(e))
            else:
                outcome = ("refused", f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - the sweep classifies every failure
            outcome = ("raw", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        else:
            H, ref = reference("hessian")
            G = reference("ggn")[0] if entry == "ggn" else None
            err = _error(result, _expected(entry, H, G, vectors, ref))
            outcome = ("exact", f"{err:.1e}") if err <= TOLERANCE else ("wrong", f"relative error {err:.2e}")
        changed = changes(before, state_of(setup.model, setup.data))
        if changed:
            outcome = ("changed", f"{', '.join(changed)} (call: {outcome[0]} {outcome[1]})")
        outcomes[entry] = outcome
    return outcomes


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


RESULTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    # Tiny models: one thread is faster, and on a busy machine torch's spinning worker threads make small
    # kernels up to 1000x slower (measured: a conv1d backward 30 us on one thread, 0.1 s on two).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    path = os.environ.get("HC_SWEEP_REPORT")
    if path and RESULTS:
        with open(path, "w") as f:
            f.write(report(RESULTS))


def report(results: dict) -> str:
    per_entry = Counter(status for outcomes in results.values() for status, _ in outcomes.values())
    per_case = Counter(_case_status(o) for o in results.values())
    lines = [f"cases: {len(results)}; entry-point calls: {sum(per_entry.values())}",
             "per case: " + ", ".join(f"{k} {v}" for k, v in sorted(per_case.items())),
             "per call: " + ", ".join(f"{k} {v}" for k, v in sorted(per_entry.items())), ""]
    for name, outcomes in sorted(results.items()):
        if _case_status(outcomes) != "exact":
            lines.append(f"- {name}: " + "; ".join(f"{e}: {s} {d[:300]}" for e, (s, d) in outcomes.items()
                                                  if s not in ("exact", "n/a")))
    return "\n".join(lines) + "\n"


def _case_status(outcomes: dict) -> str:
    statuses = {s for s, _ in outcomes.values() if s != "n/a"}
    for worst in ("changed", "wrong", "raw", "refused"):
        if worst in statuses:
            return worst
    return "exact"


@pytest.mark.parametrize("name", selected())
def test_case(name):
    outcomes = run_case(name)
    RESULTS[name] = outcomes
    outcomes = {e: o for e, o in outcomes.items() if o[0] != "n/a"}  # a structured path that does not apply
    refusal = CASES[name][1]
    bad = {e: o for e, o in outcomes.items() if o[0] in ("raw", "wrong", "changed")}
    assert not bad, f"{name}: {bad}"
    if refusal is None:
        assert all(s == "exact" for s, _ in outcomes.values()), f"{name}: {outcomes}"
    else:
        for entry, (status, detail) in outcomes.items():
            assert status == "refused" and refusal in detail, f"{name} {entry}: expected a refusal naming " \
                                                              f"{refusal!r}, got {status}: {detail}"


def test_the_state_check_sees_every_change():
    """The bit-for-bit comparison can fail: each kind of change to a model or its data is reported."""
    from torch import nn

    def fresh():
        model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).double()
        return model, (torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64))

    edits = {
        "state_dict[0.weight]": lambda m, d: m[0].weight.data.copy_(  # one unit in the last place
            torch.nextafter(m[0].weight.data, torch.full_like(m[0].weight.data, 9.0))),
        "0.weight.grad": lambda m, d: setattr(m[0].weight, "grad", torch.zeros(2, 2, dtype=torch.float64)),
        "state_dict[1.running_mean]": lambda m, d: m[1].running_mean.add_(1.0),
        "module[1]": lambda m, d: m[1].eval(),
        "module[0]": lambda m, d: m[0].register_forward_hook(lambda *a: None),
        "data[0]": lambda m, d: d[0].mul_(-1.0),
        "state_dict[0.bias]": lambda m, d: m[0].bias.requires_grad_(False),
    }
    for key, edit in edits.items():
        model, data = fresh()
        before = state_of(model, data)
        edit(model, data)
        assert key in changes(before, state_of(model, data)), key
    model, data = fresh()
    assert changes(state_of(model, data), state_of(model, data)) == []


def test_every_torch_nn_class_has_a_case():
    """A class that a new PyTorch release adds shows up here until it gets a case (or a reason)."""
    covered = {re.split(r"\[", n)[0] for n in CASES}
    missing = [c for c in discovered() if c not in covered and c not in NOT_LAYERS]
    assert not missing, f"torch.nn classes without a sweep case: {missing}"


def test_docs_list_every_refusal():
    with open(DOCS) as f:
        text = f.read()
    for name, (_, refusal) in CASES.items():
        if refusal is not None:
            assert name in text, f"docs/models.md does not list the refusal of {name!r}"
    for name in NOT_LAYERS:
        assert name in text
