"""One training run, end to end: data -> splits -> fit -> thresholds -> test figures -> run directory.

The order matters for honest numbers: the threshold is chosen on the validation split (which also
picked the checkpoint), and the test split is scored once, at the end, with that threshold.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge import __version__
from leukoedge.contract import (
    DIFFERENTIAL_BLAST_CLASSES,
    DIFFERENTIAL_CLASSES,
    OUTPUT_SOFTMAX,
    CropGeometry,
    InputContract,
)
from leukoedge.errors import DataError
from leukoedge.train import runfiles as rf
from leukoedge.train.cache import LoadedArrays, load_arrays
from leukoedge.train.datasets import Dataset, Record, load_dataset, require_evaluable, require_two_classes
from leukoedge.train.differential import score_differential
from leukoedge.train.rundoc import OperatingThreshold, RunDocument
from leukoedge.train.scoring import choose_thresholds, evaluate_scores
from leukoedge.train.splits import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    make_splits,
    write_split_manifest,
)
from leukoedge.train.trainer import FitConfig, FitResult, fit_model, predict_proba

logger = logging.getLogger(__name__)

#: Training images decoded at full resolution to measure the crop geometry.
GEOMETRY_SAMPLE = 200


@dataclass
class TrainOptions:
    """What ``leukoedge train`` was asked to do."""

    data: str
    out: str
    layout: str = "auto"
    mapping: str | None = None
    fit: FitConfig = field(default_factory=FitConfig)
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    cache_dir: str | None = None
    limit: int | None = None
    target_sensitivity: float = 0.95
    operating: str = "youden"
    overwrite: bool = False
    command: str = ""
    #: ``binary`` (blast or not) or ``differential`` (every white-cell type; see train/labels.py).
    task: str = "binary"

    @property
    def differential(self) -> bool:
        return self.task == "differential"


@dataclass
class RunResult:
    """Where the run went and its headline figures."""

    run_dir: Path
    metrics: dict[str, Any]
    run: dict[str, Any]


Echo = Callable[[str], None]
ProgressFactory = Callable[[int, str], Any]


def stratified_subset(records: Sequence[Record], limit: int, seed: int = 0) -> list[Record]:
    """About ``limit`` records, drawn with the same share from each (split folder, class) cell."""
    if limit <= 0:
        raise DataError(f"--limit must be positive, not {limit}")
    if limit >= len(records):
        return list(records)
    cells: dict[tuple[str | None, str], list[Record]] = {}
    for r in sorted(records, key=lambda r: r.path):
        cells.setdefault((r.split, r.label), []).append(r)
    rng = np.random.default_rng(seed)
    out: list[Record] = []
    for key in sorted(cells, key=str):
        members = cells[key]
        take = max(1, round(limit * len(members) / len(records)))
        out += [members[i] for i in sorted(rng.choice(len(members), take, replace=False))]
    return out


def measure_geometry(
    records: Sequence[Record], n: int = GEOMETRY_SAMPLE, seed: int = 0
) -> tuple[CropGeometry, str]:
    """Crop geometry measured on up to ``n`` training images decoded at full resolution.

    Returns (geometry, how it was obtained). Falls back to the contract's default geometry, with a
    logged warning, when the measurement is unavailable or fails.
    """
    try:
        from leukoedge.vision.crops import measure_crop_geometry
    except ImportError:
        logger.warning(
            "leukoedge.vision.crops.measure_crop_geometry is unavailable: recording the default crop geometry"
        )
        return CropGeometry(), "default (measurement unavailable)"
    from leukoedge.vision.images import decode_image

    rng = np.random.default_rng(seed)
    picked = [records[i] for i in sorted(rng.choice(len(records), min(n, len(records)), replace=False))]

    def images():
        for r in picked:
            try:
                yield decode_image(r.path)
            except DataError as e:
                logger.warning("crop geometry: skipped %s", e)

    try:
        geometry = measure_crop_geometry(images())
    except (DataError, ValueError) as e:
        logger.warning("crop geometry could not be measured (%s): recording the default", e)
        return CropGeometry(), f"default (measurement failed: {e})"
    how = f"measured on {geometry.measured_on} of {len(picked)} sampled training images, full resolution"
    return geometry, how


def _check_out(out: Path, overwrite: bool) -> None:
    if (out / rf.MODEL_FILE).exists() and not overwrite:
        raise DataError(f"{out} already holds a trained model; choose another --out or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file, not a run directory")


def _load(
    options: TrainOptions, echo: Echo, progress: ProgressFactory | None
) -> tuple[Dataset, Any, LoadedArrays]:
    dataset = load_dataset(options.data, layout=options.layout, mapping=options.mapping, task=options.task)
    if options.limit:
        dataset = replace(
            dataset, records=stratified_subset(dataset.records, options.limit, options.fit.seed)
        )
    require_two_classes(dataset.records, "training")
    splits = make_splits(dataset, options.val_fraction, options.test_fraction, seed=options.fit.seed)
    require_two_classes(splits["train"], "training (train split)")
    require_evaluable(splits["val"], "validation split (used for checkpoint and threshold choice)")
    echo(f"data: {dataset.root} ({dataset.layout}), {splits.policy}")
    for name, counts in splits.counts().items():
        echo(f"  {name:5s} " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    everything = [r for name in ("train", "val", "test") for r in splits[name]]
    arrays = decode_records(everything, options.cache_dir, progress)
    if arrays.errors:
        echo(f"skipped {len(arrays.errors)} unreadable images, e.g. {arrays.errors[0][1]}")
        kept = {name: [r for r in arrays.records_kept if r.split == name] for name in ("train", "val")}
        require_two_classes(kept["train"], "training (train images that could be decoded)")
        require_evaluable(kept["val"], "validation split (images that could be decoded)")
    return dataset, splits, arrays


def decode_records(
    records: Sequence[Record], cache_dir: str | None, progress: ProgressFactory | None
) -> LoadedArrays:
    """Decode (or read from the cache) the model inputs of ``records``, with an optional progress bar."""
    if progress is None:
        return load_arrays(records, cache_dir=cache_dir)
    with progress(len(records), "decoding images") as bar:
        return load_arrays(records, cache_dir=cache_dir, progress=bar.update)


def _part(arrays: LoadedArrays, split: str) -> tuple[np.ndarray, np.ndarray, list[Record]]:
    idx = [i for i, r in enumerate(arrays.records_kept) if r.split == split]
    return arrays.x[idx], arrays.y[idx].astype(np.int64), [arrays.records_kept[i] for i in idx]


def _epoch_line(fit: FitConfig, echo: Echo) -> Callable[[dict[str, float], bool], None]:
    def line(row: dict[str, float], best: bool) -> None:
        echo(
            f"epoch {int(row['epoch']):2d}/{fit.epochs}  loss {row.get('loss', np.nan):.4f}  "
            f"acc {row.get('accuracy', np.nan):.4f}  "
            + (f"auc {row['auc']:.4f}  " if "auc" in row else "")
            + "|  "
            f"val loss {row.get('val_loss', np.nan):.4f}  acc {row.get('val_accuracy', np.nan):.4f}  "
            + (
                f"bal.acc {row['val_balanced_accuracy']:.4f}"
                if "val_balanced_accuracy" in row
                else f"auc {row.get('val_auc', np.nan):.4f}"
            )
            + ("  * best" if best else "")
        )

    return line


def _score(options: TrainOptions, fitted: FitResult, arrays: LoadedArrays) -> tuple[dict[str, Any], dict]:
    """Thresholds from validation, then the test split at those thresholds; returns (metrics, scores)."""
    if options.differential:
        parts = {name: _part(arrays, name) for name in ("val", "test")}
        return score_differential(
            lambda x: predict_proba(fitted.model, x),
            parts,
            options.operating,
            options.target_sensitivity,
            options.fit.seed,
        )
    x_val, y_val, _ = _part(arrays, "val")
    x_test, y_test, _ = _part(arrays, "test")
    p_val = predict_proba(fitted.model, x_val)
    thresholds = choose_thresholds(y_val, p_val, options.target_sensitivity)
    op = thresholds[options.operating]["value"]
    metrics: dict[str, Any] = {
        "positive_class": "malignant",
        "operating_threshold": {"rule": options.operating, "value": op},
        "thresholds": thresholds,
        "val": evaluate_scores(y_val, p_val, op, seed=options.fit.seed),
    }
    scores = {"val": (y_val, p_val), "test": None}
    if len(y_test) and len(set(y_test.tolist())) == 2:
        p_test = predict_proba(fitted.model, x_test)
        metrics["test"] = evaluate_scores(y_test, p_test, op, seed=options.fit.seed)
        metrics["test_at"] = {
            name: evaluate_scores(y_test, p_test, t["value"], seed=options.fit.seed)
            for name, t in thresholds.items()
        }
        scores["test"] = (y_test, p_test)
    else:
        metrics["test"] = None
        metrics["test_note"] = f"test split has {len(y_test)} images and not both classes: no test figures"
        logger.warning(metrics["test_note"])
    return metrics, scores


def _robustness(
    options: TrainOptions, fitted: FitResult, arrays: LoadedArrays, metrics: dict[str, Any]
) -> dict[str, Any] | None:
    """The blast decision on perturbed test images at the operating threshold (train/robustness.py)."""
    from leukoedge.train.robustness import robustness

    x, y, _ = _part(arrays, "test")
    if not len(y) or not metrics.get("test"):
        return None
    blast = (
        [DIFFERENTIAL_CLASSES.index(c) for c in DIFFERENTIAL_BLAST_CLASSES] if options.differential else [1]
    )

    def p_blast(v: np.ndarray) -> np.ndarray:
        p = predict_proba(fitted.model, v)
        return p[:, blast].sum(axis=1) if options.differential else p

    return robustness(p_blast, x, y, blast, metrics["operating_threshold"]["value"])


def _versions() -> dict[str, str]:
    import keras
    import matplotlib
    import PIL
    import tensorflow as tf

    return {
        "leukoedge": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def _fit(options: TrainOptions, arrays: LoadedArrays, out: Path, echo: Echo) -> FitResult:
    x_tr, y_tr, _ = _part(arrays, "train")
    x_val, y_val, _ = _part(arrays, "val")
    echo(f"training {options.fit.architecture} for up to {options.fit.epochs} epochs on {len(y_tr)} images")
    return fit_model(
        x_tr,
        y_tr,
        x_val,
        y_val,
        _fit_config(options),
        checkpoint=out / rf.MODEL_FILE,
        on_epoch=_epoch_line(options.fit, echo),
    )


def _fit_config(options: TrainOptions) -> FitConfig:
    """The fit configuration, with the differential's output count when the task asks for it."""
    return replace(options.fit, n_classes=len(DIFFERENTIAL_CLASSES)) if options.differential else options.fit


