"""The model bundle: written, loaded and verified; every kind of damage refused with a clear BundleError."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukoedge.contract import MANIFEST_SCHEMA_VERSION, InputContract
from leukoedge.errors import BundleError
from leukoedge.finite import dumps
from leukoedge.inference.bundle import (
    BUNDLE_KIND,
    MANIFEST_HASH_KEY,
    default_bundle_path,
    load_bundle,
    load_default_bundle,
    manifest_sha256,
    sha256_file,
    write_bundle,
)

FAKE_FLATBUFFER = b"TFL3" + bytes(range(256)) * 8


def _manifest(variant: str = "int8") -> dict:
    return {
        "model": {"name": "m", "variant": variant, "version": "1"},
        "input_contract": InputContract(threshold=0.4296875).to_dict(),
        "input": {"dtype": "uint8", "shape": [1, 64, 64, 3], "scale": 1.0, "zero_point": 0},
        "output": {"dtype": "uint8", "shape": [1, 1], "scale": 1 / 256, "zero_point": 0},
    }


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    write_bundle(tmp_path, "m_int8", FAKE_FLATBUFFER, _manifest())
    return tmp_path


def _edit_manifest(folder: Path, **changes) -> Path:
    path = folder / "m_int8.json"
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))
    return path


def test_round_trip_keeps_manifest_and_hash(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "m" and bundle.variant == "int8"
    assert bundle.sha256 == hashlib.sha256(FAKE_FLATBUFFER).hexdigest() == sha256_file(bundle.tflite_path)
    doc = json.loads(bundle.manifest_path.read_text())
    assert doc["schema_version"] == bundle.manifest.schema_version == MANIFEST_SCHEMA_VERSION
    assert doc["kind"] == BUNDLE_KIND
    assert doc["tflite"] == {
        "file": "m_int8.tflite",
        "bytes": len(FAKE_FLATBUFFER),
        "sha256": bundle.sha256,
    }
    assert bundle.threshold == 0.4296875
    assert load_bundle(bundle_dir / "m_int8.tflite").manifest == bundle.manifest


def test_folder_with_three_variants_loads_the_int8_one(tmp_path: Path) -> None:
    for variant in ("float32", "int8", "float16"):
        write_bundle(tmp_path, f"m_{variant}", FAKE_FLATBUFFER + variant.encode(), _manifest(variant))
    (tmp_path / "calibration.json").write_text('{"files": []}')
    assert load_bundle(tmp_path).variant == "int8"


def test_tampered_flatbuffer_is_refused(bundle_dir: Path) -> None:
    blob = bytearray((bundle_dir / "m_int8.tflite").read_bytes())
    blob[100] ^= 0x01
    (bundle_dir / "m_int8.tflite").write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="does not match the manifest.*changed or corrupted"):
        load_bundle(bundle_dir / "m_int8.json")


def test_manifest_hash_edited_is_refused(bundle_dir: Path) -> None:
    doc = json.loads((bundle_dir / "m_int8.json").read_text())
    _edit_manifest(bundle_dir, tflite={**doc["tflite"], "sha256": "0" * 64})
    with pytest.raises(BundleError, match="sha256 .* does not match the manifest's 0000000000000000"):
        load_bundle(bundle_dir / "m_int8.json")


def test_garbled_manifest_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "m_int8.json"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(BundleError, match="not a readable JSON manifest"):
        load_bundle(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(BundleError, match="manifest is not a JSON object"):
        load_bundle(path)


def test_manifest_missing_keys_or_bad_contract_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "m_int8.json"
    doc = json.loads(path.read_text())
    del doc["input_contract"]
    path.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="manifest lacks input_contract"):
        load_bundle(path)
    doc["input_contract"] = {"class_names": ["a", "b"], "positive_class": "malignant"}
    path.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="invalid input_contract"):
        load_bundle(path)


def test_wrong_schema_version_is_refused(bundle_dir: Path) -> None:
    path = _edit_manifest(bundle_dir, schema_version=MANIFEST_SCHEMA_VERSION + 1)
    with pytest.raises(BundleError, match=f"schema version {MANIFEST_SCHEMA_VERSION + 1} is not supported"):
        load_bundle(path)
    path = _edit_manifest(bundle_dir, schema_version="1")
    with pytest.raises(BundleError, match="schema version '1' is not supported"):
        load_bundle(path)


def test_wrong_kind_is_refused(bundle_dir: Path) -> None:
    path = _edit_manifest(bundle_dir, kind="something-else")
    with pytest.raises(BundleError, match="kind is 'something-else'"):
        load_bundle(path)


def test_missing_flatbuffer_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "m_int8.tflite").unlink()
    with pytest.raises(BundleError, match="its flatbuffer 'm_int8.tflite' is missing"):
        load_bundle(bundle_dir / "m_int8.json")


def test_missing_manifest_and_empty_folder_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / "m_int8.json").unlink()
    with pytest.raises(BundleError, match="bundle manifest not found"):
        load_bundle(bundle_dir / "m_int8.tflite")
    with pytest.raises(BundleError, match="no bundle manifest"):
        load_bundle(bundle_dir)


def test_write_bundle_refuses_an_incomplete_manifest(tmp_path: Path) -> None:
    manifest = _manifest()
    del manifest["output"]
    with pytest.raises(BundleError, match="manifest lacks 'output'"):
        write_bundle(tmp_path, "m_int8", FAKE_FLATBUFFER, manifest)


@pytest.mark.tf
def test_real_bundle_round_trip_runs_in_the_edge_wrapper(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from support.model import make_test_bundle

    from leukoedge.inference.classifier import CellClassifier

    manifest_path = make_test_bundle(tmp_path / "b")
    copy = tmp_path / "copy"
    shutil.copytree(manifest_path.parent, copy)
    bundle = load_bundle(copy)
    cells = np.zeros((3, 64, 64, 3), np.uint8)
    cells[:, :, :, 2] = 200  # blue cells score high on the tiny test model
    p = CellClassifier(bundle).predict_proba(cells)
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p, p[0])


# -- the manifest's own hash, plain file names, finite numbers -------------------------------------
def _copy_default_bundle(folder: Path) -> Path:
    """A copy of the bundled model, as an operator would make one."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".tflite"):
        shutil.copy(default_bundle_path().with_suffix(suffix), folder / f"leukonet_int8{suffix}")
    return folder / "leukonet_int8.json"


