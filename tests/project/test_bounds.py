"""Product code stays readable at a glance: modules, classes and functions within fixed sizes.

Bounds (product code in edge/, train/ and quantize/; tests may be longer): no module over 400 lines,
no class over 250 lines, no function over 60 lines. A piece that outgrows them is split by what it
does, not cut into arbitrary halves.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOMS = ("edge", "train", "quantize")
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 400, 250, 60


def oversized(root: Path, rooms: tuple[str, ...] = ROOMS) -> list[str]:
    """Every module, class and function over its bound, as ``path:line kind name (n lines)``."""
    found = []
    for room in rooms:
        for path in sorted((root / room).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            rel = path.relative_to(root)
            n_lines = len(source.splitlines())
            if n_lines > MAX_MODULE:
                found.append(f"{rel}:1 module ({n_lines} lines > {MAX_MODULE})")
            for node in ast.walk(ast.parse(source, filename=str(path))):
                if isinstance(node, ast.ClassDef):
                    kind, limit = "class", MAX_CLASS
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    kind, limit = "function", MAX_FUNCTION
                else:
                    continue
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append(f"{rel}:{node.lineno} {kind} {node.name} ({length} lines > {limit})")
    return found


def test_product_code_is_within_bounds() -> None:
    found = oversized(REPO)
    assert not found, "over the bounds:\n" + "\n".join(found)


def test_the_check_sees_an_oversized_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "big.py").write_text(f"def big():\n{body}\n")
    assert oversized(tmp_path, ("edge",)) == ["edge/big.py:1 function big (62 lines > 60)"]
