"""The microscope pipeline: capture -> detect -> track -> classify -> count, in two threads.

The capture thread reads the camera as fast as it delivers and puts frames into a two-frame
:class:`~.stages.LatestQueue`; it never waits for processing. When processing falls behind, the
oldest waiting frame is dropped and counted, so what is processed is always recent and memory
stays flat. A failed camera is closed and reopened with exponential back-off; after
``source.max_failures`` consecutive failures the pipeline stops with a fatal error so the service
manager restarts the daemon. The processing thread runs each frame through the
:class:`~leukoedge.daemon.pipeline.frames.FrameProcessor` (detect, track, classify, count), which hands
each counted cell to a callback (the daemon commits it to the store at once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from leukoedge.daemon.config import DaemonConfig, SourceConfig
from leukoedge.daemon.pipeline.frames import FrameProcessor
from leukoedge.daemon.pipeline.queues import LatestQueue, RateMeter
from leukoedge.daemon.sources.base import FrameSource, check_frame
from leukoedge.daemon.types import FrameTiming, Histogram
from leukoedge.errors import CameraError, SourceUnavailable
from leukoedge.inference.bundle import ModelBundle

logger = logging.getLogger(__name__)

SourceFactory = Callable[[SourceConfig], FrameSource]
#: Called on the processing thread after each processed frame (the benchmark's clock).
FrameHook = Callable[[FrameTiming], None]


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
                    check_frame(frame.rgb, source.size, source.uri)
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


class ProcessThread(threading.Thread):
    """Takes the freshest frame, processes it, times it; applies a new model between frames."""

    def __init__(
        self,
        processor: FrameProcessor,
        inbox: LatestQueue,
        capture: CaptureThread,
        on_frame: FrameHook | None = None,
    ) -> None:
        super().__init__(name="leukoedge-process", daemon=True)
        self.processor = processor
        self.on_frame = on_frame
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
                start, cpu = time.perf_counter(), time.thread_time()
                try:
                    crops = self.processor.process(frame)
                except Exception:
                    self.errors += 1
                    logger.exception("processing frame %d failed", frame.index)
                    if self.errors >= 100 and self.errors > self.rate.total:
                        self.fatal = "frame processing keeps failing"
                        return
                    continue
                end = time.perf_counter()
                self.histogram.observe(end - start)
                self.rate.tick()
                if self.on_frame is not None:
                    self.on_frame(FrameTiming(frame, crops, start, end, time.thread_time() - cpu))
        finally:
            try:
                self.processor.flush()
            except Exception:
                logger.exception("counting the remaining tracks failed")
