"""Every frame source follows one protocol; the Pi camera path runs against a fake picamera2."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image
from support import picamera2_fake

from leukoedge.daemon.config import SourceConfig
from leukoedge.daemon.sources import open_source
from leukoedge.daemon.sources.base import FrameSource, check_frame
from leukoedge.daemon.sources.opencv import OpenCVSource
from leukoedge.daemon.sources.picamera import PiCameraSource, yuv420_to_rgb
from leukoedge.daemon.sources.replay import ReplaySource
from leukoedge.daemon.sources.synthetic import SyntheticSource
from leukoedge.daemon.types import Frame
from leukoedge.errors import CameraError

W, H = 160, 120


@pytest.fixture
def fake_picamera2(monkeypatch):
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    state = picamera2_fake.install()
    yield state
    sys.modules.pop("picamera2", None)


class _FakeCapture:
    """cv2.VideoCapture stand-in (only used where OpenCV is not installed)."""

    def __init__(self, target, api=None):
        self.target, self.props, self.released = target, {}, False
        self.opened = target != "/dev/missing"

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def read(self):
        w, h = int(self.props.get(3, 640)), int(self.props.get(4, 480))
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 200  # blue in BGR order
        return True, bgr

    def release(self):
        self.released = True


@pytest.fixture
def fake_cv2(monkeypatch):
    try:
        import cv2  # noqa: F401

        pytest.skip("OpenCV is installed; the fake is only for machines without it")
    except ImportError:
        pass
    module = types.ModuleType("cv2")
    module.VideoCapture = _FakeCapture
    module.CAP_V4L2, module.CAP_PROP_FRAME_WIDTH, module.CAP_PROP_FRAME_HEIGHT = 200, 3, 4
    module.CAP_PROP_FPS, module.CAP_PROP_BUFFERSIZE = 5, 38
    monkeypatch.setitem(sys.modules, "cv2", module)
    return module


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, size in enumerate([(W, H), (2 * W, 2 * H), (W, H)]):
        Image.new("RGB", size, (10 * i, 100, 200)).save(folder / f"f{i:02d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _config(uri: str, **kw) -> SourceConfig:
    return SourceConfig(uri=uri, width=W, height=H, fps=0, **kw)


def _sources(folder):
    return {
        "synthetic": SyntheticSource(_config("synthetic://", cells_per_field=1.0)),
        "replay": ReplaySource(_config(f"replay://{folder}"), folder),
        "picamera2": PiCameraSource(_config("picamera2://")),
        "picamera2-dual": PiCameraSource(_config("picamera2://", main_width=2 * W, main_height=2 * H)),
        "v4l2": OpenCVSource(_config("v4l2:///dev/video0"), "/dev/video0"),
    }


@pytest.mark.parametrize("name", ["synthetic", "replay", "picamera2", "picamera2-dual", "v4l2"])
def test_every_source_follows_the_protocol(name, image_folder, fake_picamera2, fake_cv2):
    source = _sources(image_folder)[name]
    assert isinstance(source, FrameSource)
    with pytest.raises(CameraError):
        source.read()  # not open yet
    source.open()
    try:
        frames = [source.read() for _ in range(3)]
    finally:
        source.close()
    source.close()  # idempotent
    for i, frame in enumerate(frames):
        assert isinstance(frame, Frame)
        assert frame.index == i
        assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.uint8
        if frame.main_rgb is not None:
            assert frame.main_rgb.shape == (2 * H, 2 * W, 3)
            assert frame.main_ratio == (2.0, 2.0)
    assert frames[1].ts >= frames[0].ts


def test_open_source_picks_the_implementation(tmp_path):
    assert isinstance(open_source(SourceConfig(uri="synthetic://?seed=2")), SyntheticSource)
    assert isinstance(open_source(SourceConfig(uri=f"replay://{tmp_path}?loop=1")), ReplaySource)
    assert isinstance(open_source(SourceConfig(uri="v4l2:///dev/video3")), OpenCVSource)
    assert isinstance(open_source(SourceConfig(uri="picamera2://")), PiCameraSource)


def test_replay_ends_or_loops(image_folder):
    once = ReplaySource(_config("replay://x"), image_folder)
    once.open()
    assert [once.read() is None for _ in range(4)] == [False, False, False, True]
    looped = ReplaySource(_config("replay://x", loop=True), image_folder)
    looped.open()
    frames = [looped.read() for _ in range(7)]
    assert all(f is not None for f in frames)
    assert frames[3].rgb[0, 0, 0] == frames[0].rgb[0, 0, 0] == 0


def test_replay_failures_are_camera_errors(tmp_path):
    empty = ReplaySource(_config("replay://x"), tmp_path)
    with pytest.raises(CameraError, match="no images"):
        empty.open()
    with pytest.raises(CameraError):
        ReplaySource(_config("replay://x"), tmp_path / "missing").open()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    broken = ReplaySource(_config("replay://x"), tmp_path)
    broken.open()
    with pytest.raises(CameraError, match="bad.png"):
        broken.read()


def test_yuv420_conversion_matches_the_rgb_it_came_from():
    rng = np.random.default_rng(0)
    # smooth colours (chroma is subsampled 2x2, so compare on a blocky image)
    small = rng.integers(30, 220, (H // 2, W // 2, 3)).astype(np.uint8)
    rgb = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    yuv = picamera2_fake.rgb_to_yuv420(rgb, stride=192)
    assert yuv.shape == (H * 3 // 2, 192)
    back = yuv420_to_rgb(yuv, W, H)
    assert back.shape == (H, W, 3)
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 3


def test_picamera2_asks_for_fresh_frames_and_releases_every_request(fake_picamera2):
    source = PiCameraSource(
        SourceConfig("picamera2://", W, H, main_width=2 * W, main_height=2 * H, fps=25, exposure_us=8000)
    )
    source.open()
    frame = source.read()
    source.read()
    assert fake_picamera2.outstanding == 0
    assert fake_picamera2.flush_args == [True, True]
    assert fake_picamera2.controls["FrameDurationLimits"] == (40000, 40000)
    assert fake_picamera2.controls["ExposureTime"] == 8000
    # the scene is a colour ramp: lores (from YUV) and main (from BGR) agree after scaling
    small = frame.main_rgb[::2, ::2].astype(int)
    assert np.abs(small - frame.rgb.astype(int)).mean() < 4
    fake_picamera2.fail_capture = 1
    with pytest.raises(CameraError, match="capture failed"):
        source.read()
    assert fake_picamera2.outstanding == 0
    source.close()
    source.close()
    assert fake_picamera2.closed == 1


def test_picamera2_failures_are_camera_errors(fake_picamera2, monkeypatch):
    fake_picamera2.fail_open = True
    with pytest.raises(CameraError, match="cannot open camera"):
        PiCameraSource(_config("picamera2://")).open()
    fake_picamera2.fail_open = False
    source = PiCameraSource(_config("picamera2://", stall_timeout_s=0.2))
    source.open()
    fake_picamera2.hang.set()
    with pytest.raises(CameraError, match="TimeoutError"):
        source.read()
    source.close()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="apt install python3-picamera2"):
        PiCameraSource(_config("picamera2://")).open()


def test_a_wrong_frame_size_is_a_camera_error(fake_picamera2):
    fake_picamera2.scene = lambda w, h: np.zeros((h + 2, w, 3), np.uint8)
    source = PiCameraSource(_config("picamera2://"))
    source.open()
    with pytest.raises(CameraError, match="expected"):
        source.read()
    assert fake_picamera2.outstanding == 0


def test_opencv_source_converts_bgr_and_reports_a_missing_device(fake_cv2):
    source = OpenCVSource(_config("v4l2:///dev/video0"), "/dev/video0")
    source.open()
    frame = source.read()
    assert frame.rgb[0, 0].tolist() == [0, 0, 200]
    source.close()
    with pytest.raises(CameraError, match="cannot open"):
        OpenCVSource(_config("v4l2:///dev/missing"), "/dev/missing").open()


class _BadFrames:
    """A source that hands over whatever frame it is given, as a misbehaving driver would."""

    def __init__(self, rgb):
        self.uri, self.size, self.rgb = "bad://", (W, H), rgb

    def open(self):
        pass

    def read(self):
        return Frame(0, 0.0, self.rgb)

    def close(self):
        pass


@pytest.mark.parametrize(
    ("rgb", "message"),
    [
        (np.zeros((H, W, 3), np.float32), "frame is float32 (120, 160, 3), not H x W x 3 uint8"),
        (np.zeros((H, W), np.uint8), "frame is uint8 (120, 160), not H x W x 3 uint8"),
        (np.zeros((H, W, 4), np.uint8), "frame is uint8 (120, 160, 4), not H x W x 3 uint8"),
        (np.zeros((H + 2, W, 3), np.uint8), "frame is 160x122, expected 160x120"),
    ],
)
def test_one_frame_validator_for_sources_and_the_capture_thread(rgb, message):
    from leukoedge.daemon.pipeline.queues import LatestQueue
    from leukoedge.daemon.pipeline.threads import CaptureThread

    with pytest.raises(CameraError) as direct:
        check_frame(rgb, (W, H), "bad://")
    assert str(direct.value) == f"bad://: {message}"
    assert check_frame(np.zeros((H, W, 3), np.uint8), (W, H), "bad://").shape == (H, W, 3)

    queue = LatestQueue(2)
    capture = CaptureThread(
        SourceConfig(uri="bad://", max_failures=1, backoff_s=0), lambda _: _BadFrames(rgb), queue
    )
    capture.run()  # on this thread: one failure is fatal here
    assert capture.state == "failed" and len(queue) == 0
    assert capture.fatal is not None and capture.fatal.endswith(f"last: bad://: {message}")
