"""Training and evaluation: thresholds, one-class sets, run directories, learning synthetic and real cells."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from leukoedge.cli import cli
from leukoedge.errors import DataError
from leukoedge.train.datasets import Record
from leukoedge.train.rundoc import OperatingThreshold, read_run_document
from leukoedge.train.scoring import choose_thresholds, one_class_rates

# --- thresholds and one-class sets (no TensorFlow) ------------------------------------------------


def test_thresholds_are_chosen_with_a_margin_and_keep_validation_decisions():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.05, 0.10, 0.20, 0.30, 0.70, 0.80, 0.90, 0.95])
    t = choose_thresholds(y, p, target_sensitivity=0.75)
    # Youden: any cut in (0.30, 0.70] separates perfectly; the midpoint is used.
    assert t["youden"]["validation_score_edge"] == pytest.approx(0.70)
    assert t["youden"]["value"] == pytest.approx(0.50)
    assert t["youden"]["val_sensitivity"] == 1.0 and t["youden"]["val_specificity"] == 1.0
    # 75 % sensitivity: the third-highest positive (0.80), halfway down to 0.70.
    assert t["sensitivity"]["value"] == pytest.approx(0.75)
    assert t["sensitivity"]["val_sensitivity"] == 0.75
    assert t["sensitivity"]["target"] == 0.75


def test_thresholds_refuse_a_one_class_validation_split():
    with pytest.raises(DataError, match="validation split"):
        choose_thresholds(np.zeros(5), np.linspace(0, 1, 5))


def test_one_class_rates_report_specificity_per_source_class_only():
    y = np.zeros(6, dtype=int)
    p = np.array([0.1, 0.2, 0.9, 0.1, 0.6, 0.4])
    out = one_class_rates(y, p, 0.5, ["lymphocyte"] * 3 + ["monocyte"] * 3)
    assert out["metric"] == "specificity"
    assert out["overall"]["specificity"] == pytest.approx(4 / 6)
    assert out["by_source_class"]["lymphocyte"]["correct"] == 2
    assert out["by_source_class"]["monocyte"]["false_positive_rate"] == pytest.approx(1 / 3)
    lo, hi = out["by_source_class"]["monocyte"]["ci95"]
    assert 0 < lo < 2 / 3 < hi < 1
    assert "roc_auc" not in out["overall"] and "ROC-AUC" in out["not_reported"]


def test_two_class_metrics_are_refused_on_a_one_class_set():
    from leukoedge.train.scoring import evaluate_scores

    with pytest.raises(DataError, match="need both classes"):
        evaluate_scores(np.zeros(10), np.linspace(0, 1, 10), 0.5, n_boot=10)


def test_sensitivity_threshold_is_exact_where_float_products_round_up():
    from leukoedge.metrics import threshold_for_sensitivity

    # 0.28 * 25 is 7.000000000000001 in floating point: 7 positives, not 8, are needed.
    y = np.r_[np.ones(25, dtype=int), 0]
    p = np.r_[np.linspace(1.0, 0.04, 25), 0.0]
    assert threshold_for_sensitivity(y, p, 0.28) == pytest.approx(p[6])


def test_stratified_subset_keeps_class_and_split_shares():
    from leukoedge.train.run import stratified_subset

    records = [
        Record(f"/x/{s}/{c}/{i}.jpg", c, split=s)
        for s, n in (("train", 60), ("val", 20))
        for c in ("malignant", "non_malignant")
        for i in range(n)
    ]
    sub = stratified_subset(records, 40, seed=1)
    cells = {
        (s, c): sum(r.split == s and r.label == c for r in sub)
        for s in ("train", "val")
        for c in ("malignant", "non_malignant")
    }
    assert cells == {
        ("train", "malignant"): 15,
        ("train", "non_malignant"): 15,
        ("val", "malignant"): 5,
        ("val", "non_malignant"): 5,
    }
    assert stratified_subset(records, 40, seed=1) == sub


def test_run_json_is_strict_json(tmp_path):
    from leukoedge.train.runfiles import write_json

    path = write_json(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(0.5), "c": (1, np.int64(2))})
    assert json.loads(path.read_text()) == {"a": None, "b": 0.5, "c": [1, 2]}


def test_html_page_embeds_png_and_the_notice(tmp_path):
    from leukoedge.report import RESEARCH_USE_NOTICE, html_page, img, png_data_uri, table

    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = html_page("T <1>", [("S", table(["a"], [["<b>"]]) + img(png, "alt"))])
    assert RESEARCH_USE_NOTICE in page and "T &lt;1&gt;" in page and "&lt;b&gt;" in page
    assert png_data_uri(png) in page and png_data_uri(png).startswith("data:image/png;base64,")


def test_train_modules_do_not_import_tensorflow():
    code = (
        "import sys, leukoedge.train, leukoedge.train.cli; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --- training and evaluation (TensorFlow) ----------------------------------------------------------


def _synthetic(root: Path, kinds: tuple[str, ...], n: int, splits: dict | None, seed: int = 0) -> Path:
    from leukoedge.synth.writers import write_cell_dataset

    write_cell_dataset(root, n, seed=seed, size=96, layout="tcia", kinds=kinds, splits=splits)
    return root


def _held_out_counts(data: Path) -> dict[str, int]:
    """Images per class in the synthetic data's val folder (the held-out test split)."""
    manifest = json.loads((data / "synth_manifest.json").read_text())
    held = [i["label"] for i in manifest["images"] if i["split"] == "val"]
    return {c: held.count(c) for c in ("non_malignant", "malignant")}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A short CLI training run on synthetic blasts vs neutrophils (train/val folders, like aml-lmu)."""
    base = tmp_path_factory.mktemp("synthrun")
    data = _synthetic(base / "data", ("blast", "neutrophil"), 80, {"train": 0.75, "val": 0.25})
    (data / "train" / "MYO" / "broken.png").write_bytes(b"not an image")  # skipped and reported
    out = base / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--epochs", "4", "--val-fraction", "0.2"]
    result = CliRunner().invoke(cli, [*args, "--cache-dir", str(base / "cache")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, data, result.output


@pytest.mark.tf
def test_training_learns_the_synthetic_task(synthetic_run):
    out, data, output = synthetic_run
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    held = _held_out_counts(data)
    assert held["malignant"] >= 15 and held["non_malignant"] >= 15
    assert test["n"] == sum(held.values()) and test["n_malignant"] == held["malignant"]  # the val folder
    assert test["roc_auc"] > 0.9
    assert test["balanced_accuracy"] > 0.8
    assert "epoch  1/4" in output and "test roc_auc" in output


@pytest.mark.tf
def test_run_directory_has_every_output_with_sane_values(synthetic_run):
    out, data, _ = synthetic_run
    for name in (
        "model.keras",
        "splits.json",
        "history.csv",
        "metrics.json",
        "run.json",
        "report.md",
        "report.html",
    ):
        assert (out / name).is_file(), name
    for name in ("curves.png", "roc.png", "pr.png", "confusion.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    metrics = json.loads((out / "metrics.json").read_text())
    run = json.loads((out / "run.json").read_text())
    op = metrics["operating_threshold"]
    assert op["rule"] == "youden" and 0 < op["value"] < 1
    assert set(metrics["thresholds"]) == {"youden", "sensitivity"}
    assert metrics["thresholds"]["sensitivity"]["val_sensitivity"] >= 0.95
    for key in ("roc_auc", "pr_auc", "sensitivity", "specificity", "precision", "f1", "balanced_accuracy"):
        value, (lo, hi) = metrics["test"][key], metrics["test"]["ci95"][key]
        assert 0 <= lo <= value <= hi <= 1, key
    assert set(metrics["test"]["per_class"]) == {"malignant", "non_malignant"}
    cm = metrics["test"]["confusion"]
    assert sum(cm.values()) == metrics["test"]["n"]
    # Provenance: the contract carries the operating threshold and a measured crop geometry.
    assert run["input_contract"]["threshold"] == op["value"]
    assert run["input_contract"]["crop"]["measured_on"] > 0
    assert run["model"]["params"] == 683_329
    assert run["splits"]["counts"]["test"] == _held_out_counts(data)
    assert run["seed"] == 0 and run["versions"]["tensorflow"]
    assert [Path(s["path"]).name for s in run["skipped_files"]] == ["broken.png"]
    assert run["data"]["root"] == str(data) and run["citation"]  # TCIA codes: cite the release
    doc = read_run_document(out / "run.json")
    assert run["schema_version"] == 1 and doc.contract.threshold == op["value"]
    assert doc.operating == OperatingThreshold("youden", op["value"]) and doc.to_dict() == run
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and "val_auc" in rows[0] and 2 <= len(rows) <= 5
    html = (out / "report.html").read_text()
    assert (
        "data:image/png;base64," in html
        and "Research use only" in html
        and "10.7937/tcia.2019.36f5o9ld" in html
    )


@pytest.mark.tf
def test_evaluate_run_uses_the_held_out_split_and_matches_training(synthetic_run):
    out, _, _ = synthetic_run
    from leukoedge.train.evaluate import EvalRequest, evaluate

    result = evaluate(EvalRequest(model=str(out), n_boot=50))
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["kind"] == "two_class" and "test split" in result["images"]
    assert result["threshold"] == metrics["operating_threshold"]["value"]
    assert result["metrics"]["confusion"] == metrics["test"]["confusion"]
    assert result["metrics"]["roc_auc"] == pytest.approx(metrics["test"]["roc_auc"])


@pytest.mark.tf
def test_evaluate_on_an_all_negative_set_reports_specificity_only(synthetic_run, tmp_path):
    out, _, _ = synthetic_run
    normal = _synthetic(tmp_path / "normal", ("neutrophil", "lymphocyte", "monocyte"), 8, None, seed=9)
    report = tmp_path / "eval"
    args = ["evaluate", "--model", str(out / "model.keras"), "--data", str(normal), "--out", str(report)]
    result = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "specificity LYT" in result.output and "specificity all" in result.output
    assert "not reported" in result.output and "roc_auc" not in result.output
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["kind"] == "one_class" and saved["class_counts"] == {"non_malignant": 24, "malignant": 0}
    assert set(saved["metrics"]["by_source_class"]) == {"LYT", "MON", "NGS"}
    overall = saved["metrics"]["overall"]
    assert overall["n"] == 24 and math.isclose(overall["specificity"] + overall["false_positive_rate"], 1.0)
    assert (report / "rates.png").is_file() and "Not reported" in (report / "report.md").read_text()


@pytest.mark.tf
def test_training_refuses_one_class_data(tmp_path):
    data = _synthetic(tmp_path / "normal", ("neutrophil",), 6, None)
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    message = str(result.exception)
    assert "cannot use this data for training" in message and "leukoedge classify" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.tf
@pytest.mark.slow
def test_short_run_on_real_cells_beats_chance(aml_dir, tmp_path):
    from leukoedge.train.run import TrainOptions, train_run
    from leukoedge.train.trainer import FitConfig

    options = TrainOptions(
        data=str(aml_dir),
        out=str(tmp_path / "run"),
        limit=300,
        fit=FitConfig(epochs=3),
        cache_dir=str(tmp_path / "cache"),
    )
    result = train_run(options)
    test = result.metrics["test"]
    assert test["n"] == 76 and test["n_malignant"] == 38  # drawn from the held-out aml-lmu/val folder only
    assert test["roc_auc"] > 0.8
    assert test["balanced_accuracy"] > 0.7
