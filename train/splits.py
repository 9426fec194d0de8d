"""Train / validation / test splits: deterministic, stratified, group-aware, written down.

The numbers a model is judged by must come from images it never trained on and that never
chose its threshold or its stopping epoch. So there are always three splits:

* ``train`` fits the weights;
* ``val`` is for early stopping and the decision threshold;
* ``test`` is touched once, for the reported figures.

Policy when the data comes with split folders (``Record.split`` set):

* ``train`` + ``val`` + ``test`` folders: kept as they are.
* ``train`` + ``val`` folders (the aml-lmu layout): the provided ``val`` folder becomes the held-out
  **test** split, untouched; ``val`` is carved out of the ``train`` folder (``val_fraction`` of it).
* ``train`` + ``test``: ``val`` is carved out of ``train``.
* ``train`` only: ``val`` and ``test`` are carved out of it.

Without split folders, ``test_fraction`` and ``val_fraction`` of all images are carved out.
Carving is stratified by class and, when records have groups (e.g. patients), keeps each group
in one split. The result is written to a JSON split manifest with each file's size, mtime and
SHA-256, so a later evaluation uses the same images and notices when one has changed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.errors import DataError
from leukoedge.inference.bundle import sha256_file
from leukoedge.train.datasets import Dataset, Record, label_counts

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
MANIFEST_FORMAT = "leukoedge-split-manifest"
MANIFEST_VERSION = 1


class Splits(dict):
    """``{"train": [...], "val": [...], "test": [...]}`` plus how the split was made.

    Each record's ``split`` field holds the split it was assigned to (its role), which for the
    aml-lmu folders means the images of the ``val`` folder carry ``split="test"``.
    """

    def __init__(
        self, parts: dict[str, list[Record]], policy: str, seed: int | None, meta: dict | None = None
    ):
        super().__init__({name: list(parts.get(name, [])) for name in SPLIT_NAMES})
        self.policy = policy
        self.seed = seed
        self.meta: dict[str, Any] = dict(meta or {})

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: label_counts(recs) for name, recs in self.items()}

    def summary(self) -> dict[str, Any]:
        """JSON-able: the policy, the seed and the class counts per split."""
        return {"policy": self.policy, "seed": self.seed, "counts": self.counts()}


def make_splits(
    dataset: Dataset | Sequence[Record],
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    keep_folder_splits: bool = True,
) -> Splits:
    """Split records into train/val/test following the module's policy; same seed, same split."""
    records = sorted(dataset.records if isinstance(dataset, Dataset) else dataset, key=lambda r: r.path)
    if not records:
        raise DataError("cannot split an empty data set")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"split fractions val={val_fraction}, test={test_fraction} must be >= 0 and sum below 1"
        )
    folder_splits = {r.split for r in records}
    if keep_folder_splits and folder_splits != {None}:
        if None in folder_splits:
            raise DataError(
                "some records come with a split folder and some without; cannot keep the folder splits"
            )
        parts, policy = _from_folders(records, val_fraction, seed)
    else:
        parts = carve(records, {"test": test_fraction, "val": val_fraction}, seed)
        policy = f"test {test_fraction:.0%} and val {val_fraction:.0%} carved from all images"
    grouped = any(r.group is not None for r in records)
    policy += f"; stratified by class{', whole groups per split' if grouped else ''}; seed {seed}"
    parts = {name: [replace(r, split=name) for r in recs] for name, recs in parts.items()}
    splits = Splits(parts, policy, seed)
    _check(splits)
    logger.info("splits (%s): %s", policy, splits.counts())
    return splits


def _from_folders(records: list[Record], val_fraction: float, seed: int) -> tuple[dict, str]:
    by_folder = {name: [r for r in records if r.split == name] for name in SPLIT_NAMES}
    if not by_folder["train"]:
        raise DataError(f"split folders {sorted({r.split for r in records})} found but no 'train' folder")
    if by_folder["test"] and by_folder["val"]:
        return by_folder, "train/val/test folders kept as provided"
    if by_folder["test"]:
        parts = carve(by_folder["train"], {"val": val_fraction}, seed)
        return {
            **parts,
            "test": by_folder["test"],
        }, f"test folder kept; val {val_fraction:.0%} of the train folder"
    if by_folder["val"]:
        parts = carve(by_folder["train"], {"val": val_fraction}, seed)
        policy = (
            f"the provided val folder is the held-out test split; val {val_fraction:.0%} of the train folder"
        )
        return {**parts, "test": by_folder["val"]}, policy
    raise DataError("only a 'train' split folder: add val/test folders or load without split folders")


