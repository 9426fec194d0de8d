"""The microscope pipeline: capture -> detect -> track -> classify -> count, in two threads.

The capture thread reads the camera as fast as it delivers and puts frames into a two-frame
:class:`~.stages.LatestQueue`; it never waits for processing. When processing falls behind, the
oldest waiting frame is dropped and counted, so what is processed is always recent and memory
stays flat. A failed camera is closed and reopened with exponential back-off; after
``source.max_failures`` consecutive failures the pipeline stops with a fatal error so the service
manager restarts the daemon. The processing thread detects cells on the detection image, follows
them with the :class:`~.tracker.Tracker`, classifies crops cut from the full-resolution image, and
hands each counted cell to a callback (the daemon commits it to the store at once).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from leukoedge.daemon.config import DaemonConfig, SourceConfig
from leukoedge.daemon.pipeline.queues import LatestQueue, RateMeter
from leukoedge.daemon.sources import SourceUnavailable
from leukoedge.daemon.tracking.tracker import Track, Tracker
from leukoedge.daemon.types import CountedCell, Frame, FrameSource, Histogram
from leukoedge.errors import CameraError
from leukoedge.inference.bundle import ModelBundle
from leukoedge.inference.classifier import CellClassifier, ClassifierOptions
from leukoedge.vision.cellextent import whole_flags

logger = logging.getLogger(__name__)

SourceFactory = Callable[[SourceConfig], FrameSource]
CountedCallback = Callable[[CountedCell, "np.ndarray | None"], None]


class CaptureThread(threading.Thread):
    """Reads frames into the queue; reopens a failing camera with back-off; gives up after N failures."""

    def __init__(
        self,
        config: SourceConfig,
        factory: SourceFactory,
        out: LatestQueue,
        max_frames: int = 0,
        lossless: bool = False,
    ) -> None:
        super().__init__(name="leukoedge-capture", daemon=True)
        self.config = config
        self.factory = factory
        self.out = out
        self.max_frames = max_frames
        self.lossless = lossless
        self.stop_event = threading.Event()
        self.rate = RateMeter()
        self.state = "starting"
        self.failures = 0
        self.reconnects = 0
        self.fatal: str | None = None
        self.finished = False
        self.last_event = time.monotonic()
        self._source: FrameSource | None = None
        self._lock = threading.Lock()
        self.opened = threading.Event()

    def interrupt(self, reason: str) -> None:
        """Close the source from outside (a stalled read): the blocked read then fails and reopens."""
        logger.warning("camera %s: %s; closing it to reopen", self.config.uri, reason)
        with self._lock:
            source = self._source
        if source is not None:
            try:
                source.close()
            except Exception as e:  # closing a hung device may itself fail; the read will tell
                logger.warning("closing a stalled camera failed: %s", e)

    def _open(self) -> FrameSource:
        source = self.factory(self.config)
        source.open()
        with self._lock:
            self._source = source
        return source

    def _close(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            try:
                source.close()
            except Exception as e:
                logger.warning("closing camera %s failed: %s", self.config.uri, e)

    def _fail(self, error: BaseException) -> None:
        self._close()
        self.failures += 1
        self.state = "reconnecting"
        logger.warning("camera failure %d/%d: %s", self.failures, self.config.max_failures, error)
        if self.failures >= self.config.max_failures or isinstance(error, SourceUnavailable):
            self.fatal = f"camera failed {self.failures} time(s) in a row, last: {error}"
            self.state = "failed"
            self.stop_event.set()
            return
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (self.failures - 1))
        self.stop_event.wait(delay)
        self.last_event = time.monotonic()

    def _check(self, frame: Frame, source: FrameSource) -> None:
        h, w = frame.rgb.shape[:2] if frame.rgb.ndim >= 2 else (0, 0)
        if frame.rgb.dtype != np.uint8 or frame.rgb.ndim != 3 or (w, h) != tuple(source.size):
            raise CameraError(
                f"{source.uri}: frame {frame.rgb.shape} {frame.rgb.dtype} is not {source.size[0]}x"
                f"{source.size[1]}x3 uint8"
            )

    def run(self) -> None:
        source: FrameSource | None = None
        try:
            while not self.stop_event.is_set():
                try:
                    if source is None or self._source is None:
                        source = self._open()
                        if self.failures:
                            self.reconnects += 1
                        self.state = "running"
                        self.last_event = time.monotonic()
                        self.opened.set()
                    frame = source.read()
                    if frame is None:
                        logger.info("camera %s: end of frames", self.config.uri)
                        self.finished = True
                        return
                    self._check(frame, source)
                except Exception as e:  # CameraError mostly; anything else from a driver counts too
                    if self.stop_event.is_set():
                        return
                    if not isinstance(e, CameraError):
                        logger.exception("unexpected error from camera %s", self.config.uri)
                    source = None
                    self._fail(e)
                    continue
                self.failures = 0
                self.last_event = time.monotonic()
                self.rate.tick(self.last_event)
                while self.lossless and not self.stop_event.is_set() and not self.out.wait_room(0.1):
                    pass
                self.out.put(frame)
                if self.max_frames and self.rate.total >= self.max_frames:
                    self.finished = True
                    return
        finally:
            self._close()
            if self.state != "failed":
                self.state = "stopped"


class FrameProcessor:
    """Detect, track, classify and count on one frame at a time (the processing thread's work)."""

    def __init__(
        self, config: DaemonConfig, bundle: ModelBundle, on_counted: CountedCallback, first_track_id: int = 1
    ) -> None:
        from leukoedge.vision.detect import CellDetector, DetectorConfig

        px = config.detector.px_per_um or None
        self.detector = CellDetector(DetectorConfig(px_per_um=px))
        self.tracker = Tracker(config.tracker, config.source.width, config.source.height, first_track_id)
        self.on_counted = on_counted
        self.set_model(config, bundle)
        self.latest: tuple[Frame, list[tuple[Track, Any]]] | None = None

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

    def process(self, frame: Frame) -> int:
        """Run one frame through the stages; return the number of crops classified."""
        from leukoedge.vision.crops import extract_crops

        detections = self.detector.detect(frame.rgb)
        whole = whole_flags(frame.rgb, detections) if self.tracker.config.edge_rule == "extent" else None
        assigned = self.tracker.update(frame.index, frame.ts, detections, whole)
        due = [
            (t, d)
            for t, d in assigned
            if self.tracker.is_whole(d) and t.wants_classification(frame.index, self.tracker.config)
        ]
        if due:
            sx, sy = frame.scale
            main = [_scaled(d, sx, sy) for _, d in due]
            contract = self.bundle.contract
            # the detector's scale (configured, or measured on red cells) keeps crops at the
            # training images' size in micrometres; None falls back to sizing by the cell
            measured = self.detector.measured_px_per_um
            px_per_um = measured * (sx + sy) / 2 if measured else None
            crops = extract_crops(frame.crop_source, main, contract.crop, contract.size, px_per_um)
            probs = self.classifier.predict_proba(crops)
            for (track, _), det, p, crop in zip(due, main, probs, crops, strict=True):
                self.tracker.record(track, frame.index, float(p), det.bbox, crop)
        self._emit(self.tracker.collect())
        self.latest = (frame, assigned)
        return len(due)

    def flush(self) -> None:
        """Count every qualifying live track (shutdown)."""
        self._emit(self.tracker.flush())

    def _emit(self, tracks: list[Track]) -> None:
        for t in tracks:
            p = t.probability(self.aggregate)
            cell = CountedCell(
                track_id=t.id,
                first_seen_ts=t.first_ts,
                last_seen_ts=t.last_ts,
                bbox=t.bbox_main or tuple(int(v) for v in t.detection.bbox),  # type: ignore[arg-type]
                p_malignant=p,
                label=self.bundle.contract.label_for(p, self.classifier.threshold),
                n_classifications=len(t.probs),
                model_sha256=self.bundle.sha256,
            )
            self.on_counted(cell, t.crop)


def _scaled(det: Any, sx: float, sy: float) -> Any:
    """A detection mapped from the detection image to the full-resolution image."""
    if sx == 1.0 and sy == 1.0:
        return det
    x0, y0, x1, y1 = det.bbox
    cx, cy = det.center
    bbox = (int(x0 * sx), int(y0 * sy), int(np.ceil(x1 * sx)), int(np.ceil(y1 * sy)))
    return dataclasses.replace(
        det, bbox=bbox, center=(cx * sx, cy * sy), diameter=det.diameter * (sx + sy) / 2
    )


def annotate_jpeg(frame: Frame, assigned: list[tuple[Track, Any]], quality: int = 80) -> bytes:
    """The detection image with each cell's box: green while counting, red/blue once labelled."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame.rgb).copy())
    draw = ImageDraw.Draw(image)
    for track, det in assigned:
        if track.probs:
            p = track.probability()
            colour = (220, 30, 30) if p >= 0.5 else (30, 90, 220)
            text = f"{track.id} p={p:.2f}"
        else:
            colour, text = (30, 160, 60), str(track.id)
        x0, y0, x1, y1 = det.bbox
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
        draw.text((x0 + 2, max(0, y0 - 11)), text, fill=colour)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class ProcessThread(threading.Thread):
    """Takes the freshest frame, processes it, times it; applies a new model between frames."""

    def __init__(self, processor: FrameProcessor, inbox: LatestQueue, capture: CaptureThread) -> None:
        super().__init__(name="leukoedge-process", daemon=True)
        self.processor = processor
        self.inbox = inbox
        self.capture = capture
        self.stop_event = threading.Event()
        self.rate = RateMeter()
        self.histogram = Histogram()
        self.errors = 0
        self.fatal: str | None = None
        self._pending: tuple[DaemonConfig, ModelBundle] | None = None
        self._lock = threading.Lock()

    def swap_model(self, config: DaemonConfig, bundle: ModelBundle) -> None:
        with self._lock:
            self._pending = (config, bundle)

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.processor.set_model(*pending)
            logger.info("model %s (%s...) in use", pending[1].name, pending[1].sha256[:12])

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                self._apply_pending()
                frame = self.inbox.get(timeout=0.1)
                if frame is None:
                    if not self.capture.is_alive():
                        return
                    continue
                start = time.perf_counter()
                try:
                    self.processor.process(frame)
                except Exception:
                    self.errors += 1
                    logger.exception("processing frame %d failed", frame.index)
                    if self.errors >= 100 and self.errors > self.rate.total:
                        self.fatal = "frame processing keeps failing"
                        return
                    continue
                self.histogram.observe(time.perf_counter() - start)
                self.rate.tick()
        finally:
            try:
                self.processor.flush()
            except Exception:
                logger.exception("counting the remaining tracks failed")
