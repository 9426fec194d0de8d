"""The bundle manifest as a typed document: the one module that writes and reads ``NAME.json``.

Quantization writes it, the edge reads it; neither guesses key names. The threshold is stored once,
in the input contract (the value chosen on the validation split, plus that value snapped to the
int8 output grid); the ``thresholds`` record says how it was chosen and keeps the other rules'
values for reference. Manifests of schema version 1 (which repeated the threshold in six places)
are read through :func:`upgrade_v1`; versions newer than this leukoedge are refused, since their
meaning is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from leukoedge.contract import MANIFEST_SCHEMA_VERSION, InputContract
from leukoedge.errors import BundleError
from leukoedge.finite import finite_float

logger = logging.getLogger(__name__)

BUNDLE_KIND = "leukoedge-model-bundle"
#: Keys every manifest body must have; the rest is provenance and report figures.
REQUIRED_KEYS = ("model", "input_contract", "input", "output")
#: Version 1 names for the recorded figures, in the order they were looked for.
V1_METRIC_KEYS = ("metrics", "evaluation", "test_metrics", "validation")
V1_EXTERNAL_KEYS = ("external_evaluation", "external", "external_metrics")


@dataclass(frozen=True)
class ModelRecord:
    """Which model this is and where it came from."""

    name: str
    variant: str = "unknown"
    version: str | None = None
    #: Architecture, parameter count, source files and anything else quantization recorded.
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "variant": self.variant, "version": self.version, **self.provenance}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], default_name: str) -> ModelRecord:
        rest = {k: v for k, v in data.items() if k not in ("name", "variant", "version")}
        version = data.get("version")
        return cls(
            name=str(data.get("name", default_name)),
            variant=str(data.get("variant", "unknown")),
            version=None if version is None else str(version),
            provenance=rest,
        )


@dataclass(frozen=True)
class AlternativeThreshold:
    """Another rule's threshold, kept for reference; the model does not use it."""

    value: float
    snapped: float | None = None


@dataclass(frozen=True)
class ThresholdRecord:
    """How the contract's threshold was chosen, and the output grid it was snapped to."""

    rule: str | None = None
    chosen_on: str | None = None
    grid: dict[str, Any] | None = None
    alternatives: dict[str, AlternativeThreshold] = field(default_factory=dict)
    #: The name the rule's value goes by among a run's thresholds when it is not the rule's own
    #: (``sensitivity_at_0.95`` for the rule ``sensitivity``); kept so it is not stored twice.
    rule_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc = {
            "rule": self.rule,
            "chosen_on": self.chosen_on,
            "grid": self.grid,
            "alternatives": {
                k: {"value": a.value, "snapped": a.snapped} for k, a in self.alternatives.items()
            },
        }
        return doc if self.rule_key is None else {**doc, "rule_key": self.rule_key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdRecord:
        where = "thresholds.alternatives"
        alternatives = {
            str(k): AlternativeThreshold(
                finite_float(a["value"], f"{where}.{k}.value"),
                None if a.get("snapped") is None else finite_float(a["snapped"], f"{where}.{k}.snapped"),
            )
            for k, a in (data.get("alternatives") or {}).items()
        }
        return cls(
            data.get("rule"), data.get("chosen_on"), data.get("grid"), alternatives, data.get("rule_key")
        )


def rule_key(rule: str | None, names: Any) -> str | None:
    """Which of ``names`` holds the operating rule's own value: the rule, or the rule at a target."""
    if rule is None:
        return None
    return next((n for n in names if n == rule or str(n).startswith(f"{rule}_at_")), None)


@dataclass(frozen=True)
class TFLiteRecord:
    """The flatbuffer beside the manifest, and the hash that ties the two together."""

    file: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "bytes": self.bytes, "sha256": self.sha256}