def carve(records: list[Record], fractions: dict[str, float], seed: int) -> dict[str, list[Record]]:
    """Carve ``fractions`` out of ``records`` (rest to train), class-stratified, whole groups at a time.

    Units (a group, or one image without a group) are visited in a seeded random order, largest
    first, and each goes to the split whose per-class target it fills best without overshooting.
    """
    units: dict[str, list[Record]] = {}
    for r in records:
        units.setdefault(r.group if r.group is not None else "\0" + r.path, []).append(r)
    keys = sorted(units)
    order = np.random.default_rng(seed).permutation(len(keys))
    shuffled = sorted((keys[i] for i in order), key=lambda k: -len(units[k]))  # stable: random among equals
    classes = sorted({r.label for r in records})
    totals = np.array([sum(r.label == c for r in records) for c in classes], dtype=float)
    names = ["train", *fractions]
    share = {"train": 1.0 - sum(fractions.values()), **fractions}
    target = {s: share[s] * totals for s in names}
    have = {s: np.zeros(len(classes)) for s in names}
    out: dict[str, list[Record]] = {s: [] for s in names}
    for key in shuffled:
        n = np.array([sum(r.label == c for r in units[key]) for c in classes], dtype=float)
        best = max(names, key=lambda s: _fit(n, target[s] - have[s], target[s]))
        have[best] += n
        out[best] += units[key]
    return out


def _fit(n: np.ndarray, room: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """How well a unit with class counts ``n`` fits a split: (filled minus overshoot, relative room)."""
    room = np.maximum(room, 0.0)
    filled = np.minimum(n, room).sum()
    overshoot = np.maximum(n - room, 0.0).sum()
    relative = float((n * room / np.maximum(target, 1e-9)).sum())
    return float(filled - overshoot), relative


def _check(splits: Splits) -> None:
    """Warn about a split without one of the classes, or a group in two splits."""
    for name, recs in splits.items():
        missing = [c for c, k in label_counts(recs).items() if k == 0]
        if recs and missing:
            logger.warning("%s split has no images of %s", name, ", ".join(missing))
    seen: dict[str, str] = {}
    crossing = set()
    for name, recs in splits.items():
        for r in recs:
            if r.group is not None and seen.setdefault(r.group, name) != name:
                crossing.add(r.group)
    if crossing:
        logger.warning(
            "%d groups (e.g. %r) are in more than one split, as the split folders provide them",
            len(crossing),
            sorted(crossing)[0],
        )


def file_fingerprint(path: str, with_hash: bool = True) -> dict[str, Any]:
    """Size, mtime (ns) and optionally SHA-256 of a file: enough to notice it changed."""
    st = os.stat(path)
    out: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if with_hash:
        out["sha256"] = sha256_file(path)
    return out


def write_split_manifest(
    path: str | os.PathLike, splits: Splits, extra: dict[str, Any] | None = None, with_hash: bool = True
) -> Path:
    """Write the splits as JSON: policy, seed, counts, ``extra`` (e.g. the data set summary) and one
    entry per image (path, label, split, group, source_class, size, mtime_ns, sha256)."""
    entries = []
    for name, recs in splits.items():
        for r in recs:
            entry = {
                "path": r.path,
                "label": r.label,
                "split": name,
                "group": r.group,
                "source_class": r.source_class,
            }
            entries.append({**entry, **file_fingerprint(r.path, with_hash)})
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        **splits.summary(),
        **({"extra": extra} if extra else {}),
        "records": entries,
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return out


def read_split_manifest(path: str | os.PathLike, verify: str = "fast") -> Splits:
    """Read a split manifest back; refuse it when listed files are gone or changed.

    ``verify``: ``"fast"`` compares size and mtime and hashes only files whose mtime moved (a
    copy keeps its content); ``"hash"`` hashes every file; ``"none"`` trusts the manifest.
    """
    if verify not in ("fast", "hash", "none"):
        raise DataError(f"verify must be 'fast', 'hash' or 'none', not {verify!r}")
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the split manifest: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not a leukoedge split manifest")
    if doc.get("version") != MANIFEST_VERSION:
        raise DataError(f"{path}: split manifest version {doc.get('version')} is not {MANIFEST_VERSION}")
    try:
        entries = doc["records"]
        parts: dict[str, list[Record]] = {name: [] for name in SPLIT_NAMES}
        for e in entries:
            parts[e["split"]].append(
                Record(e["path"], e["label"], e.get("group"), e.get("source_class"), e["split"])
            )
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: malformed split manifest entry: {e!r}") from e
    if verify != "none":
        changed = changed_files(entries, full_hash=verify == "hash")
        if changed:
            listing = "; ".join(f"{p}: {why}" for p, why in changed[:10])
            raise DataError(
                f"{path}: {len(changed):,} of {len(entries):,} files changed since the split was written "
                f"({listing}). Make a new split, or read it with verify='none' to accept the changes."
            )
    meta = {k: v for k, v in doc.items() if k not in ("records", "policy", "seed")}
    return Splits(parts, doc.get("policy", ""), doc.get("seed"), meta)


def changed_files(entries: Sequence[dict[str, Any]], full_hash: bool = False) -> list[tuple[str, str]]:
    """(path, reason) for each manifest entry whose file is gone or differs from its fingerprint."""
    changed = []
    for e in entries:
        p = e["path"]
        try:
            now = file_fingerprint(p, with_hash=False)
        except OSError:
            changed.append((p, "missing"))
            continue
        if now["size"] != e.get("size"):
            changed.append((p, f"size {e.get('size')} -> {now['size']}"))
        elif (
            "sha256" in e
            and (full_hash or now["mtime_ns"] != e.get("mtime_ns"))
            and sha256_file(p) != e["sha256"]
        ):
            changed.append((p, "content changed"))
        elif "sha256" not in e and now["mtime_ns"] != e.get("mtime_ns"):
            changed.append((p, "modified"))
    return changed
