""" "Suspected blast" is decided once, from the bundle's contract, and every count and picture reads it."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.daemon import daemon_config
from support.model import BINARY_BUNDLE, make_renamed_bundle

from leukoedge.daemon.pipeline.frames import FrameProcessor
from leukoedge.daemon.service import EXIT_OK, Daemon
from leukoedge.daemon.store.database import DB_NAME, Store
from leukoedge.daemon.store.export import export_session
from leukoedge.daemon.store.schema import _V1, _V2, SCHEMA_VERSION
from leukoedge.daemon.tracking.tracker import Track
from leukoedge.daemon.types import CountedCell, Frame
from leukoedge.inference.bundle import load_bundle
from leukoedge.vision.detect import Detection


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "suspected-blast-bundles"


def test_a_cell_between_one_half_and_the_bundle_threshold_is_drawn_and_counted_as_not_a_blast(
    tmp_path: Path,
) -> None:
    bundle = load_bundle(BINARY_BUNDLE)  # a binary bundle whose threshold is well above 0.5
    assert bundle.contract.threshold > 0.6
    counted: list[CountedCell] = []
    processor = FrameProcessor(
        daemon_config(tmp_path, bundle.manifest_path), bundle, lambda c, _: counted.append(c)
    )
    p = (0.5 + processor.classifier.threshold) / 2
    det = Detection((100, 100, 160, 160), (130.0, 130.0), 60.0, False, 1.0, whole=True)
    track = Track(
        1, 0, 0.0, 0, 0.0, det.center, det.diameter, det, whole_frames=5, probs=[np.array([1 - p, p])]
    )
    rgb = np.full((240, 320, 3), 255, np.uint8)
    jpeg = processor.annotate_jpeg(Frame(0, 0.0, rgb), [(track, det)], quality=95)
    r, g, b = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[130, 100:103].astype(int).mean(axis=0)
    assert g > r + 60, (r, g, b)  # the other class's colour, not the blast red
    processor._emit([track])
    (cell,) = counted
    assert cell.label == bundle.contract.negative_class and not cell.suspected_blast


@pytest.mark.parametrize(("p_blast", "suspected"), [(0.5, False), (2.0, True)])
def test_a_differential_cell_is_a_suspected_blast_by_p_blast_not_by_its_type(
    tmp_path: Path, p_blast: float, suspected: bool
) -> None:
    bundle = load_bundle(None)  # the shipped differential bundle
    contract = bundle.contract
    assert contract.differential
    counted: list[CountedCell] = []
    processor = FrameProcessor(
        daemon_config(tmp_path, bundle.manifest_path), bundle, lambda c, _: counted.append(c)
    )
    probs = np.full(len(contract.class_names), 0.01)
    probs[contract.class_names.index("blast")] = p_blast * processor.classifier.threshold  # half or twice
    probs[contract.class_names.index("monocyte")] = 0.6  # the most probable type either way
    probs /= probs.sum() / (1 - 1e-9)
    det = Detection((100, 100, 160, 160), (130.0, 130.0), 60.0, False, 1.0, whole=True)
    track = Track(1, 0, 0.0, 0, 0.0, det.center, det.diameter, det, whole_frames=5, probs=[probs])
    jpeg = processor.annotate_jpeg(Frame(0, 0.0, np.full((240, 320, 3), 255, np.uint8)), [(track, det)], 95)
    r, g, _ = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[130, 100:103].astype(int).mean(axis=0)
    assert (r > g + 60) == suspected, (r, g)  # red only for a suspected blast
    processor._emit([track])
    (cell,) = counted
    assert cell.label == "monocyte" and cell.suspected_blast == suspected


def test_a_bundle_with_other_class_names_counts_exports_and_saves_its_blasts(
    tmp_path: Path, bundles: Path
) -> None:
    model = make_renamed_bundle(bundles, positive="blast", negative="other")
    config = daemon_config(
        tmp_path, model, source__uri="synthetic://?seed=5&fps=0", pipeline__lossless=True,
        pipeline__max_frames=400, store__crops="blasts", model__threshold=0.8,
    )  # fmt: skip
    daemon = Daemon(config)
    assert daemon.run(install_signals=False) == EXIT_OK
    with Store(tmp_path) as store:
        (session,) = store.list_sessions()
        cells = store.session_cells(session["id"])
        blasts = [c for c in cells if c["label"] == "blast"]
        assert 0 < len(blasts) < len(cells), sorted(c["p_malignant"] for c in cells)
        assert all(c["suspected_blast"] == (c["label"] == "blast") for c in cells)
        assert session["blasts"] == len(blasts)
        assert store.session_summary(session["id"])["blasts"] == len(blasts)
        assert daemon.stats.metrics()["blasts_counted_total"] == len(blasts)
        assert {c["crop_state"] for c in blasts} == {"saved"}
        assert {c["crop_state"] for c in cells if c["label"] != "blast"} == {"none"}
        paths = export_session(store, session["id"], tmp_path / "export")
    rows = list(csv.DictReader(paths["csv"].open(encoding="utf-8")))
    flag = next(k for k in rows[0] if "blast" in k)
    assert sum(int(r[flag]) for r in rows) == len(blasts)


def test_a_version_2_database_migrates_and_reports_the_same_blast_counts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / DB_NAME, isolation_level=None)
    conn.executescript(_V1 + _V2 + "PRAGMA user_version = 2;")
    conn.execute("INSERT INTO sessions (sample_id, started_at, ended_at) VALUES ('old', 1.0, 2.0)")
    for track, (p, label) in enumerate([(0.9, "malignant"), (0.8, "malignant"), (0.2, "non_malignant")]):
        conn.execute(
            "INSERT INTO cells (session_id, track_id, first_seen_ts, last_seen_ts, x0, y0, x1, y1, "
            "p_malignant, label, n_classifications, model_sha256) "
            "VALUES (1, ?, 1.0, 1.5, 0, 0, 5, 5, ?, ?, 3, 'x')",
            (track, p, label),
        )
    before = conn.execute("SELECT COUNT(*), SUM(label = 'malignant') FROM cells").fetchone()
    conn.close()
    with Store(state) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert (store.session(1)["cells"], store.session(1)["blasts"]) == tuple(before) == (3, 2)
        assert store.session_summary(1)["blasts"] == 2
        assert [c["suspected_blast"] for c in store.session_cells(1)] == [True, True, False]
