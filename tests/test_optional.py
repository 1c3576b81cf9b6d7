"""tests/optional.py: an optional test dependency that is missing skips locally and fails under CI."""

import pytest
from optional import need

MISSING = "hessiancore_no_such_module"


def test_need_imports_present_modules():
    assert need("math").sqrt(4.0) == 2.0


def test_need_fails_under_ci_and_skips_otherwise(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"'{MISSING}'.*CI is set"):
        need(MISSING)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        need(MISSING)
