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

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
SPLIT_MANIFEST_FORMAT = "leukoedge-split-manifest"


@dataclass
class RunSource:
    """The model to quantize and what its training run wrote down about it."""

    model_path: Path
    run_dir: Path | None = None
    run: dict[str, Any] = field(default_factory=dict)
    split_manifest: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def contract(self) -> InputContract:
        """The input contract the run recorded (threshold, crop geometry), or the defaults."""
        data = self.run.get("input_contract")
        if not isinstance(data, dict):
            logger.warning("%s: no input contract recorded; using the contract defaults", self.model_path)
            return InputContract()
        try:
            return InputContract.from_dict(data)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{self.run_dir}/{RUN_FILE}: invalid input_contract: {e}") from e

    def thresholds(self) -> dict[str, Any]:
        """Thresholds chosen on the validation split: ``{name: value, ..., "chosen_on": ...}``.

        ``operating`` is the one the run chose (run.json ``operating_threshold``, else the
        contract's threshold); the others come from metrics.json ``thresholds``.
        """
        out: dict[str, Any] = {}
        chosen = self.metrics.get("thresholds") or self.run.get("thresholds")
        if isinstance(chosen, dict):
            for key, value in chosen.items():
                number = value.get("value") if isinstance(value, dict) else value
                if not isinstance(number, int | float) or isinstance(number, bool):
                    continue
                target = value.get("target") if isinstance(value, dict) else None
                name = f"sensitivity_at_{float(target):g}" if key == "sensitivity" and target else key
                out[name] = float(number)
        operating = self.run.get("operating_threshold")
        if isinstance(operating, dict) and isinstance(operating.get("value"), int | float):
            out = {"operating": float(operating["value"]), **out}
            out["operating_rule"] = str(operating.get("rule", "unknown"))
        else:
            out = {"operating": float(self.contract.threshold if self.run else DEFAULT_THRESHOLD), **out}
        out["chosen_on"] = "validation" if self.run else "default (no run.json)"
        return out

    def training_command(self) -> str | None:
        for key in ("command", "command_line", "train_command"):
            value = self.run.get(key) or self.run.get("provenance", {}).get(key)
            if value:
                return " ".join(value) if isinstance(value, list) else str(value)
        return None

    def data_summary(self) -> dict[str, Any] | None:
        for key in ("data", "data_summary", "dataset"):
            if isinstance(self.run.get(key), dict):
                return self.run[key]
        return None

    def class_mapping(self) -> dict[str, str] | None:
        mapping = self.run.get("class_mapping") or self.run.get("mapping")
        if mapping is None and self.data_summary():
            mapping = self.data_summary().get("mapping")
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
    run = _read_object(run_dir / RUN_FILE) if run_dir is not None else {}
    metrics = _read_object(run_dir / METRICS_FILE) if run_dir is not None else {}
    split_manifest = find_split_manifest(run_dir) if run_dir is not None else None
    return RunSource(model_path.resolve(), run_dir, run, split_manifest, metrics)


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
