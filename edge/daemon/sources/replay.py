"""Replayed images or video as a frame source: the same pipeline on recorded slides, at any rate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from leukoedge.daemon.config import SourceConfig
from leukoedge.daemon.sources.base import Pacer, check_frame
from leukoedge.daemon.sources.opencv import import_cv2
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError, ImageError, SourceUnavailable
from leukoedge.vision.images import decode_image, is_image_path

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".mjpeg", ".mjpg"})


class ReplaySource:
    """A folder of images (sorted by name) or a video file, at a given rate or as fast as possible."""

    def __init__(self, config: SourceConfig, path: Path) -> None:
        self.config = config
        self.uri = config.uri
        self.path = path
        self.size = (config.width, config.height)
        self._files: list[Path] = []
        self._video: Any = None
        self._pos = 0
        self._index = 0
        self._pacer = Pacer(config.fps)
        self._open = False

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if is_image_path(p))
            if not self._files:
                raise SourceUnavailable(f"{self.uri}: no images in {self.path}")
        elif self.path.suffix.lower() in VIDEO_SUFFIXES and self.path.is_file():
            cv2 = import_cv2(self.uri)
            self._video = cv2.VideoCapture(str(self.path))
            if not self._video.isOpened():
                raise CameraError(f"{self.uri}: OpenCV cannot open the video {self.path}")
        else:
            raise SourceUnavailable(f"{self.uri}: {self.path} is neither a folder of images nor a video file")
        self._pos = 0
        self._open = True

    def _next_rgb(self) -> np.ndarray | None:
        if self._video is not None:
            ok, bgr = self._video.read()
            if not ok and self.config.loop:
                self._video.set(1, 0)  # cv2.CAP_PROP_POS_FRAMES
                ok, bgr = self._video.read()
            return np.ascontiguousarray(bgr[:, :, ::-1]) if ok else None
        if self._pos >= len(self._files):
            if not self.config.loop:
                return None
            self._pos = 0
        path = self._files[self._pos]
        self._pos += 1
        try:
            return decode_image(path)
        except ImageError as e:
            raise CameraError(f"{self.uri}: {e}") from e

    def read(self) -> Frame | None:
        if not self._open:
            raise CameraError(f"{self.uri}: source is not open")
        self._pacer.wait()
        rgb = self._next_rgb()
        if rgb is None:
            return None
        rgb = _fit(rgb, self.size)
        frame = Frame(self._index, time.time(), check_frame(rgb, self.size, self.uri))
        self._index += 1
        return frame

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        self._open = False


def _fit(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize replayed images to the configured size (replayed folders may mix sizes)."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
