"""Lists that must exist once: each is kept in one place and checked here against every copy.

* layers: bridge/layers (the translators' ``properties``) -> matlab/private/hcLayerProperties.m (generated)
  and a test double for every translated class;
* entry points: bridge/entrypoints.py <-> the public .m files <-> Contents.m <-> functionSignatures.json <->
  the bridge.api functions the wrappers request <-> the request decoder;
* options: matlab/private/hcOptions.m (what the wrappers parse) <-> functionSignatures.json <->
  bridge/entrypoints.py (MATLAB name -> Python keyword) <-> the keywords the .m files send;
* losses: bridge/losses.LOSSES <-> the 'Loss' choices <-> the help text;
* error identifiers: bridge/identifiers.IDENTIFIERS <-> every identifier raised in .m and .py files <->
  docs/matlab.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from octave_session import octave_engine

from bridge import api, entrypoints
from bridge.identifiers import IDENTIFIERS, PYTHON_ERRORS
from bridge.layers import REGISTRY
from bridge.losses import LOSSES
from bridge.transport import codec

ROOT = Path(__file__).resolve().parents[2]
TOOLBOX = ROOT / "matlab"
SIGNATURES = json.loads((TOOLBOX / "resources" / "functionSignatures.json").read_text())
CALLERS = [*entrypoints.WRAPPERS, "hessiancoreSetup"]


@pytest.fixture(scope="module")
def option_tables():
    """hcOptions(caller) for every function that parses options: {caller: [(name, kind, choices)]}."""
    eng = octave_engine()
    tables = {}
    try:
        for caller in CALLERS:
            eng.eval(f"hcT = hcTestPrivate('hcOptions', '{caller}'); hcN = hcT(:, 1)'; hcK = hcT(:, 3)'; "
                     "hcC = hcT(:, 4)';")
            choices = [[c] if isinstance(c, str) else list(c) for c in eng.workspace["hcC"]]
            tables[caller] = list(zip(eng.workspace["hcN"], eng.workspace["hcK"], choices))
    finally:
        eng.quit()
    return tables


def test_layer_properties_file_is_generated_from_the_translators():
    from bridge.layers.__main__ import matlab_source

    assert (TOOLBOX / "private" / "hcLayerProperties.m").read_text() == matlab_source(), \
        "regenerate: python -m bridge.layers > matlab/private/hcLayerProperties.m"
    proc = subprocess.run([sys.executable, "-m", "bridge.layers"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=True)
    assert proc.stdout == matlab_source()


def test_every_translated_class_has_a_test_double():
    doubles = {p.stem for p in (ROOT / "tests" / "octave" / "+nnet" / "+cnn" / "+layer").glob("*.m")}
    assert set(REGISTRY) <= doubles, sorted(set(REGISTRY) - doubles)


def test_public_functions_are_listed_once_everywhere():
    public = sorted(p.stem for p in TOOLBOX.glob("*.m") if p.stem != "Contents")
    assert public == sorted(entrypoints.public_functions())
    assert sorted(k for k in SIGNATURES if not k.startswith("_")) == public
    contents = (TOOLBOX / "Contents.m").read_text()
    listed = re.findall(r"^%\s+(\w+)\s+- ", contents, flags=re.M)
    assert sorted(listed) == public and len(listed) == len(set(listed))
    assert not [p for p in (TOOLBOX / "private").glob("*.m") if p.stem in public]


def test_wrappers_request_the_api_functions_the_table_names():
    assert tuple(codec.FUNCTIONS) == entrypoints.API_FUNCTIONS
    for fn in entrypoints.API_FUNCTIONS:
        assert callable(getattr(api, fn)), fn
    for wrapper, fn in entrypoints.WRAPPERS.items():
        text = (TOOLBOX / f"{wrapper}.m").read_text()
        assert re.findall(r"hcRequest\('(\w+)'", text) == [fn], wrapper
        for python_name in entrypoints.OWN_OPTIONS[wrapper].values():
            if python_name is not None and wrapper != "dlhessianEigs":
                assert f"'{python_name}'" in text, (wrapper, python_name)
    request = (TOOLBOX / "private" / "hcRequest.m").read_text()
    for python_name in filter(None, entrypoints.COMMON_OPTIONS.values()):
        assert f"'{python_name}'" in request, python_name
    assert "'which'" in (TOOLBOX / "dlhessianEigs.m").read_text()
    # the MATLAB backend names the wrapper in its errors: its map is the table's, inverted
    backend = (TOOLBOX / "private" / "hcMatlabBackend.m").read_text()
    pairs = re.findall(r"'(\w+)', '(dl\w+)'", backend[backend.index("wrappers = struct("):])
    assert dict(pairs) == {fn: wrapper for wrapper, fn in entrypoints.WRAPPERS.items()}


def test_options_match_signatures_and_the_python_table(option_tables):
    for caller, table in option_tables.items():
        names = [n for n, _, _ in table]
        expected = entrypoints.SETUP_OPTIONS if caller == "hessiancoreSetup" else entrypoints.options_of(caller)
        assert names == list(expected), caller
        namevalue = [a for a in SIGNATURES[caller]["inputs"] if a["kind"] == "namevalue"]
        assert [a["name"] for a in namevalue] == names, caller
        for (name, kind, choices), arg in zip(table, namevalue):
            types = json.dumps(arg["type"])
            if kind == "choice":
                listed = re.search(r"choices=\{([^}]*)\}", types).group(1)
                assert re.findall(r"'([^']*)'", listed) == choices, (caller, name)
            else:
                assert "choices" not in types
                word = {"text": "char", "struct": "struct", "count": "integer", "seed": "integer",
                        "nonneg": "nonnegative", "positive": "positive", "budget": "numeric", "logical": "logical",
                        "function": "function_handle"}
                assert word[kind] in types, (caller, name, kind, types)


def test_losses_exist_once(option_tables):
    loss = next(c for n, k, c in option_tables["dlhessian"] if n == "Loss")
    assert tuple(loss) == LOSSES
    help_text = (TOOLBOX / "dlhessian.m").read_text()
    for name in LOSSES:
        assert f"'{name}'" in help_text, name
    docs = (ROOT / "docs" / "matlab.md").read_text()
    for name in LOSSES:
        assert name in docs, name


def test_error_identifiers_come_from_one_table():
    raised = set()
    for path in [*TOOLBOX.rglob("*.m")]:
        raised |= set(re.findall(r"'(hessiancore:\w+)'", path.read_text()))
    for path in (ROOT / "bridge").rglob("*.py"):
        raised |= set(re.findall(r"\"(hessiancore:\w+)\"", path.read_text()))
    assert raised <= set(IDENTIFIERS), sorted(raised - set(IDENTIFIERS))
    assert {ident for _, ident in PYTHON_ERRORS} <= set(IDENTIFIERS)
    docs = (ROOT / "docs" / "matlab.md").read_text()
    for ident in IDENTIFIERS:
        assert f"`{ident}`" in docs, ident


def test_signatures_file_is_valid_and_names_the_positional_arguments():
    assert SIGNATURES["_schemaVersion"] == "1.0.0"
    for name, sig in SIGNATURES.items():
        if name.startswith("_"):
            continue
        first = (TOOLBOX / f"{name}.m").read_text().splitlines()[0]
        inputs = re.search(r"\((.*)\)", first).group(1).replace(" ", "").split(",")
        positional = [a["name"] for a in sig["inputs"] if a["kind"] in ("required", "ordered")]
        assert positional == [i for i in inputs if i != "varargin"], name


def test_the_default_loss_rule_is_the_same_on_both_backends():
    """Without 'Loss': the MATLAB backend (hcDefaultLoss) picks what the Python bridge picks
    (bridge.losses.default_loss of the exported output layer)."""
    from bridge.losses import default_loss

    eng = octave_engine()
    try:
        for tail, layers in {"softmax": "fullyConnectedLayer(3) softmaxLayer", "sigmoid": "fullyConnectedLayer(1) "
                             "sigmoidLayer", "fc": "fullyConnectedLayer(2)"}.items():
            eng.eval(f"dlN = dlnetwork([featureInputLayer(3) fullyConnectedLayer(4) tanhLayer {layers}]); "
                     "dlLoss = hcTestPrivate('hcDefaultLoss', dlN); dlSpec = dlnetworkToSpec(dlN); "
                     "dlClass = dlSpec.Layers{end}.Class;")
            assert eng.workspace["dlLoss"] == default_loss(eng.workspace["dlClass"]), tail
        assert eng.workspace["dlLoss"] == "mse"
    finally:
        eng.quit()
