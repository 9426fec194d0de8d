"""What a model bundle is, what it was trained on, how it measured and where it stops being valid.

The library side of ``leukoedge models``. Everything comes from the bundle's manifest as recorded
by training and quantization; the tensor quantization is read from the interpreter when a TFLite
runtime is installed (it is the truth the device runs), else from the manifest.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from leukoedge import RESEARCH_USE_NOTICE
from leukoedge.errors import ModelError
from leukoedge.inference.bundle import ModelBundle
from leukoedge.inference.manifest import BundleManifest

logger = logging.getLogger(__name__)

LIMITS = (
    "Trained on two classes only: myeloblasts (malignant) versus segmented neutrophils "
    "(non-malignant). Other cell types (lymphocytes, monocytes, eosinophils, basophils, immature "
    "granulocytes, other blasts) were never seen; their scores are not meaningful.",
    "Single-cell training images come from one scanner and stain (May-Gruenwald-Giemsa, 100x oil); "
    "other microscopes, cameras and stains shift the scores.",
)


def _quantization(bundle: ModelBundle, runtime: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Input and output tensor details from the interpreter, or the manifest's record of them."""
    from leukoedge.inference.classifier import CellClassifier, ClassifierOptions

    try:
        clf = CellClassifier(bundle, ClassifierOptions(runtime=runtime))
    except ModelError as e:
        logger.debug("interpreter not available for %s: %s", bundle.tflite_path, e)
        return dict(bundle.manifest.input), dict(bundle.manifest.output), "manifest"
    return (
        clf.input.to_dict(),
        clf.output.to_dict(),
        f"interpreter ({clf.runtime.name} {clf.runtime.version})",
    )


def describe_bundle(bundle: ModelBundle, runtime: str | None = None, probe: bool = True) -> dict[str, Any]:
    """A JSON-ready description of ``bundle``; ``probe`` opens the model to read its tensors."""
    m = bundle.manifest
    contract = bundle.contract
    if probe:
        inp, out, source = _quantization(bundle, runtime)
    else:
        inp, out, source = dict(m.input), dict(m.output), "manifest"
    external = _external(m)
    return {
        "name": bundle.name,
        "variant": bundle.variant,
        "version": m.model.version,
        "tflite": str(bundle.tflite_path),
        "manifest": str(bundle.manifest_path),
        "sha256": bundle.sha256,
        "bytes": bundle.tflite_path.stat().st_size,
        "input": inp,
        "output": out,
        "quantization_source": source,
        "class_names": list(contract.class_names),
        "positive_class": contract.positive_class,
        "contract_output": contract.output,
        "blast_classes": list(contract.suspect_classes),
        "threshold": contract.decision_threshold,
        "input_size": contract.size,
        "crop": contract.crop.to_dict(),
        "provenance": m.model.provenance,
        "thresholds": _thresholds(m),
        "training_data": _training_summary(m.training_data),
        "metrics": m.metrics,
        "external": external,
        "limits": _limits(m, external),
        "research_use_only": RESEARCH_USE_NOTICE,
    }


def _thresholds(m: BundleManifest) -> dict[str, Any] | None:
    """Every threshold by rule, raw and snapped, as a person compares them (the device uses one)."""
    record = m.thresholds
    if record is None:
        return None
    contract = m.contract
    raw: dict[str, Any] = {"operating": contract.threshold}
    snapped: dict[str, Any] = {"operating": contract.threshold_snapped}
    own = record.rule_key or record.rule
    if own:
        raw[own], snapped[own] = contract.threshold, contract.threshold_snapped
    for name, alt in record.alternatives.items():
        raw[name], snapped[name] = alt.value, alt.snapped
    view = {**raw, "chosen_on": record.chosen_on, "grid": record.grid, "operating_rule": record.rule}
    if contract.threshold_snapped is not None:
        view["snapped"] = dict(sorted(snapped.items()))
    return dict(sorted((k, v) for k, v in view.items() if v is not None))


