"""A test of the package's own code fails when that code fails to import; it never turns into a skip.

Skipping is for what lies outside the project (chromium, systemd-analyze, TensorFlow from the [train]
extra, root, the shared data). ``pytest.importorskip("leukoedge...")`` or a ``find_spec`` check of a
leukoedge module would hide a broken import as a skip, so none may appear in the tests.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PATTERNS = (
    re.compile(r"importorskip\(\s*['\"]leukoedge"),
    re.compile(r"find_spec\(\s*['\"]leukoedge"),
)


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in PATTERNS):
                found.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    return found


def test_no_test_skips_on_an_import_of_the_package() -> None:
    assert offenders(TESTS) == []


def test_the_scan_finds_such_a_skip(tmp_path: Path) -> None:
    skip = 'mod = pytest.importorskip("leukoedge.vision.crops")'
    (tmp_path / "test_x.py").write_text(f"import pytest\n{skip}\n")
    (tmp_path / "test_y.py").write_text('import pytest\ntf = pytest.importorskip("tensorflow")\n')
    assert offenders(tmp_path) == [f"test_x.py:2: {skip}"]
