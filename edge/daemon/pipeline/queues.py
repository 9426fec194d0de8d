"""The pieces the pipeline threads share: a freshest-frame queue and rate meters.

Capture must never wait for processing: :class:`LatestQueue` holds at most a couple of frames and,
when full, drops the oldest to make room for the newest, counting every drop. Counted cells are
the opposite (none may be lost): see :class:`~leukoedge.daemon.store.writer.StoreWriter`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

logger = logging.getLogger(__name__)


class LatestQueue:
    """A bounded queue that keeps the freshest items: ``put`` never blocks, it drops the oldest."""

    def __init__(self, maxsize: int = 2) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._items: deque[Any] = deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> int:
        """Add an item; return how many old items were dropped to make room (0 or 1)."""
        with self._cond:
            dropped = 0
            while len(self._items) >= self._maxsize:
                self._items.popleft()
                dropped += 1
            self._items.append(item)
            self.dropped += dropped
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> Any | None:
        """The oldest waiting item, or None after ``timeout`` seconds without one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            item = self._items.popleft() if self._items else None
            self._cond.notify_all()
            return item

    def wait_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until a put would drop nothing (lossless replay); True if so."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) < self._maxsize, timeout)

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        return len(self._items)


class RateMeter:
    """Events per second over the last ``window_s`` seconds (frames per second, for instance)."""

    def __init__(self, window_s: float = 2.0, capacity: int = 4096) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=capacity)
        self.total = 0

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)
        self.total += 1

    @property
    def last(self) -> float | None:
        """monotonic time of the latest event, None before the first."""
        try:
            return self._times[-1]
        except IndexError:
            return None

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        times = list(self._times)
        recent = [t for t in times if now - t <= self.window_s]
        if times and len(times) > len(recent):
            return len(recent) / self.window_s
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)
