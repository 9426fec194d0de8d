"""Running Keras float and the TFLite variants on the same held-out images, and comparing them.

The TFLite variants run through :class:`leukoedge.inference.classifier.CellClassifier` on crops decoded by
:func:`leukoedge.vision.images.load_cell`: the wrapper and preprocessing ``leukoedge classify`` and the
daemon use, so the numbers here are the numbers the device gets. The Keras model sees the same
uint8 arrays as float32.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.contract import CLASS_NAMES, InputContract
from leukoedge.errors import DataError, ImageError
from leukoedge.inference.bundle import ModelBundle
from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
from leukoedge.metrics import binary_metrics, bootstrap_ci, require_both_classes
from leukoedge.vision.images import load_cell

logger = logging.getLogger(__name__)


@dataclass
class EvalSet:
    """Held-out crops (uint8 N x 64 x 64 x 3), their 0/1 labels and files.

    For a differential model ``y`` is 1 for the blast classes and ``types`` holds each crop's cell
    type as an index into ``class_names`` (the contract's); both are None for a binary model.
    """

    x: np.ndarray
    y: np.ndarray
    paths: list[str]
    description: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    types: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None


def _norm(path: str) -> str:
    return os.path.realpath(path)


def held_out_records(splits: Any, data: str | os.PathLike | None) -> tuple[list[Any], str]:
    """The images to report on: the run's test split, or a different data set's images.

    When ``data`` holds images of the run's split manifest (it is the training data), only its
    test-split images are used; otherwise every image of ``data`` is, except any the run used
    for training or validation.
    """
    test = list(splits["test"])
    note = (getattr(splits, "meta", {}).get("extra") or {}).get("note")
    if data is None:
        return test, "test split of the run's split manifest" + (f" ({note})" if note else "")
    from leukoedge.train.datasets import load_dataset

    records = load_dataset(data).records
    seen = {_norm(r.path): name for name, recs in splits.items() for r in recs}
    known = [r for r in records if _norm(r.path) in seen]
    if known:
        kept = [r for r in records if seen.get(_norm(r.path)) == "test"]
        return kept, f"test split of the run's split manifest, within {data}"
    return records, f"all images of {data} (not part of the run's data)"


def assert_disjoint(
    eval_paths: Sequence[str], calibration_paths: Sequence[str], training_paths: Sequence[str]
) -> None:
    """Refuse to report on images the model was calibrated or trained on."""
    evaluated = {_norm(p) for p in eval_paths}
    for what, paths in (("calibration", calibration_paths), ("training", training_paths)):
        overlap = evaluated & {_norm(p) for p in paths}
        if overlap:
            example = sorted(overlap)[0]
            raise DataError(
                f"{len(overlap)} held-out images are also {what} images (e.g. {example}); "
                "the report must use images the model never saw"
            )


def load_eval_set(records: Sequence[Any], description: str, contract: InputContract | None = None) -> EvalSet:
    """Decode the held-out images; unreadable files are skipped and listed.

    With a differential ``contract`` each label must be one of its class names (else DataError).
    """
    differential = contract is not None and contract.differential
    classes = contract.class_names if differential and contract else CLASS_NAMES
    unknown = sorted({rec.label for rec in records} - set(classes))
    if unknown:
        raise DataError(
            f"held-out images ({description}) are labelled {', '.join(unknown)}, not among the model's "
            f"classes {', '.join(classes)}"
        )
    images, labels, paths, errors = [], [], [], []
    for rec in records:
        try:
            images.append(load_cell(rec.path))
        except ImageError as e:
            errors.append((rec.path, str(e)))
            continue
        labels.append(classes.index(rec.label))
        paths.append(rec.path)
    if not images:
        raise DataError(f"no readable held-out images ({description}); {len(errors)} unreadable")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if not differential or contract is None:
        require_both_classes(labels_arr, f"held-out set ({description})")
        return EvalSet(np.stack(images), labels_arr, paths, description, errors)
    y = np.isin(labels_arr, list(contract.blast_indices)).astype(np.int64)
    require_both_classes(y, f"held-out set ({description}; blast vs every other type)")
    return EvalSet(np.stack(images), y, paths, description, errors, labels_arr, tuple(classes))


def predict_keras(model: Any, x: np.ndarray, contract: InputContract | None = None) -> np.ndarray:
    """p(malignant) from the float Keras model on uint8 crops cast to float32.

    For a differential ``contract``: the N x classes probabilities, as the edge forms them.
    """
    out = np.asarray(model.predict(x.astype(np.float32), batch_size=128, verbose=0), np.float64)
    if contract is not None and contract.differential:
        return np.asarray(contract.probabilities(out), np.float64)
    return out.reshape(-1)


def predict_bundle(bundle: ModelBundle, x: np.ndarray, runtime: str | None = None) -> np.ndarray:
    """p(malignant) from a bundle, or the N x classes probabilities of a differential bundle."""
    clf = CellClassifier(bundle, ClassifierOptions(runtime=runtime))
    return clf.predict_probabilities(x) if bundle.contract.differential else clf.predict_proba(x)


def model_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Headline metrics at ``threshold`` with stratified bootstrap 95 % intervals."""
    metrics = binary_metrics(y, p, threshold)
    metrics["ci95"] = {k: list(v) for k, v in bootstrap_ci(y, p, threshold, n_boot=n_boot, seed=seed).items()}
    return metrics


def compare(y: np.ndarray, p_ref: np.ndarray, p_q: np.ndarray, threshold: float) -> dict[str, Any]:
    """How a quantized model's decisions and probabilities differ from the reference's."""
    ref = p_ref >= threshold
    q = p_q >= threshold
    dp = np.abs(p_q - p_ref)
    flips = {}
    for true_name, true_value in (("malignant", 1), ("non_malignant", 0)):
        mask = y == true_value
        flips[f"true_{true_name}"] = {
            "malignant_to_non_malignant": int(np.sum(mask & ref & ~q)),
            "non_malignant_to_malignant": int(np.sum(mask & ~ref & q)),
        }
    hist, edges = np.histogram(dp, bins=20, range=(0.0, max(float(dp.max()), 1e-6)))
    return {
        "agreement": float(np.mean(ref == q)),
        "n": int(len(y)),
        "n_flips": int(np.sum(ref != q)),
        "flips": flips,
        "missed_blasts": flips["true_malignant"]["malignant_to_non_malignant"],
        "abs_dp": {
            "mean": float(dp.mean()),
            "p99": float(np.quantile(dp, 0.99)),
            "max": float(dp.max()),
            "histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
        },
        "flipped_indices": np.flatnonzero(ref != q).tolist(),
    }


def measure_latency(
    bundle: ModelBundle, x: np.ndarray, repeats: int = 100, runtime: str | None = None
) -> dict:
    """Median time of one single-crop classification and per crop in batches of 32, one thread."""
    clf = CellClassifier(bundle, ClassifierOptions(runtime=runtime, num_threads=1))
    crops = x[: max(1, min(len(x), 32))]
    clf.predict_proba(crops[:1])
    single = []
    for i in range(repeats):
        t0 = time.perf_counter()
        clf.predict_proba(crops[i % len(crops)][None])
        single.append(time.perf_counter() - t0)
    batched = []
    if len(crops) == 32:
        clf.predict_proba(crops)
        clf.predict_proba(crops)  # the batch interpreter's first calls set XNNPACK up
        for _ in range(max(10, repeats // 5)):
            t0 = time.perf_counter()
            clf.predict_proba(crops)
            batched.append((time.perf_counter() - t0) / 32)
    return {
        "single_ms_median": float(np.median(single) * 1e3),
        "batch32_ms_per_crop_median": float(np.median(batched) * 1e3) if batched else None,
        "repeats": repeats,
        "runtime": f"{clf.runtime.name} {clf.runtime.version}",
        "threads": 1,
        "where": "measured on the host, not the Pi",
    }


def file_size(bundle: ModelBundle) -> int:
    return Path(bundle.tflite_path).stat().st_size
