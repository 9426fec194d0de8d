"""The model bundle: written, loaded and verified; every kind of damage refused with a clear BundleError."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from leukoedge.contract import MANIFEST_SCHEMA_VERSION, InputContract
from leukoedge.errors import BundleError
from leukoedge.inference.bundle import BUNDLE_KIND, load_bundle, sha256_file, write_bundle

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
