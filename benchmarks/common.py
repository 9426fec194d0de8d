"""What the benchmark scripts share: the result table with targets, and where the images are."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukoedge.bench.suite import fmt_num
from leukoedge.bench.timing import Stat, load_average, machine_info

REPO = Path(__file__).resolve().parents[1]
#: The shared real data: LEUKOEDGE_DATA, else ../shared/data beside the checkout (as the tests look).
DATA_DIR = Path(os.environ.get("LEUKOEDGE_DATA", REPO.parent / "shared" / "data"))


@dataclass(frozen=True)
class Target:
    """A goal a figure must meet: ``op`` is "<=" or ">="."""

    op: str
    value: float

    def met(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def __str__(self) -> str:
        return f"{self.op} {fmt_num(self.value)}"


def row(
    label: str,
    unit: str,
    value: float | None,
    stat: Stat | None = None,
    target: Target | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One figure of a benchmark: its median (or single value), spread, target and verdict."""
    passed = target.met(value) if target else None
    return {
        "label": label,
        "unit": unit,
        "value": value,
        "stat": stat.to_dict() if stat else None,
        "target": {"op": target.op, "value": target.value} if target else None,
        "result": None if passed is None else ("PASS" if passed else "MISS"),
        "note": note,
    }


def format_rows(title: str, result: dict[str, Any], extra: list[str] | None = None) -> str:
    m = result.get("machine") or machine_info()
    load = result.get("load_average") or {}
    lines = [
        title,
        f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, Python {m['python']}",
        f"load:    1-min load average {load.get('start')} at start, {load.get('end')} at end",
        "",
        f"  {'figure':<38} {'median':>9} {'unit':<8} {'spread p25-p75 (min-max)':<30} {'target':<10} result",
    ]
    for r in result["figures"].values():
        s = r["stat"]
        spread = (
            f"{fmt_num(s['p25'])}-{fmt_num(s['p75'])} ({fmt_num(s['min'])}-{fmt_num(s['max'])})" if s else ""
        )
        target = f"{r['target']['op']} {fmt_num(r['target']['value'])}" if r["target"] else ""
        line = f"  {r['label']:<38} {fmt_num(r['value']):>9} {r['unit']:<8} {spread:<30} {target:<10} "
        line += f"{r['result'] or '':<5} {r['note']}"
        lines.append(line.rstrip())
    if extra:
        lines += ["", *extra]
    return "\n".join(lines)


def emit(result: dict[str, Any], as_json: bool, title: str, extra: list[str] | None = None) -> None:
    print(json.dumps(result, indent=2) if as_json else format_rows(title, result, extra))


def with_load(measure: Any, *args: Any) -> dict[str, Any]:
    """``measure(*args)``'s result dict with the load average before and after it."""
    start = load_average()
    result = measure(*args)
    result["load_average"] = {"start": start, "end": load_average()}
    return result


def find_images(given: str | None) -> Path | None:
    """The folder of single-cell JPEGs to classify: the one given, else the shared aml-lmu set."""
    if given:
        return Path(given)
    default = DATA_DIR / "aml-lmu"
    return default if default.is_dir() else None
