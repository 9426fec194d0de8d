"""The bundle manifest: what the edge needs to run a model, and where the model came from.

Thresholds are chosen on the validation split during training; here each one is mapped onto the
int8 model's output grid (:func:`leukoedge.metrics.snap_threshold`) so that the threshold the
device compares against is a value its uint8 output can take, without changing any decision.
All three variants carry the same snapped operating threshold, so they are compared at one rule.
The manifest stores it once, in the input contract, beside the value chosen on validation.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from leukoedge.contract import InputContract
from leukoedge.inference.manifest import (
    AlternativeThreshold,
    BundleManifest,
    ModelRecord,
    ThresholdRecord,
    rule_key,
)
from leukoedge.metrics import snap_threshold
from leukoedge.quantize.convert import IOSpec
from leukoedge.quantize.source import RunSource
from leukoedge.quantize.validation import differential_limits, differential_validation

logger = logging.getLogger(__name__)


def threshold_record(
    thresholds: dict[str, Any], int8_output: dict[str, Any], contract: InputContract | None = None
) -> tuple[float, ThresholdRecord]:
    """(operating threshold snapped to the int8 output grid, the record of how it was chosen).

    ``thresholds`` is :meth:`RunSource.thresholds`: the operating value, its rule, and the other
    rules' values; each is snapped, the others kept as alternatives for reference.

    For a differential (softmax) model the threshold is on p_blast, the sum of the dequantized
    outputs of the blast classes. Each output is ``(q - z) * scale``, so a sum over k classes is
    ``(sum q - k z) * scale``: the same grid, with zero point ``k z`` (the uint8 softmax output has
    scale 1/256 and zero point 0, so one blast class or several give the 1/256 grid).
    """
    scale = float(int8_output["scale"])
    k = len(contract.suspect_classes) if contract is not None and contract.differential else 1
    zero_point = int(int8_output["zero_point"]) * k
    rule = thresholds.get("operating_rule")
    own = rule_key(rule, thresholds)
    alternatives = {
        name: AlternativeThreshold(value, snap_threshold(value, scale, zero_point))
        for name, value in thresholds.items()
        if isinstance(value, float) and name not in ("operating", own)
    }
    grid: dict[str, Any] = {"scale": scale, "zero_point": zero_point, "dtype": int8_output["dtype"]}
    if contract is not None and contract.differential:
        grid["applies_to"] = (
            f"p_blast = sum of the dequantized int8 outputs of {', '.join(contract.suspect_classes)}"
            f" ({k} of {len(contract.class_names)} softmax units)"
        )
        grid["note"] = (
            "the softmax units are used as the model gives them (the int8 outputs sum to one within a "
            "few grid steps), so p_blast, a sum of outputs, lies on this grid"
        )
    record = ThresholdRecord(
        rule=rule,
        chosen_on=thresholds.get("chosen_on"),
        grid=grid,
        alternatives=alternatives,
        rule_key=own if own != rule else None,
    )
    return snap_threshold(float(thresholds["operating"]), scale, zero_point), record


def model_version(source: RunSource) -> str:
    """The first 12 hex digits of the Keras file's sha256: a run records no version of its own."""
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
    int8_output: dict[str, Any],
    versions: dict[str, str],
    commands: dict[str, str | None],
    calibration: dict[str, Any] | None,
    architecture: dict[str, Any],
    training_records: Sequence[Any] = (),
) -> BundleManifest:
    """A variant's manifest; :func:`write_bundle` adds the flatbuffer's record.

    A differential model's manifest also carries the run's per-class validation figures
    (``metrics.validation``) and what the model was not validated on (``limits``);
    ``training_records`` (the run's split records) tell which cell types came from thumbnails only.
    """
    snapped, record = threshold_record(thresholds, int8_output, source.contract)
    contract = replace(source.contract, threshold=float(thresholds["operating"]), threshold_snapped=snapped)
    validation = differential_validation(source.metrics) if contract.differential else None
    return BundleManifest(
        model=ModelRecord(
            name=name,
            variant=variant,
            version=model_version(source),
            provenance={
                **architecture,
                "source": {
                    "keras_file": str(source.model_path),
                    "keras_sha256": keras_sha256(source),
                    "run_dir": str(source.run_dir) if source.run_dir else None,
                    "split_manifest": str(source.split_manifest) if source.split_manifest else None,
                },
            },
        ),
        contract=contract,
        input=spec.input,
        output=spec.output,
        thresholds=record,
        training_data=source.data_summary(),
        class_mapping=source.class_mapping(),
        versions=versions,
        commands=commands,
        calibration=calibration,
        metrics={"validation": validation} if validation else None,
        limits=differential_limits(contract, training_records, validation) if contract.differential else None,
    )
