"""Static types of the on-device package: mypy over edge/, configured in pyproject.toml ([tool.mypy]).

edge/ is imported as ``leukoedge`` through setuptools' package-dir mapping, which an editable install
resolves with an import hook that mypy cannot follow, and ``mypy edge`` would name the modules
``edge.*``. So the test links edge/ as ``leukoedge`` in a temporary folder on MYPYPATH: every module is
checked under its real name. Paths in the report are mapped back to edge/.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None, reason="mypy is not installed (the [dev] extra)"
)


def _search_path(tmp_path: Path) -> Path:
    """A folder holding one entry, ``leukoedge``, that is edge/."""
    folder = tmp_path / "path"
    folder.mkdir()
    try:
        (folder / "leukoedge").symlink_to(ROOT / "edge", target_is_directory=True)
    except OSError as e:  # e.g. Windows without the symlink privilege
        pytest.skip(f"cannot make a symbolic link here: {e}")
    return folder


def test_edge_package_passes_mypy(tmp_path: Path) -> None:
    search = _search_path(tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "MYPYPATH": str(search)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    report = (proc.stdout + proc.stderr).replace(str(search / "leukoedge"), "edge")
    assert proc.returncode == 0, f"mypy failed (exit {proc.returncode}):\n{report}"
    assert "Success" in report, report
