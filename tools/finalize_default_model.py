"""Copy the int8 bundle of a default-model build into the package, with its provenance.

Usage: python tools/finalize_default_model.py WORK_DIR OUT_DIR [EXTERNAL_DATA]

WORK_DIR is what tools/build_default_model.sh made (run/, bundle/). The int8 bundle is verified,
then measured on the external normal-cell set (all non-malignant, another scanner) through the
edge's own classifier, and written to OUT_DIR/leukonet_int8.{tflite,json} with the build commands,
the external specificity and the model's known limits in its manifest. Absolute paths of the
build machine are made relative to the repository.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.inference.bundle import DEFAULT_BUNDLE_NAME, load_bundle, write_bundle
from leukoedge.inference.classifier import CellClassifier
from leukoedge.inference.manifest import manifest_from_dict
from leukoedge.metrics import wilson_interval
from leukoedge.train.datasets import load_dataset
from leukoedge.vision.images import load_cell

REPO = Path(__file__).resolve().parents[1]


def _relative(value: Any) -> Any:
    """Rewrite absolute paths under the repository's parent folder as paths relative to the repo."""
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str):
        parent = str(REPO.parent)
        value = value.replace(str(REPO) + "/", "").replace(parent + "/", "../")
    return value


def external_specificity(classifier: CellClassifier, data: Path) -> dict[str, Any]:
    dataset = load_dataset(data, layout="folders")
    by_class: dict[str, list[int]] = {}
    cells = np.stack([load_cell(r.path) for r in dataset.records])
    p = classifier.predict_proba(cells)
    for record, prob in zip(dataset.records, p, strict=True):
        by_class.setdefault(record.source_class or "all", []).append(int(prob < classifier.threshold))
    out: dict[str, Any] = {}
    for name, correct in sorted(by_class.items()):
        k, n = sum(correct), len(correct)
        lo, hi = wilson_interval(k, n)
        out[name] = {"n": n, "correct": k, "specificity": k / n, "ci95": [lo, hi]}
    k, n = sum(v["correct"] for v in out.values()), sum(v["n"] for v in out.values())
    lo, hi = wilson_interval(k, n)
    return {
        "data": str(data),
        "what": "normal leukocytes from another scanner and hospital (CellaVision DM96, Barcelona)",
        "model": "this int8 bundle through leukoedge's classifier, at the bundle threshold",
        "overall": {"n": n, "correct": k, "specificity": k / n, "ci95": [lo, hi]},
        "by_class": out,
    }


BINARY_LIMITS = [
    "Trained on two cell types only: myeloblasts (malignant) and segmented neutrophils "
    "(non-malignant) from one scanner (Munich AML Morphology dataset). Other cell types "
    "(lymphocytes, monocytes, immature granulocytes, basophils, other blasts) were never seen.",
    "Research use only; not a medical device; not validated for diagnosis.",
]


def main(work: Path, out_dir: Path, external: Path | None) -> None:
    bundle = load_bundle(work / "bundle")
    manifest = bundle.manifest
    commands = manifest.commands or {}
    build = {
        "script": "tools/build_default_model.sh",
        "make_target": "make default-model",
        "commands": [commands.get("train"), commands.get("quantize")],
    }
    if bundle.contract.differential:  # the quantizer wrote what the data says the model is not validated on
        limits = [
            *(manifest.limits or []),
            "Research use only; not a medical device; not validated for diagnosis.",
        ]
    else:
        limits = list(BINARY_LIMITS)
    recorded = manifest.metrics or {}
    if recorded.get("gates_passed") is False:
        worst = (recorded.get("differential") or {}).get("lowest_class_agreement") or {}
        limits.insert(
            0,
            f"An int8 accuracy gate failed at quantization: float-vs-int8 agreement "
            f"{recorded.get('agreement', float('nan')):.4f} on the blast decision; lowest per-class "
            f"agreement {worst.get('agreement', float('nan')):.3f} ({worst.get('class', '?')}). "
            "See the quantization report.",
        )
    ext = None
    if external is not None and external.exists():
        ext = external_specificity(CellClassifier(bundle), external)
        worst, worst_m = min(ext["by_class"].items(), key=lambda kv: kv[1]["specificity"])
        overall = ext["overall"]
        limits.insert(
            1,
            f"On normal cells from another scanner (pbc-external, n={overall['n']}) specificity "
            f"was {overall['specificity']:.3f}, lowest for {worst} ({worst_m['specificity']:.2f}): "
            "expect false blast calls on cell types and microscopes it was not trained on.",
        )
    doc = replace(manifest, build=build, external_evaluation=ext, limits=limits, tflite=None).to_dict()
    final = manifest_from_dict(_relative(doc), str(bundle.manifest_path))
    result = write_bundle(out_dir, DEFAULT_BUNDLE_NAME, bundle.tflite_path.read_bytes(), final)
    print(json.dumps({"bundle": str(result.manifest_path), "sha256": result.sha256}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
