"""Shared pieces of the daemon tests: a scripted faulty camera and a systemd notify socket."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.daemon.config import DaemonConfig, SourceConfig, apply_overrides
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError


@dataclass
class Script:
    """What the fake camera does, by global read number (counted across reopenings)."""

    frame: np.ndarray
    fps: float = 200.0
    raise_at: set[int] = field(default_factory=set)
    wrong_size_at: set[int] = field(default_factory=set)
    #: read number -> seconds the read blocks (a stall); close() ends the block early
    stall_at: dict[int, float] = field(default_factory=dict)
    #: a stall that close() cannot end (a hung driver)
    hang_forever_from: int | None = None
    #: after a failure, this many open() calls fail (the device vanished), then it returns
    vanish_opens: int = 0
    fail_all_opens: bool = False
    reads: int = 0
    opens: int = 0
    failed_opens: int = 0
    _vanished: int = 0


class ScriptedSource:
    """A camera that follows a :class:`Script`; a new one is made at each reopening."""

    def __init__(self, config: SourceConfig, script: Script) -> None:
        self.config, self.script = config, script
        self.uri = config.uri
        self.size = (script.frame.shape[1], script.frame.shape[0])
        self._closed = threading.Event()
        self._open = False

    def open(self) -> None:
        s = self.script
        if s.fail_all_opens or s._vanished > 0:
            s._vanished -= 1
            s.failed_opens += 1
            raise CameraError(f"{self.uri}: no such device")
        s.opens += 1
        self._open = True

    def read(self) -> Frame | None:
        if not self._open or self._closed.is_set():
            raise CameraError(f"{self.uri}: not open")
        s = self.script
        n = s.reads
        s.reads += 1
        time.sleep(1.0 / s.fps)
        if s.hang_forever_from is not None and n >= s.hang_forever_from:
            threading.Event().wait(3600)
        if n in s.stall_at and self._closed.wait(s.stall_at[n]):
            raise CameraError(f"{self.uri}: closed while stalled")
        if n in s.raise_at:
            s._vanished = s.vanish_opens
            raise CameraError(f"{self.uri}: injected failure at read {n}")
        rgb = s.frame
        if n in s.wrong_size_at:
            rgb = rgb[:-8]
        return Frame(n, time.time(), rgb.copy())

    def close(self) -> None:
        self._closed.set()
        self._open = False


class NotifyListener:
    """A real unix datagram socket standing in for systemd's NOTIFY_SOCKET; records what arrives."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def times(self, message: str) -> list[float]:
        return [t for t, m in self.messages if m == message]


def daemon_config(state_dir: Path, model: Path, **overrides: Any) -> DaemonConfig:
    """A test configuration: no HTTP, a session, the given model; dotted-key overrides on top."""
    base = {
        "store.state_dir": str(state_dir),
        "model.path": str(model),
        "http.enabled": False,
        "session.sample_id": "TEST-1",
        "store.crops": "all",
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return apply_overrides(DaemonConfig(), base)
