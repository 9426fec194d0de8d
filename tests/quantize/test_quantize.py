"""int8 quantization, the bundles it writes and the accuracy report, on a small synthetic run.

One run (LeukoNet trained for a few epochs on synthetic cells) is quantized once per session
through the CLI; the tests then check the converted model's tensor details, the manifest, the
calibration set, and the report's figures against an independent computation.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from support.quantize import make_cell_folder, make_run

from leukoedge.cli import main
from leukoedge.contract import CLASS_NAMES
from leukoedge.errors import DataError, ModelError
from leukoedge.inference.bundle import MANIFEST_HASH_KEY, load_bundle, manifest_sha256
from leukoedge.metrics import snap_threshold
from leukoedge.vision.images import load_cell

pytestmark = [pytest.mark.tf, pytest.mark.slow]
tf = pytest.importorskip("tensorflow")

FAST = ["--bootstrap", "200", "--calibration-samples", "60"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run the leukoedge CLI in-process; returns (exit status, stdout + stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quant")
    data = make_cell_folder(root / "data")
    run = make_run(data, root / "run")
    bundle = root / "bundle"
    try:
        main(["quantize", str(run), "--out", str(bundle), *FAST])
    except SystemExit as e:
        assert e.code in (0, None), f"quantize exited with {e.code}"
    return {"root": root, "data": data, "run": run, "bundle": bundle}


@pytest.fixture(scope="session")
def report(synth: dict[str, Path]) -> dict:
    return json.loads((synth["bundle"] / "report" / "report.json").read_text())


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def test_int8_model_takes_raw_pixels(synth: dict[str, Path]) -> None:
    interpreter = _interpreter(synth["bundle"] / "leukonet_int8.tflite")
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and inp["quantization"] == (1.0, 0)
    assert list(inp["shape"]) == [1, 64, 64, 3]
    assert out["dtype"] == np.uint8 and out["quantization"] == (1.0 / 256, 0)
    manifest = json.loads((synth["bundle"] / "leukonet_int8.json").read_text())
    assert manifest["input"] == {"dtype": "uint8", "shape": [1, 64, 64, 3], "scale": 1.0, "zero_point": 0}
    assert manifest["output"]["scale"] == 1.0 / 256 and manifest["output"]["zero_point"] == 0


def test_float_variants_are_float_bundles(synth: dict[str, Path]) -> None:
    sizes = {}
    for variant in ("float32", "float16"):
        bundle = load_bundle(synth["bundle"] / f"leukonet_{variant}.json")
        assert bundle.variant == variant
        assert bundle.manifest.input["dtype"] == "float32"
        assert bundle.manifest.tflite is not None
        sizes[variant] = bundle.manifest.tflite.bytes
    int8 = load_bundle(synth["bundle"])  # the folder: picks the int8 bundle
    assert int8.variant == "int8"
    assert int8.manifest.tflite is not None and int8.manifest.tflite.bytes < 0.27 * sizes["float32"]
    assert sizes["float16"] < 0.55 * sizes["float32"]


def test_manifest_records_thresholds_contract_and_provenance(synth: dict[str, Path]) -> None:
    manifest = load_bundle(synth["bundle"]).manifest
    thresholds = manifest.thresholds
    assert thresholds is not None and thresholds.chosen_on == "validation" and thresholds.rule == "youden"
    assert manifest.contract.threshold == 0.5 and manifest.contract.threshold_snapped == 0.5
    alternative = thresholds.alternatives["sensitivity_at_0.95"]
    assert alternative.value == 0.3 and alternative.snapped == snap_threshold(0.3, 1 / 256, 0) == 77 / 256
    assert list(thresholds.alternatives) == ["sensitivity_at_0.95"]  # the operating one is not repeated
    assert manifest.contract.crop.cell_fraction == 0.5  # from run.json, not the default
    assert manifest.model.name == "leukonet" and manifest.model.provenance["params"] == 683_329
    assert manifest.commands is not None and manifest.commands["train"].startswith("leukoedge train")
    assert manifest.commands["quantize"].startswith("leukoedge ")
    assert manifest.versions is not None and {"tensorflow", "keras", "tflite_runtime"} <= set(
        manifest.versions
    )
    assert manifest.training_data is not None
    assert manifest.training_data["class_counts"] == {"non_malignant": 100, "malignant": 100}
    assert manifest.metrics is not None and manifest.metrics["agreement"] >= 0.99
    assert manifest.metrics["report"] == "report/report.json"
    assert manifest.calibration is not None and manifest.calibration["n"] == 60
    assert manifest.calibration["seed"] == 0
    for variant in ("float32", "float16"):  # every variant is judged at the int8 model's snapped threshold
        assert load_bundle(synth["bundle"] / f"leukonet_{variant}.json").threshold == 0.5


def test_calibration_comes_from_training_split_only(synth: dict[str, Path], report: dict) -> None:
    calib = json.loads((synth["bundle"] / "calibration.json").read_text())
    splits = json.loads((synth["run"] / "splits.json").read_text())
    split_of = {r["path"]: r["split"] for r in splits["records"]}
    files = [f["path"] for f in calib["files"]]
    assert len(files) == len(set(files)) == 60
    assert {split_of[p] for p in files} == {"train"}
    assert calib["class_counts"] == {"non_malignant": 30, "malignant": 30}
    with open(synth["bundle"] / "report" / "predictions.csv") as f:
        evaluated = [row["path"] for row in csv.DictReader(f)]
    assert {split_of[p] for p in evaluated} == {"test"}
    assert not set(evaluated) & set(files)
    assert report["eval_set"]["n"] == len(evaluated) == 60


def test_report_probabilities_match_the_raw_interpreter(synth: dict[str, Path]) -> None:
    with open(synth["bundle"] / "report" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    interpreter = _interpreter(synth["bundle"] / "leukonet_int8.tflite")
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    for row in rows[::12][:5]:
        interpreter.set_tensor(inp["index"], load_cell(row["path"])[None])
        interpreter.invoke()
        q = int(interpreter.get_tensor(out["index"]).reshape(-1)[0])
        assert float(row["tflite_int8"]) == pytest.approx((q - zero) * scale, abs=1e-7)


def test_report_metrics_recomputed_by_hand(synth: dict[str, Path], report: dict) -> None:
    with open(synth["bundle"] / "report" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["y_true"]) for r in rows])
    threshold = report["threshold"]
    for model in ("keras_float", "tflite_int8", "tflite_float32", "tflite_float16"):
        p = np.array([float(r[model]) for r in rows])
        pred = p >= threshold
        m = report["models"][model]
        assert m["accuracy"] == pytest.approx(np.mean(pred == (y == 1)))
        assert m["sensitivity"] == pytest.approx(pred[y == 1].mean())
        assert m["confusion"]["fn"] == int(np.sum(~pred & (y == 1)))
        pairs = [(a > b) + 0.5 * (a == b) for a in p[y == 1] for b in p[y == 0]]
        assert m["roc_auc"] == pytest.approx(np.mean(pairs))
        assert m["ci95"]["accuracy"][0] <= m["accuracy"] <= m["ci95"]["accuracy"][1]
    keras = np.array([float(r["keras_float"]) for r in rows]) >= threshold
    int8 = np.array([float(r["tflite_int8"]) for r in rows]) >= threshold
    assert report["comparisons"]["tflite_int8"]["agreement"] == pytest.approx(np.mean(keras == int8))


def test_report_sections_and_gates(synth: dict[str, Path], report: dict) -> None:
    assert report["format"] == "leukoedge-quantization-report" and report["reference"] == "keras_float"
    assert report["gates"]["passed"] and [c["name"] for c in report["gates"]["checks"]] == [
        "agreement",
        "delta_auc",
        "sensitivity_drop",
    ]
    assert report["sizes"]["float32"]["ratio_to_float32"] == 1.0
    assert report["latency"]["int8"]["where"] == "measured on the host, not the Pi"
    assert report["latency"]["int8"]["single_ms_median"] > 0
    stability = report["calibration_stability"]
    assert stability["seeds"] == [0, 1] and 0.9 <= stability["agreement"] <= 1.0
    assert report["layers"]["available"] and len(report["layers"]["layers"]) >= 8
    assert all(r["rmse_over_scale"] >= 0 for r in report["layers"]["layers"])
    flips = report["comparisons"]["tflite_int8"]["flips"]
    assert set(flips) == {"true_malignant", "true_non_malignant"}
    html = (synth["bundle"] / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "Research use only" in html
    assert "measured on the host, not the Pi" in html
    assert "agreement" in (synth["bundle"] / "report" / "report.md").read_text()


def test_report_command_on_an_existing_bundle(synth: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = synth["root"] / "report-again"
    code, text = run_cli(["report", str(synth["bundle"]), "--out", str(out), "--bootstrap", "100"], capsys)
    assert code == 0, text
    again = json.loads((out / "report.json").read_text())
    first = json.loads((synth["bundle"] / "report" / "report.json").read_text())
    assert again["eval_set"]["n"] == first["eval_set"]["n"]
    assert again["models"]["tflite_int8"]["roc_auc"] == first["models"]["tflite_int8"]["roc_auc"]
    assert "gates:     passed" in text


def test_badly_calibrated_int8_model_fails_the_gates(
    synth: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    from leukoedge.quantize.pipeline import QuantizeOptions, quantize_run

    def constant_images(calib):
        calib.x[:] = 0  # every calibration image black: the activation ranges clip real cells
        calib.x[0, 0, 0] = 255
        return calib

    broken = synth["root"] / "broken"
    opts = QuantizeOptions(
        n_boot=100,
        latency_repeats=5,
        calibration_samples=40,
        debugger=False,
        stability=False,
        calibration_override=constant_images,
    )
    result = quantize_run(synth["run"], None, broken, opts)
    assert not result.passed
    flips = result.report["comparisons"]["tflite_int8"]["n_flips"]
    assert flips > 0 and (broken / "report" / "report.html").read_text().count('class="thumb') == min(
        flips, 60
    )
    code, text = run_cli(["report", str(broken), "--bootstrap", "100", "--no-debugger"], capsys)
    assert code == 3
    assert "GATE FAILED: agreement" in text


def test_gate_limits_are_user_settable(synth: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = synth["root"] / "strict"
    args = ["report", str(synth["bundle"]), "--out", str(out), "--bootstrap", "100", "--no-debugger"]
    code, text = run_cli([*args, "--gate-agreement", "1.01"], capsys)
    assert code == 3 and "GATE FAILED: agreement" in text and "delta_auc" not in text.split("GATE FAILED")[-1]


def test_flagged_layers_give_a_selective_float_variant(synth: dict[str, Path], monkeypatch, capsys) -> None:
    from leukoedge.quantize import debugger

    measure = debugger.layer_statistics

    def first_conv_flagged(model, calibration):
        rows = measure(model, calibration)
        for i, row in enumerate(rows):
            row["flagged"] = i == 0  # as if the first convolution lost more than rounding
        return rows

    monkeypatch.setattr(debugger, "layer_statistics", first_conv_flagged)
    out = synth["root"] / "selective"
    code, text = run_cli(["report", str(synth["bundle"]), "--out", str(out), "--bootstrap", "100"], capsys)
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    flagged = report["layers"]["flagged"]
    assert flagged == [report["layers"]["layers"][0]["tensor_name"]]
    selective = report["selective"]
    assert selective["flagged"] == flagged
    assert selective["bytes"] > report["sizes"]["int8"]["bytes"]
    assert "tflite_int8_selective" in report["models"] and selective["agreement"] >= 0.9


# -- bad input -------------------------------------------------------------------------------------


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


def test_non_leukonet_keras_files_are_refused(tmp_path: Path) -> None:
    import keras

    from leukoedge.quantize.convert import load_keras_model

    small = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(1, "sigmoid")]
    )
    with pytest.raises(ModelError, match=r"input shape \(32, 32, 3\)"):
        load_keras_model(_save(small, tmp_path / "small.keras"))
    two = keras.Sequential(
        [keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")]
    )
    with pytest.raises(ModelError, match="not one sigmoid probability"):
        load_keras_model(_save(two, tmp_path / "two.keras"))
    linear = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    with pytest.raises(ModelError, match="not sigmoid"):
        load_keras_model(_save(linear, tmp_path / "linear.keras"))
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="cannot load this Keras model"):
        load_keras_model(tmp_path / "junk.keras")


def test_bad_model_file_gives_an_error_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "junk.keras").write_bytes(b"\x00" * 100)
    code, text = run_cli(["quantize", str(tmp_path / "junk.keras"), "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and text.startswith("Error: ") and "cannot load this Keras model" in text
    assert "Traceback" not in text


def test_representative_set_too_small_or_one_class(synth: dict[str, Path]) -> None:
    from leukoedge.quantize.representative import build_calibration_set
    from leukoedge.train.splits import read_split_manifest

    train = read_split_manifest(synth["run"] / "splits.json")["train"]
    with pytest.raises(DataError, match="at least 20"):
        build_calibration_set(train[:12], n=300)
    with pytest.raises(DataError, match="below the minimum of 20"):
        build_calibration_set(train, n=10)
    malignant_only = [r for r in train if r.label == CLASS_NAMES[1]]
    with pytest.raises(DataError, match="no non_malignant images"):
        build_calibration_set(malignant_only, n=40)


def test_report_on_one_class_data_is_refused(synth: dict[str, Path], tmp_path: Path, capsys) -> None:
    one = tmp_path / "normals" / "neutrophil"
    one.mkdir(parents=True)
    for src in sorted((synth["data"] / "val" / "non_malignant").glob("*.jpg"))[:5]:
        (one / src.name).write_bytes(src.read_bytes())
    code, text = run_cli(["report", str(synth["bundle"]), "--data", str(tmp_path / "normals")], capsys)
    assert code == 2 and "Error: " in text and "non-malignant" in text and "Traceback" not in text


def test_report_refuses_a_tampered_bundle(synth: dict[str, Path], tmp_path: Path, capsys) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(synth["bundle"], copy, ignore=shutil.ignore_patterns("report"))
    blob = bytearray((copy / "leukonet_int8.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "leukonet_int8.tflite").write_bytes(bytes(blob))
    code, text = run_cli(["report", str(copy)], capsys)
    assert code == 2 and "does not match the manifest" in text


def test_report_refuses_a_float_model_changed_since_quantization(
    synth: dict[str, Path], tmp_path: Path, capsys
) -> None:
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(synth["bundle"], copy, ignore=shutil.ignore_patterns("report"))
    path = copy / "leukonet_int8.json"
    manifest = json.loads(path.read_text())
    manifest["model"]["source"]["keras_sha256"] = "0" * 64  # as if the run folder had been retrained
    manifest[MANIFEST_HASH_KEY] = manifest_sha256(manifest)  # a consistent manifest, not a tampered one
    path.write_text(json.dumps(manifest))
    code, text = run_cli(["report", str(copy)], capsys)
    assert code == 2 and "changed since leukonet_int8.json was made from it" in text
