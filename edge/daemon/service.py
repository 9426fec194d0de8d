"""The daemon's life: start, supervise, reload, stop; and what it tells systemd and the HTTP server.

Start order: the model bundle loads and the store opens (errors here end the daemon with a clear
message), the camera opens, then READY=1 goes to systemd. The supervising loop on the main thread
feeds systemd's watchdog only while frames are being processed, so a stalled camera lets systemd
restart the service; it also closes a stalled camera so the capture thread reopens it, writes frame
statistics, and updates STATUS=. SIGTERM (or SIGINT) ends the current frame, counts the tracks that
qualify, closes the session and exits 0; SIGHUP rereads the configuration and the model without
losing the session or the tracks. A camera that keeps failing ends the daemon with
:data:`EXIT_CAMERA` so systemd restarts it.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leukoedge.daemon.config import DaemonConfig, apply_overrides, load_config
from leukoedge.daemon.notify import Notifier
from leukoedge.daemon.pipeline.frames import FrameProcessor
from leukoedge.daemon.pipeline.queues import LatestQueue, StoreWriter
from leukoedge.daemon.pipeline.threads import CaptureThread, ProcessThread, SourceFactory
from leukoedge.daemon.sources import open_source
from leukoedge.daemon.types import CountedCell
from leukoedge.errors import CameraError, ConfigError, LeukoEdgeError
from leukoedge.inference.bundle import ModelBundle, load_bundle

logger = logging.getLogger(__name__)

EXIT_OK = 0
#: The camera failed ``source.max_failures`` times in a row, or never opened.
EXIT_CAMERA = 3
#: Frame processing failed persistently.
EXIT_PROCESSING = 4

_TICK_S = 0.1
_STATUS_EVERY_S = 2.0
_STATS_EVERY_S = 10.0
#: How often the daemon rereads which session is open, so a session started or stopped with
#: ``leukoedge session`` straight on the database is followed instead of written into after its end.
_SESSION_SYNC_S = 2.0


class Daemon:
    """One running daemon; also the :class:`~.types.StatusProvider` the HTTP server asks."""

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
        self.store: Any = None
        self.bundle: ModelBundle | None = None
        self.http: Any = None
        #: Called with the status page's URL once it serves (the demo prints it).
        self.on_http_started: Callable[[str], None] | None = None
        self.started_at = time.time()
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.exit_reason = ""
        self.cells_total = 0
        self.blasts_total = 0
        self.uncounted_total = 0
        self.reloads = 0
        self._session_id: int | None = None
        self._session_counts = {"cells": 0, "blasts": 0}
        self._session_info: dict[str, Any] = {}
        self._session_lock = threading.RLock()
        self._jpeg_cache: tuple[int, bytes] | None = None
        self._stats_bucket: tuple[float, int | None, tuple[int, int, int, float, int]] | None = None
        self._queue = LatestQueue(config.pipeline.queue_size)
        self._writer = StoreWriter()
        self.capture: CaptureThread | None = None
        self.process: ProcessThread | None = None

    # -- start -------------------------------------------------------------------------------------
    def _load_model(self, config: DaemonConfig) -> ModelBundle:
        bundle = load_bundle(config.model.path or None)
        logger.info("model %s (%s, sha256 %s...)", bundle.name, bundle.variant, bundle.sha256[:12])
        return bundle

    def _open_store(self) -> None:
        from leukoedge.daemon.store.database import Store

        c = self.config.store
        self.store = Store(Path(c.state_dir), c.crops, c.disk_budget_mb, c.min_free_mb).open()

    def _resume_or_start_session(self) -> None:
        """Continue an open session (a restart must not split a count), or start the configured one."""
        active = self.store.active_session()
        wanted = self.config.session.sample_id
        if active and wanted and active["sample_id"] != wanted:
            logger.info("closing session %d (%s) for sample %r", active["id"], active["sample_id"], wanted)
            self.store.stop_session(active["id"])
            active = None
        if active:
            self._set_session(active)
            logger.info("resuming session %d (sample %r)", active["id"], active["sample_id"])
        elif wanted:
            self._set_session(self.store.session(self.store.start_session(wanted, self.config.session.note)))

    def _set_session(self, session: dict[str, Any] | None) -> None:
        """Make a store session (as ``Store.session`` returns it) the one counted cells go to."""
        with self._session_lock:
            self._session_id = None if session is None else int(session["id"])
            session = session or {}
            self._session_counts = {
                "cells": int(session.get("cells", 0)),
                "blasts": int(session.get("blasts", 0)),
            }
            self._session_info = {k: session.get(k) for k in ("sample_id", "note", "started_at")}

    def _first_track_id(self) -> int:
        """Track ids go on from the resumed session's highest, so they stay unique across restarts."""
        with self._session_lock:
            session_id = self._session_id
        if session_id is None:
            return 1
        return 1 + max((int(c["track_id"]) for c in self.store.session_cells(session_id)), default=0)

    def _start_pipeline(self) -> None:
        cfg = self.config
        processor = FrameProcessor(cfg, self.bundle, self._on_counted, self._first_track_id())  # type: ignore[arg-type]
        self.capture = CaptureThread(
            cfg.source, self.source_factory, self._queue, cfg.pipeline.max_frames, cfg.pipeline.lossless
        )
        self.process = ProcessThread(processor, self._queue, self.capture)
        self._writer.start()
        self.capture.start()
        while not self.capture.opened.wait(_TICK_S):
            if self.capture.fatal or self.stop_requested.is_set():
                raise CameraError(self.capture.fatal or "stopped before the camera opened")
        self.process.start()

    def _start_http(self) -> None:
        c = self.config.http
        if not c.enabled:
            return
        from leukoedge.daemon.http.server import StatusServer

        token = None
        if c.token_file:
            try:
                token = Path(c.token_file).read_text(encoding="utf-8").strip() or None
            except OSError as e:
                raise ConfigError(f"http.token_file: cannot read {c.token_file}: {e}") from e
        self.http = StatusServer(c.host, c.port, self, token).start()
        logger.info("status page at %s", self.http.url)
        if self.on_http_started is not None:
            self.on_http_started(self.http.url)

    # -- run ---------------------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until stopped; return the process exit status."""
        if install_signals:
            self._install_signals()
        self.bundle = self._load_model(self.config)
        self._open_store()
        code = EXIT_OK
        close_session = False  # only a clean stop ends the session; after a failure the restart continues it
        try:
            self._resume_or_start_session()
            self._write_frame_stats()  # the statistics start from zero, before the first frame
            try:
                self._start_pipeline()
            except CameraError as e:
                if self.stop_requested.is_set():
                    close_session = True  # stopped while the camera was still opening
                    return code
                self.exit_reason = str(e)
                logger.error("camera did not start: %s", e)
                code = EXIT_CAMERA
                return code
            self._start_http()
            self.notifier.ready(self._status_line())
            logger.info("running: source %s", self.config.source.uri)
            code = self._supervise()
            close_session = code == EXIT_OK
        finally:
            self._shutdown(close_session)
        return code

    def _supervise(self) -> int:
        cfg = self.config
        deadline = time.monotonic() + cfg.pipeline.duration_s if cfg.pipeline.duration_s else math.inf
        next_status = next_watchdog = next_stats = next_sync = time.monotonic()
        stall_flagged = 0.0
        assert self.capture is not None and self.process is not None
        while True:
            now = time.monotonic()
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
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            stall_flagged = self._check_stall(now, stall_flagged)
            if now >= next_watchdog:
                next_watchdog = now + self._feed_watchdog(now)
            if now >= next_status:
                self.notifier.status(self._status_line())
                next_status = now + _STATUS_EVERY_S
            if now >= next_stats:
                self._write_frame_stats()
                next_stats = now + _STATS_EVERY_S
            if now >= next_sync:
                self._follow_store_session()
                next_sync = now + _SESSION_SYNC_S
            self.stop_requested.wait(_TICK_S)

    def _follow_store_session(self) -> None:
        """Adopt the store's open session when it changed outside the daemon (the session CLI)."""
        if self.store is None:
            return
        try:
            active = self.store.active_session()
        except Exception as e:  # a busy or locked database: try again at the next tick
            logger.debug("cannot read the active session: %s", e)
            return
        active_id = None if active is None else int(active["id"])
        with self._session_lock:
            current = self._session_id
        if active_id != current:
            logger.warning(
                "the open session changed outside the daemon (%s -> %s); following it", current, active_id
            )
            self._set_session(None if active is None else self.store.session(active_id))

    def _check_stall(self, now: float, flagged: float) -> float:
        """Close a camera silent for ``stall_timeout_s`` (once per stall); a hung one is fatal."""
        cap = self.capture
        assert cap is not None
        if cap.state != "running":
            return 0.0
        quiet = now - cap.last_event
        timeout = self.config.source.stall_timeout_s
        if quiet < timeout:
            return 0.0
        if not flagged:
            cap.interrupt(f"no frame for {quiet:.1f} s")
            return now
        if now - flagged > timeout * self.config.source.max_failures:
            cap.fatal = f"camera hung: no frame for {quiet:.0f} s and it cannot be reopened"
        return flagged

    def _feed_watchdog(self, now: float) -> float:
        """WATCHDOG=1 only if a frame was processed recently; return the wait until the next check."""
        interval = self.notifier.watchdog_interval_s
        if interval is None:
            return 1.0
        last = self.process.rate.last if self.process else None
        fresh = min(interval, self.config.source.stall_timeout_s)
        if last is not None and now - last <= fresh:
            self.notifier.watchdog()
        return max(0.05, interval / 2)

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
            bundle = self._load_model(new)
        except LeukoEdgeError as e:
            logger.error("reload failed, keeping the running configuration: %s", e)
            self.notifier.ready(self._status_line())
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
        self.notifier.ready(self._status_line())
        logger.info("configuration and model reloaded")
        return True

    # -- counted cells and statistics --------------------------------------------------------------
    def _on_counted(self, cell: CountedCell, crop: Any) -> None:
        """Called on the processing thread for each counted cell: queue its commit to the store."""
        blast = cell.suspected_blast
        self.cells_total += 1
        self.blasts_total += int(blast)
        with self._session_lock:
            session_id = self._session_id
        if session_id is None:
            self.uncounted_total += 1
            return
        self._writer.submit(
            self.store.add_cell, session_id, cell, crop, then=self._committed(session_id, blast)
        )

    def _committed(self, session_id: int, blast: bool) -> Callable[[Any], None]:
        def done(_cell_id: Any) -> None:
            with self._session_lock:
                if self._session_id == session_id:
                    self._session_counts["cells"] += 1
                    self._session_counts["blasts"] += int(blast)

        return done

    def _counters(self) -> tuple[int, int, int, float, int]:
        cap, proc = self.capture, self.process
        hist = proc.histogram if proc else None
        return (
            cap.rate.total if cap else 0,
            proc.rate.total if proc else 0,
            self._queue.dropped,
            hist.total if hist else 0.0,
            hist.count if hist else 0,
        )

    def _write_frame_stats(self, reset: bool = False) -> None:
        """Write this interval's figures (replacing earlier writes of the same interval) to the session."""
        interval = self.config.pipeline.stats_interval_s
        start = math.floor(time.time() / interval) * interval
        counters = self._counters()
        with self._session_lock:
            if self._stats_bucket is None:
                self._stats_bucket = (start, self._session_id, counters)
            b_start, b_session, base = self._stats_bucket
            if b_session is not None and self.store is not None:
                d = [now - then for now, then in zip(counters, base, strict=True)]
                mean_ms = 1000.0 * d[3] / d[4] if d[4] else None
                self._writer.submit(self.store.add_frame_stats, b_session, b_start, d[0], d[1], d[2], mean_ms)
            if reset or start != b_start or self._session_id != b_session:
                self._stats_bucket = (start, self._session_id, counters)

    # -- stop --------------------------------------------------------------------------------------
    def _shutdown(self, close_session: bool) -> None:
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
        if self.store is not None:
            if self.capture is not None:
                self._write_frame_stats()
            if self._writer.is_alive():
                self._writer.finish()
            with self._session_lock:
                session_id, self._session_id = self._session_id, None
            if close_session and session_id is not None:
                self.store.stop_session(session_id)
                logger.info("session %d closed", session_id)
        if self.http is not None:
            self.http.stop()
        if self.store is not None:
            self.store.close()
        self.notifier.close()
        logger.info("stopped: %s", self.exit_reason or "done")

    # -- StatusProvider ----------------------------------------------------------------------------
    def _status_line(self) -> str:
        s = self.status()
        return (
            f"{s['fps']['processed']:.1f} fps processed, {s['counts']['cells_total']} cells, "
            f"{s['counts']['blasts_total']} suspected blasts; camera {s['camera']['state']}"
        )

    def status(self) -> dict[str, Any]:
        cap, proc = self.capture, self.process
        with self._session_lock:
            session = None
            if self._session_id is not None:
                session = {"id": self._session_id, **self._session_info, **self._session_counts}
        return {
            "fps": {
                "capture": cap.rate.rate() if cap else 0.0,
                "processed": proc.rate.rate() if proc else 0.0,
            },
            "frames": dict(zip(("captured", "processed", "dropped"), self._counters()[:3], strict=True)),
            "counts": {
                "cells_total": self.cells_total,
                "blasts_total": self.blasts_total,
                "uncounted_no_session": self.uncounted_total,
                "live_tracks": proc.processor.tracker.live_count if proc else 0,
            },
            "session": session,
            "camera": {
                "uri": self.config.source.uri,
                "state": cap.state if cap else "stopped",
                "reconnects": cap.reconnects if cap else 0,
                "failures": cap.failures if cap else 0,
            },
            "model": None
            if self.bundle is None
            else {"name": self.bundle.name, "variant": self.bundle.variant, "sha256": self.bundle.sha256},
            "health": {
                "healthy": self.healthy(),
                "frames_flowing": self._frames_flowing(),
                "model_loaded": self.bundle is not None,
                "store_errors": self._writer.errors,
                "processing_errors": proc.errors if proc else 0,
                **(self.store.health() if self.store is not None else {}),
            },
            "uptime_s": time.time() - self.started_at,
            "reloads": self.reloads,
            "tensorflow_loaded": "tensorflow" in sys.modules,
        }

    def metrics(self) -> dict[str, Any]:
        cap, proc = self.capture, self.process
        health = self.store.health() if self.store is not None else {}
        captured, processed, dropped, _, _ = self._counters()
        empty = {"buckets": [], "sum": 0.0, "count": 0}
        return {
            "capture_fps": cap.rate.rate() if cap else 0.0,
            "processed_fps": proc.rate.rate() if proc else 0.0,
            "frames_captured_total": captured,
            "frames_processed_total": processed,
            "frames_dropped_total": dropped,
            "inference_seconds": proc.histogram.snapshot() if proc else empty,
            "cells_counted_total": self.cells_total,
            "blasts_counted_total": self.blasts_total,
            "camera_reconnects_total": cap.reconnects if cap else 0,
            "crops_saved_total": health.get("crops_saved_total", 0),
            "disk_budget_used_ratio": health.get("disk_budget_used_ratio", 0.0),
        }

    def latest_jpeg(self) -> bytes | None:
        latest = self.process.processor.latest if self.process else None
        if latest is None:
            return None
        frame, assigned = latest
        cached = self._jpeg_cache
        if cached is not None and cached[0] == frame.index:
            return cached[1]
        data = self.process.processor.annotate_jpeg(frame, assigned)  # type: ignore[union-attr]
        self._jpeg_cache = (frame.index, data)
        return data

    def _frames_flowing(self) -> bool:
        last = self.process.rate.last if self.process else None
        return last is not None and time.monotonic() - last <= self.config.source.stall_timeout_s

    def healthy(self) -> bool:
        return self.bundle is not None and self._frames_flowing()

    def start_session(self, sample_id: str, note: str = "") -> dict[str, Any]:
        with self._session_lock:
            session_id = self.store.start_session(sample_id, note)
            self._set_session(self.store.session(session_id))
            self._stats_bucket = None
        return self.store.session(session_id)

    def stop_session(self) -> dict[str, Any]:
        """Stop the active session once every cell counted in it is committed; return its summary."""
        from leukoedge.daemon.store.database import SessionError

        with self._session_lock:
            session_id = self._session_id
            if session_id is None:
                raise SessionError("no session is active")
            self._write_frame_stats()
            self._set_session(None)
            self._stats_bucket = None
        self._writer.drain()
        self.store.stop_session(session_id)
        return self.store.session_summary(session_id)
