"""The test suite's own rules."""

from __future__ import annotations

import re
from pathlib import Path


def test_no_test_file_imports_another_or_conftest():
    # Helpers live in tests/support (support/__init__.py): a test that imports another test file runs
    # that file's module-level set-up and ties the layers together.
    tests = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(from|import)\s+(test_\w+|conftest)\b", re.M)
    offenders = [str(p.relative_to(tests)) for p in tests.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
