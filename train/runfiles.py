"""The files of a run directory, and reading a run back for evaluation and quantization.

A run directory holds ``model.keras`` (the best checkpoint), ``splits.json`` (the split manifest),
``history.csv``, ``metrics.json``, ``run.json`` (provenance and the input contract), PNG plots and
``report.md`` / ``report.html`` (:mod:`leukoedge.train.rundoc` owns ``run.json``). Everything a
later step needs (threshold, crop geometry, which images were held out) is read from here, never
re-derived.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.errors import ModelError

MODEL_FILE = "model.keras"
SPLITS_FILE = "splits.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS = {
    "history": "curves.png",
    "roc": "roc.png",
    "pr": "pr.png",
    "confusion": "confusion.png",
    "rates": "rates.png",
    "robustness": "robustness.png",
}

#: Citation of the AML-Cytomorphology_LMU release (the TCIA class codes and the aml-lmu images).
MATEK_CITATION = (
    "Matek, C., Schwarz, S., Marr, C., & Spiekermann, K. (2019). A Single-cell Morphological Dataset of "
    "Leukocytes from AML Patients and Non-malignant Controls. The Cancer Imaging Archive. "
    "doi:10.7937/tcia.2019.36f5o9ld"
)


def citations(data_summary: Mapping[str, Any]) -> list[str]:
    """Data citations for a data summary: the AML-Cytomorphology_LMU release when its codes are used."""
    from leukoedge.train.labels import TCIA_CODES

    tcia = data_summary.get("layout") == "tcia" or bool(
        set(data_summary.get("source_class_counts") or {}) & set(TCIA_CODES)
    )
    return [MATEK_CITATION] if tcia else []


def jsonable(obj: Any) -> Any:
    """Plain JSON types: NaN and infinities become null, numpy scalars and arrays become Python."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | np.ndarray):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write strict JSON (no NaN) atomically."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def write_history_csv(path: str | Path, history: Sequence[Mapping[str, float]]) -> Path:
    """One row per epoch with every logged metric (columns in a stable order)."""
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    order = ["epoch", *sorted(k for k in keys if k != "epoch")]
    out = Path(path)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=order)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in order})
    return out


def resolve_model(path: str | Path) -> tuple[Path, Path | None]:
    """(model file, run directory or None) for a run directory or a ``.keras`` file.

    A model file counts as part of a run when its folder holds a ``run.json``.
    """
    p = Path(path)
    if p.is_dir():
        model = p / MODEL_FILE
        if not model.is_file():
            raise ModelError(f"{p}: no {MODEL_FILE} in this folder; is it a training run directory?")
        return model, p if (p / RUN_FILE).is_file() else None
    if not p.is_file():
        raise ModelError(f"{p}: no such model file or run directory")
    if p.suffix != ".keras":
        raise ModelError(
            f"{p}: expected a .keras model or a run directory (TFLite bundles: 'leukoedge report')"
        )
    return p, p.parent if (p.parent / RUN_FILE).is_file() else None
