"""What every frame source promises, and the one check that holds each of them to it.

The pipeline relies on H x W x 3 uint8 frames of the size the source announced; a driver that hands
over anything else (a wrong format after a mode change, a short buffer) is a camera failure, caught
here before it reaches detection, whichever source produced it and whoever reads it.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np

from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields frames: Pi camera, USB camera, a replayed folder, the synthetic microscope.

    ``open`` acquires the device (raises CameraError when it cannot); ``read`` returns the next frame
    (raises CameraError on a failed or malformed capture, StopIteration-free: a finite source that is
    exhausted returns None); ``close`` releases it and may be called any number of times.
    """

    uri: str
    #: (width, height) of ``Frame.rgb``.
    size: tuple[int, int]

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


def check_frame(rgb: Any, size: tuple[int, int], uri: str) -> np.ndarray:
    """Refuse frames that are not H x W x 3 uint8 of the agreed size: the pipeline relies on it."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise CameraError(f"{uri}: frame is {desc}, not H x W x 3 uint8")
    if (rgb.shape[1], rgb.shape[0]) != tuple(size):
        raise CameraError(f"{uri}: frame is {rgb.shape[1]}x{rgb.shape[0]}, expected {size[0]}x{size[1]}")
    return rgb


class Pacer:
    """Holds a source to its frame rate (0 = no waiting), without drifting."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next_t = 0.0

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self.next_t > now:
            time.sleep(self.next_t - now)
        self.next_t = max(self.next_t + self.period, now - self.period)
