"""The live page in a real headless Chromium: the JS fills the counts in and the stream is drawn."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.provider import FRAME_RGB, FakeProvider, crop, make_cell

from leukoedge.daemon.http.server import StatusServer
from leukoedge.daemon.store.database import Store

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1024,768", "--virtual-time-budget=3000",
]  # fmt: skip


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    state = tmp_path_factory.mktemp("state")
    with Store(state) as store:
        sid = store.start_session("P-2026-117", "left smear, field A")
        for i in range(37):
            store.add_cell(sid, make_cell(i, blast=i < 9), crop())
        with StatusServer("127.0.0.1", 0, FakeProvider(store), stream_fps=10) as server:
            yield server.url + "/"


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def test_the_page_fills_in_the_counts(page_url: str, tmp_path: Path) -> None:
    result = chromium(tmp_path, "--dump-dom", page_url)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<span class="num" id="cells">37</span>' in dom
    assert '<span class="num" id="blasts">9</span>' in dom
    assert '<span class="num" id="blast-pct">24.3 %</span>' in dom
    assert '<span id="blast-ci">13.4\u201340.1 %</span>' in dom
    assert "Not decided yet: the 95 % CI spans 20 %" in dom
    assert '<h2 id="session">Sample P-2026-117</h2>' in dom
    assert 'class="badge ok">healthy<' in dom
    assert 'id="nostream" class="placeholder" hidden' in dom  # the MJPEG stream delivered a frame
    assert "Research use only" in dom


def test_the_screenshot_shows_the_page_and_the_stream(page_url: str, tmp_path: Path) -> None:
    shot = tmp_path / "live.png"
    result = chromium(tmp_path, f"--screenshot={shot}", page_url)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1024, 768)
    pixels = np.asarray(image).astype(int)
    assert pixels.std() > 20  # not a blank page
    stream = np.all(np.abs(pixels - np.array(FRAME_RGB)) < 25, axis=2)
    assert stream.mean() > 0.1  # the frame colour covers a good part of the page: the stream is drawn


class NotSavingProvider(FakeProvider):
    """A daemon whose store cannot be written: its status says so, as DaemonStatus does."""

    def status(self) -> dict:
        status = super().status()
        status["health"] = {
            "healthy": False, "saving": False, "counting": True, "store_backlog": 4,
            "reason": "not saving: the session store cannot be written (database or disk is full)",
        }  # fmt: skip
        return status


def test_the_page_says_when_counts_are_not_saved(tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    provider = NotSavingProvider(None)
    provider.is_healthy = False
    with StatusServer("127.0.0.1", 0, provider, stream_fps=10) as server:
        result = chromium(tmp_path, "--dump-dom", server.url + "/")
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert '<p class="alert" id="saving">Not saving \u2013 4 waiting to be saved.' in dom
    assert "database or disk is full" in dom
    assert 'class="badge bad">unhealthy<' in dom
