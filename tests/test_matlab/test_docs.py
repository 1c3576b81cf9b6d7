"""Every MATLAB example a user reads runs as written: the ```matlab blocks of README.md and docs/*.md, and the
"Example:" section of every public function's help, each in a fresh workspace in GNU Octave with the
test doubles, answered by a request worker. An example that needs MATLAB itself would say "MATLAB only"
and be listed in MATLAB_ONLY; there are none (the doubles have dlfeval/dlgradient), so every one is run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from octave_session import session

ROOT = Path(__file__).resolve().parents[2]
#: Examples that need MATLAB itself: exactly these are skipped (none: the doubles have dlfeval/dlgradient).
MATLAB_ONLY: set[str] = set()


def doc_blocks() -> dict[str, str]:
    blocks = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, code in enumerate(re.findall(r"```matlab\n(.*?)```", path.read_text(), flags=re.S)):
            blocks[f"{path.relative_to(ROOT)}:{i + 1}"] = code
    return blocks


def help_examples() -> dict[str, str]:
    """The lines under "Example...:" in the help text of each public function, up to the next blank line
    of the help followed by "See also" (or the end of the help)."""
    out = {}
    for path in sorted((ROOT / "matlab").glob("*.m")):
        if path.stem == "Contents":
            continue
        help_lines = []
        for line in path.read_text().splitlines()[1:]:
            if not line.strip().startswith("%"):
                break
            help_lines.append(line.strip()[1:])
        text = "\n".join(help_lines)
        m = re.search(r"^\s*Example[^\n]*:\n(.*?)(?:\n\s*\n\s*See also|\Z)", text, flags=re.S | re.M)
        assert m, f"{path.name}: the help has no Example"
        header = re.search(r"^\s*(Example[^\n]*):", text, flags=re.M).group(1)
        code = "\n".join(ln[4:] if ln.startswith("    ") else ln for ln in m.group(1).splitlines())
        out[f"help:{path.stem}"] = ("% MATLAB only\n" if "MATLAB only" in header else "") + code
    return out


EXAMPLES = {**doc_blocks(), **help_examples()}


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    yield from session(tmp_path_factory.mktemp("hcserver"))


def test_the_examples_are_found():
    assert len(doc_blocks()) >= 5
    assert {k for k in EXAMPLES if k.startswith("help:")} == {
        f"help:{p.stem}" for p in (ROOT / "matlab").glob("*.m") if p.stem != "Contents"}
    assert {k for k, code in EXAMPLES.items() if "MATLAB only" in code.splitlines()[0]} == MATLAB_ONLY


@pytest.mark.parametrize("name", sorted(k for k in EXAMPLES if k not in MATLAB_ONLY))
def test_example_runs_as_written(eng, name, tmp_path):
    eng.eval("clear -variables; rand('state', 0); randn('state', 0);")
    eng.eval(f"cd('{tmp_path}');")
    try:
        eng.eval(EXAMPLES[name])
    finally:
        eng.eval(f"cd('{ROOT}');")