def _contract(options: TrainOptions, metrics: dict[str, Any], geometry: CropGeometry) -> InputContract:
    threshold = metrics["operating_threshold"]["value"]
    if not options.differential:
        return InputContract(threshold=threshold, crop=geometry)
    return InputContract(
        min_confidence=metrics["abstention"]["min_confidence"],
        class_names=DIFFERENTIAL_CLASSES,
        positive_class=DIFFERENTIAL_BLAST_CLASSES[0],
        threshold=threshold,
        crop=geometry,
        output=OUTPUT_SOFTMAX,
        blast_classes=DIFFERENTIAL_BLAST_CLASSES,
    )


def _run_document(
    options: TrainOptions,
    dataset: Dataset,
    splits: Any,
    arrays: LoadedArrays,
    fitted: FitResult,
    metrics: dict[str, Any],
    geometry: tuple[CropGeometry, str],
    durations: dict[str, float],
) -> RunDocument:
    """What the run writes down about its model; ``geometry`` is (crop geometry, how it was measured)."""
    op = metrics["operating_threshold"]
    summary = dataset.summary()
    records = {
        "versions": _versions(),
        "task": options.task,
        "fit": _fit_config(options).to_dict(),
        "data": {**summary, "limit": options.limit, "loading": arrays.summary()},
        "splits": {
            **splits.summary(),
            "val_fraction": options.val_fraction,
            "test_fraction": options.test_fraction,
        },
        "skipped_files": [{"path": p, "error": m} for p, m in arrays.errors],
        "model": {
            "file": rf.MODEL_FILE,
            "architecture": options.fit.architecture,
            "params": int(fitted.model.count_params()),
            "best_epoch": fitted.best_epoch,
            "best_val_auc": fitted.best_val_auc,
            "checkpoint_metric": _fit_config(options).to_dict()["checkpoint_metric"],
            "epochs_run": len(fitted.history),
            "stopped_early": fitted.stopped_early,
            "class_weight": fitted.class_weight,
        },
        "citation": rf.citations(summary),
        "durations_s": {k: round(v, 2) for k, v in durations.items()},
    }
    return RunDocument(
        contract=_contract(options, metrics, geometry[0]),
        operating=OperatingThreshold(op["rule"], op["value"]),
        command=options.command or " ".join(sys.argv),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=options.fit.seed,
        crop_geometry_source=geometry[1],
        records=records,
    )


