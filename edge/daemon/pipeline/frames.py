"""One frame's work in the processing thread: analyse the field, track, classify the due cells, count.

The field analyzer (:class:`~leukoedge.vision.field.FieldAnalyzer`) is the one ``classify --field``
and the benchmark run; here it detects on the detection image and crops only the tracks due a
classification, from the full-resolution image. Whether a counted cell is a suspected blast is
decided here, once, from the bundle's contract and the classifier's threshold; the store, the
metrics, the exports and the live picture all read that decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from leukoedge.daemon.config import DaemonConfig
from leukoedge.daemon.tracking.persist import TrackerState
from leukoedge.daemon.tracking.tracker import Track, Tracker
from leukoedge.daemon.types import CountedCell, Frame
from leukoedge.inference.bundle import ModelBundle
from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
from leukoedge.vision.annotate import PENDING_COLOUR, Mark, classified_mark, draw_marks, jpeg_bytes
from leukoedge.vision.detect import CellDetector, Detection, DetectorConfig
from leukoedge.vision.field import FieldAnalyzer

logger = logging.getLogger(__name__)

CountedCallback = Callable[[CountedCell, "np.ndarray | None"], None]


class FrameProcessor:
    """Detect, track, classify and count on one frame at a time (the processing thread's work)."""

    def __init__(
        self,
        config: DaemonConfig,
        bundle: ModelBundle,
        on_counted: CountedCallback,
        first_track_id: int = 1,
        state: TrackerState | None = None,
    ) -> None:
        self.detector = CellDetector(DetectorConfig(px_per_um=config.detector.px_per_um or None))
        self.tracker = Tracker(config.tracker, config.source.width, config.source.height, first_track_id)
        self.on_counted = on_counted
        #: Where the tracker is saved, so a restart does not count the cells it knows again.
        self.state = state
        self._frame_index: int | None = None
        self.set_model(config, bundle)
        self.latest: tuple[Frame, list[tuple[Track, Detection]]] | None = None

    def set_model(self, config: DaemonConfig, bundle: ModelBundle) -> None:
        """Swap the classifier and tracking rules (on reload); tracks and counts carry on."""
        options = ClassifierOptions(
            threshold=config.model.threshold or None,
            runtime=config.model.runtime or None,
            num_threads=config.model.num_threads,
            batch_size=8,
        )
        self.classifier = CellClassifier(bundle, options)
        self.bundle = bundle
        self.tracker.config = config.tracker
        self.aggregate = config.tracker.aggregate
        self.analyzer = FieldAnalyzer(
            self.detector, bundle.contract, config.tracker.edge_rule, config.tracker.edge_margin
        )

    def process(self, frame: Frame) -> int:
        """Run one frame through the stages; return the number of crops classified."""
        detections = self.analyzer.detect(frame.rgb)
        assigned = self.tracker.update(frame.index, frame.ts, detections)
        due = [
            (t, d)
            for t, d in assigned
            if self.tracker.is_whole(d) and t.wants_classification(frame.index, self.tracker.config)
        ]
        if due:
            main, crops = self.analyzer.crop(frame.crop_source, [d for _, d in due], frame.main_ratio)
            probs = self.classifier.predict_probabilities(crops)
            for (track, _), det, p, crop in zip(due, main, probs, crops, strict=True):
                self.tracker.record(track, frame.index, p, det.bbox, crop)
        counted = self.tracker.collect()
        self._frame_index = frame.index
        if self.state is not None:  # saved before the store hears of the counted cells
            self.state.after_frame(self.tracker, frame.index, bool(counted))
        self._emit(counted)
        self.latest = (frame, assigned)
        return len(due)

    def flush(self) -> None:
        """Count every qualifying live track (shutdown)."""
        counted = self.tracker.flush()
        if self.state is not None and self._frame_index is not None:
            self.state.save(self.tracker, self._frame_index)
        self._emit(counted)

    def _emit(self, tracks: list[Track]) -> None:
        for t in tracks:
            (result,) = self.classifier.decide(t.probability(self.aggregate))
            x0, y0, x1, y1 = t.bbox_main or t.detection.bbox
            cell = CountedCell(
                track_id=t.id,
                first_seen_ts=t.first_ts,
                last_seen_ts=t.last_ts,
                bbox=(int(x0), int(y0), int(x1), int(y1)),
                p_malignant=result.p_blast,
                label=result.label,
                n_classifications=len(t.probs),
                model_sha256=self.bundle.sha256,
                suspected_blast=result.suspected_blast,
            )
            self.on_counted(cell, t.crop)

    def marks(self, assigned: list[tuple[Track, Detection]]) -> list[Mark]:
        """The live picture's boxes: amber while a cell is being classified, then by the contract."""
        out = []
        for track, det in assigned:
            if not track.probs:
                out.append(Mark(det.bbox, PENDING_COLOUR, str(track.id)))
                continue
            (r,) = self.classifier.decide(track.probability(self.aggregate))
            out.append(classified_mark(det.bbox, r.label, r.p_blast, r.suspected_blast, f"{track.id} "))
        return out

    def annotate_jpeg(
        self, frame: Frame, assigned: list[tuple[Track, Detection]], quality: int = 80
    ) -> bytes:
        """The detection image with each tracked cell's box, as JPEG."""
        return jpeg_bytes(draw_marks(frame.rgb, self.marks(assigned)), quality)
