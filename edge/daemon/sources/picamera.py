"""The Raspberry Pi camera through picamera2: detect on a small stream, crop from the full one.

With ``main_width``/``main_height`` set, the camera runs two streams: a lores YUV420 stream of
``width`` x ``height`` for detection and a main RGB stream for full-resolution crops, both from the
same request, so boxes found on the small image map onto the big one by a scale factor. Without
them, one RGB stream of ``width`` x ``height`` serves both. Every capture asks for a frame exposed
after the call (``flush=True``): a frame queued while the pipeline was busy would show where the
stage was, not where it is. Requests are always released, or the camera runs out of buffers.
picamera2 comes from apt on Raspberry Pi OS (``python3-picamera2``) and is imported only here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from leukoedge.daemon.config import SourceConfig
from leukoedge.daemon.sources.base import check_frame
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError, SourceUnavailable

logger = logging.getLogger(__name__)

#: Main-stream format: picamera2's "RGB888" arrays hold B, G, R per pixel (libcamera/DRM naming).
MAIN_FORMAT = "RGB888"
#: Lores streams are YUV on most Pis.
LORES_FORMAT = "YUV420"

# Limited-range YUV -> RGB (BT.601 / SMPTE 170M, picamera2's default below 1280x720; BT.709 above).
_BT601 = (1.596, -0.392, -0.813, 2.017)
_BT709 = (1.793, -0.213, -0.533, 2.112)


def yuv420_to_rgb(yuv: np.ndarray, width: int, height: int, bt709: bool = False) -> np.ndarray:
    """Convert picamera2's YUV420 array ((h * 3/2) x stride, planar I420) to H x W x 3 RGB.

    Chroma is upsampled by repetition, rows padded to the stride are trimmed: full resolution,
    unlike picamera2's own half-resolution helper.
    """
    stride = yuv.shape[1]
    flat = yuv.reshape(-1)
    n_y = stride * height
    y = yuv[:height, :width].astype(np.float32) - 16.0
    chroma_rows, chroma_stride = height // 2, stride // 2
    n_c = chroma_rows * chroma_stride
    u = flat[n_y : n_y + n_c].reshape(chroma_rows, chroma_stride)[:, : width // 2]
    v = flat[n_y + n_c : n_y + 2 * n_c].reshape(chroma_rows, chroma_stride)[:, : width // 2]
    u = np.repeat(np.repeat(u.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1)[:height, :width]
    v = np.repeat(np.repeat(v.astype(np.float32) - 128.0, 2, axis=0), 2, axis=1)[:height, :width]
    rv, gu, gv, bu = _BT709 if bt709 else _BT601
    y *= 1.164
    rgb = np.empty((height, width, 3), np.float32)
    rgb[..., 0] = y + rv * v
    rgb[..., 1] = y + gu * u + gv * v
    rgb[..., 2] = y + bu * u
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _to_rgb(array: np.ndarray, fmt: str) -> np.ndarray:
    """picamera2 RGB-family arrays to RGB (its names follow DRM's little-endian convention)."""
    if fmt == "RGB888":
        return np.ascontiguousarray(array[..., ::-1])
    if fmt == "BGR888":
        return array
    if fmt == "XBGR8888":
        return np.ascontiguousarray(array[..., :3])
    if fmt == "XRGB8888":
        return np.ascontiguousarray(array[..., 2::-1])
    raise CameraError(f"picamera2: unsupported stream format {fmt}")


class PiCameraSource:
    """Raspberry Pi camera (libcamera) frames through picamera2."""

    def __init__(self, config: SourceConfig, camera_num: int = 0) -> None:
        self.config = config
        self.uri = config.uri
        self.size = (config.width, config.height)
        self.dual = config.main_width > 0
        self.main_size = (config.main_width, config.main_height) if self.dual else self.size
        self.camera_num = camera_num
        self._cam: Any = None
        self._index = 0
        self._formats: dict[str, str] = {}

    def _controls(self) -> dict[str, Any]:
        controls: dict[str, Any] = {}
        if self.config.fps > 0:
            period_us = int(round(1e6 / self.config.fps))
            controls["FrameDurationLimits"] = (period_us, period_us)
        if self.config.exposure_us > 0:
            controls["ExposureTime"] = int(self.config.exposure_us)
        if self.config.analogue_gain > 0:
            controls["AnalogueGain"] = float(self.config.analogue_gain)
        return controls

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise SourceUnavailable(
                f"{self.uri}: picamera2 is not installed; on Raspberry Pi OS: "
                "sudo apt install python3-picamera2 "
                "(and a venv made with --system-site-packages)"
            ) from e
        try:
            cam = Picamera2(self.camera_num)
        except Exception as e:  # libcamera raises IndexError/RuntimeError when no camera is attached
            raise CameraError(f"{self.uri}: cannot open camera {self.camera_num}: {e}") from e
        try:
            main = {"format": MAIN_FORMAT, "size": self.main_size}
            lores = {"format": LORES_FORMAT, "size": self.size} if self.dual else None
            config = cam.create_video_configuration(
                main=main, lores=lores, controls=self._controls(), buffer_count=4
            )
            cam.configure(config)
            self._formats = {"main": config["main"]["format"]}
            if self.dual:
                self._formats["lores"] = config["lores"]["format"]
            cam.start()
        except Exception as e:
            _close_quietly(cam)
            raise CameraError(f"{self.uri}: cannot configure or start the camera: {e}") from e
        self._cam = cam
        logger.info(
            "picamera2 started: main %s%s", self.main_size, f", lores {self.size}" if self.dual else ""
        )

    def _arrays(self, request: Any) -> tuple[np.ndarray, np.ndarray | None]:
        main = _to_rgb(request.make_array("main"), self._formats["main"])
        if not self.dual:
            return main, None
        lores = request.make_array("lores")
        fmt = self._formats["lores"]
        if fmt == "YUV420":
            w, h = self.size
            rgb = yuv420_to_rgb(lores, w, h, bt709=self.main_size[0] >= 1280 and self.main_size[1] >= 720)
        else:
            rgb = _to_rgb(lores, fmt)
        return rgb, main

    def read(self) -> Frame | None:
        if self._cam is None:
            raise CameraError(f"{self.uri}: source is not open")
        try:
            request = self._cam.capture_request(flush=True, wait=self.config.stall_timeout_s)
        except Exception as e:  # TimeoutError when stalled, RuntimeError from libcamera
            raise CameraError(f"{self.uri}: capture failed: {type(e).__name__}: {e}") from e
        try:
            rgb, main = self._arrays(request)
        except CameraError:
            raise
        except Exception as e:
            raise CameraError(f"{self.uri}: cannot read the captured buffers: {e}") from e
        finally:
            request.release()
        check_frame(rgb, self.size, self.uri)
        if main is not None:
            check_frame(main, self.main_size, self.uri)
        frame = Frame(self._index, time.time(), rgb, main_rgb=main)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            _close_quietly(cam)


def _close_quietly(cam: Any) -> None:
    for step in ("stop", "close"):
        try:
            getattr(cam, step)()
        except Exception as e:  # a camera that fails while closing is closed as far as we can tell
            logger.warning("picamera2 %s failed: %s", step, e)
