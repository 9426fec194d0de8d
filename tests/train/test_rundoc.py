"""run.json as a typed document: written with a schema version, read back by name, old files still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leukoedge.contract import CropGeometry, InputContract
from leukoedge.errors import DataError, ModelError
from leukoedge.quantize.source import resolve_source
from leukoedge.train.rundoc import RUN_SCHEMA_VERSION, OperatingThreshold, RunDocument, read_run_document
from leukoedge.train.runfiles import write_json

CONTRACT = InputContract(threshold=0.61, crop=CropGeometry(cell_fraction=0.42, measured_on=17))
#: run.json as training wrote it before the document had a schema version (and as tests/support writes it).
OLD_LAYOUT = {
    "created": "2026-11-30T10:00:00+00:00",
    "command": "leukoedge train --data cells --out run",
    "seed": 3,
    "versions": {"leukoedge": "0.1.0"},
    "data": {"root": "cells", "layout": "folders", "mapping": {"MYO": "malignant", "NGS": "non_malignant"}},
    "splits": {"policy": "seeded", "val_fraction": 0.2},
    "skipped_files": [],
    "input_contract": CONTRACT.to_dict(),
    "crop_geometry_source": "measured on 17 images",
    "operating_threshold": {"rule": "youden", "value": 0.61},
    "model": {"file": "model.keras", "params": 683329},
    "citation": [],
    "durations_s": {"total": 12.5},
}


def _run_folder(tmp_path: Path, run: dict) -> Path:
    (tmp_path / "model.keras").write_bytes(b"not read here")
    (tmp_path / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (tmp_path / "metrics.json").write_text(
        json.dumps({"thresholds": {"youden": {"value": 0.61}, "sensitivity": {"value": 0.3, "target": 0.95}}})
    )
    return tmp_path


def test_round_trip_adds_the_schema_version_and_keeps_every_value(tmp_path: Path) -> None:
    doc = RunDocument.from_dict(OLD_LAYOUT)
    path = write_json(tmp_path / "run.json", doc.to_dict())
    written = json.loads(path.read_text())
    assert written == {"schema_version": RUN_SCHEMA_VERSION, **OLD_LAYOUT}
    assert list(written)[:4] == ["schema_version", "created", "command", "seed"]
    again = read_run_document(path)
    assert again == doc
    assert again.contract == CONTRACT and again.operating == OperatingThreshold("youden", 0.61)
    assert again.data is not None and again.data["root"] == "cells"


def test_old_layout_and_new_read_to_the_same_values(tmp_path: Path) -> None:
    old = RunDocument.from_dict(OLD_LAYOUT)
    new = RunDocument.from_dict({**OLD_LAYOUT, "schema_version": 1})
    assert old == new and old.seed == 3 and old.command == "leukoedge train --data cells --out run"
    minimal = {k: OLD_LAYOUT[k] for k in ("command", "data", "input_contract", "operating_threshold")}
    small = RunDocument.from_dict(minimal)  # the layout tests/support/quantize.make_run writes
    assert small.contract == CONTRACT and small.operating == old.operating and small.seed is None


def test_quantization_reads_the_run_by_name(tmp_path: Path) -> None:
    source = resolve_source(_run_folder(tmp_path, OLD_LAYOUT))
    assert source.contract == CONTRACT
    assert source.training_command() == "leukoedge train --data cells --out run"
    assert source.class_mapping() == {"MYO": "malignant", "NGS": "non_malignant"}
    assert source.thresholds() == {
        "operating": 0.61,
        "youden": 0.61,
        "sensitivity_at_0.95": 0.3,
        "operating_rule": "youden",
        "chosen_on": "validation",
    }


def test_future_schema_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="schema version 2 is not supported"):
        RunDocument.from_dict({**OLD_LAYOUT, "schema_version": 2})
    folder = _run_folder(tmp_path, {**OLD_LAYOUT, "schema_version": 2})
    with pytest.raises(ModelError, match="run.json: run document schema version 2 is not supported"):
        resolve_source(folder)


def test_run_without_input_contract_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no valid input_contract"):
        RunDocument.from_dict({"command": "x"}, "r/run.json")
