"""A fake ``picamera2`` module that follows the real library's API closely enough to run our code.

Modelled on picamera2's own source (``picamera2/picamera2.py``, ``request.py``): ``Picamera2(n)``,
``create_video_configuration(main=, lores=, controls=, buffer_count=)`` returning a dict with
``main``/``lores`` stream dicts (``format``, ``size``, and ``stride`` after ``configure``), ``start``,
``capture_request(flush=, wait=)`` returning a ``CompletedRequest`` with ``make_array(name)`` and
``release()``, ``stop`` and ``close``. Arrays have picamera2's layouts: "RGB888" is H x W x 3 in
B, G, R order; "YUV420" is (H * 3/2) x stride planar I420 with rows padded to the stride.
Install with :func:`install` (puts it in ``sys.modules['picamera2']``).
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import numpy as np


class FakeCameraState:
    """What tests control and inspect: the scene, failures to inject, and outstanding requests."""

    def __init__(self) -> None:
        self.scene: Any = None  # callable (w, h) -> H x W x 3 RGB uint8 at any size
        self.fail_open = False
        self.fail_capture = 0  # raise RuntimeError on this many next captures
        self.hang = threading.Event()  # set: capture_request blocks until timeout
        self.outstanding = 0
        self.captures = 0
        self.flush_args: list[Any] = []
        self.controls: dict[str, Any] = {}
        self.started = False
        self.closed = 0


STATE = FakeCameraState()


def _default_scene(w: int, h: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack(
        [(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, 128)], -1
    ).astype(np.uint8)


def rgb_to_yuv420(rgb: np.ndarray, stride: int) -> np.ndarray:
    """BT.601 limited-range I420 with rows padded to ``stride`` (what a Pi's lores stream holds)."""
    h, w = rgb.shape[:2]
    f = rgb.astype(np.float64)
    y = 16 + 0.257 * f[..., 0] + 0.504 * f[..., 1] + 0.098 * f[..., 2]
    u = 128 - 0.148 * f[..., 0] - 0.291 * f[..., 1] + 0.439 * f[..., 2]
    v = 128 + 0.439 * f[..., 0] - 0.368 * f[..., 1] - 0.071 * f[..., 2]
    u = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    out = np.zeros(stride * h * 3 // 2, np.uint8)
    ys = np.zeros((h, stride), np.uint8)
    ys[:, :w] = np.clip(np.round(y), 0, 255)
    out[: h * stride] = ys.reshape(-1)
    half = stride // 2
    for k, plane in enumerate((u, v)):
        p = np.zeros((h // 2, half), np.uint8)
        p[:, : w // 2] = np.clip(np.round(plane), 0, 255)
        start = h * stride + k * (h // 2) * half
        out[start : start + (h // 2) * half] = p.reshape(-1)
    return out.reshape(h * 3 // 2, stride)


class CompletedRequest:
    def __init__(self, cam: Picamera2) -> None:
        self.cam = cam
        self.released = False

    def make_array(self, name: str) -> np.ndarray:
        config = self.cam.camera_config.get(name) if self.cam.camera_config else None
        if config is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        w, h = config["size"]
        rgb = (STATE.scene or _default_scene)(w, h)
        fmt = config["format"]
        if fmt == "RGB888":
            return np.ascontiguousarray(rgb[..., ::-1])
        if fmt == "BGR888":
            return rgb.copy()
        if fmt == "YUV420":
            return rgb_to_yuv420(rgb, config["stride"])
        raise RuntimeError("Format " + fmt + " not supported")

    def release(self) -> None:
        if self.released:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        self.released = True
        STATE.outstanding -= 1


class Picamera2:
    def __init__(self, camera_num: int = 0, **kwargs: Any) -> None:
        if STATE.fail_open:
            raise IndexError("list index out of range")  # what picamera2 raises with no camera
        self.camera_num = camera_num
        self.camera_config: dict[str, Any] | None = None
        self.started = False
        self.is_open = True

    def create_video_configuration(
        self, main: dict | None = None, lores: dict | None = None, controls: dict | None = None,
        buffer_count: int = 6, **kwargs: Any,
    ) -> dict[str, Any]:  # fmt: skip
        main = {"format": "XBGR8888", "size": (1280, 720), **(main or {})}
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], **lores}
        return {"use_case": "video", "main": main, "lores": lores, "raw": None,
                "controls": dict(controls or {}), "buffer_count": buffer_count}  # fmt: skip

    def configure(self, config: dict[str, Any]) -> None:
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is None:
                continue
            w, h = stream["size"]
            if name == "lores" and stream["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
            if stream["format"] == "YUV420":
                stream["stride"] = (w + 63) // 64 * 64  # rows padded, as on a Pi
            else:
                stream["stride"] = w * 3
        self.camera_config = config
        STATE.controls = dict(config.get("controls", {}))

    def start(self, config: Any = None, show_preview: bool = False) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        self.started = STATE.started = True

    def capture_request(
        self, wait: Any = None, signal_function: Any = None, flush: Any = None
    ) -> CompletedRequest:
        if not self.started:
            raise RuntimeError("camera not started")
        STATE.flush_args.append(flush)
        if STATE.hang.is_set():
            timeout = None if wait in (None, True) else float(wait)
            threading.Event().wait(timeout if timeout is not None else 3600)
            raise TimeoutError()
        if STATE.fail_capture > 0:
            STATE.fail_capture -= 1
            raise RuntimeError("Device or resource busy")
        STATE.captures += 1
        STATE.outstanding += 1
        return CompletedRequest(self)

    def stop(self) -> None:
        self.started = STATE.started = False

    def close(self) -> None:
        if self.is_open:
            self.stop()
            self.is_open = False
            STATE.closed += 1


def install() -> FakeCameraState:
    """Put this fake in ``sys.modules['picamera2']`` with fresh state; return the state."""
    global STATE
    STATE = FakeCameraState()
    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2  # type: ignore[attr-defined]
    module.CompletedRequest = CompletedRequest  # type: ignore[attr-defined]
    sys.modules["picamera2"] = module
    return STATE
