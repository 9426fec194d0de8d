"""``leukoedge classify`` and ``leukoedge models``: inputs, records, formats, exit codes, fields."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from support.images import PINK, PURPLE, cell_image, write_bad_inputs, write_cells
from support.model import make_test_bundle

from leukoedge.cli import cli
from leukoedge.cli.classify import classify_cmd, models_cmd
from leukoedge.errors import DataError
from leukoedge.inference.batch import InputItem, expand_inputs
from leukoedge.inference.bundle import write_bundle
from leukoedge.synth.field import render_field

CELL_KEYS = {
    "path", "ok", "label", "suspected_blast", "p_blast", "p_malignant", "probabilities", "unclassified",
    "threshold",
}  # fmt: skip
FIELD_KEYS = {"path", "ok", "width", "height", "threshold", "cells"}
FIELD_CELL_KEYS = {
    "bbox", "edge", "label", "suspected_blast", "p_blast", "p_malignant", "probabilities", "unclassified"
}  # fmt: skip
FAIL_KEYS = {"path", "ok", "error"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_test_bundle(tmp_path_factory.getbasetemp() / "model-bundles"))


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("cells")
    return folder, write_cells(folder)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bool]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_inputs(folder)


def invoke(*args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(classify_cmd, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


# -- expanding inputs ----------------------------------------------------------------------------
def test_expand_walks_folders_sorted_skips_hidden_and_dedupes(tmp_path: Path) -> None:
    for rel in ("b.jpg", "a.png", "sub/c.tif", "notes.txt", ".hidden.jpg", ".git/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    items = expand_inputs([tmp_path, tmp_path / "a.png", str(tmp_path / "notes.txt")])
    names = [Path(i.path).relative_to(tmp_path).as_posix() for i in items]
    assert names == ["a.png", "b.jpg", "sub/c.tif", "notes.txt"]


def test_expand_globs_itself(tmp_path: Path) -> None:
    for name in ("x1.jpg", "x2.jpg", "y.jpg"):
        (tmp_path / name).write_bytes(b"x")
    items = expand_inputs([str(tmp_path / "x*.jpg")])
    assert [Path(i.path).name for i in items] == ["x1.jpg", "x2.jpg"]
    recursive = expand_inputs([str(tmp_path.parent / "**" / "y.jpg")])
    assert str(tmp_path / "y.jpg") in [i.path for i in recursive]


def test_expand_reports_every_mistake(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        expand_inputs([tmp_path / "missing.jpg", tmp_path / "empty", str(tmp_path / "*.png")])
    text = str(e.value)
    assert "missing.jpg: no such file" in text
    assert "no images in this folder" in text
    assert "no images match this pattern" in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_expand_reports_unreadable_subfolder(tmp_path: Path) -> None:
    (tmp_path / "ok.jpg").write_bytes(b"x")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        items = expand_inputs([tmp_path])
    finally:
        locked.chmod(0o755)
    assert InputItem(str(tmp_path / "ok.jpg")) in items
    assert any(i.error and "permission denied" in i.error for i in items)


# -- single cells ----------------------------------------------------------------------------------
def test_cells_json_lines_labels_and_order(model: str, cells: tuple[Path, dict[str, str]]) -> None:
    folder, expected = cells
    code, lines, _ = invoke("--model", model, str(folder))
    assert code == 0
    assert [r["path"] for r in lines] == [i.path for i in expand_inputs([folder])]
    for r in lines:
        assert set(r) == CELL_KEYS and r["ok"] is True
        assert r["label"] == expected[r["path"]]
        assert 0.0 <= r["p_malignant"] <= 1.0 and r["threshold"] == 0.5
        assert (r["p_malignant"] >= 0.5) == (r["label"] == "malignant") == r["suspected_blast"]
        assert r["p_blast"] == r["p_malignant"] and r["unclassified"] is False
        assert r["probabilities"]["malignant"] == pytest.approx(r["p_blast"], abs=1e-6)
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_bad_files_fail_alone_and_exit_1(model: str, bad: tuple[Path, dict[str, bool]]) -> None:
    folder, outcome = bad
    code, lines, _ = invoke("--model", model, "--workers", "3", str(folder))
    assert code == 1
    by_name = {Path(r["path"]).name: r for r in lines}
    assert set(by_name) == set(outcome)
    for name, ok in outcome.items():
        r = by_name[name]
        assert r["ok"] is ok, (name, r)
        assert set(r) == (CELL_KEYS if ok else FAIL_KEYS)
        if not ok:
            assert r["error"] and not r["error"].startswith(str(folder))
    assert "empty" in by_name["empty.jpg"]["error"]
    assert "decompression bomb" in by_name["bomb.png"]["error"]
    assert "not an image" in by_name["text.jpg"]["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_per_file_error(model: str, tmp_path: Path) -> None:
    cell_image(PURPLE, 1).save(tmp_path / "a.jpg")
    cell_image(PINK, 2).save(tmp_path / "b.jpg")
    (tmp_path / "a.jpg").chmod(0)
    code, lines, _ = invoke("--model", model, str(tmp_path))
    assert code == 1
    assert lines[0] == {"path": str(tmp_path / "a.jpg"), "ok": False, "error": "permission denied"}
    assert lines[1]["ok"] is True


def test_threshold_option_moves_labels(model: str, cells: tuple[Path, dict[str, str]]) -> None:
    folder, _ = cells
    code, lines, _ = invoke("--model", model, "--threshold", "0.0", str(folder))
    assert code == 0
    assert {r["label"] for r in lines} == {"malignant"}
    assert {r["threshold"] for r in lines} == {0.0}


def test_csv_and_table_formats(model: str, cells: tuple[Path, dict[str, str]]) -> None:
    folder, expected = cells
    result = CliRunner().invoke(classify_cmd, ["--model", model, "--format", "csv", str(folder)])
    rows = result.stdout.splitlines()
    assert rows[0] == "path,ok,label,suspected_blast,p_blast,p_malignant,threshold,error"
    assert len(rows) == 1 + len(expected)
    assert "research use only" not in result.output.lower()
    result = CliRunner().invoke(classify_cmd, ["--model", model, "--format", "table", str(folder)])
    assert result.exit_code == 0
    assert result.stderr.lower().count("research use only") == 1
    assert "6 of 6 images classified (3 malignant, 3 non_malignant); 0 failed" in result.stdout
    quiet = CliRunner().invoke(classify_cmd, ["--model", model, "--format", "table", "-q", str(folder)])
    assert quiet.stderr == "" and len(quiet.stdout.splitlines()) == len(expected)


# -- exit status 2 ---------------------------------------------------------------------------------
def test_usage_and_model_errors_exit_2(
    model: str, cells: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    folder, _ = cells
    (tmp_path / "empty").mkdir()
    cases = {
        "no such file or folder": ["--model", model, str(tmp_path / "nope.jpg")],
        "no images in this folder": ["--model", model, str(tmp_path / "empty")],
        "bundle manifest not found": ["--model", str(tmp_path / "none.json"), str(folder)],
        "use it with --field": ["--model", model, "--annotate", str(tmp_path / "a"), str(folder)],
        "give at least one image": ["--model", model],
    }
    for message, args in cases.items():
        code, lines, stderr = invoke(*args)
        assert code == 2, (message, stderr)
        assert message in stderr and lines == []


def test_unloadable_flatbuffer_exits_2(
    model: str, cells: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    manifest = json.loads(Path(model).read_text())
    manifest = {k: manifest[k] for k in ("model", "input_contract", "input", "output")}
    bundle = write_bundle(tmp_path, "junk", b"TFL3 but not a model" * 10, manifest)
    code, lines, stderr = invoke("--model", str(bundle.manifest_path), str(cells[0]))
    assert code == 2 and lines == []
    assert "cannot load this model" in stderr


def test_tampered_bundle_exits_2(model: str, cells: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    for suffix in (".json", ".tflite"):
        shutil.copy(Path(model).with_suffix(suffix), tmp_path / f"m{suffix}")
    blob = bytearray((tmp_path / "m.tflite").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "m.tflite").write_bytes(bytes(blob))
    manifest = json.loads((tmp_path / "m.json").read_text())
    manifest["tflite"]["file"] = "m.tflite"
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    code, lines, stderr = invoke("--model", str(tmp_path / "m.json"), str(cells[0]))
    assert code == 2 and lines == []
    assert "does not match the manifest" in stderr


# -- models ---------------------------------------------------------------------------------------
def test_models_text_and_json(model: str) -> None:
    text = CliRunner().invoke(models_cmd, ["--model", model])
    assert text.exit_code == 0
    for needle in (
        "tiny_int8",
        "sha256",
        "uint8",
        "scale 0.00390625",
        "non_malignant, malignant",
        "Limits",
        "Research use only",
    ):
        assert needle in text.stdout, needle
    info = json.loads(CliRunner().invoke(models_cmd, ["--model", model, "--json"]).stdout)
    assert info["name"] == "tiny_int8" and info["variant"] == "int8"
    assert info["output"]["scale"] == pytest.approx(1 / 256) and info["input"]["dtype"] == "uint8"
    assert info["class_names"] == ["non_malignant", "malignant"] and info["threshold"] == 0.5
    assert info["quantization_source"].startswith("interpreter")
    assert any("never seen" in s for s in info["limits"])
    same = CliRunner().invoke(classify_cmd, ["--model", model, "--model-info", "--format", "json"])
    assert json.loads(same.stdout)["sha256"] == info["sha256"]


def test_models_reports_recorded_metrics(model: str, tmp_path: Path) -> None:
    manifest = json.loads(Path(model).read_text())
    manifest["metrics"] = {"test": {"accuracy": 0.97, "sensitivity": 0.95}}
    manifest["external_evaluation"] = {"pbc": {"specificity": 0.812}}
    write_bundle(tmp_path, Path(model).stem, Path(model).with_suffix(".tflite").read_bytes(), manifest)
    out = CliRunner().invoke(models_cmd, ["--model", str(tmp_path / Path(model).name)]).stdout
    assert "accuracy: 0.97" in out and "as measured: 0.812" in out


# -- through the real command line -----------------------------------------------------------------
def test_lazy_group_and_module_entry_point(model: str, cells: tuple[Path, dict[str, str]]) -> None:
    folder, expected = cells
    result = CliRunner().invoke(cli, ["classify", "--model", model, str(folder)])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == len(expected)
    args = ["classify", "--model", model, str(folder), "/no/such.jpg"]
    proc = subprocess.run(
        [sys.executable, "-m", "leukoedge", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "Error: /no/such.jpg: no such file or folder" in proc.stderr
    assert "XNNPACK" not in proc.stderr


def test_installed_console_script(model: str, bad: tuple[Path, dict[str, bool]]) -> None:
    exe = shutil.which("leukoedge") or str(Path(sys.executable).with_name("leukoedge"))
    if not Path(exe).exists():
        pytest.skip("the leukoedge console script is not installed")
    folder, outcome = bad
    proc = subprocess.run(
        [exe, "classify", "--model", model, str(folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sum(r["ok"] for r in lines) == sum(outcome.values())
    assert proc.stderr == ""


# -- fields ---------------------------------------------------------------------------------------
def _iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _wbc_boxes(xml_path: Path) -> list[list[int]]:
    boxes = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        if obj.findtext("name") == "WBC":
            bb = obj.find("bndbox")
            boxes.append([int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")])
    return boxes


def _check_field_record(r: dict) -> None:
    assert set(r) >= FIELD_KEYS and r["ok"] is True
    for c in r["cells"]:
        assert set(c) == FIELD_CELL_KEYS and len(c["bbox"]) == 4
        if c["edge"]:
            assert c["label"] is None and c["p_malignant"] is None
        else:
            assert c["label"] in ("malignant", "non_malignant") and 0 <= c["p_malignant"] <= 1


def test_field_on_real_bccd_frames(model: str, bccd_dir: Path, tmp_path: Path) -> None:
    frames = sorted((bccd_dir / "JPEGImages").glob("*.jpg"))[:4]
    code, lines, _ = invoke("--model", model, "--field", "--annotate", str(tmp_path), *map(str, frames))
    assert code == 0 and len(lines) == len(frames)
    found = 0
    for frame, r in zip(frames, lines, strict=True):
        _check_field_record(r)
        assert (r["width"], r["height"]) == (640, 480)
        truth = _wbc_boxes(bccd_dir / "Annotations" / f"{frame.stem}.xml")
        found += sum(any(_iou(c["bbox"], t) > 0.3 for c in r["cells"]) for t in truth)
        annotated = Image.open(r["annotation"])
        assert annotated.size == (640, 480)
    assert found >= len(frames) - 1


def test_field_on_synthetic_frames_against_truth(model: str, tmp_path: Path) -> None:
    truths = {}
    for seed in range(3):
        rgb, truth = render_field(640, 480, seed=seed, n_cells=3, px_per_um=6.0)
        path = tmp_path / f"field{seed}.png"
        Image.fromarray(rgb).save(path)
        truths[str(path)] = truth
    code, lines, _ = invoke("--model", model, "--field", *truths)
    assert code == 0
    matched = total = 0
    for r in lines:
        _check_field_record(r)
        for t in truths[r["path"]]["cells"]:
            total += 1
            hits = [c for c in r["cells"] if _iou(c["bbox"], t["bbox"]) > 0.2]
            matched += bool(hits)
            if hits and not t["cut_by_edge"]:
                assert not hits[0]["edge"]
    assert matched >= 0.7 * total


def test_field_with_no_cells_and_table(model: str, tmp_path: Path) -> None:
    blank = np.full((240, 320, 3), 230, np.uint8)
    Image.fromarray(blank).save(tmp_path / "blank.png")
    code, lines, _ = invoke("--model", model, "--field", str(tmp_path / "blank.png"))
    assert code == 0 and lines[0]["cells"] == [] and lines[0]["width"] == 320
    table = CliRunner().invoke(
        classify_cmd, ["--model", model, "--field", "--format", "table", str(tmp_path)]
    )
    assert "no white cells found" in table.stdout


@pytest.mark.parametrize("which", ["binary", "differential"])
def test_p_blast_is_the_contracts_sum_for_binary_and_differential_bundles(which: str) -> None:
    from support.model import BINARY_BUNDLE

    from leukoedge.inference.bundle import load_bundle
    from leukoedge.inference.classifier import CellClassifier
    from leukoedge.synth.single import render_cell
    from leukoedge.vision.images import to_model_input

    bundle = load_bundle(BINARY_BUNDLE if which == "binary" else None)
    clf = CellClassifier(bundle)
    cells = np.stack(
        [to_model_input(render_cell(k, seed=s)[0]) for k in ("blast", "lymphocyte") for s in range(5)]
    )
    probs = clf.predict_probabilities(cells)
    assert probs.shape == (10, len(bundle.contract.class_names))
    np.testing.assert_allclose(clf.predict_proba(cells), bundle.contract.p_blast(probs), atol=1e-12)
    results = clf.classify(cells)
    assert [r.suspected_blast for r in results] == list(clf.predict_proba(cells) >= clf.threshold)
    assert bundle.contract.differential == (which == "differential")
