"""The model bundle: ``NAME.tflite`` plus its ``NAME.json`` manifest.

The manifest is the one place the edge learns the input contract (size, pixel format, class
names, threshold, crop geometry) and the model's provenance. Loading verifies the schema version,
the flatbuffer's sha256 and the manifest's own hash (``manifest_sha256``: sha256 of the manifest's
canonical JSON without that key, so an edited threshold is refused like an edited model), and
refuses anything that does not match. The flatbuffer's file name must be a plain name in the
manifest's folder. Manifests written before the manifest hash existed still load, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from leukoedge.atomic import write_atomic
from leukoedge.contract import MANIFEST_SCHEMA_VERSION, InputContract
from leukoedge.errors import BundleError
from leukoedge.inference.manifest import (
    BUNDLE_KIND,
    REQUIRED_KEYS,
    BundleManifest,
    TFLiteRecord,
    manifest_from_dict,
)

logger = logging.getLogger(__name__)

#: Name of the model bundled with the package (``leukoedge/models/NAME.{tflite,json}``).
DEFAULT_BUNDLE_NAME = "leukonet_int8"
#: Manifest key of the manifest's own hash (see :func:`manifest_sha256`).
MANIFEST_HASH_KEY = "manifest_sha256"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of a manifest document's canonical JSON (sorted keys, no spaces), its own hash left out."""
    body = {k: v for k, v in doc.items() if k != MANIFEST_HASH_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_manifest_hash(doc: Mapping[str, Any], manifest_path: Path) -> None:
    recorded = doc.get(MANIFEST_HASH_KEY)
    if recorded is None:
        logger.warning(
            "%s: the manifest has no %s (written by an older leukoedge), so edits to it cannot be "
            "detected; rewrite the bundle with this version to protect it",
            manifest_path,
            MANIFEST_HASH_KEY,
        )
        return
    actual = manifest_sha256(doc)
    if recorded != actual:
        raise BundleError(
            f"{manifest_path}: manifest sha256 {actual[:16]}... does not match its recorded "
            f"{MANIFEST_HASH_KEY} {str(recorded)[:16]}...: the manifest was changed or corrupted"
        )


def _plain_file_name(name: str, manifest_path: Path) -> str:
    """``name`` when it names a file directly in the manifest's folder; BundleError otherwise."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or Path(name).is_absolute():
        raise BundleError(
            f"{manifest_path}: tflite.file {name!r} is not a plain file name: "
            "the flatbuffer must lie in the same folder as its manifest"
        )
    return name


@dataclass(frozen=True)
class ModelBundle:
    """A verified model bundle: where the flatbuffer is, and what its manifest says."""

    tflite_path: Path
    manifest_path: Path
    manifest: BundleManifest

    @property
    def contract(self) -> InputContract:
        return self.manifest.contract

    @property
    def name(self) -> str:
        return self.manifest.model.name

    @property
    def variant(self) -> str:
        return self.manifest.model.variant

    @property
    def sha256(self) -> str:
        assert self.manifest.tflite is not None  # load_bundle refuses manifests without one
        return self.manifest.tflite.sha256

    @property
    def threshold(self) -> float:
        return self.contract.decision_threshold


def _find_manifest(path: Path) -> Path:
    if path.is_dir():
        manifests = sorted(path.glob("*.json"))
        bundles = [m for m in manifests if _looks_like_manifest(m)]
        if not bundles:
            raise BundleError(f"{path}: no bundle manifest (*.json with kind {BUNDLE_KIND!r}) in this folder")
        int8 = [m for m in bundles if m.stem.endswith("int8")]
        if len(bundles) > 1 and len(int8) != 1:
            names = ", ".join(m.name for m in bundles)
            raise BundleError(f"{path}: several bundles here ({names}); name the .json of the one to use")
        return int8[0] if len(bundles) > 1 else bundles[0]
    if path.suffix == ".tflite":
        return path.with_suffix(".json")
    return path


def _looks_like_manifest(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("kind") == BUNDLE_KIND
    except (OSError, ValueError, AttributeError):
        return False


def load_bundle(path: str | os.PathLike | None = None, verify_hash: bool = True) -> ModelBundle:
    """Load and verify a bundle from its .json, its .tflite, or a folder holding one.

    ``None`` loads the model bundled with the package.
    """
    if path is None:
        return load_default_bundle(verify_hash=verify_hash)
    manifest_path = _find_manifest(Path(path))
    if not manifest_path.exists():
        raise BundleError(f"{manifest_path}: bundle manifest not found")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{manifest_path}: not a readable JSON manifest: {e}") from e
    if not isinstance(doc, dict):
        raise BundleError(f"{manifest_path}: manifest is not a JSON object")
    missing = [k for k in ("schema_version", "kind", "tflite") if k not in doc]
    if missing:
        raise BundleError(f"{manifest_path}: manifest lacks {', '.join(missing)}")
    if doc["kind"] != BUNDLE_KIND:
        raise BundleError(f"{manifest_path}: kind is {doc['kind']!r}, expected {BUNDLE_KIND!r}")
    manifest = manifest_from_dict(doc, str(manifest_path), default_name=manifest_path.stem)
    tflite = manifest.tflite
    if tflite is None:
        raise BundleError(f"{manifest_path}: manifest lacks tflite")
    tflite_path = manifest_path.parent / _plain_file_name(tflite.file, manifest_path)
    if not tflite_path.is_file():
        raise BundleError(f"{manifest_path}: its flatbuffer {tflite_path.name!r} is missing")
    if verify_hash:
        actual = sha256_file(tflite_path)
        if actual != tflite.sha256:
            raise BundleError(
                f"{tflite_path}: sha256 {actual[:16]}... does not match the manifest's "
                f"{tflite.sha256[:16]}...: the model file was changed or corrupted"
            )
        _check_manifest_hash(doc, manifest_path)
    return ModelBundle(tflite_path, manifest_path, manifest)


def default_bundle_path() -> Path:
    """Path of the manifest of the model shipped inside the package."""
    return Path(str(resources.files("leukoedge") / "models" / f"{DEFAULT_BUNDLE_NAME}.json"))


def load_default_bundle(verify_hash: bool = True) -> ModelBundle:
    path = default_bundle_path()
    if not path.exists():
        raise BundleError(
            f"the bundled model is missing from this installation ({path}); "
            "reinstall leukoedge or pass --model"
        )
    return load_bundle(path, verify_hash=verify_hash)


def write_bundle(
    out_dir: str | os.PathLike,
    name: str,
    tflite_bytes: bytes,
    manifest: BundleManifest | Mapping[str, Any],
) -> ModelBundle:
    """Write ``NAME.tflite`` and ``NAME.json`` atomically and return the loaded bundle.

    ``manifest`` is typed, or a current-schema document body; the ``tflite`` record and the
    manifest's own hash are filled in here from what is written, so both always match.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(manifest, BundleManifest):
        for key in REQUIRED_KEYS:
            if key not in manifest:
                raise BundleError(f"cannot write bundle {name!r}: manifest lacks {key!r}")
        manifest = manifest_from_dict(
            {**manifest, "schema_version": MANIFEST_SCHEMA_VERSION}, f"bundle {name!r}", default_name=name
        )
    record = TFLiteRecord(f"{name}.tflite", len(tflite_bytes), hashlib.sha256(tflite_bytes).hexdigest())
    full = replace(manifest, tflite=record, schema_version=MANIFEST_SCHEMA_VERSION).to_dict()
    full[MANIFEST_HASH_KEY] = manifest_sha256(full)
    write_atomic(out / f"{name}.tflite", tflite_bytes)
    write_atomic(out / f"{name}.json", (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
    return load_bundle(out / f"{name}.json")