def train_run(
    options: TrainOptions, echo: Echo | None = None, progress: ProgressFactory | None = None
) -> RunResult:
    """Train, choose thresholds, score the test split and write the run directory."""
    from leukoedge.train.report import write_train_outputs

    echo = echo or (lambda s: logger.info("%s", s))
    if options.operating not in ("youden", "sensitivity"):
        raise DataError(
            f"operating threshold rule must be 'youden' or 'sensitivity', not {options.operating!r}"
        )
    out = Path(options.out)
    _check_out(out, options.overwrite)
    t0 = time.perf_counter()
    dataset, splits, arrays = _load(options, echo, progress)
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be usable
    t_load = time.perf_counter() - t0
    fitted = _fit(options, arrays, out, echo)
    t1 = time.perf_counter()
    metrics, scores = _score(options, fitted, arrays)
    metrics["robustness"] = _robustness(options, fitted, arrays, metrics)
    t_eval = time.perf_counter() - t1
    geometry, geometry_how = measure_geometry(splits["train"], seed=options.fit.seed)
    write_split_manifest(out / rf.SPLITS_FILE, splits, extra={"data": dataset.summary()})
    durations = {"load": t_load, "fit": fitted.seconds, "evaluate": t_eval, "total": time.perf_counter() - t0}
    doc = _run_document(
        options, dataset, splits, arrays, fitted, metrics, (geometry, geometry_how), durations
    )
    run = doc.to_dict()
    write_train_outputs(out, run, metrics, fitted.history, scores)
    echo(f"run written to {out}")
    return RunResult(out, metrics, run)
