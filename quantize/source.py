"""What a quantization starts from: a training run folder (or a bare Keras file) and its records.

A run folder holds ``model.keras``, ``run.json`` (provenance, data summary, input contract and
thresholds chosen on the validation split) and the split manifest. The quantizer takes its
calibration images from the run's training split and its held-out images from the test split,
so neither the calibration nor the report ever looks at the images that chose the threshold.
A bare Keras file has none of that: its threshold and crop geometry fall back to the contract's
defaults, and the splits are made from the data folder with the training defaults (and said so).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from leukoedge.contract import DEFAULT_THRESHOLD, InputContract
from leukoedge.errors import DataError, ModelError
from leukoedge.train.rundoc import RunDocument, read_run_document

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"  # read through leukoedge.train.rundoc
METRICS_FILE = "metrics.json"
SPLIT_MANIFEST_FORMAT = "leukoedge-split-manifest"


@dataclass
class RunSource:
    """The model to quantize and what its training run wrote down about it (None for a bare file)."""

    model_path: Path
    run_dir: Path | None = None
    run: RunDocument | None = None
    split_manifest: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def contract(self) -> InputContract:
        """The input contract the run recorded (threshold, crop geometry), or the defaults."""
        if self.run is None:
            logger.warning("%s: no input contract recorded; using the contract defaults", self.model_path)
            return InputContract()
        return self.run.contract

    def thresholds(self) -> dict[str, Any]:
        """Thresholds chosen on the validation split: ``{name: value, ..., "chosen_on": ...}``.

        ``operating`` is the one the run chose (its operating threshold, else the contract's
        threshold); the others come from metrics.json ``thresholds``.
        """
        out: dict[str, Any] = {}
        for key, value in (self.metrics.get("thresholds") or {}).items():
            number = value.get("value") if isinstance(value, dict) else value
            if not isinstance(number, int | float) or isinstance(number, bool):
                continue
            target = value.get("target") if isinstance(value, dict) else None
            name = f"sensitivity_at_{float(target):g}" if key == "sensitivity" and target else key
            out[name] = float(number)
        if self.run is None:
            return {"operating": DEFAULT_THRESHOLD, **out, "chosen_on": "default (no run.json)"}
        if self.run.operating is None:
            return {"operating": self.run.contract.threshold, **out, "chosen_on": "validation"}
        op = self.run.operating
        return {"operating": op.value, **out, "operating_rule": op.rule, "chosen_on": "validation"}

    def training_command(self) -> str | None:
        return self.run.command if self.run else None

    def data_summary(self) -> dict[str, Any] | None:
        return self.run.data if self.run else None

    def class_mapping(self) -> dict[str, str] | None:
        mapping = (self.data_summary() or {}).get("mapping")
        return mapping if isinstance(mapping, dict) else None


def resolve_source(path: str | os.PathLike) -> RunSource:
    """A run folder, a ``model.keras`` inside one, or a bare Keras file."""
    p = Path(path)
    if p.is_dir():
        model_path = p / MODEL_FILE
        if not model_path.is_file():
            raise ModelError(
                f"{p}: no {MODEL_FILE} in this folder; pass a training run folder or a .keras file"
            )
        run_dir: Path | None = p
    elif p.is_file():
        if p.suffix != ".keras":
            raise ModelError(f"{p}: not a Keras model file (expected a .keras file or a training run folder)")
        model_path = p
        run_dir = p.parent if (p.parent / RUN_FILE).is_file() else None
    else:
        raise ModelError(f"{p}: no such model file or run folder")
    run = _read_run(run_dir / RUN_FILE) if run_dir is not None else None
    metrics = _read_object(run_dir / METRICS_FILE) if run_dir is not None else {}
    split_manifest = find_split_manifest(run_dir) if run_dir is not None else None
    return RunSource(model_path.resolve(), run_dir, run, split_manifest, metrics)


def _read_run(path: Path) -> RunDocument | None:
    """The run document, or None when the folder has none; a run file that cannot be used is refused."""
    if not path.is_file():
        return None
    try:
        return read_run_document(path)
    except DataError as e:
        raise ModelError(str(e)) from e


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object from the run folder, or {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read this run file: {e}") from e
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a JSON object")
    return data


def find_split_manifest(run_dir: Path) -> Path | None:
    """The run's split manifest: the JSON file in the run folder whose format says so."""
    for candidate in sorted(run_dir.glob("*.json")):
        try:
            with open(candidate, encoding="utf-8") as f:
                head = f.read(4096)
        except OSError:
            continue
        if f'"{SPLIT_MANIFEST_FORMAT}"' in head:
            return candidate
    return None


def load_splits(source: RunSource, data: str | os.PathLike | None, seed: int = 0) -> Any:
    """The train/val/test records: the run's split manifest, or splits made from ``data`` now.

    Without a manifest the splits are made with the training defaults; the model may then have
    seen some of the "held-out" images, which the report states.
    """
    from leukoedge.train.datasets import load_dataset
    from leukoedge.train.splits import make_splits, read_split_manifest

    if source.split_manifest is not None:
        splits = read_split_manifest(source.split_manifest)
        splits.meta["source"] = str(source.split_manifest)
        return splits
    if data is None:
        raise DataError(
            f"{source.model_path}: no split manifest beside the model and no --data folder; "
            "pass the training run folder or --data"
        )
    logger.warning("no split manifest found; making splits from %s with the training defaults", data)
    splits = make_splits(load_dataset(data), seed=seed)
    splits.meta["extra"] = {
        "note": f"splits made at quantization from {data}: the model's training images are unknown"
    }
    return splits