@dataclass(frozen=True)
class BundleManifest:
    """What the edge needs to run a model, and the record of where the model came from."""

    model: ModelRecord
    contract: InputContract
    input: dict[str, Any]
    output: dict[str, Any]
    tflite: TFLiteRecord | None = None
    thresholds: ThresholdRecord | None = None
    training_data: dict[str, Any] | None = None
    class_mapping: dict[str, str] | None = None
    versions: dict[str, Any] | None = None
    commands: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    external_evaluation: dict[str, Any] | None = None
    limits: list[str] | None = None
    build: dict[str, Any] | None = None
    research_use_only: bool = True
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def with_model(self, **changes: Any) -> BundleManifest:
        return replace(self, model=replace(self.model, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document; optional records that are absent are left out."""
        doc: dict[str, Any] = {
            "schema_version": self.schema_version,
            "kind": BUNDLE_KIND,
            "model": self.model.to_dict(),
            "input_contract": self.contract.to_dict(),
            "input": self.input,
            "output": self.output,
            "tflite": self.tflite.to_dict() if self.tflite else None,
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
        }
        for name in (
            "training_data",
            "class_mapping",
            "versions",
            "commands",
            "calibration",
            "metrics",
            "external_evaluation",
            "limits",
            "build",
        ):
            doc[name] = getattr(self, name)
        doc["research_use_only"] = self.research_use_only
        return {k: v for k, v in doc.items() if v is not None}


def manifest_from_dict(data: Mapping[str, Any], where: str, default_name: str = "model") -> BundleManifest:
    """Read a manifest document of any supported schema version; ``where`` names it in errors."""
    version = data.get("schema_version", MANIFEST_SCHEMA_VERSION)
    if version == 1:
        data = upgrade_v1(data)
    elif version == 2:
        data = {**data, "schema_version": MANIFEST_SCHEMA_VERSION}  # binary contract, same keys
    elif not isinstance(version, int) or isinstance(version, bool) or version != MANIFEST_SCHEMA_VERSION:
        raise BundleError(
            f"{where}: manifest schema version {version!r} is not supported "
            f"(this leukoedge reads versions 1 to {MANIFEST_SCHEMA_VERSION}); "
            "upgrade leukoedge or rebuild the bundle"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BundleError(f"{where}: manifest lacks {', '.join(missing)}")
    try:
        contract = InputContract.from_dict(data["input_contract"])
    except (TypeError, ValueError) as e:
        raise BundleError(f"{where}: invalid input_contract: {e}") from e
    try:
        return _typed(data, contract, default_name)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BundleError(f"{where}: malformed manifest: {type(e).__name__}: {e}") from e


def _typed(data: Mapping[str, Any], contract: InputContract, default_name: str) -> BundleManifest:
    tflite = data.get("tflite")
    thresholds = data.get("thresholds")
    return BundleManifest(
        model=ModelRecord.from_dict(data["model"], default_name),
        contract=contract,
        input=dict(data["input"]),
        output=dict(data["output"]),
        tflite=TFLiteRecord(
            str(tflite.get("file", "")), int(tflite.get("bytes", 0)), str(tflite.get("sha256"))
        )
        if isinstance(tflite, Mapping)
        else None,
        thresholds=ThresholdRecord.from_dict(thresholds) if isinstance(thresholds, Mapping) else None,
        training_data=data.get("training_data"),
        class_mapping=data.get("class_mapping"),
        versions=data.get("versions"),
        commands=data.get("commands"),
        calibration=data.get("calibration"),
        metrics=data.get("metrics"),
        external_evaluation=data.get("external_evaluation"),
        limits=[str(x) for x in data["limits"]] if isinstance(data.get("limits"), list) else None,
        build=data.get("build"),
        research_use_only=bool(data.get("research_use_only", True)),
    )


def upgrade_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 manifest in the version 2 layout, with the same meaning.

    Version 1 put the snapped operating threshold in the input contract and repeated it, snapped
    and not, under ``thresholds`` (as ``operating`` and under the rule's name) and in the external
    evaluation; metrics and the external evaluation had several possible names.
    """
    doc = {k: v for k, v in data.items() if k not in V1_METRIC_KEYS + V1_EXTERNAL_KEYS}
    doc["schema_version"] = MANIFEST_SCHEMA_VERSION
    doc["metrics"] = _first(data, V1_METRIC_KEYS)
    external = _first(data, V1_EXTERNAL_KEYS)
    if isinstance(external, Mapping):
        external = {k: v for k, v in external.items() if k != "threshold"}
    doc["external_evaluation"] = external
    contract = dict(data.get("input_contract") or {})
    old = data.get("thresholds")
    if isinstance(old, Mapping) and isinstance(old.get("operating"), int | float):
        contract["threshold_snapped"] = contract.get("threshold")
        contract["threshold"] = float(old["operating"])
        doc["thresholds"] = _v1_thresholds(old)
    doc["input_contract"] = contract
    return doc


def _v1_thresholds(old: Mapping[str, Any]) -> dict[str, Any]:
    rule = old.get("operating_rule")
    recorded = old.get("snapped")
    snapped: Mapping[str, Any] = recorded if isinstance(recorded, Mapping) else {}
    own = rule_key(rule, old)
    alternatives = {
        name: {"value": float(value), "snapped": snapped.get(name)}
        for name, value in old.items()
        if name not in ("operating", own) and isinstance(value, int | float) and not isinstance(value, bool)
    }
    return {
        "rule": rule,
        "chosen_on": old.get("chosen_on"),
        "grid": old.get("grid"),
        "alternatives": alternatives,
        "rule_key": own if own != rule else None,
    }


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((data[k] for k in keys if data.get(k) is not None), None)
