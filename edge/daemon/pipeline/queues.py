"""The pieces the pipeline threads share: a freshest-frame queue, rate meters, the store writer.

Capture must never wait for processing: :class:`LatestQueue` holds at most a couple of frames and,
when full, drops the oldest to make room for the newest, counting every drop. Counted cells are
the opposite: none may be lost, so :class:`StoreWriter` queues them (they are rare, a few per
second at most) for one thread that commits them in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
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


class StoreWriter(threading.Thread):
    """Runs store operations one at a time, in order, off the processing thread.

    A store error is logged and counted, never raised into the pipeline: a full disk must not stop
    the microscope from counting (the store itself reports why crops stopped).
    """

    def __init__(self, name: str = "leukoedge-store") -> None:
        super().__init__(name=name, daemon=True)
        self._ops: queue.Queue[
            tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None] | None] | None
        ]
        self._ops = queue.Queue()
        self.errors = 0
        self.done = 0

    def submit(self, fn: Callable[..., Any], *args: Any, then: Callable[[Any], None] | None = None) -> None:
        self._ops.put((fn, args, then))

    def run(self) -> None:
        while True:
            op = self._ops.get()
            if op is None:
                self._ops.task_done()
                return
            fn, args, then = op
            try:
                result = fn(*args)
                if then is not None:
                    then(result)
                self.done += 1
            except Exception:
                self.errors += 1
                logger.exception("store operation %s failed", getattr(fn, "__name__", fn))
            finally:
                self._ops.task_done()

    def drain(self) -> None:
        """Wait until every submitted operation has run."""
        self._ops.join()

    def finish(self, timeout: float = 30.0) -> None:
        self._ops.put(None)
        self.join(timeout)

    @property
    def pending(self) -> int:
        return self._ops.qsize()
