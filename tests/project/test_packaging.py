"""The distribution's shape: namespaced import names, listed packages, help on every command."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from leukoedge.cli import COMMANDS, cli

REPO = Path(__file__).resolve().parents[2]
MAPPING = {"edge": "leukoedge", "train": "leukoedge.train", "quantize": "leukoedge.quantize"}


def _declared_packages() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_listed() -> None:
    found = set()
    for top, name in MAPPING.items():
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / top)
            parts = [p for p in rel.parts if p]
            found.add(".".join([name, *parts]))
    assert found == _declared_packages()


def test_wheel_is_namespaced(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {result.stderr[-300:]}")
    (wheel,) = tmp_path.glob("leukoedge-*.whl")
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert "leukoedge" in tops
    assert not tops & {"edge", "train", "quantize", "tests"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "leukoedge/train/model.py" in names
    assert "leukoedge/contract.py" in names


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command = cli.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None and (command.help or "").strip(), f"{name} has no help text"


def test_top_level_help_says_research_use_only() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "not a medical device" in result.output
    for name in COMMANDS:
        assert name in result.output
