"""Optional test dependencies (peers compared against, e.g. curvlinops, laplace-torch, transformers).

``need(name)`` imports the module; missing: skipped locally, FAILS when the environment variable CI is set
(``scripts/setup.sh --dev --bench`` installs them; CI must not pass by skipping the comparisons).
"""

from __future__ import annotations

import importlib
import os

import pytest


def need(name: str):
    """The imported module ``name``; ``pytest.skip`` when it cannot be imported, ``pytest.fail`` under CI."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        why = f"optional test dependency {name!r} cannot be imported ({type(e).__name__}: {e})"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI is set: install it with scripts/setup.sh --dev --bench", pytrace=False)
        pytest.skip(why, allow_module_level=True)
