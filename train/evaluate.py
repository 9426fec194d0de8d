"""``leukoedge evaluate``: score a trained Keras model on labelled images, honestly.

Which images: for a run directory evaluated on its own data, the split manifest says which
images were held out (the ``test`` split by default), so nothing the model trained on or chose
its threshold on is counted. Other data is evaluated whole (or by its split folders).

Which numbers: with both classes, every headline metric with bootstrap 95 % intervals. With one
class (e.g. an external set of normal cells), only what one class defines: the share of images
given their true class (specificity for normal cells) per source class, with Wilson intervals;
the rest is refused with the reason, never reported as if it meant something.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leukoedge.contract import DEFAULT_THRESHOLD, INPUT_SIZE
from leukoedge.errors import DataError, ModelError
from leukoedge.train import runfiles as rf
from leukoedge.train.datasets import Record, label_counts, load_dataset
from leukoedge.train.rundoc import RunDocument, read_run_document
from leukoedge.train.scoring import evaluate_scores, one_class_rates

logger = logging.getLogger(__name__)

SPLIT_CHOICES = ("test", "val", "train", "all")


@dataclass
class EvalRequest:
    """What to evaluate: a model (run directory or .keras file) on data (default: the run's own)."""

    model: str
    data: str | None = None
    layout: str = "auto"
    mapping: str | None = None
    split: str | None = None
    threshold: float | None = None
    out: str | None = None
    cache_dir: str | None = None
    n_boot: int = 1000


def _same_data(run: RunDocument, data: str | None, req: EvalRequest) -> bool:
    if data is None:
        return True
    root = (run.data or {}).get("root")
    return bool(root) and os.path.realpath(data) == os.path.realpath(root) and req.mapping is None


def select_records(
    req: EvalRequest, run: RunDocument | None, run_dir: Path | None
) -> tuple[list[Record], str, dict]:
    """(records, description of what was selected, data summary)."""
    from leukoedge.train.splits import read_split_manifest

    if run is not None and run_dir is not None and _same_data(run, req.data, req):
        split = req.split or "test"
        splits = read_split_manifest(run_dir / rf.SPLITS_FILE)
        records = (
            [r for name in ("train", "val", "test") for r in splits[name]]
            if split == "all"
            else splits[split]
        )
        if not records:
            raise DataError(f"the run's split manifest has no {split!r} images")
        how = f"{split} split of the run's split manifest ({splits.policy})"
        return list(records), how, run.data or {}
    if req.data is None:
        raise DataError("no --data given and the model is not in a run directory with a split manifest")
    task = "differential" if run is not None and run.contract.differential else "binary"
    dataset = load_dataset(req.data, layout=req.layout, mapping=req.mapping, task=task)
    split = req.split or "all"
    if split == "all":
        return dataset.records, f"all images of {dataset.root}", dataset.summary()
    records = [r for r in dataset.records if r.split == split]
    if not records:
        found = sorted({r.split for r in dataset.records if r.split}) or ["none"]
        raise DataError(
            f"{dataset.root} has no {split!r} split folder (split folders found: {', '.join(found)}); "
            "use --split all"
        )
    return records, f"{split} folder of {dataset.root}", dataset.summary()


def _threshold(req: EvalRequest, run: RunDocument | None) -> tuple[float, str]:
    if req.threshold is not None:
        if not 0.0 <= req.threshold <= 1.0:
            raise DataError(f"--threshold {req.threshold} must be between 0 and 1")
        return float(req.threshold), "given on the command line"
    if run is not None:
        op = run.operating
        value = op.value if op else run.contract.threshold
        return value, f"the run's operating threshold ({op.rule if op else '?'}, chosen on validation)"
    logger.warning("no run.json beside the model and no --threshold: using %s", DEFAULT_THRESHOLD)
    return DEFAULT_THRESHOLD, "default (no run.json beside the model)"


def evaluate(req: EvalRequest, progress: Any = None) -> dict[str, Any]:
    """Evaluate and (with ``req.out``) write metrics.json, plots and a report; returns the result dict."""
    from leukoedge.train.run import decode_records
    from leukoedge.train.trainer import load_model, predict_proba

    model_path, run_dir = rf.resolve_model(req.model)
    run = read_run_document(run_dir / rf.RUN_FILE) if run_dir else None
    if req.split is not None and req.split not in SPLIT_CHOICES:
        raise DataError(f"--split must be one of {', '.join(SPLIT_CHOICES)}")
    records, how, data_summary = select_records(req, run, run_dir)
    threshold, threshold_how = _threshold(req, run)
    model = load_model(model_path)
    shape = tuple(model.input_shape[1:])
    if shape != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ModelError(
            f"{model_path}: input shape {shape} is not the contract's ({INPUT_SIZE}, {INPUT_SIZE}, 3)"
        )
    arrays = decode_records(records, req.cache_dir, progress)
    if not arrays.records_kept:
        raise DataError(f"none of the {len(records)} images could be decoded, e.g. {arrays.errors[0][1]}")
    y = arrays.y.astype(int)
    p = predict_proba(model, arrays.x)
    result: dict[str, Any] = {
        "model": str(model_path),
        "run_dir": str(run_dir) if run_dir else None,
        "images": how,
        "data": {k: data_summary.get(k) for k in ("root", "layout", "mapping_text", "source_class_counts")},
        "class_counts": label_counts(arrays.records_kept),
        "threshold": threshold,
        "threshold_source": threshold_how,
        "skipped_files": [{"path": a, "error": b} for a, b in arrays.errors],
    }
    if run is not None and run.contract.differential:
        from leukoedge.train.differential import type_rates

        result["kind"] = "differential"
        result["class_counts"] = label_counts(arrays.records_kept, run.contract.class_names)
        result["metrics"] = type_rates(
            y, p, run.contract, threshold, [r.source_class for r in arrays.records_kept]
        )
    elif len(set(y.tolist())) == 2:
        result["kind"] = "two_class"
        result["metrics"] = evaluate_scores(y, p, threshold, n_boot=req.n_boot)
    else:
        result["kind"] = "one_class"
        result["metrics"] = one_class_rates(y, p, threshold, [r.source_class for r in arrays.records_kept])
    if req.out:
        from leukoedge.train.report_eval import write_eval_outputs

        write_eval_outputs(Path(req.out), result, y, p)
    return result
