"""``run.json`` as a typed document: the one module that writes and reads it.

Training writes it; evaluation and quantization read the input contract, the operating threshold,
the data summary and the command from it, by name, never by guessing. Files written before the
schema had a version (the same layout, no ``schema_version``) read as version 1; a newer version
is refused, since its meaning is unknown. Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leukoedge.contract import InputContract
from leukoedge.errors import DataError

logger = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = 1
#: Provenance records copied through as they are, in the order they are written.
RECORDS = (
    "versions",
    "fit",
    "data",
    "splits",
    "skipped_files",
    "model",
    "citation",
    "durations_s",
)


@dataclass(frozen=True)
class OperatingThreshold:
    """The threshold the run chose on the validation split, and the rule that chose it."""

    rule: str
    value: float


@dataclass(frozen=True)
class RunDocument:
    """What a training run wrote down about its model."""

    contract: InputContract
    operating: OperatingThreshold | None = None
    command: str | None = None
    created: str | None = None
    seed: int | None = None
    crop_geometry_source: str | None = None
    #: Provenance records by name (see :data:`RECORDS`): data summary, fit settings, model, ...
    records: dict[str, Any] = field(default_factory=dict)
    schema_version: int = RUN_SCHEMA_VERSION

    @property
    def data(self) -> dict[str, Any] | None:
        """The data summary (root, layout, class counts, mapping, ...)."""
        data = self.records.get("data")
        return data if isinstance(data, dict) else None

    def to_dict(self) -> dict[str, Any]:
        head = {
            "schema_version": self.schema_version,
            "created": self.created,
            "command": self.command,
            "seed": self.seed,
        }
        doc = {k: v for k, v in head.items() if v is not None}
        doc.update({k: self.records[k] for k in RECORDS[:5] if k in self.records})
        doc["input_contract"] = self.contract.to_dict()
        if self.crop_geometry_source is not None:
            doc["crop_geometry_source"] = self.crop_geometry_source
        if self.operating is not None:
            doc["operating_threshold"] = {"rule": self.operating.rule, "value": self.operating.value}
        doc.update({k: self.records[k] for k in RECORDS[5:] if k in self.records})
        return doc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run.json") -> RunDocument:
        version = data.get("schema_version", RUN_SCHEMA_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version != RUN_SCHEMA_VERSION:
            raise DataError(
                f"{where}: run document schema version {version!r} is not supported "
                f"(this leukoedge reads version {RUN_SCHEMA_VERSION}); upgrade leukoedge"
            )
        try:
            contract = InputContract.from_dict(data["input_contract"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: no valid input_contract: {e}") from e
        op = data.get("operating_threshold")
        operating = None
        if isinstance(op, Mapping) and isinstance(op.get("value"), int | float):
            operating = OperatingThreshold(str(op.get("rule", "unknown")), float(op["value"]))
        command = data.get("command")
        seed = data.get("seed")
        return cls(
            contract=contract,
            operating=operating,
            command=" ".join(command) if isinstance(command, list) else command,
            created=data.get("created"),
            seed=None if seed is None else int(seed),
            crop_geometry_source=data.get("crop_geometry_source"),
            records={k: data[k] for k in RECORDS if k in data},
        )


def read_run_document(path: str | Path) -> RunDocument:
    """The run document at ``path``, or a :class:`DataError` saying why it cannot be used."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read this run file: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a JSON object")
    return RunDocument.from_dict(data, str(path))