def _leukoedge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "leukoedge", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_written_manifest_carries_its_own_hash(bundle_dir: Path) -> None:
    doc = json.loads((bundle_dir / "m_int8.json").read_text())
    assert doc[MANIFEST_HASH_KEY] == manifest_sha256(doc)
    shipped = json.loads(default_bundle_path().read_text())
    assert shipped[MANIFEST_HASH_KEY] == manifest_sha256(shipped)


def test_edited_manifest_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "m_int8.json"
    doc = json.loads(path.read_text())
    doc["input_contract"]["threshold"] = 0.1
    path.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="manifest sha256 .* does not match .* changed or corrupted"):
        load_bundle(path)


def test_tampered_manifest_copy_exits_2_in_classify(tmp_path: Path) -> None:
    manifest = _copy_default_bundle(tmp_path / "model")
    cell = tmp_path / "cell.png"
    Image.new("RGB", (64, 64), (150, 50, 220)).save(cell)
    ok = _leukoedge("classify", "--model", str(manifest), "--format", "json", str(cell))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(manifest.read_text())
    doc["input_contract"]["threshold"] = doc["input_contract"]["threshold_snapped"] = 0.001
    manifest.write_text(json.dumps(doc, indent=2))
    tampered = _leukoedge("classify", "--model", str(manifest), "--format", "json", str(cell))
    assert tampered.returncode == 2 and tampered.stdout == ""
    assert "the manifest was changed or corrupted" in tampered.stderr


def test_manifest_without_its_hash_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = _copy_default_bundle(tmp_path)
    doc = json.loads(manifest.read_text())
    del doc[MANIFEST_HASH_KEY]
    manifest.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="leukoedge.inference.bundle"):
        bundle = load_bundle(manifest)
    assert bundle.contract == load_default_bundle().contract
    assert f"has no {MANIFEST_HASH_KEY}" in caplog.text


@pytest.mark.parametrize(
    "name", ["../leukonet_int8.tflite", "/abs/m.tflite", "sub/m.tflite", "a\\b", "", ".."]
)
def test_flatbuffer_outside_the_bundle_folder_is_refused(tmp_path: Path, name: str) -> None:
    manifest = _copy_default_bundle(tmp_path / "inner")
    shutil.copy(manifest.with_suffix(".tflite"), tmp_path / "leukonet_int8.tflite")
    doc = json.loads(manifest.read_text())
    doc["tflite"]["file"] = name
    doc[MANIFEST_HASH_KEY] = manifest_sha256(doc)  # even a consistently re-hashed manifest
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="is not a plain file name"):
        load_bundle(manifest)


@pytest.mark.parametrize(
    ("where", "key_path"),
    [
        (("input_contract", "threshold"), "input_contract.threshold"),
        (("input_contract", "threshold_snapped"), "input_contract.threshold_snapped"),
        (("input_contract", "crop", "cell_fraction"), "input_contract.crop.cell_fraction"),
        (("thresholds", "alternatives", "youden", "value"), "thresholds.alternatives.youden.value"),
    ],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_manifest_numbers_are_refused_with_their_key(
    tmp_path: Path, where: tuple[str, ...], key_path: str, bad: float
) -> None:
    manifest = _copy_default_bundle(tmp_path)
    doc = json.loads(manifest.read_text())
    node = doc
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = bad
    doc[MANIFEST_HASH_KEY] = manifest_sha256(doc)
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=f"{re.escape(key_path)}: must be a finite number"):
        load_bundle(manifest)


def test_classify_refuses_a_non_finite_threshold(tmp_path: Path) -> None:
    cell = tmp_path / "cell.png"
    Image.new("RGB", (64, 64), (150, 50, 220)).save(cell)
    for option, value in (("--threshold", "nan"), ("--px-per-um", "nan"), ("--px-per-um", "inf")):
        run = _leukoedge("classify", "--field", option, value, "--format", "json", str(cell))
        assert run.returncode == 2 and run.stdout == "", (option, value)
        assert "must be a finite number" in run.stderr and option in run.stderr


def test_json_output_is_strict_even_for_recorded_nan(tmp_path: Path) -> None:
    """A NaN among a bundle's recorded figures is printed as null, never as a NaN token."""
    source = load_default_bundle()
    manifest = replace(source.manifest, metrics={"auc": float("nan"), "accuracy": 0.99})
    write_bundle(tmp_path, "m_int8", source.tflite_path.read_bytes(), manifest)
    run = _leukoedge("models", "--json", "--model", str(tmp_path / "m_int8.json"))
    assert run.returncode == 0, run.stderr

    def refuse(token: str) -> None:
        raise AssertionError(f"non-standard JSON token {token}")

    info = json.loads(run.stdout, parse_constant=refuse)
    assert info["metrics"] == {"auc": None, "accuracy": 0.99}
    assert dumps({"p": float("nan"), "q": [float("inf"), 1.5]}) == '{"p": null, "q": [null, 1.5]}'
