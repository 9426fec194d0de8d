"""The two workflows behind ``leukoedge quantize`` and ``leukoedge report``.

``quantize_run``: run folder -> calibration set (training split) -> int8, float32 and float16
bundles -> the accuracy report on the test split -> headline figures written back into each
manifest. ``report_run``: an existing bundle folder -> the same report, on the run's test split
or on another labelled data set.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.contract import InputContract
from leukoedge.errors import DataError, ModelError
from leukoedge.inference.bundle import ModelBundle, write_bundle
from leukoedge.quantize import convert
from leukoedge.quantize import evaluate_variants as ev
from leukoedge.quantize.debugger import debug_summary, selective_variant
from leukoedge.quantize.manifest import build_manifest, keras_sha256
from leukoedge.quantize.report import Gates, build_report, find_variants, write_report
from leukoedge.quantize.representative import DEFAULT_CALIBRATION, CalibrationSet, build_calibration_set
from leukoedge.quantize.source import RunSource, load_splits, resolve_source

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
SPLITS_FILE = "splits.json"
REPORT_DIR = "report"
VARIANTS_DIR = "variants"


@dataclass
class QuantizeOptions:
    name: str = "leukonet"
    calibration_samples: int = DEFAULT_CALIBRATION
    seed: int = 0
    gates: Gates = Gates()
    n_boot: int = 1000
    latency_repeats: int = 100
    runtime: str | None = None
    debugger: bool = True
    stability: bool = True
    command: str | None = None
    #: Test hook: transforms the calibration set before conversion (e.g. to break it on purpose).
    calibration_override: Callable[[CalibrationSet], CalibrationSet] | None = None


@dataclass
class QuantizeResult:
    bundle_dir: Path
    bundles: dict[str, ModelBundle]
    report: dict[str, Any]
    report_paths: dict[str, Path]

    @property
    def passed(self) -> bool:
        return bool(self.report["gates"]["passed"])


def _architecture(model: Any) -> dict[str, Any]:
    return {"architecture": str(model.name), "params": int(model.count_params())}


def quantize_run(
    source_path: str | os.PathLike,
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    options: QuantizeOptions | None = None,
) -> QuantizeResult:
    """Convert, bundle and report; see the module docstring."""
    opts = options or QuantizeOptions()
    source = resolve_source(source_path)
    contract = source.contract
    model = convert.load_keras_model(source.model_path, contract)
    splits = load_splits(source, data, opts.seed)
    if not splits["train"]:
        raise DataError("the run's split manifest has no training images to calibrate with")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if source.split_manifest is None:  # splits made now: keep them so `report` uses the same ones
        from leukoedge.train.splits import write_split_manifest

        source.split_manifest = write_split_manifest(out / SPLITS_FILE, splits, extra=splits.meta["extra"])
    calib = build_calibration_set(splits["train"], opts.calibration_samples, opts.seed, contract.class_names)
    if opts.calibration_override is not None:
        calib = opts.calibration_override(calib)
    flatbuffers = {
        "int8": convert.convert_int8(model, calib),
        "float32": convert.convert_float32(model),
        "float16": convert.convert_float16(model),
    }
    specs = {v: convert.io_spec(b) for v, b in flatbuffers.items()}
    calibration_doc = {**calib.to_manifest(), "stability_seeds": [opts.seed, opts.seed + 1]}
    (out / CALIBRATION_FILE).write_text(json.dumps(calibration_doc, indent=1) + "\n", encoding="utf-8")
    common = {
        "source": source,
        "thresholds": source.thresholds(),
        "int8_output": specs["int8"].output,
        "versions": convert.tool_versions(),
        "commands": {"train": source.training_command(), "quantize": opts.command},
        "calibration": {k: v for k, v in calibration_doc.items() if k not in ("files", "unreadable")}
        | {"manifest": CALIBRATION_FILE},
        "architecture": _architecture(model),
        "training_records": [r for name in ("train", "val", "test") for r in splits[name]],
    }
    manifests = {
        v: build_manifest(name=f"{opts.name}", variant=v, spec=specs[v], **common) for v in flatbuffers
    }
    bundles = {v: write_bundle(out, f"{opts.name}_{v}", flatbuffers[v], manifests[v]) for v in flatbuffers}
    eval_set = _held_out(splits, None, calib.paths, contract)
    report, probs, paths = _report(
        bundles, eval_set, model, calib, splits, out / REPORT_DIR, opts, calibration_doc
    )
    headline = {"report": f"{REPORT_DIR}/report.json", **report["headline"]}
    for v in flatbuffers:
        metrics = {**(manifests[v].metrics or {}), **headline}
        bundles[v] = write_bundle(
            out, f"{opts.name}_{v}", flatbuffers[v], replace(manifests[v], metrics=metrics)
        )
    return QuantizeResult(out, bundles, report, paths)


def _held_out(
    splits: Any, data: str | os.PathLike | None, calibration_paths: list[str], contract: InputContract
) -> ev.EvalSet:
    records, description = ev.held_out_records(splits, data)
    if not records:
        raise DataError(f"no held-out images to report on ({description})")
    training = [r.path for r in splits["train"]] + [r.path for r in splits["val"]]
    ev.assert_disjoint([r.path for r in records], calibration_paths, training)
    return ev.load_eval_set(records, description, contract)


def _extra_variants(
    model: Any, calib: CalibrationSet, splits: Any, work: Path, base: ModelBundle, opts: QuantizeOptions
) -> tuple[dict[str, ModelBundle], dict[str, Any] | None]:
    """The second-seed int8 model and the selectively quantized one, written under ``work``."""
    extra: dict[str, ModelBundle] = {}
    layers = debug_summary(model, calib) if opts.debugger else None
    if opts.stability:
        calib2 = build_calibration_set(splits["train"], len(calib.paths), opts.seed + 1, calib.classes)
        tflite = convert.convert_int8(model, calib2)
        doc = base.manifest.with_model(variant="int8_seed2")
        extra["int8_seed2"] = write_bundle(work, f"{base.name}_int8_seed2", tflite, doc)
    if layers and layers.get("flagged"):
        try:
            tflite = selective_variant(model, calib, layers["flagged"])
        except Exception as e:  # noqa: BLE001 - the debugger is experimental; the report goes on
            logger.warning("no selectively quantized variant: %s: %s", type(e).__name__, e)
            layers["selective_error"] = f"{type(e).__name__}: {e}"
            return extra, layers
        spec = convert.io_spec(tflite)
        doc = replace(
            base.manifest.with_model(variant="int8_selective"), input=spec.input, output=spec.output
        )
        extra["int8_selective"] = write_bundle(work, f"{base.name}_int8_selective", tflite, doc)
    return extra, layers


def _report(
    bundles: dict[str, ModelBundle],
    eval_set: ev.EvalSet,
    model: Any,
    calib: CalibrationSet | None,
    splits: Any,
    out: Path,
    opts: QuantizeOptions,
    calibration_doc: dict[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Path]]:
    """Extra variants (second seed, selective), the evaluation, and the report files."""
    extra: dict[str, ModelBundle] = {}
    layers = None
    if model is not None and calib is not None and splits is not None:
        extra, layers = _extra_variants(model, calib, splits, out / VARIANTS_DIR, bundles["int8"], opts)
    calibration = None
    if calibration_doc:
        calibration = {k: v for k, v in calibration_doc.items() if k not in ("files", "unreadable")}
    report, probs = build_report(
        bundles,
        eval_set,
        keras_model=model,
        extra=extra,
        layers=layers,
        calibration=calibration,
        gates=opts.gates,
        n_boot=opts.n_boot,
        latency_repeats=opts.latency_repeats,
        runtime=opts.runtime,
        seed=opts.seed,
    )
    paths = write_report(report, probs, eval_set, out)
    return report, probs, paths


def _calibration_from_doc(
    bundle_dir: Path, classes: tuple[str, ...]
) -> tuple[CalibrationSet | None, dict[str, Any] | None]:
    """Reload the exact calibration images a bundle was made with (for the debugger)."""
    path = bundle_dir / CALIBRATION_FILE
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = doc["files"]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: unreadable calibration manifest: {e}") from e
    from leukoedge.vision.images import load_cell

    try:
        x = np.stack([load_cell(f["path"]) for f in files])
    except Exception as e:  # noqa: BLE001 - images moved or changed: the report goes on without them
        logger.warning("calibration images not available (%s); no layer statistics", e)
        return None, doc
    calib = CalibrationSet(
        x, [f["path"] for f in files], [f["label"] for f in files], int(doc.get("seed", 0)), classes=classes
    )
    if doc.get("range_anchored"):
        calib.x[0, 0, 0, :] = 255
        calib.range_anchored = True
    return calib, doc


def report_run(
    bundle_path: str | os.PathLike,
    data: str | os.PathLike | None,
    out_dir: str | os.PathLike | None,
    model_path: str | os.PathLike | None = None,
    options: QuantizeOptions | None = None,
) -> QuantizeResult:
    """Report on an existing bundle folder (its int8 bundle and float siblings)."""
    opts = options or QuantizeOptions()
    bundles = find_variants(bundle_path)
    int8 = bundles["int8"]
    bundle_dir = int8.manifest_path.parent
    source = _keras_source(int8, model_path)
    contract = int8.contract
    model = convert.load_keras_model(source.model_path, contract) if source else None
    if source is None:
        logger.warning("no Keras model found (pass --model); comparing with the float32 TFLite model")
    calib, calibration_doc = _calibration_from_doc(bundle_dir, contract.class_names)
    calib_paths = [f["path"] for f in (calibration_doc or {}).get("files", [])]
    splits = _splits_for_report(source, int8, data)
    if splits is None:
        from leukoedge.train.datasets import load_dataset

        if data is None:
            raise DataError("no split manifest for this bundle; pass --data with labelled held-out images")
        recs = load_dataset(data).records
        ev.assert_disjoint([r.path for r in recs], calib_paths, [])
        eval_set = ev.load_eval_set(recs, f"all images of {data}", contract)
    else:
        eval_set = _held_out(splits, data, calib_paths, contract)
    opts = replace(opts, seed=int((calibration_doc or {}).get("seed", opts.seed)))
    out = Path(out_dir) if out_dir else bundle_dir / REPORT_DIR
    report, _, paths = _report(bundles, eval_set, model, calib, splits, out, opts, calibration_doc)
    return QuantizeResult(bundle_dir, bundles, report, paths)


def _keras_source(int8: ModelBundle, model_path: str | os.PathLike | None) -> RunSource | None:
    """The float model to compare with: ``--model``, else the recorded Keras file if it is unchanged.

    A run folder may be retrained in place; comparing an int8 model with a different float
    model would report nonsense, so a recorded file whose sha256 changed is refused.
    """
    recorded = int8.manifest.model.provenance.get("source", {})
    if model_path is not None:
        return resolve_source(model_path)
    path = recorded.get("keras_file")
    if not path or not Path(path).is_file():
        return None
    source = resolve_source(path)
    expected = recorded.get("keras_sha256")
    if expected and keras_sha256(source) != expected:
        raise ModelError(
            f"{path} changed since {int8.manifest_path.name} was made from it (sha256 differs): it is not "
            "the float model of this bundle. Pass --model with the right Keras file, or quantize again"
        )
    return source


def _splits_for_report(source: RunSource | None, int8: ModelBundle, data: str | os.PathLike | None) -> Any:
    from leukoedge.train.splits import read_split_manifest

    if source is not None and source.split_manifest is not None:
        return read_split_manifest(source.split_manifest)
    recorded = int8.manifest.model.provenance.get("source", {}).get("split_manifest")
    if recorded and Path(recorded).is_file():
        return read_split_manifest(recorded)
    return None
