"""Classifying image files: single-cell images or whole microscope fields, results in input order.

The library side of ``leukoedge classify``. Inputs are expanded (files, folders walked recursively,
glob patterns) before any work starts, so a typo fails at once instead of after an hour of work.
Decoding (and, for fields, detection and cropping) runs in a small thread pool, since Pillow's
decoders and most numpy work release the GIL; crops are then classified together in batches by one
:class:`~leukoedge.inference.classifier.CellClassifier`, whose interpreter is not shared between threads.
A file that cannot be read becomes a failure record and the run goes on.

Records are plain dicts with stable keys (see :func:`cell_record`, :func:`field_record`,
:func:`failure_record`); ``p_malignant`` is always p(the bundle's positive class) and ``label`` one
of the bundle's class names.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.errors import DataError, LeukoEdgeError
from leukoedge.inference.classifier import CellClassifier, CellResult
from leukoedge.vision.annotate import draw_marks, field_marks
from leukoedge.vision.detect import CellDetector, Detection, DetectorConfig
from leukoedge.vision.field import FieldAnalyzer
from leukoedge.vision.images import IMAGE_SUFFIXES, decode_image, is_image_path, load_cell

logger = logging.getLogger(__name__)

#: Characters that make a path argument a glob pattern (expanded here for shells that do not).
GLOB_CHARS = frozenset("*?[")
#: Crops classified per interpreter call.
BATCH_SIZE = 32


@dataclass(frozen=True)
class InputItem:
    """One input found by :func:`expand_inputs`; ``error`` is set for a folder that cannot be listed."""

    path: str
    error: str | None = None


# -- expanding the command line ---------------------------------------------------------------------
def _walk(top: str) -> list[InputItem]:
    """Image files under ``top`` in sorted order; hidden names skipped, unreadable folders reported."""
    found: list[InputItem] = []

    def unreadable(e: OSError) -> None:
        reason = "permission denied" if isinstance(e, PermissionError) else (e.strerror or str(e))
        found.append(InputItem(str(e.filename or top), f"cannot list this folder: {reason}"))

    for root, dirs, files in os.walk(top, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_image_path(name):
                found.append(InputItem(os.path.join(root, name)))
    return found


def _expand_one(arg: str, problems: list[str]) -> list[InputItem]:
    if os.path.isdir(arg):
        found = _walk(arg)
        if not found:
            suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
            problems.append(f"{arg}: no images in this folder (looked for {suffixes})")
        return found
    if os.path.lexists(arg):
        # A file named on the command line is tried whatever its suffix; the decoder says what is wrong.
        return [InputItem(arg)]
    if GLOB_CHARS & set(arg):
        matches = sorted(glob.glob(arg, recursive=True))
        found = [item for m in matches for item in (_walk(m) if os.path.isdir(m) else [InputItem(m)])]
        if not found:
            problems.append(f"{arg}: no images match this pattern")
        return found
    problems.append(f"{arg}: no such file or folder")
    return []


def expand_inputs(args: Iterable[str | os.PathLike]) -> list[InputItem]:
    """Files, folders (recursive) and glob patterns -> the inputs to classify, in argument order.

    Each file appears once (the first time it is named). Raises :class:`DataError` naming every
    argument that is missing, matches nothing, or is a folder without images: those are mistakes
    in the command, not bad images.
    """
    items: list[InputItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    for arg in args:
        for item in _expand_one(os.fspath(arg), problems):
            key = os.path.normpath(item.path)
            if key not in seen:
                seen.add(key)
                items.append(item)
    if problems:
        raise DataError("; ".join(problems))
    if not items:
        raise DataError("no input images given")
    return items


# -- records --------------------------------------------------------------------------------------
def _reason(path: str, error: BaseException | str) -> str:
    """An error message without the leading ``path:`` the record already carries."""
    text = str(error)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


def failure_record(path: str, error: BaseException | str) -> dict[str, Any]:
    return {"path": path, "ok": False, "error": _reason(path, error)}


#: The per-cell values a cell cut by the frame edge has none of.
EDGE_CELL_NULLS = ("label", "suspected_blast", "p_blast", "p_malignant", "probabilities", "unclassified")


def cell_record(path: str, result: CellResult) -> dict[str, Any]:
    """One image of one cell: ``label`` (cell type), ``suspected_blast``, ``p_blast``, probabilities."""
    return {"path": path, "ok": True, **result.to_dict()}


def field_record(
    path: str, width: int, height: int, threshold: float, cells: list[dict[str, Any]]
) -> dict[str, Any]:
    """A whole field; each cell is ``{"bbox", "edge", "label", "p_malignant"}``.

    Cells cut by the frame border have ``"edge": true`` and ``label``/``p_malignant`` null: their
    crops miss part of the cell, unlike any training image, so a score for them would mean nothing.
    """
    return {
        "path": path,
        "ok": True,
        "width": width,
        "height": height,
        "threshold": threshold,
        "cells": cells,
    }


# -- preparing inputs (in worker threads) --------------------------------------------------------
@dataclass
class _Prepared:
    """What a worker made of one input: crops to classify, or the reason it failed."""

    item: InputItem
    crops: np.ndarray | None = None
    error: str | None = None
    size: tuple[int, int] = (0, 0)
    detections: list[Detection] | None = None
    frame: np.ndarray | None = None

    @property
    def n_crops(self) -> int:
        return 0 if self.crops is None else len(self.crops)


def _ordered_map(fn: Callable[[Any], Any], items: list[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on a thread pool, in order, with a bounded number of results in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    window = 4 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="leukoedge-decode") as pool:
        pending: deque[Future[Any]] = deque(pool.submit(fn, x) for x in items[:window])
        rest = iter(items[window:])
        try:
            while pending:
                result = pending.popleft().result()
                nxt = next(rest, None)
                if nxt is not None:
                    pending.append(pool.submit(fn, nxt))
                yield result
        finally:
            for f in pending:
                f.cancel()


class _FieldAnalyzers:
    """One :class:`~leukoedge.vision.field.FieldAnalyzer` (and detector) per decoding thread.

    Each field is calibrated on its own red cells (unless a scale is given), so a field's result
    does not depend on which other fields were classified in the same run.
    """

    def __init__(self, classifier: CellClassifier, px_per_um: float | None = None) -> None:
        self.contract = classifier.contract
        self.config = DetectorConfig(px_per_um=px_per_um).validate()
        self._local = threading.local()

    def analyze(self, frame: np.ndarray) -> tuple[list[Detection], np.ndarray]:
        """All detections (``whole`` set by the cell's extent), and the model crops of the whole ones."""
        analyzer = getattr(self._local, "analyzer", None)
        if analyzer is None:
            analyzer = self._local.analyzer = FieldAnalyzer(CellDetector(self.config), self.contract)
        analyzer.detector.reset_calibration()
        return analyzer.analyze(frame)


# -- the pipeline ---------------------------------------------------------------------------------
class FileClassifier:
    """Classifies files with one :class:`CellClassifier`; see :meth:`run`.

    ``field=True`` treats each image as a whole microscope field (detect, crop, classify each
    cell); otherwise each image is one centred cell, as in the training data. ``annotate_dir``
    (fields only) receives a copy of each field with boxes and labels drawn.
    """

    def __init__(
        self,
        classifier: CellClassifier,
        *,
        field: bool = False,
        px_per_um: float | None = None,
        workers: int | None = None,
        annotate_dir: str | os.PathLike | None = None,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.classifier = classifier
        self.contract = classifier.contract
        self.field = field
        self.analyzer = _FieldAnalyzers(classifier, px_per_um) if field else None
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.batch_size = max(1, int(batch_size))
        self.annotate_dir = Path(annotate_dir) if annotate_dir is not None else None
        self._annotation_names: set[str] = set()
        if self.annotate_dir is not None:
            if not field:
                raise DataError("annotation draws detected cells on fields: use it with field mode")
            try:
                self.annotate_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DataError(f"{self.annotate_dir}: cannot create the annotation folder: {e}") from e

    def _prepare(self, item: InputItem) -> _Prepared:
        if item.error is not None:
            return _Prepared(item, error=item.error)
        try:
            if self.analyzer is None:
                return _Prepared(item, crops=load_cell(item.path, size=self.contract.size)[None])
            frame = decode_image(item.path)
            detections, crops = self.analyzer.analyze(frame)
            keep = frame if self.annotate_dir is not None else None
            return _Prepared(
                item, crops, size=(frame.shape[1], frame.shape[0]), detections=detections, frame=keep
            )
        except LeukoEdgeError as e:
            return _Prepared(item, error=_reason(item.path, e))
        except Exception as e:  # a batch goes on past anything one file can do to a decoder
            logger.debug("unexpected failure on %s", item.path, exc_info=True)
            return _Prepared(item, error=f"unexpected error: {type(e).__name__}: {e}")

    def run(self, items: list[InputItem]) -> Iterator[dict[str, Any]]:
        """One record per input, in input order."""
        pending: list[_Prepared] = []
        n_crops = 0
        # Failed files and fields without cells add no crops: cap the records held too, tightly
        # when they hold whole frames for annotation.
        max_held = self.batch_size if self.annotate_dir is not None else 4 * self.batch_size
        for prepared in _ordered_map(self._prepare, items, self.workers):
            pending.append(prepared)
            n_crops += prepared.n_crops
            if n_crops >= self.batch_size or len(pending) >= max_held:
                yield from self._flush(pending)
                pending, n_crops = [], 0
        yield from self._flush(pending)

    def _flush(self, pending: list[_Prepared]) -> Iterator[dict[str, Any]]:
        crops = [p.crops for p in pending if p.crops is not None and p.n_crops]
        probs = self.classifier.predict_probabilities(np.concatenate(crops)) if crops else np.empty((0, 0))
        offset = 0
        for p in pending:
            if p.error is not None:
                yield failure_record(p.item.path, p.error)
                continue
            yield self._record(p, probs[offset : offset + p.n_crops])
            offset += p.n_crops

    def _record(self, p: _Prepared, probs: np.ndarray) -> dict[str, Any]:
        t = self.classifier.threshold
        results = iter(self.classifier.decide(probs) if len(probs) else [])
        if not self.field:
            return cell_record(p.item.path, next(results))
        cells: list[dict[str, Any]] = []
        for d in p.detections or []:
            cell: dict[str, Any] = {"bbox": [int(v) for v in d.bbox], "edge": not d.whole}
            if not d.whole:
                cell.update(dict.fromkeys(EDGE_CELL_NULLS))
            else:
                cell.update(next(results).to_dict())
                del cell["threshold"]
            cells.append(cell)
        record = field_record(p.item.path, p.size[0], p.size[1], t, cells)
        if self.annotate_dir is not None and p.frame is not None:
            record["annotation"] = self._write_annotation(p, cells)
        return record

    def _write_annotation(self, p: _Prepared, cells: list[dict[str, Any]]) -> str | None:
        assert self.annotate_dir is not None and p.frame is not None
        stem = Path(p.item.path).stem
        name, k = f"{stem}.annotated.png", 1
        while name in self._annotation_names:
            k += 1
            name = f"{stem}-{k}.annotated.png"
        self._annotation_names.add(name)
        out = self.annotate_dir / name
        try:
            draw_marks(p.frame, field_marks(cells)).save(out)
        except OSError as e:
            logger.warning("%s: annotation not written: %s", out, e)
            return None
        return str(out)


def default_workers() -> int:
    """Decoding threads: one per core (at most 8); the interpreter runs in the calling thread."""
    return max(1, min(8, os.cpu_count() or 1))
