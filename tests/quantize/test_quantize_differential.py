"""int8 of a differential (softmax) LeukoNet: conversion, the bundle on the edge, the per-class report.

One small run (a softmax over blast, neutrophil and lymphocyte, trained a few epochs on synthetic
cells) is quantized once per session through the CLI; the tests check the bundle in the edge's
classifier and ``classify``, the manifest's contract, validation figures and limits, the per-class
report against a recomputation from predictions.csv, and the refusals.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from support.quantize import DIFF_CLASSES, make_differential_run

from leukoedge.cli import main
from leukoedge.errors import DataError, ModelError
from leukoedge.inference.bundle import load_bundle
from leukoedge.vision.images import load_cell

pytestmark = [pytest.mark.tf, pytest.mark.slow]
tf = pytest.importorskip("tensorflow")

FAST = ["--bootstrap", "100", "--calibration-samples", "45", "--no-debugger"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run the leukoedge CLI in-process; returns (exit status, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def diff(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant_diff")
    run = make_differential_run(root / "cells", root / "run")
    bundle = root / "bundle"
    try:
        main(["quantize", str(run), "--out", str(bundle), *FAST])
    except SystemExit as e:
        assert e.code in (0, 3, None), f"quantize exited with {e.code}"  # 3: a gate failed, bundle written
    return {"root": root, "run": run, "bundle": bundle}


@pytest.fixture(scope="module")
def report(diff: dict[str, Path]) -> dict:
    return json.loads((diff["bundle"] / "report" / "report.json").read_text())


def _test_paths(diff: dict[str, Path]) -> list[tuple[str, str]]:
    doc = json.loads((diff["run"] / "splits.json").read_text())
    entries = doc.get("images") or doc.get("records") or doc.get("files")
    return [(e["path"], e["label"]) for e in entries if e["split"] == "test"]


def test_softmax_bundle_has_one_uint8_output_per_class(diff: dict[str, Path]) -> None:
    int8 = load_bundle(diff["bundle"] / "leukonet_int8.json")
    assert int8.contract.differential
    assert int8.contract.class_names == DIFF_CLASSES
    assert int8.manifest.output["dtype"] == "uint8"
    assert int8.manifest.output["shape"][-1] == len(DIFF_CLASSES)
    assert int8.manifest.output["scale"] == pytest.approx(1 / 256)
    assert int8.manifest.output["zero_point"] == 0


def test_bundle_gives_probabilities_per_class_in_the_classifier(diff: dict[str, Path]) -> None:
    from leukoedge.inference.classifier import CellClassifier

    clf = CellClassifier(load_bundle(diff["bundle"] / "leukonet_int8.json"))
    tests = _test_paths(diff)
    x = np.stack([load_cell(p) for p, _ in tests])
    probs = clf.predict_probabilities(x)
    assert probs.shape == (len(tests), len(DIFF_CLASSES))
    # int8 softmax rows sum to one within a few steps of the 1/256 output grid
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=4 / 256)
    results = clf.classify(x)
    assert {r.label for r in results} <= set(DIFF_CLASSES)
    # the tiny model has learned the three shapes: most test cells get their own type
    right = np.mean([r.label == t for r, (_, t) in zip(results, tests, strict=True)])
    assert right >= 0.8


def test_classify_records_carry_the_cell_type(diff: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    tests = _test_paths(diff)[:6]
    model = str(diff["bundle"] / "leukonet_int8.json")
    code, out, err = run_cli(
        ["classify", *(p for p, _ in tests), "--model", model, "--format", "json", "-q"], capsys
    )
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(records) == len(tests)
    for rec in records:
        assert rec["label"] in DIFF_CLASSES
        assert set(rec["probabilities"]) == set(DIFF_CLASSES)
        assert rec["p_blast"] == pytest.approx(rec["probabilities"]["blast"])
        assert isinstance(rec["suspected_blast"], bool)


def test_manifest_carries_contract_validation_and_limits(diff: dict[str, Path]) -> None:
    doc = json.loads((diff["bundle"] / "leukonet_int8.json").read_text())
    contract = doc["input_contract"]
    assert contract["output"] == "softmax"
    assert contract["class_names"] == list(DIFF_CLASSES)
    assert contract["blast_classes"] == ["blast"]
    grid = doc["thresholds"]["grid"]
    assert grid["scale"] == pytest.approx(1 / 256) and grid["zero_point"] == 0
    assert "p_blast" in grid["applies_to"] and "blast" in grid["applies_to"]
    assert contract["threshold_snapped"] * 256 == pytest.approx(round(contract["threshold_snapped"] * 256))
    metrics = json.loads((diff["run"] / "metrics.json").read_text())
    validation = doc["metrics"]["validation"]
    for split in ("val", "test"):
        for name in DIFF_CLASSES:
            recorded = validation[split]["per_type"][name]
            trained = metrics[split]["differential"]["per_type"][name]
            assert recorded["n"] == trained["n"] > 0
            assert recorded["recall"]["rate"] == trained["recall"]["rate"]
            assert len(recorded["recall"]["ci95"]) == 2
            assert recorded["called_blast"]["ci95"] == trained["called_blast"]["ci95"]
        assert "specificity" in validation[split]["per_type"]["lymphocyte"]
    limits = " ".join(doc["limits"])
    assert "other microscopes" in limits
    assert "full-resolution cells of lymphocyte" in limits  # lymphocytes came from thumbnail sheets only
    assert "blast," not in limits.split("full-resolution cells of")[1].split(":")[0]
    assert doc["metrics"]["report"] == "report/report.json"  # the report headline is kept beside it


def test_models_command_shows_the_limits(diff: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["models", "--model", str(diff["bundle"] / "leukonet_int8.json")], capsys)
    assert code == 0, err
    assert "Limits:" in out
    assert "full-resolution cells of lymphocyte" in out
    assert "Trained on two classes only" not in out  # the binary model's generic limits do not apply


def test_report_has_per_class_agreement_recomputed_by_hand(diff: dict[str, Path], report: dict) -> None:
    d = report["differential"]
    assert d["classes"] == list(DIFF_CLASSES)
    assert report["eval_set"]["class_counts"] == {
        c: sum(1 for _, t in _test_paths(diff) if t == c) for c in DIFF_CLASSES
    }
    cmp = d["comparisons"]["tflite_int8"]
    with open(diff["bundle"] / "report" / "predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    ref, t = report["reference"], report["threshold"]
    for name in DIFF_CLASSES:
        mine = [r for r in rows if r["type_true"] == name]
        same = [
            r[f"type_{ref}"] == r["type_tflite_int8"]
            and (float(r[ref]) >= t) == (float(r["tflite_int8"]) >= t)
            for r in mine
        ]
        row = cmp["per_class"][name]
        assert row["n"] == len(mine) > 0
        assert row["agreement"]["rate"] == pytest.approx(np.mean(same))
        lo, hi = row["agreement"]["ci95"]
        assert lo <= row["agreement"]["rate"] <= hi
        recall_int8 = np.mean([r["type_tflite_int8"] == name for r in mine])
        assert row["recall_int8"]["rate"] == pytest.approx(recall_int8)
    matrix = np.array(cmp["confusion"]["matrix"])
    assert matrix.sum() == len(rows)
    assert np.trace(matrix) == sum(r[f"type_{ref}"] == r["type_tflite_int8"] for r in rows)
    names = {c["name"] for c in report["gates"]["checks"]}
    assert {f"agreement[{c}]" for c in DIFF_CLASSES} | {"blast_recall_drop[blast]"} <= names
    expected = all(c["passed"] for c in report["gates"]["checks"])
    assert report["gates"]["passed"] == expected
    assert set(report["headline"]["differential"]["per_class_agreement"]) == set(DIFF_CLASSES)
    md = (diff["bundle"] / "report" / "report.md").read_text()
    assert "Per cell type: int8 vs float" in md and "lymphocyte" in md


def test_report_command_on_a_differential_bundle(diff: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(
        ["report", str(diff["bundle"]), "--out", str(tmp_path / "r"), "--bootstrap", "100", "--no-debugger"],
        capsys,
    )
    assert code in (0, 3), err
    again = json.loads((tmp_path / "r" / "report.json").read_text())
    assert set(again["differential"]["comparisons"]["tflite_int8"]["per_class"]) == set(DIFF_CLASSES)


def test_calibration_set_missing_a_class_is_refused(diff: dict[str, Path]) -> None:
    from leukoedge.quantize.representative import build_calibration_set
    from leukoedge.train.splits import read_split_manifest

    train = read_split_manifest(diff["run"] / "splits.json")["train"]
    no_lymphocytes = [r for r in train if r.label != "lymphocyte"]
    with pytest.raises(DataError, match="no lymphocyte images"):
        build_calibration_set(no_lymphocytes, n=40, classes=DIFF_CLASSES)
    calib = build_calibration_set(train, n=40, classes=DIFF_CLASSES)
    assert set(calib.class_counts) == set(DIFF_CLASSES) and min(calib.class_counts.values()) > 0


def test_quantize_refuses_a_run_without_one_class_in_training(
    diff: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """The whole command: a training split lacking a class is refused by name, no bundle written."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(diff["run"], run)
    doc = json.loads((run / "splits.json").read_text())
    key = next(k for k in ("images", "records", "files") if k in doc)
    doc[key] = [e for e in doc[key] if not (e["split"] == "train" and e["label"] == "neutrophil")]
    (run / "splits.json").write_text(json.dumps(doc))
    code, _, err = run_cli(["quantize", str(run), "--out", str(tmp_path / "b"), *FAST], capsys)
    assert code != 0
    assert "no neutrophil images" in err
    assert not list((tmp_path / "b").glob("*.tflite"))


def test_unit_count_other_than_the_contract_classes_is_refused(diff: dict[str, Path], tmp_path: Path) -> None:
    import keras

    from leukoedge.quantize.convert import load_keras_model
    from leukoedge.quantize.source import resolve_source

    contract = resolve_source(diff["run"]).contract
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    four = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    four.save(tmp_path / "four.keras")
    with pytest.raises(ModelError, match="3 classes"):
        load_keras_model(tmp_path / "four.keras", contract)
    relu = keras.Model(inputs, keras.layers.Dense(3, activation="relu")(x))
    relu.save(tmp_path / "relu.keras")
    with pytest.raises(ModelError, match="not softmax"):
        load_keras_model(tmp_path / "relu.keras", contract)
    # a binary contract still takes one sigmoid unit only
    with pytest.raises(ModelError, match="one sigmoid probability"):
        load_keras_model(tmp_path / "four.keras")
