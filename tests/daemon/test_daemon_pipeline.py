"""The daemon in this process: counting against ground truth, camera faults, and the systemd watchdog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.daemon import NotifyListener, Script, ScriptedSource, daemon_config
from support.model import make_test_bundle

from leukoedge.daemon.notify import Notifier
from leukoedge.daemon.pipeline.frames import FrameProcessor
from leukoedge.daemon.service import EXIT_CAMERA, EXIT_OK, Daemon
from leukoedge.daemon.store.database import Store
from leukoedge.daemon.tracking.counting_eval import CountingResult, TruthRecorder
from leukoedge.inference.bundle import load_bundle
from leukoedge.synth import StageSequence

FRAMES = 1200
#: An API token of the length the daemon accepts (at least 16 characters).
API_TOKEN = "s3cret-api-token-0123"
E2E_SEEDS = (5, 6, 7, 8)
#: |counted - countable| / countable with the default (extent) whole-cell rule: 2.8 % measured on
#: twelve held-out slides (seeds 41-52), 1.3 % on twelve others (21-26, 31-36); see tools/counting_eval.py
RAW_ERROR_BOUND = 0.03


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_bundle(tmp_path_factory.getbasetemp() / "model-bundles")


@pytest.fixture(scope="module")
def field_frame() -> np.ndarray:
    """A still field with at least two whole white cells in it (what a paused stage shows)."""
    sequence = StageSequence(640, 480, seed=3, n_frames=None)
    for i in range(0, 400, 10):
        rgb, truth = sequence.frame(i)
        if sum(not c["cut_by_edge"] for c in truth["cells"]) >= 2:
            return rgb
    raise AssertionError("no field with two whole cells")


def _run_and_score(tmp_path: Path, model: Path, seed: int, monkeypatch) -> tuple[CountingResult, list[dict]]:
    """One daemon run over the synthetic microscope; its stored cells scored against the truth."""
    recorder = TruthRecorder(3)
    process = FrameProcessor.process

    def process_and_record(self, frame):
        n = process(self, frame)
        recorder.observe(frame.truth, self.latest[1])
        return n

    monkeypatch.setattr(FrameProcessor, "process", process_and_record)
    config = daemon_config(
        tmp_path, model, source__uri=f"synthetic://?seed={seed}&fps=0", pipeline__lossless=True,
        pipeline__max_frames=FRAMES,
    )  # fmt: skip
    assert config.tracker.min_frames == recorder.min_frames and config.tracker.edge_rule == "extent"
    assert Daemon(config).run(install_signals=False) == EXIT_OK
    bundle = load_bundle(model)
    with Store(tmp_path) as store:
        (session,) = store.list_sessions()
        assert session["sample_id"] == "TEST-1" and session["ended_at"] is not None
        cells = store.session_cells(session["id"])
        summary = store.session_summary(session["id"])
        assert all(p is not None and p.is_file() for p in (store.crop_file(c) for c in cells))
    assert summary["cells"] == len(cells)
    assert summary["frames"]["processed"] == FRAMES and summary["frames"]["dropped"] == 0
    assert len({c["track_id"] for c in cells}) == len(cells)  # no track stored twice
    for c in cells:
        assert c["label"] == bundle.contract.label_for(c["p_malignant"])
        assert 1 <= c["n_classifications"] <= config.tracker.max_classifications
        assert c["model_sha256"] == bundle.sha256
        x0, y0, x1, y1 = c["bbox"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    return recorder.result([int(c["track_id"]) for c in cells], seed), cells


def test_end_to_end_on_the_synthetic_microscope(tmp_path, model, monkeypatch):
    """Each cell the stage shows is stored once: the count is within 2 % of the cells the detector
    saw whole and within the held-out bound of all the cells the truth shows whole; no cell twice.

    The truth is every cell the synthetic truth shows whole in >= min_frames frames (one cell,
    however often the stage path brings it back); a processing hook follows which truth cell each
    tracked detection is, so every stored track is matched to its cell. Several slides together
    hold over 100 such cells, so 2 % is at least two cells.
    """
    results = [_run_and_score(tmp_path / f"seed{s}", model, s, monkeypatch)[0] for s in E2E_SEEDS]
    total = {k: sum(getattr(r, k) for r in results) for k in ("countable", "det_countable", "counted")}
    report = [r.row() for r in results]
    assert total["countable"] >= 100, report
    # each cell once: no truth cell stored twice ...
    assert all(r.duplicates == 0 for r in results), [r.duplicate_ids for r in results]
    # ... the count is within 2 % of the cells the detector saw whole (what tracking can count) ...
    assert abs(total["counted"] - total["det_countable"]) <= 0.02 * total["det_countable"], report
    # ... and within the bound measured on held-out slides of all the cells the truth shows whole
    assert abs(total["counted"] - total["countable"]) <= RAW_ERROR_BOUND * total["countable"], report


def test_frames_are_dropped_not_queued_when_processing_falls_behind(tmp_path, model, field_frame):
    script = Script(field_frame, fps=2000)
    config = daemon_config(tmp_path, model, pipeline__max_frames=600, session__sample_id="")
    daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script))
    assert daemon.run(install_signals=False) == EXIT_OK
    m = daemon.stats.metrics()
    assert m["frames_captured_total"] == 600
    assert m["frames_processed_total"] + m["frames_dropped_total"] <= 600
    assert m["frames_dropped_total"] > 0 and m["frames_processed_total"] > 0
    assert m["inference_seconds"]["count"] == m["frames_processed_total"]


@pytest.mark.parametrize(
    "fault",
    [
        {"raise_at": {20, 21, 40}},
        {"wrong_size_at": {25, 26}},
        {"raise_at": {30}, "vanish_opens": 3},
        {"stall_at": {35: 30.0}},
    ],
    ids=["exceptions", "wrong-size", "vanish-and-return", "stall"],
)
def test_the_daemon_recovers_from_camera_faults(tmp_path, model, field_frame, fault):
    script = Script(field_frame, **fault)
    config = daemon_config(
        tmp_path, model, pipeline__max_frames=120, source__backoff_s=0.01, source__stall_timeout_s=0.5,
        source__max_failures=5,
    )  # fmt: skip
    daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script))
    assert daemon.run(install_signals=False) == EXIT_OK
    m = daemon.stats.metrics()
    assert m["camera_reconnects_total"] >= 1
    assert m["frames_captured_total"] == 120
    # every frame after the fault was captured; how many were processed rather than dropped as
    # stale depends on the machine's load (38 of 120 on a loaded 2-core runner), so only ask for some
    assert m["frames_processed_total"] >= 10
    assert m["frames_processed_total"] + m["frames_dropped_total"] <= 120
    with Store(tmp_path) as store:
        assert store.list_sessions()[0]["ended_at"] is not None


@pytest.mark.parametrize(
    "fault", [{"fail_all_opens": True}, {"raise_at": set(range(10, 10_000))}, {"hang_forever_from": 10}]
)
def test_a_camera_that_stays_broken_ends_the_daemon_non_zero(tmp_path, model, field_frame, fault):
    script = Script(field_frame, **fault)
    config = daemon_config(
        tmp_path, model, source__backoff_s=0.01, source__max_failures=3, source__stall_timeout_s=0.3
    )
    daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script))
    assert daemon.run(install_signals=False) == EXIT_CAMERA
    assert "camera" in daemon.exit_reason
    with Store(tmp_path) as store:  # left open: the restarted daemon continues it
        assert store.active_session() is not None


def test_watchdog_is_fed_only_while_frames_are_processed(tmp_path, model, field_frame):
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        notifier = Notifier({"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "200000"})
        script = Script(field_frame, fps=100, stall_at={60: 1.5})
        config = daemon_config(
            tmp_path / "state", model, pipeline__max_frames=200, source__stall_timeout_s=5.0
        )  # a stall shorter than the timeout: the daemon waits it out without reopening
        daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script), notifier=notifier)
        assert daemon.run(install_signals=False) == EXIT_OK
    finally:
        listener.close()
    names = [m.split("=")[0] for _, m in listener.messages]
    assert names[0] == "READY" and "STOPPING" in names
    assert any(m.startswith("STATUS=") and "fps processed" in m for _, m in listener.messages)
    beats = listener.times("WATCHDOG=1")
    ready = listener.times("READY=1")[0]
    assert len(beats) >= 5
    gaps = np.diff([ready, *beats])
    # fed every ~0.05-0.1 s while frames flow; silent for most of the 1.5 s stall
    assert gaps.max() >= 1.0
    assert np.sum(gaps < 0.5) >= len(gaps) - 2


def _http(url: str, body: dict | None = None, token: str = "", host: str = "") -> tuple[int, bytes]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    if host:
        headers["Host"] = host
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_sessions_metrics_and_frames_over_http(tmp_path, model, field_frame):
    import json
    import threading
    import time

    script = Script(field_frame, fps=60)
    token = tmp_path / "token"
    token.write_text(API_TOKEN + "\n")
    config = daemon_config(
        tmp_path, model, session__sample_id="", http__enabled=True, http__port=0, http__token_file=str(token),
        http__host_names="microscope.lan",
    )  # fmt: skip
    daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script))
    urls: list[str] = []
    daemon.on_http_started = urls.append
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not (urls and daemon.stats.healthy()) and time.monotonic() < deadline:
            time.sleep(0.05)
        url = urls[0]
        assert _http(url + "/healthz")[0] == 200
        assert _http(url + "/healthz", host="microscope.lan")[0] == 200  # [http] reaches the server
        assert _http(url + "/healthz", host="rebound.example")[0] == 421
        assert daemon.stats.status()["session"] is None
        code, body = _http(url + "/api/sessions/start", {"sample_id": "API-7", "note": "smear 2"}, API_TOKEN)
        assert code == 201 and json.loads(body)["sample_id"] == "API-7"
        assert daemon.stats.status()["session"]["sample_id"] == "API-7"
        while daemon.stats.status()["session"]["cells"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        code, body = _http(url + "/metrics")
        text = body.decode()
        assert code == 200 and "leukoedge_frames_processed_total" in text
        assert "leukoedge_inference_seconds_bucket" in text
        jpeg = daemon.stats.latest_jpeg()
        assert jpeg[:2] == b"\xff\xd8"
        assert _http(url + "/api/sessions/stop", {}, "wrong")[0] == 403
        code, body = _http(url + "/api/sessions/stop", {}, API_TOKEN)
        summary = json.loads(body)
        assert code == 200 and summary["cells"] >= 1
        assert _http(url + "/api/sessions/stop", {}, API_TOKEN)[0] == 409
    finally:
        daemon.request_stop()
        runner.join(30)
    with Store(tmp_path) as store:
        (session,) = store.list_sessions()
        assert session["cells"] == summary["cells"] and session["ended_at"] is not None


def test_a_source_that_cannot_work_fails_at_once(tmp_path, model):
    config = daemon_config(
        tmp_path, model, source__uri=f"replay://{tmp_path / 'missing'}", source__backoff_s=5.0
    )
    daemon = Daemon(config)
    assert daemon.run(install_signals=False) == EXIT_CAMERA  # no 5 s back-off: reopening cannot help
    assert "neither a folder of images nor a video" in daemon.exit_reason


def test_a_session_stopped_on_the_database_is_followed(tmp_path, model, field_frame):
    """`leukoedge session stop/start` straight on the database while the daemon runs: the daemon
    follows the change instead of writing cells into a closed session."""
    import threading
    import time

    from leukoedge.daemon.store.database import Store

    script = Script(field_frame, fps=60)
    config = daemon_config(tmp_path, model, session__sample_id="FIRST")
    daemon = Daemon(config, source_factory=lambda c: ScriptedSource(c, script))
    runner = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not (daemon.stats.status()["session"] or {}).get("cells") and time.monotonic() < deadline:
            time.sleep(0.05)
        first = daemon.stats.status()["session"]
        assert first["sample_id"] == "FIRST" and first["cells"] >= 1
        with Store(config.store.state_dir) as other:  # a second connection, as the session CLI opens
            other.stop_session(other.active_session()["id"])
            second_id = other.start_session("SECOND")
        while (daemon.stats.status()["session"] or {}).get(
            "sample_id"
        ) != "SECOND" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert daemon.stats.status()["session"]["sample_id"] == "SECOND"
    finally:
        daemon.request_stop()
        runner.join(30)
    with Store(config.store.state_dir) as store:
        sessions = {s["sample_id"]: s for s in store.list_sessions()}
        assert sessions["SECOND"]["id"] == second_id
        assert sessions["SECOND"]["ended_at"] is not None  # closed by the daemon's clean stop
        first_end = store.session(sessions["FIRST"]["id"])["ended_at"]
        late = [c for c in store.session_cells(sessions["FIRST"]["id"]) if c["first_seen_ts"] > first_end]
        assert first_end is not None and not late


def test_frame_and_commit_hooks_see_every_processed_frame_and_stored_cell(tmp_path, model):
    config = daemon_config(
        tmp_path, model, source__uri="synthetic://?seed=5&fps=0", pipeline__lossless=True,
        pipeline__max_frames=240,
    )  # fmt: skip
    daemon = Daemon(config)
    timings, commits = [], []
    daemon.on_frame = timings.append
    daemon.on_commit = lambda cell, cell_id: commits.append((cell.track_id, cell_id))
    assert daemon.run(install_signals=False) == EXIT_OK
    m = daemon.stats.metrics()
    assert len(timings) == m["frames_processed_total"] == 240
    assert [t.frame.index for t in timings] == list(range(240))
    assert all(t.ended >= t.started and t.cpu_s >= 0 for t in timings)
    assert sum(t.crops for t in timings) > 0
    with Store(config.store.state_dir) as store:
        session = store.list_sessions()[0]
        rows = store.session_cells(session["id"])
    assert len(rows) == daemon.stats.cells_total > 0
    assert sorted(commits) == sorted((int(r["track_id"]), int(r["id"])) for r in rows)
