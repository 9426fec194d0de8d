"""The bundle manifest: what the edge needs to run a model, and where the model came from.

Thresholds are chosen on the validation split during training; here each one is mapped onto the
int8 model's output grid (:func:`leukoedge.metrics.snap_threshold`) so that the threshold the
device compares against is a value its uint8 output can take, without changing any decision.
All three variants carry the same snapped operating threshold, so they are compared at one rule.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import Any

from leukoedge.contract import InputContract
from leukoedge.metrics import snap_threshold
from leukoedge.quantize.convert import IOSpec
from leukoedge.quantize.source import RunSource

logger = logging.getLogger(__name__)

MODEL_VERSION_FALLBACK = "unversioned"


def snapped_thresholds(thresholds: dict[str, Any], int8_output: dict[str, Any]) -> dict[str, Any]:
    """The run's thresholds plus each one snapped to the int8 output grid."""
    scale = float(int8_output["scale"])
    zero_point = int(int8_output["zero_point"])
    values = {k: v for k, v in thresholds.items() if isinstance(v, float)}
    return {
        **thresholds,
        "snapped": {k: snap_threshold(v, scale, zero_point) for k, v in values.items()},
        "grid": {"scale": scale, "zero_point": zero_point, "dtype": int8_output["dtype"]},
    }


def model_version(source: RunSource) -> str:
    """The run's own version or id, else the first 12 hex digits of the Keras file's sha256."""
    for key in ("model_version", "version", "run_id"):
        if isinstance(source.run.get(key), str | int):
            return str(source.run[key])
    return f"sha256:{keras_sha256(source)[:12]}"


def keras_sha256(source: RunSource) -> str:
    return hashlib.sha256(source.model_path.read_bytes()).hexdigest()


def build_manifest(
    *,
    name: str,
    variant: str,
    source: RunSource,
    spec: IOSpec,
    thresholds: dict[str, Any],
    versions: dict[str, str],
    commands: dict[str, str | None],
    calibration: dict[str, Any] | None,
    architecture: dict[str, Any],
) -> dict[str, Any]:
    """A variant's manifest (without the bookkeeping keys :func:`write_bundle` fills in)."""
    contract: InputContract = source.contract
    operating = thresholds["snapped"]["operating"]
    contract = replace(contract, threshold=operating)
    return {
        "model": {
            "name": name,
            "version": model_version(source),
            "variant": variant,
            **architecture,
            "source": {
                "keras_file": str(source.model_path),
                "keras_sha256": keras_sha256(source),
                "run_dir": str(source.run_dir) if source.run_dir else None,
                "split_manifest": str(source.split_manifest) if source.split_manifest else None,
            },
        },
        "input_contract": contract.to_dict(),
        "input": spec.input,
        "output": spec.output,
        "thresholds": thresholds,
        "training_data": source.data_summary(),
        "class_mapping": source.class_mapping(),
        "versions": versions,
        "commands": commands,
        "calibration": calibration,
        "research_use_only": True,
    }
