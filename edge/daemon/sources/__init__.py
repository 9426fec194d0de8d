"""Frame sources: the synthetic microscope, replayed images or video, and USB cameras through OpenCV.

Every source follows :class:`~leukoedge.daemon.types.FrameSource` and is chosen by a URI, so the
daemon, its tests and the demo run the same pipeline whatever the camera:
``synthetic://?seed=1&fps=30``, ``replay:///path/to/folder?fps=10&loop=1``,
``v4l2:///dev/video0?width=1280&height=960``, ``picamera2://`` (see :mod:`.picam`).
Query parameters override the ``[source]`` keys of the configuration. Hardware libraries are
imported only when their source opens.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np

from leukoedge.daemon.config import SourceConfig, config_from_dict
from leukoedge.daemon.types import Frame, FrameSource
from leukoedge.errors import CameraError, ConfigError, ImageError
from leukoedge.vision.images import decode_image, is_image_path

logger = logging.getLogger(__name__)

SCHEMES = ("synthetic", "replay", "v4l2", "usb", "picamera2")


class SourceUnavailable(CameraError):
    """A source that reopening cannot fix (a replay folder without images, OpenCV not installed)."""


VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".mjpeg", ".mjpg"})


def parse_source_uri(uri: str, base: SourceConfig | None = None) -> tuple[str, str, SourceConfig]:
    """Split a source URI into (scheme, path, config with the query parameters applied)."""
    base = base or SourceConfig()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"source URI {uri!r}: unknown scheme {scheme!r} (use {', '.join(s + '://' for s in SCHEMES)})",
            [("source.uri", f"unknown scheme {scheme!r}")],
        )
    path = unquote(parts.netloc + parts.path) if scheme in ("v4l2", "usb") else unquote(parts.path)
    overrides = {key: _coerce(uri, key, raw) for key, raw in parse_qsl(parts.query, keep_blank_values=True)}
    if not overrides:
        return scheme, path, dataclasses.replace(base, uri=uri)
    data = {"source": {**dataclasses.asdict(base), **overrides, "uri": uri}}
    return scheme, path, config_from_dict(data, origin=f"source URI {uri!r}").source


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(uri: str, key: str, raw: str) -> Any:
    """A query parameter as the type of the [source] key it overrides."""
    known = {f.name: f for f in dataclasses.fields(SourceConfig)}
    if key not in known or key == "uri":
        msg = f"unknown parameter {key!r}"
        raise ConfigError(f"source URI {uri!r}: {msg}", [(f"source.uri?{key}", msg)])
    kind: type[Any] = type(known[key].default)
    try:
        if kind is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise ValueError(raw)
            return raw.lower() in _TRUE
        return kind(raw)
    except ValueError as e:
        msg = f"{raw!r} is not a valid {kind.__name__}"
        raise ConfigError(f"source URI {uri!r}: parameter {key}: {msg}", [(f"source.uri?{key}", msg)]) from e


def open_source(config: SourceConfig) -> FrameSource:
    """Make (but do not open) the source a configuration names."""
    scheme, path, cfg = parse_source_uri(config.uri, config)
    if scheme == "synthetic":
        return SyntheticSource(cfg)
    if scheme == "replay":
        if not path:
            raise ConfigError("replay:// needs a path: replay:///folder or replay:///video.mp4")
        return ReplaySource(cfg, Path(path))
    if scheme in ("v4l2", "usb"):
        return OpenCVSource(cfg, path or "/dev/video0")
    from leukoedge.daemon.sources.picamera import PiCameraSource

    return PiCameraSource(cfg)


def check_frame(rgb: Any, size: tuple[int, int], uri: str) -> np.ndarray:
    """Refuse frames that are not H x W x 3 uint8 of the agreed size: the pipeline relies on it."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        desc = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise CameraError(f"{uri}: frame is {desc}, not H x W x 3 uint8")
    if (rgb.shape[1], rgb.shape[0]) != size:
        raise CameraError(f"{uri}: frame is {rgb.shape[1]}x{rgb.shape[0]}, expected {size[0]}x{size[1]}")
    return rgb


class _Pacer:
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


class SyntheticSource:
    """The synthetic microscope: a moving stage over a generated smear, with ground truth."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config
        self.uri = config.uri
        self.size = (config.width, config.height)
        self._seq: Any = None
        self._index = 0
        self._pacer = _Pacer(config.fps)

    def open(self) -> None:
        from leukoedge.synth import StageSequence

        try:
            w, h = self.size
            self._seq = StageSequence(
                w,
                h,
                seed=self.config.seed,
                n_cells=max(1, round(self.config.cells_per_field * 16)),  # the slide is 4 x 4 fields
                speed_px_per_frame=self.config.stage_speed,
                n_frames=None,
            )
        except (ValueError, TypeError) as e:
            raise CameraError(f"{self.uri}: cannot start the synthetic microscope: {e}") from e

    def read(self) -> Frame | None:
        if self._seq is None:
            raise CameraError(f"{self.uri}: source is not open")
        self._pacer.wait()
        rgb, truth = self._seq.frame(self._index)
        frame = Frame(self._index, time.time(), check_frame(rgb, self.size, self.uri), truth=truth)
        self._index += 1
        return frame

    def close(self) -> None:
        self._seq = None


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
        self._pacer = _Pacer(config.fps)
        self._open = False

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if is_image_path(p))
            if not self._files:
                raise SourceUnavailable(f"{self.uri}: no images in {self.path}")
        elif self.path.suffix.lower() in VIDEO_SUFFIXES and self.path.is_file():
            cv2 = _import_cv2(self.uri)
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


def _import_cv2(uri: str) -> Any:
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
        cv2 = _import_cv2(self.uri)
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
