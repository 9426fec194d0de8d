"""Commits to the store off the processing thread, in order, none lost.

Counted cells are rare (a few per second at most) but every one matters, unlike frames: the
processing thread hands each commit to :class:`StoreWriter`, which runs them one at a time on its
own thread, so a slow disk delays the store, never the microscope.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


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