def _external(m: BundleManifest) -> dict[str, Any] | None:
    """The external evaluation, with the threshold it was measured at (the bundle's own)."""
    if m.external_evaluation is None:
        return None
    return dict(sorted({**m.external_evaluation, "threshold": m.contract.decision_threshold}.items()))


def _limits(manifest: BundleManifest, external: Any) -> list[str]:
    """The manifest's own statement of limits, else the generic ones plus the external figure."""
    if manifest.limits:
        return list(manifest.limits)
    limits = list(LIMITS)
    overall = external.get("overall") if isinstance(external, dict) else None
    specificity = _find_number(overall if isinstance(overall, dict) else external, "specificity")
    if specificity is not None:
        limits.append(
            f"Specificity on external normal cells from another scanner, as measured: {specificity:.3f}."
        )
    else:
        limits.append("Specificity on external data: not recorded in this bundle's manifest.")
    return limits


#: The parts of the training data summary a person asks about; the rest stays in the manifest.
TRAINING_KEYS = ("root", "layout", "n_images", "class_counts", "source_class_counts", "mapping_text")


def _training_summary(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: data[k] for k in TRAINING_KEYS if k in data}


def _find_number(data: Any, key: str) -> float | None:
    """The first number stored under ``key`` anywhere in nested dicts (e.g. metrics.specificity)."""
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        for v in data.values():
            found = _find_number(v, key)
            if found is not None:
                return found
    return None


def _compact(value: Any, limit: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section(title: str, data: Any) -> list[str]:
    """A nested dict as indented ``key: value`` lines; scalars and short lists on one line."""
    lines = [f"{title}:"]
    if not data:
        return [f"{title}: not recorded in the manifest"]

    def walk(d: dict[str, Any], indent: int) -> None:
        for key, value in d.items():
            if isinstance(value, dict) and value and indent < 6:
                lines.append(" " * indent + f"{key}:")
                walk(value, indent + 2)
            else:
                lines.append(" " * indent + f"{key}: {_compact(value)}")

    if isinstance(data, dict):
        walk(data, 2)
    else:
        lines.append(f"  {_compact(data)}")
    return lines


def _tensor(t: dict[str, Any]) -> str:
    quant = f"scale {t.get('scale')}, zero point {t.get('zero_point')}" if t.get("scale") else "not quantized"
    return f"{t.get('dtype')} {t.get('shape')} ({quant})"


def _scores(info: dict[str, Any]) -> str:
    """What the threshold is compared with: p(positive), or p_blast summed over a softmax's blast classes."""
    if info.get("contract_output") == "softmax":
        return f"softmax; p_blast = sum over {', '.join(info['blast_classes'])}"
    return f"scores p({info['positive_class']})"


def format_description(info: dict[str, Any]) -> str:
    """The description as text for a terminal."""
    size_kb = info["bytes"] / 1024
    lines = [
        f"Model:        {info['name']} ({info['variant']}), version {info['version'] or 'not recorded'}",
        f"File:         {info['tflite']} ({size_kb:.1f} KiB)",
        f"sha256:       {info['sha256']}",
        f"Input:        {_tensor(info['input'])}",
        f"Output:       {_tensor(info['output'])}  [from the {info['quantization_source']}]",
        f"Classes:      {', '.join(info['class_names'])} ({_scores(info)})",
        f"Threshold:    {info['threshold']}",
        f"Crop:         cell diameter = {info['crop']['cell_fraction']:.3f} of the crop side "
        f"({info['input_size']}x{info['input_size']} input)",
    ]
    lines += _section("Provenance", info["provenance"])
    lines += _section("Thresholds (as recorded)", info["thresholds"])
    lines += _section("Training data", info["training_data"])
    lines += _section("Measured accuracy (as recorded)", info["metrics"])
    lines += _section("External evaluation (as recorded)", info["external"])
    lines.append("Limits:")
    lines += [f"  - {text}" for text in info["limits"]]
    lines.append(info["research_use_only"])
    return "\n".join(lines)
