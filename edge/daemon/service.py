"""The daemon's life: start, supervise, reload, stop; and what it tells systemd and the HTTP server.

Start order: the configuration passes :func:`~.startup.check_startup` (the checks ``leukoedge
config check`` runs), the model bundle loads and the store opens (errors here end the daemon with
a clear message), the camera opens, then READY=1 goes to systemd. The supervising loop on the main thread
feeds systemd's watchdog only while frames are being processed, so a stalled camera lets systemd
restart the service; it also closes a stalled camera so the capture thread reopens it, writes frame
statistics, and updates STATUS=. SIGTERM (or SIGINT) ends the current frame, counts the tracks that
qualify, closes the session and exits 0; SIGHUP rereads the configuration and the model without
losing the session or the tracks. A camera that keeps failing ends the daemon with
:data:`EXIT_CAMERA` so systemd restarts it. A restart resumes the open session and restores the
tracker's saved state into it (:mod:`.tracking.persist`), so the cells in view are not counted again.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leukoedge.daemon.config import DaemonConfig, SourceConfig, apply_overrides, load_config
from leukoedge.daemon.notify import Notifier
from leukoedge.daemon.pipeline.frames import FrameProcessor
from leukoedge.daemon.pipeline.queues import LatestQueue
from leukoedge.daemon.pipeline.threads import (
    CaptureThread,
    FrameHook,
    ProcessThread,
    SourceFactory,
)
from leukoedge.daemon.sessions import FrameStats, Sessions
from leukoedge.daemon.sources import open_source
from leukoedge.daemon.startup import check_startup
from leukoedge.daemon.status import DaemonStatus
from leukoedge.daemon.store.writer import StoreWriter
from leukoedge.daemon.tracking.persist import TrackerState
from leukoedge.daemon.types import CountedCell
from leukoedge.errors import CameraError, LeukoEdgeError
from leukoedge.inference.bundle import ModelBundle, load_bundle

if TYPE_CHECKING:
    from leukoedge.daemon.http.server import StatusServer
    from leukoedge.daemon.store.database import Store

logger = logging.getLogger(__name__)

EXIT_OK = 0
#: The camera failed ``source.max_failures`` times in a row, or never opened.
EXIT_CAMERA = 3
#: Frame processing failed persistently.
EXIT_PROCESSING = 4
#: At the stop, counted cells could not be stored (they are in the store's journal, or lost, as
#: logged) or the session could not be closed.
EXIT_STORE = 5

_TICK_S = 0.1
_STATUS_EVERY_S = 2.0
_STATS_EVERY_S = 10.0
#: How often the daemon rereads which session is open, so a session started or stopped with
#: ``leukoedge session`` straight on the database is followed instead of written into after its end.
_SESSION_SYNC_S = 2.0

#: Called on the store's thread after each counted cell is committed, with its row id.
CommitHook = Callable[[CountedCell, int], None]


def _load_model(config: DaemonConfig) -> ModelBundle:
    bundle = load_bundle(config.model.path or None)
    logger.info("model %s (%s, sha256 %s...)", bundle.name, bundle.variant, bundle.sha256[:12])
    return bundle


class Daemon:
    """One running daemon: starts, supervises and stops the threads.

    Sessions live in :attr:`sessions` (:mod:`.sessions`); :attr:`stats` (:mod:`.status`) holds the
    figures and is the :class:`~.types.StatusProvider` the HTTP server asks. :attr:`on_frame` and
    :attr:`on_commit` are hooks for whoever watches the daemon from outside (the benchmark's clocks).
    """

    def __init__(
        self,
        config: DaemonConfig,
        config_path: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        source_factory: SourceFactory = open_source,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.overrides = dict(overrides or {})
        self.source_factory = source_factory
        self.notifier = notifier or Notifier()
        self.store: Store | None = None
        self.bundle: ModelBundle | None = None
        self.http: StatusServer | None = None
        #: The API token, read from ``http.token_file`` when the daemon starts.
        self.token: str | None = None
        #: Called with the status page's URL once it serves (the demo prints it).
        self.on_http_started: Callable[[str], None] | None = None
        #: Called after each processed frame, on the processing thread.
        self.on_frame: FrameHook | None = None
        #: Called after each counted cell is committed to the store, on the store's thread.
        self.on_commit: CommitHook | None = None
        self.started_at = time.time()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.exit_reason = ""
        self.reloads = 0
        self.queue = LatestQueue(config.pipeline.queue_size)
        self.writer = StoreWriter(config.store.backlog_limit)
        self.stats = DaemonStatus(self)
        frame_stats = FrameStats(self.stats.counters, self.writer, config.pipeline.stats_interval_s)
        self.sessions = Sessions(self.writer, frame_stats)
        self.capture: CaptureThread | None = None
        self.process: ProcessThread | None = None

    # -- start -------------------------------------------------------------------------------------
    def _open_store(self) -> None:
        from leukoedge.daemon.store.database import Store

        c = self.config.store
        self.store = Store(Path(c.state_dir), c.crops, c.disk_budget_mb, c.min_free_mb).open()
        self.sessions.store = self.store
        self.writer.attach(self.store, self.sessions.committed)

    def _start_pipeline(self, bundle: ModelBundle) -> None:
        cfg = self.config
        state = TrackerState(cfg.store.state_dir, lambda: self.sessions.current_id)
        processor = FrameProcessor(cfg, bundle, self._on_counted, self.sessions.first_track_id(), state)
        state.restore(processor.tracker, self.sessions.current_id, self.sessions.counted_track_ids())
        self.capture = CaptureThread(
            cfg.source, self.source_factory, self.queue, cfg.pipeline.max_frames, cfg.pipeline.lossless
        )
        self.process = ProcessThread(processor, self.queue, self.capture, self.on_frame)
        self.writer.start()
        self.capture.start()
        while not self.capture.opened.wait(_TICK_S):
            if self.capture.fatal or self.stop_requested.is_set():
                raise CameraError(self.capture.fatal or "stopped before the camera opened")
        self.process.start()

    def _start_http(self) -> None:
        c = self.config.http
        if not c.enabled:
            return
        from leukoedge.daemon.http.limits import HttpLimits
        from leukoedge.daemon.http.server import StatusServer

        self.http = StatusServer(
            c.host, c.port, self.stats, self.token, limits=HttpLimits.from_config(c)
        ).start()
        logger.info("status page at %s", self.http.url)
        if self.on_http_started is not None:
            self.on_http_started(self.http.url)

    # -- run ---------------------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; return the process exit status."""
        if install_signals:
            self._install_signals()
        self.token = check_startup(self.config)
        self.bundle = _load_model(self.config)
        self._open_store()
        # only a clean stop ends the session; after a failure the restart continues it
        code, close_session = EXIT_OK, False
        try:
            code, close_session = self._run_open()
        finally:
            stored = self._shutdown(close_session)
        return EXIT_STORE if code == EXIT_OK and not stored else code

    def _run_open(self) -> tuple[int, bool]:
        """Run with the store open; return the exit status and whether to close the session."""
        self.sessions.resume_or_start(self.config.session.sample_id, self.config.session.note)
        self.sessions.write_frame_stats()  # the statistics start from zero, before the first frame
        assert self.bundle is not None
        try:
            self._start_pipeline(self.bundle)
        except CameraError as e:
            if self.stop_requested.is_set():
                return EXIT_OK, True  # stopped while the camera was still opening
            self.exit_reason = str(e)
            logger.error("camera did not start: %s", e)
            return EXIT_CAMERA, False
        self._start_http()
        self.notifier.ready(self.stats.line())
        logger.info("running: source %s", self.config.source.uri)
        code = self._supervise()
        return code, code == EXIT_OK

    def _exit_code(self, now: float, deadline: float) -> int | None:
        """The status to exit with now, or None to carry on."""
        assert self.capture is not None and self.process is not None
        if self.stop_requested.is_set():
            self.exit_reason = self.exit_reason or "stop requested"
            return EXIT_OK
        if self.capture.fatal:
            self.exit_reason = self.capture.fatal
            logger.error("giving up: %s", self.capture.fatal)
            return EXIT_CAMERA
        if self.process.fatal or not self.process.is_alive():
            if self.capture.finished and not self.process.fatal:
                self.exit_reason = "end of frames"
                return EXIT_OK
            self.exit_reason = self.process.fatal or "processing stopped"
            return EXIT_PROCESSING
        if now >= deadline:
            self.exit_reason = "duration reached"
            return EXIT_OK
        return None

    def _supervise(self) -> int:
        cfg = self.config
        deadline = time.monotonic() + cfg.pipeline.duration_s if cfg.pipeline.duration_s else math.inf
        next_status = next_watchdog = next_stats = next_sync = time.monotonic()
        stall_flagged = 0.0
        assert self.capture is not None and self.process is not None
        while True:
            now = time.monotonic()
            code = self._exit_code(now, deadline)
            if code is not None:
                return code
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            stall_flagged = check_stall(self.capture, self.config.source, now, stall_flagged)
            if now >= next_watchdog:
                next_watchdog = now + feed_watchdog(self.notifier, self.process, self.config.source, now)
            if now >= next_status:
                self.notifier.status(self.stats.line())
                next_status = now + _STATUS_EVERY_S
            if now >= next_stats:
                self.sessions.write_frame_stats()
                next_stats = now + _STATS_EVERY_S
            if now >= next_sync:
                self.sessions.follow_store()
                next_sync = now + _SESSION_SYNC_S
            self.stop_requested.wait(_TICK_S)

    # -- signals and reload ------------------------------------------------------------------------
    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("SIGTERM"))
        signal.signal(signal.SIGINT, lambda *_: self.request_stop("SIGINT"))
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def request_stop(self, reason: str = "stop requested") -> None:
        self.exit_reason = reason
        self.stop_requested.set()

    def reload(self) -> bool:
        """Reread the configuration file and the model; keep the session, the tracks and the counts."""
        self.notifier.reloading()
        try:
            new = apply_overrides(load_config(self.config_path), self.overrides)
            bundle = _load_model(new)
        except LeukoEdgeError as e:
            logger.error("reload failed, keeping the running configuration: %s", e)
            self.notifier.ready(self.stats.line())
            return False
        for section in ("source", "store", "http", "pipeline"):
            if getattr(new, section) != getattr(self.config, section):
                logger.warning("[%s] changed: restart the daemon to apply it", section)
        keep = {s: getattr(self.config, s) for s in ("source", "store", "http", "pipeline", "session")}
        self.config = DaemonConfig(model=new.model, detector=new.detector, tracker=new.tracker, **keep)
        self.bundle = bundle
        assert self.process is not None
        self.process.swap_model(self.config, bundle)
        self.reloads += 1
        self.notifier.ready(self.stats.line())
        logger.info("configuration and model reloaded")
        return True

    # -- counted cells -----------------------------------------------------------------------------
    def _on_counted(self, cell: CountedCell, crop: Any) -> None:
        """Called on the processing thread for each counted cell: queue its commit to the store."""
        blast = cell.suspected_blast
        session_id = self.sessions.current_id
        if session_id is not None and not self.writer.admit():
            self.stats.not_counted_total += 1  # the store cannot keep it, so it is not counted
            return
        self.stats.counted(blast, in_session=session_id is not None, cell_type=cell.label)
        if session_id is None or self.store is None:
            return
        self.writer.submit_cell(session_id, cell, crop, then=self._committed(session_id, cell, blast))

    def _committed(self, session_id: int, cell: CountedCell, blast: bool) -> Callable[[Any], None]:
        def done(cell_id: Any) -> None:
            self.sessions.committed(session_id, blast)
            if self.on_commit is not None:
                self.on_commit(cell, int(cell_id))

        return done

    # -- stop --------------------------------------------------------------------------------------
    def _shutdown(self, close_session: bool) -> bool:
        """Stop the threads, store what waits, close the session if asked; False if something is unstored."""
        self.notifier.stopping()
        for thread in (self.capture, self.process):
            if thread is not None:
                thread.stop_event.set()
        if self.capture is not None and self.capture.ident is not None:
            self.capture.join(1.0)
            if self.capture.is_alive():
                self.capture.interrupt("stopping")
                self.capture.join(1.0)
        if self.process is not None and self.process.ident is not None:
            self.process.join(30.0)
        stored = self.store is None or self.sessions.finish(close_session, self.capture is not None)
        if self.http is not None:
            self.http.stop()
        if self.store is not None:
            self.store.close()
        self.notifier.close()
        logger.info("stopped: %s; %s", self.exit_reason or "done", self.stats.stored_line())
        return stored


def check_stall(cap: CaptureThread, source: SourceConfig, now: float, flagged: float) -> float:
    """Close a camera silent for ``stall_timeout_s`` (once per stall); a hung one is fatal.

    ``flagged`` is when this stall was acted on (0: not yet); the new value is returned.
    """
    if cap.state != "running":
        return 0.0
    quiet = now - cap.last_event
    timeout = source.stall_timeout_s
    if quiet < timeout:
        return 0.0
    if not flagged:
        cap.interrupt(f"no frame for {quiet:.1f} s")
        return now
    if now - flagged > timeout * source.max_failures:
        cap.fatal = f"camera hung: no frame for {quiet:.0f} s and it cannot be reopened"
    return flagged


def feed_watchdog(notifier: Notifier, process: ProcessThread, source: SourceConfig, now: float) -> float:
    """WATCHDOG=1 only if a frame was processed recently; return the wait until the next check."""
    interval = notifier.watchdog_interval_s
    if interval is None:
        return 1.0
    last = process.rate.last
    if last is not None and now - last <= min(interval, source.stall_timeout_s):
        notifier.watchdog()
    return max(0.05, interval / 2)
