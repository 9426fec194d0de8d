"""The bundle manifest document: one threshold, a schema version, and old manifests read the same."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from leukoedge.contract import MANIFEST_SCHEMA_VERSION, CropGeometry, InputContract
from leukoedge.errors import BundleError
from leukoedge.inference.bundle import default_bundle_path, load_bundle, load_default_bundle, write_bundle
from leukoedge.inference.manifest import (
    AlternativeThreshold,
    BundleManifest,
    ModelRecord,
    ThresholdRecord,
    manifest_from_dict,
)
from leukoedge.inference.model_info import describe_bundle, format_description

#: The shipped manifest as it was written before the schema stored the threshold once (version 1).
V1_MANIFEST = Path(__file__).parent / "fixtures" / "leukonet_int8_v1.json"
#: The binary LeukoNet bundle shipped before the differential model (schema 2), kept to prove that
#: such bundles still load and mean what they meant.
BINARY = Path(__file__).parent / "fixtures" / "binary" / "leukonet_int8.json"
RAW, SNAPPED = 0.7595001459121704, 0.76171875


def _numbers(doc: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(doc, dict):
        return [n for k, v in doc.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(doc, list):
        return [n for i, v in enumerate(doc) for n in _numbers(v, f"{path}[{i}]")]
    if isinstance(doc, int | float) and not isinstance(doc, bool):
        return [(path, float(doc))]
    return []


@pytest.fixture()
def v1_bundle(tmp_path: Path) -> Path:
    shutil.copy(V1_MANIFEST, tmp_path / "leukonet_int8.json")
    shutil.copy(BINARY.with_suffix(".tflite"), tmp_path / "leukonet_int8.tflite")
    return tmp_path / "leukonet_int8.json"


def test_binary_schema_2_manifest_holds_the_threshold_once() -> None:
    doc = json.loads(BINARY.read_text())
    assert doc["schema_version"] == 2 and MANIFEST_SCHEMA_VERSION == 3
    found = [(path, value) for path, value in _numbers(doc) if value in (RAW, SNAPPED)]
    assert found == [(".input_contract.threshold", RAW), (".input_contract.threshold_snapped", SNAPPED)]
    assert "threshold" not in doc["external_evaluation"]
    bundle = load_bundle(BINARY)
    assert bundle.threshold == SNAPPED and bundle.contract.label_for(0.7608) == "non_malignant"
    assert bundle.contract.label_for(SNAPPED) == "malignant" and not bundle.contract.differential


def test_shipped_differential_manifest_holds_the_threshold_once() -> None:
    doc = json.loads(default_bundle_path().read_text())
    assert doc["schema_version"] == MANIFEST_SCHEMA_VERSION
    raw, snapped = doc["input_contract"]["threshold"], doc["input_contract"]["threshold_snapped"]
    found = [(path, value) for path, value in _numbers(doc) if value in (raw, snapped)]
    assert found == [(".input_contract.threshold", raw), (".input_contract.threshold_snapped", snapped)]
    bundle = load_default_bundle()
    assert bundle.contract.differential and bundle.threshold == snapped == math.ceil(raw * 256) / 256


def test_old_manifest_loads_to_the_same_values(v1_bundle: Path) -> None:
    old, new = load_bundle(v1_bundle), load_bundle(BINARY)
    assert old.sha256 == new.sha256
    assert old.contract == new.contract
    assert old.contract.threshold == RAW and old.contract.threshold_snapped == SNAPPED
    assert old.manifest.thresholds == new.manifest.thresholds
    assert old.manifest.thresholds is not None and old.manifest.thresholds.rule == "youden"
    assert old.manifest.thresholds.alternatives == {
        "sensitivity_at_0.95": AlternativeThreshold(0.9334197044372559, 0.93359375)
    }
    assert old.manifest.external_evaluation == new.manifest.external_evaluation
    assert old.manifest.metrics == new.manifest.metrics and old.manifest.limits == new.manifest.limits


def test_models_describes_old_and_new_manifest_alike(v1_bundle: Path) -> None:
    old = describe_bundle(load_bundle(v1_bundle), probe=False)
    new = describe_bundle(load_bundle(BINARY), probe=False)
    for info in (old, new):
        info["manifest"] = info["tflite"] = "where it lies"
    assert old == new
    assert new["threshold"] == SNAPPED and new["external"]["threshold"] == SNAPPED
    assert new["thresholds"] == {
        "chosen_on": "validation",
        "grid": {"dtype": "uint8", "scale": 0.00390625, "zero_point": 0},
        "operating": RAW,
        "operating_rule": "youden",
        "sensitivity_at_0.95": 0.9334197044372559,
        "snapped": {"operating": SNAPPED, "sensitivity_at_0.95": 0.93359375, "youden": SNAPPED},
        "youden": RAW,
    }
    assert format_description(old) == format_description(new)


def test_v1_names_for_recorded_figures_are_read(tmp_path: Path) -> None:
    doc = json.loads(V1_MANIFEST.read_text())
    doc["evaluation"] = doc.pop("metrics")
    doc["external"] = doc.pop("external_evaluation")
    manifest = manifest_from_dict(doc, "v1")
    assert manifest.metrics is not None and manifest.metrics["int8_accuracy"] == 0.9925
    assert manifest.external_evaluation is not None
    assert manifest.external_evaluation["overall"]["specificity"] == 0.91


def test_typed_manifest_round_trips(tmp_path: Path) -> None:
    manifest = BundleManifest(
        model=ModelRecord("m", "int8", "7", {"architecture": "leukonet", "params": 12}),
        contract=InputContract(threshold=0.431, threshold_snapped=0.43359375, crop=CropGeometry(0.4)),
        input={"dtype": "uint8", "shape": [1, 64, 64, 3], "scale": 1.0, "zero_point": 0},
        output={"dtype": "uint8", "shape": [1, 1], "scale": 1 / 256, "zero_point": 0},
        thresholds=ThresholdRecord("youden", "validation", {"scale": 1 / 256, "zero_point": 0}, {}),
        metrics={"agreement": 1.0},
        limits=["only two classes"],
    )
    bundle = write_bundle(tmp_path, "m_int8", b"TFL3" + bytes(64), manifest)
    assert bundle.manifest.tflite is not None and bundle.manifest.tflite.bytes == 68
    assert bundle.manifest == manifest_from_dict(bundle.manifest.to_dict(), "again")
    assert bundle.manifest.model == manifest.model and bundle.manifest.contract == manifest.contract
    assert bundle.threshold == 0.43359375 and bundle.manifest.metrics == {"agreement": 1.0}


def test_future_schema_version_is_refused_clearly() -> None:
    doc = {**json.loads(BINARY.read_text()), "schema_version": MANIFEST_SCHEMA_VERSION + 1}
    with pytest.raises(
        BundleError, match=r"schema version 4 is not supported .*reads versions 1 to 3.*upgrade"
    ):
        manifest_from_dict(doc, "future.json")


def test_sensitivity_rule_keeps_its_threshold_once_and_describes_as_before(v1_bundle: Path) -> None:
    doc = json.loads(v1_bundle.read_text())
    op, snapped = (
        doc["thresholds"]["sensitivity_at_0.95"],
        doc["thresholds"]["snapped"]["sensitivity_at_0.95"],
    )
    doc["thresholds"].update(operating=op, operating_rule="sensitivity")
    doc["thresholds"]["snapped"]["operating"] = snapped
    doc["input_contract"]["threshold"] = snapped
    v1_view = dict(doc["thresholds"])
    v1_bundle.write_text(json.dumps(doc))
    bundle = load_bundle(v1_bundle)
    record = bundle.manifest.thresholds
    assert record is not None and record.rule == "sensitivity" and record.rule_key == "sensitivity_at_0.95"
    assert list(record.alternatives) == ["youden"] and bundle.threshold == snapped == 0.93359375
    assert bundle.contract.threshold == op
    again = manifest_from_dict(bundle.manifest.to_dict(), "again")
    assert again == bundle.manifest
    assert describe_bundle(bundle, probe=False)["thresholds"] == v1_view
