"""What a labelled data set is: its records, where they came from, and the checks a use of it needs.

A :class:`Record` carries its label already mapped onto the contract classes; a :class:`Dataset` keeps
the mapping and what was left out, so a run can write down exactly what "malignant" meant. The checks
refuse data a purpose cannot use (one class for training, one class for metrics) with a message.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from leukoedge.contract import CLASS_NAMES, DIFFERENTIAL_BLAST_CLASSES, DIFFERENTIAL_CLASSES
from leukoedge.errors import DataError
from leukoedge.train.labels import format_mapping

logger = logging.getLogger(__name__)

#: A class below this share of the images is reported (logged and listed in the summary).
MINORITY_WARN_FRACTION = 0.05


#: Said wherever images come without labels.
NO_LABELS_HINT = (
    "Labels must come from class folders, TCIA codes or a CSV manifest, never from file names. "
    "To label unlabelled images with a trained model use `leukoedge classify`."
)


@dataclass(frozen=True)
class Record:
    """One labelled image. ``label`` is a contract class; ``source_class`` the name it came from."""

    path: str
    label: str
    group: str | None = None
    source_class: str | None = None
    split: str | None = None

    @property
    def y(self) -> int:
        """The model's target: the label's index among its classes (binary: 1 = malignant)."""
        return (
            CLASS_NAMES.index(self.label)
            if self.label in CLASS_NAMES
            else DIFFERENTIAL_CLASSES.index(self.label)
        )


@dataclass
class Dataset:
    """What a loader found: the records, the label mapping applied, and what was left out."""

    root: str
    layout: str
    records: list[Record]
    mapping: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @property
    def class_counts(self) -> dict[str, int]:
        return label_counts(self.records)

    @property
    def source_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(str(r.source_class) for r in self.records).items()))

    @property
    def split_counts(self) -> dict[str, dict[str, int]]:
        """Class counts per pre-made split folder (empty when the data came unsplit)."""
        splits = sorted({r.split for r in self.records if r.split})
        return {s: label_counts(r for r in self.records if r.split == s) for s in splits}

    @property
    def has_groups(self) -> bool:
        return any(r.group is not None for r in self.records)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description for a run's outputs: where the data came from and how it was labelled."""
        groups = {r.group for r in self.records if r.group is not None}
        return {
            "root": self.root,
            "layout": self.layout,
            "n_images": len(self.records),
            "class_counts": self.class_counts,
            "source_class_counts": self.source_counts,
            "split_counts": self.split_counts,
            "n_groups": len(groups) if groups else None,
            "mapping": dict(self.mapping),
            "mapping_text": format_mapping(self.mapping),
            "excluded": dict(self.excluded),
            "n_missing_files": len(self.missing),
            "missing_files": self.missing[:20],
            "warnings": list(self.warnings),
        }


def classes_of(labels: Iterable[str]) -> tuple[str, ...]:
    """The class list these labels belong to: the binary contract classes or the differential types."""
    return CLASS_NAMES if all(label in CLASS_NAMES for label in labels) else DIFFERENTIAL_CLASSES


def label_counts(
    items: Iterable[Record | str | int], classes: tuple[str, ...] | None = None
) -> dict[str, int]:
    """Images per class, every class of the list present (zeros included).

    Integer targets index ``classes`` (default: the binary classes); names decide the list
    themselves when ``classes`` is not given.
    """
    labels = []
    for item in items:
        label = item.label if isinstance(item, Record) else item
        labels.append(label if isinstance(label, str) else (classes or CLASS_NAMES)[int(label)])
    counts = dict.fromkeys(classes or classes_of(labels), 0)
    for label in labels:
        counts[label] += 1
    return counts


def class_balance_warnings(records: Sequence[Record], where: str = "data set") -> list[str]:
    """Messages for classes that are missing or below :data:`MINORITY_WARN_FRACTION`; each is logged."""
    counts = label_counts(records)
    total = sum(counts.values())
    messages = []
    for label, n in counts.items():
        if total and n == 0:
            messages.append(f"{where}: no {label} images among {total:,}")
        elif total and n / total < MINORITY_WARN_FRACTION:
            messages.append(
                f"{where}: only {n:,} of {total:,} images ({n / total:.1%}) are {label}, under "
                f"{MINORITY_WARN_FRACTION:.0%}: accuracy will hide how this class does; read its own recall"
            )
    for message in messages:
        logger.warning(message)
    return messages


def require_two_classes(records: Sequence[Record], purpose: str = "training") -> dict[str, int]:
    """Refuse data that cannot teach a classifier: no images, or every image of one class.

    Returns the class counts when both classes are present.
    """
    counts = label_counts(records)
    total = sum(counts.values())
    if total == 0:
        raise DataError(f"cannot use this data for {purpose}: it has no labelled images. {NO_LABELS_HINT}")
    present = [label for label, n in counts.items() if n]
    if len(present) < 2:
        raise DataError(
            f"cannot use this data for {purpose}: all {total:,} images have label {present[0]!r}: a "
            f"classifier cannot learn from one class, and its accuracy on one class means nothing. "
            + NO_LABELS_HINT
        )
    return counts


def require_evaluable(labels: Iterable[Record | str | int], set_name: str = "test set") -> dict[str, int]:
    """Refuse to report classification metrics on a set that lacks one of the classes.

    Sensitivity, specificity, AUC and threshold choice all need both classes; on a one-class set
    "accuracy" only measures how often the model says that one class. ``labels`` may be records,
    class names or 0/1 targets. Returns the class counts.
    """
    counts = label_counts(labels)
    total = sum(counts.values())
    if tuple(counts) == DIFFERENTIAL_CLASSES:
        blasts = sum(counts[c] for c in DIFFERENTIAL_BLAST_CLASSES)
        two = {"blast": blasts, "any other type": total - blasts}
        missing = [label for label, n in two.items() if n == 0]
        if total and missing:
            raise DataError(
                f"cannot report metrics on the {set_name}: it has no {missing[0]} images; blast "
                "sensitivity, specificity and a threshold need blasts and other cells"
            )
        return counts
    missing = [label for label, n in counts.items() if n == 0]
    if total == 0:
        raise DataError(f"cannot report metrics on the {set_name}: it has no images")
    if missing:
        present = next(label for label, n in counts.items() if n)
        raise DataError(
            f"cannot report metrics on the {set_name}: all {total:,} images are {present} and none are "
            f"{missing[0]}; sensitivity, specificity, AUC and a threshold need both classes. A one-class "
            f"set can only give the rate at which the model calls its images {missing[0]}."
        )
    return counts
