"""Compare the ``leukoedge classify --format json`` output of two platforms, cell by cell.

An int8 model's output is a uint8 code, so two correct runtimes may differ by one code (1/256)
when a rounding tie falls differently on another CPU or kernel; anything more is a real difference.
The labels must be identical. Nothing here runs a model: it reads JSON Lines, so it is cheap to test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

#: One quantization step of a uint8 sigmoid output.
STEP = 1.0 / 256
#: JSON output rounds p to 6 decimals; allow for that on top of the step tolerance.
ROUNDING = 1e-6


@dataclass(frozen=True)
class Row:
    """One classified cell on both platforms; ``problem`` is None when they agree."""

    image: str
    ref_label: str | None
    ref_p: float | None
    other_label: str | None
    other_p: float | None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def steps(self) -> float | None:
        """|Δp| in quantization steps (1/256), or None when a side has no probability."""
        if self.ref_p is None or self.other_p is None:
            return None
        return abs(self.ref_p - self.other_p) / STEP


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """The JSON objects of ``classify --format json`` output; other lines (notices, logs) are skipped."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and "path" in value:
            records.append(value)
    return records


def display_name(path: str) -> str:
    """``class/file.jpg``: short, and still tells the AML classes apart."""
    p = PurePath(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _cell_row(name: str, ref: dict[str, Any], other: dict[str, Any], tolerance_steps: float) -> Row:
    row = Row(name, ref.get("label"), ref.get("p_malignant"), other.get("label"), other.get("p_malignant"))
    problems = []
    if ref.get("edge") or other.get("edge"):
        if bool(ref.get("edge")) != bool(other.get("edge")):
            problems.append("edge flag differs")
        return replace(row, problem="; ".join(problems) or None)
    if row.ref_p is None or row.other_p is None:
        problems.append("no probability")
    elif abs(row.ref_p - row.other_p) > tolerance_steps * STEP + ROUNDING:
        problems.append(f"|Δp| > {tolerance_steps:g}/256")
    if row.ref_label != row.other_label:
        problems.append("label differs")
    if ref.get("threshold") != other.get("threshold"):
        problems.append("threshold differs")
    return replace(row, problem="; ".join(problems) or None)


def _field_rows(name: str, ref: dict[str, Any], other: dict[str, Any], tolerance_steps: float) -> list[Row]:
    ref_cells, other_cells = ref.get("cells", []), other.get("cells", [])
    rows = []
    if len(ref_cells) != len(other_cells):
        rows.append(
            Row(name, None, None, None, None, f"{len(ref_cells)} cells on x86, {len(other_cells)} here")
        )
    for i, (a, b) in enumerate(zip(ref_cells, other_cells, strict=False)):
        row = _cell_row(f"{name}#{i}", a, b, tolerance_steps)
        if a.get("bbox") != b.get("bbox"):
            extra = f"bbox {a.get('bbox')} vs {b.get('bbox')}"
            row = replace(row, problem=f"{row.problem}; {extra}" if row.problem else extra)
        rows.append(row)
    if not ref_cells and not other_cells:
        rows.append(Row(f"{name} (no cells)", None, None, None, None))
    return rows


def compare_records(
    reference: Iterable[dict[str, Any]], other: Iterable[dict[str, Any]], tolerance_steps: float = 1.0
) -> list[Row]:
    """Rows for every image of ``reference`` matched by path in ``other`` (cells of fields expanded)."""
    by_path = {r["path"]: r for r in other}
    rows: list[Row] = []
    seen = set()
    for ref in reference:
        path = ref["path"]
        seen.add(path)
        name = display_name(path)
        got = by_path.get(path)
        if got is None:
            rows.append(Row(name, ref.get("label"), ref.get("p_malignant"), None, None, "missing here"))
        elif not ref.get("ok") or not got.get("ok"):
            why = ref.get("error") if not ref.get("ok") else got.get("error")
            side = "x86" if not ref.get("ok") else "here"
            rows.append(Row(name, None, None, None, None, f"failed on {side}: {why}"))
        elif "cells" in ref or "cells" in got:
            rows.extend(_field_rows(name, ref, got, tolerance_steps))
        else:
            rows.append(_cell_row(name, ref, got, tolerance_steps))
    for path in by_path:
        if path not in seen:
            rows.append(Row(display_name(path), None, None, None, None, "not in the x86 output"))
    return rows


def _cell(label: str | None, p: float | None) -> str:
    if label is None and p is None:
        return "-"
    return f"{label or 'edge'} {'' if p is None else f'{p:.4f}'}".rstrip()


def format_table(rows: list[Row], ref_name: str = "x86_64", other_name: str = "aarch64") -> str:
    """A fixed-width PASS/FAIL table: image, both labels and p, |Δp| in 1/256 steps, status."""
    header = ("image", f"{ref_name} label p", f"{other_name} label p", "|Δp|·256", "status")
    body = [
        (
            r.image,
            _cell(r.ref_label, r.ref_p),
            _cell(r.other_label, r.other_p),
            "-" if r.steps is None else f"{r.steps:.2f}",
            "ok" if r.ok else f"FAIL ({r.problem})",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(4)]
    lines = []
    for line in [header, *body]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(line[:4], widths, strict=True)) + "  " + line[4])
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def verdict(rows: list[Row]) -> tuple[bool, str]:
    """(passed, one summary line). No rows at all is a failure: nothing was compared."""
    failed = [r for r in rows if not r.ok]
    compared = [r for r in rows if r.steps is not None]
    worst = max((r.steps or 0.0 for r in compared), default=0.0)
    passed = bool(rows) and not failed
    word = "PASS" if passed else "FAIL"
    return passed, (
        f"{word}: {len(rows) - len(failed)} of {len(rows)} rows agree "
        f"({len(compared)} probabilities compared, largest |Δp| = {worst:.2f}/256)"
    )
