"""docs/architecture.md stays true to the tree: every package folder of edge/ is described there."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def package_folders(root: Path) -> list[str]:
    """Folders under edge/ that are packages, as ``edge/x/y/`` paths relative to the checkout."""
    edge = root / "edge"
    return sorted(
        f"{p.parent.relative_to(root).as_posix()}/" for p in edge.rglob("__init__.py") if p.parent != edge
    )


def test_every_edge_package_is_in_the_architecture_doc() -> None:
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = []
    for folder in package_folders(REPO):
        name = folder.removeprefix("edge/")
        short = name.split("/")[-2] + "/"
        if f"`{folder}`" not in doc and f"`{name}`" not in doc and f"`{short}`" not in doc:
            missing.append(folder)
    assert not missing, f"not described in docs/architecture.md: {missing}"


def test_the_readme_links_the_architecture_doc() -> None:
    assert "docs/architecture.md" in (REPO / "README.md").read_text(encoding="utf-8")
