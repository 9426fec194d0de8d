"""Shared fixtures: where the real data lies, and temporary state folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The real data folder (../shared/data beside the checkout); LEUKOEDGE_DATA overrides it.
DATA_DIR = Path(os.environ.get("LEUKOEDGE_DATA", REPO.parent / "shared" / "data"))


def require_data(*parts: str) -> Path:
    """Path under the shared data folder, or skip the test where the folder is absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def aml_dir() -> Path:
    return require_data("aml-lmu")


@pytest.fixture(scope="session")
def bccd_dir() -> Path:
    return require_data("bccd-frames")


@pytest.fixture(scope="session")
def pbc_dir() -> Path:
    return require_data("pbc-external")
