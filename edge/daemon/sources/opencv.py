"""USB (UVC/V4L2) cameras through OpenCV, which is an optional extra imported only when one opens."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from leukoedge.daemon.config import SourceConfig
from leukoedge.daemon.sources.base import check_frame
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError, SourceUnavailable


def import_cv2(uri: str) -> Any:
    """OpenCV, or SourceUnavailable: reopening cannot install a missing library."""
    try:
        import cv2
    except ImportError as e:
        raise SourceUnavailable(
            f"{uri}: needs OpenCV, which is not installed: pip install 'leukoedge[usb]'"
        ) from e
    return cv2


class OpenCVSource:
    """A USB (UVC/V4L2) camera through OpenCV's VideoCapture."""

    def __init__(self, config: SourceConfig, device: str) -> None:
        self.config = config
        self.uri = config.uri
        self.device = device
        self.size = (config.width, config.height)
        self._cap: Any = None
        self._index = 0

    def open(self) -> None:
        cv2 = import_cv2(self.uri)
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2) if hasattr(cv2, "CAP_V4L2") else cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"{self.uri}: cannot open camera {self.device}")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.config.fps > 0:
            cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        if hasattr(cv2, "CAP_PROP_BUFFERSIZE"):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the freshest frame, not a queue of old ones
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.uri}: source is not open")
        try:
            ok, bgr = self._cap.read()
        except Exception as e:  # OpenCV raises cv2.error, a plain Exception subclass
            raise CameraError(f"{self.uri}: read failed: {e}") from e
        if not ok or bgr is None:
            raise CameraError(f"{self.uri}: camera returned no frame")
        rgb = check_frame(np.ascontiguousarray(bgr[:, :, ::-1]), self.size, self.uri)
        frame = Frame(self._index, time.time(), rgb)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
