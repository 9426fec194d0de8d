"""The synthetic microscope: determinism, ground truth, stage motion, writers and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from leukoedge.cli import cli, main
from leukoedge.contract import CLASS_NAMES, POSITIVE_CLASS
from leukoedge.errors import ConfigError, LeukoEdgeError
from leukoedge.synth import (
    KIND_LABELS,
    KINDS,
    MANIFEST_NAME,
    StageSequence,
    SynthError,
    render_cell,
    render_field,
    write_cell_dataset,
)
from leukoedge.vision.images import decode_image, load_cell

NEGATIVE = next(c for c in CLASS_NAMES if c != POSITIVE_CLASS)


def _purpleness(rgb: np.ndarray) -> np.ndarray:
    """Blue minus green per pixel: high on stained nuclei, near zero on background."""
    return rgb[..., 2].astype(np.float32) - rgb[..., 1].astype(np.float32)


def _assert_cells_stand_out(rgb: np.ndarray, cells: list[dict]) -> int:
    """Each mostly visible cell's box is darker and purpler than the frame outside all boxes."""
    outside = np.ones(rgb.shape[:2], dtype=bool)
    for c in cells:
        x0, y0, x1, y1 = c["bbox"]
        outside[y0:y1, x0:x1] = False
    checked = 0
    for c in cells:
        x0, y0, x1, y1 = c["bbox"]
        if c["visible_fraction"] > 0.5 and outside.mean() > 0.2:
            inside = rgb[y0:y1, x0:x1]
            assert inside[..., 1].mean() < rgb[..., 1][outside].mean() - 5, c
            assert _purpleness(inside).mean() > _purpleness(rgb)[outside].mean() + 5, c
            checked += 1
    return checked


# -- single cells -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_render_cell_is_deterministic_per_seed(kind: str) -> None:
    a, truth_a = render_cell(kind, seed=7, size=200)
    b, truth_b = render_cell(kind, seed=7, size=200)
    c, _ = render_cell(kind, seed=8, size=200)
    assert a.shape == (200, 200, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    assert truth_a == truth_b
    assert a.tobytes() != c.tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_render_cell_truth_matches_pixels(kind: str) -> None:
    rgb, truth = render_cell(kind, seed=3)
    assert truth["kind"] == kind
    assert truth["label"] == (POSITIVE_CLASS if kind == "blast" else NEGATIVE)
    assert truth["label"] == KIND_LABELS[kind]
    x0, y0, x1, y1 = truth["bbox"]
    cx, cy = truth["center"]
    assert 0 <= x0 < cx < x1 <= 400 and 0 <= y0 < cy < y1 <= 400
    # The white cell is near the centre and about as big as the real crops' cells.
    assert abs(cx - 200) < 20 and abs(cy - 200) < 20
    assert 0.15 < (x1 - x0) / 400 < 0.65
    inside = rgb[y0:y1, x0:x1]
    assert _purpleness(inside).mean() > _purpleness(rgb).mean() + 5
    assert inside[..., 1].mean() < np.median(rgb[..., 1])


def test_blasts_have_bigger_nuclei_than_neutrophils() -> None:
    """N:C ratio: the share of dark (nucleus) pixels inside the cell box is higher in blasts."""

    def nucleus_share(kind: str, seed: int) -> float:
        rgb, truth = render_cell(kind, seed=seed)
        x0, y0, x1, y1 = truth["bbox"]
        return float((rgb[y0:y1, x0:x1, 1] < 100).mean())

    blasts = [nucleus_share("blast", s) for s in range(6)]
    neutrophils = [nucleus_share("neutrophil", s) for s in range(6)]
    assert min(blasts) > max(neutrophils)


def test_cell_colours_are_close_to_real_smears(aml_dir) -> None:
    """The darkest pixels (nuclei) and the brightest (background) have the real images' colours."""

    def dark_and_bright(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        dark, bright = [], []
        for rgb in images:
            px = rgb[20:-20, 20:-20].reshape(-1, 3).astype(np.float32)
            total = px.sum(1)
            px, total = px[total > 60], total[total > 60]
            dark.append(px[total <= np.percentile(total, 5)].mean(0))
            bright.append(px[total >= np.percentile(total, 80)].mean(0))
        return np.mean(dark, 0), np.mean(bright, 0)

    for code, kind in (("MYO", "blast"), ("NGS", "neutrophil")):
        real = [decode_image(p) for p in sorted((aml_dir / "train" / code).glob("*.jpg"))[:20]]
        synth = [render_cell(kind, seed=100 + i)[0] for i in range(20)]
        (real_dark, real_bright), (syn_dark, syn_bright) = dark_and_bright(real), dark_and_bright(synth)
        assert np.abs(real_dark - syn_dark).max() < 30, (code, real_dark, syn_dark)
        assert np.abs(real_bright - syn_bright).max() < 15, (code, real_bright, syn_bright)


def test_bad_settings_raise_a_leukoedge_error() -> None:
    with pytest.raises(SynthError, match="unknown cell kind"):
        render_cell("eosinophil")
    with pytest.raises(ConfigError):
        render_field(8, 8)
    with pytest.raises(ValueError):
        StageSequence(640, 480, slide_width=320)
    assert issubclass(SynthError, LeukoEdgeError)


# -- fields -----------------------------------------------------------------------------------------


def test_field_truth_is_consistent_with_the_image() -> None:
    kinds = ["blast", "neutrophil", "lymphocyte", "monocyte", "blast"]
    rgb, truth = render_field(640, 480, seed=5, kinds=kinds, px_per_um=8.0)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    assert truth["width"] == 640 and truth["height"] == 480 and truth["px_per_um"] == 8.0
    assert json.loads(json.dumps(truth)) == truth
    cells = truth["cells"]
    assert sorted(c["kind"] for c in cells) == sorted(kinds)
    assert len({c["id"] for c in cells}) == len(cells)
    assert _assert_cells_stand_out(rgb, cells) >= 3
    for c in cells:
        x0, y0, x1, y1 = c["bbox"]
        assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
        assert c["label"] == KIND_LABELS[c["kind"]]
        fx0, fy0, fx1, fy1 = c["bbox_full"]
        outside = fx0 < 0 or fy0 < 0 or fx1 > 640 or fy1 > 480
        assert c["cut_by_edge"] == outside
        if not outside:
            assert c["bbox"] == c["bbox_full"] and c["visible_fraction"] == 1.0


def test_fields_can_keep_cells_inside_and_cut_them_at_the_edge() -> None:
    cut = 0
    for seed in range(4):
        _, truth = render_field(640, 480, seed=seed, n_cells=4, allow_edge_cells=False, camera=False)
        assert not any(c["cut_by_edge"] for c in truth["cells"])
        _, truth = render_field(640, 480, seed=seed, n_cells=4, allow_edge_cells=True)
        cut += sum(c["cut_by_edge"] for c in truth["cells"])
    assert cut > 0


def test_field_is_deterministic_and_varies_with_seed() -> None:
    a, ta = render_field(320, 240, seed=11)
    b, tb = render_field(320, 240, seed=11)
    c, _ = render_field(320, 240, seed=12)
    assert a.tobytes() == b.tobytes() and ta == tb
    assert a.tobytes() != c.tobytes()


# -- stage sequences --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sequence() -> StageSequence:
    return StageSequence(
        320, 240, seed=4, slide_width=960, slide_height=720, n_cells=12, speed_px_per_frame=6
    )


def test_sequence_cells_keep_their_slide_position(sequence: StageSequence) -> None:
    slide_pos: dict[int, tuple[float, float]] = {}
    moved = 0
    for i in range(200):
        truth = sequence.truth(i)
        sx, sy = truth["stage"]
        assert 0 <= sx <= 960 - 320 and 0 <= sy <= 720 - 240
        moved += bool(i) and truth["moving"]
        for c in truth["cells"]:
            pos = (round(c["center"][0] + sx, 2), round(c["center"][1] + sy, 2))
            assert slide_pos.setdefault(c["id"], pos) == pytest.approx(pos, abs=0.011)
            x0, y0, x1, y1 = c["bbox"]
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert moved > 20
    assert len(slide_pos) >= 3


def test_sequence_frame_coordinates_shift_by_the_stage_motion(sequence: StageSequence) -> None:
    runs: dict[int, int] = {}
    longest = 0
    prev = sequence.truth(0)
    for i in range(1, 200):
        cur = sequence.truth(i)
        dx = cur["stage"][0] - prev["stage"][0]
        dy = cur["stage"][1] - prev["stage"][1]
        assert abs(dx) <= 7 and abs(dy) <= 7
        before = {c["id"]: c for c in prev["cells"]}
        for c in cur["cells"]:
            if c["id"] in before:
                old = before[c["id"]]
                assert c["bbox_full"] == [
                    old["bbox_full"][0] - dx,
                    old["bbox_full"][1] - dy,
                    old["bbox_full"][2] - dx,
                    old["bbox_full"][3] - dy,
                ]
                runs[c["id"]] = runs.get(c["id"], 1) + 1
                longest = max(longest, runs[c["id"]])
            else:
                runs[c["id"]] = 1
        prev = cur
    assert longest >= 20


def test_sequence_frames_are_crops_of_the_slide(sequence: StageSequence) -> None:
    rgb, truth = sequence.frame(37)
    again, _ = sequence.frame(37)
    assert rgb.shape == (240, 320, 3) and rgb.dtype == np.uint8
    assert rgb.tobytes() == again.tobytes()
    x, y = truth["stage"]
    crop = sequence.slide[y : y + 240, x : x + 320].astype(np.float32)
    # Vignetting darkens the corners a little and noise adds a few levels; the scene is the same.
    assert np.abs(rgb[60:180, 80:240] - crop[60:180, 80:240]).mean() < 12
    assert np.corrcoef(rgb[..., 1].ravel(), crop[..., 1].ravel())[0, 1] > 0.95
    other = StageSequence(
        320, 240, seed=4, slide_width=960, slide_height=720, n_cells=12, speed_px_per_frame=6
    )
    assert other.frame(37)[0].tobytes() == rgb.tobytes()
    assert sequence.frame(38)[0].tobytes() != rgb.tobytes()


def test_sequence_cells_are_visible_where_the_truth_says(sequence: StageSequence) -> None:
    checked = 0
    for i in range(0, 200, 10):
        rgb, truth = sequence.frame(i)
        checked += _assert_cells_stand_out(rgb, truth["cells"])
    assert checked >= 5


def test_sequence_iterates_n_frames() -> None:
    seq = StageSequence(64, 48, seed=1, n_frames=5, n_cells=2)
    frames = list(seq)
    assert len(seq) == 5 and len(frames) == 5
    assert [t["frame"] for _, t in frames] == list(range(5))


# -- writers and CLI --------------------------------------------------------------------------------


def test_write_cell_dataset_tcia_layout_loads(tmp_path) -> None:
    manifest = write_cell_dataset(tmp_path, n_per_kind=3, seed=2, size=96, splits={"train": 2, "val": 1})
    for code in ("MYO", "NGS", "LYT", "MON"):
        assert len(list((tmp_path / "train" / code).glob("*.png"))) == 2
        assert len(list((tmp_path / "val" / code).glob("*.png"))) == 1
    assert manifest["counts"]["train/MYO"] == 2
    stored = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert stored == json.loads(json.dumps(manifest))
    first = stored["images"][0]
    assert first["kind"] == "blast" and first["label"] == POSITIVE_CLASS and first["split"] == "train"
    cell = load_cell(tmp_path / first["path"])
    assert cell.shape == (64, 64, 3) and cell.dtype == np.uint8


def test_write_cell_dataset_is_reproducible_and_label_folders(tmp_path) -> None:
    write_cell_dataset(tmp_path / "a", 2, seed=9, size=64, layout="folders", fmt="jpeg")
    write_cell_dataset(tmp_path / "b", 2, seed=9, size=64, layout="folders", fmt="jpeg")
    assert len(list((tmp_path / "a" / POSITIVE_CLASS).glob("*.jpg"))) == 2
    assert len(list((tmp_path / "a" / NEGATIVE).glob("*.jpg"))) == 6
    for path in (tmp_path / "a").rglob("*.jpg"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


def test_cli_writes_fields_with_json(tmp_path) -> None:
    out = tmp_path / "fields"
    result = CliRunner().invoke(
        cli,
        [
            "synth",
            "field",
            "--out",
            str(out),
            "--count",
            "2",
            "--width",
            "320",
            "--height",
            "240",
            "--px-per-um",
            "6",
            "--cells",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    for i in range(2):
        truth = json.loads((out / f"field_{i:05d}.json").read_text())
        image = Image.open(out / truth["image"])
        assert image.size == (320, 240)
        assert len(truth["cells"]) == 2 and truth["px_per_um"] == 6.0


def test_cli_writes_cells_and_sequences(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "synth",
            "cells",
            "--out",
            str(tmp_path / "c"),
            "--count",
            "1",
            "--size",
            "64",
            "--layout",
            "flat",
            "--kind",
            "blast",
            "--kind",
            "monocyte",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "c").glob("*.png")) == ["blast_00000.png", "monocyte_00000.png"]
    assert json.loads((tmp_path / "c" / "blast_00000.json").read_text())["label"] == POSITIVE_CLASS
    result = runner.invoke(
        cli,
        [
            "synth",
            "sequence",
            "--out",
            str(tmp_path / "s"),
            "--count",
            "4",
            "--width",
            "64",
            "--height",
            "48",
            "--slide-size",
            "200",
            "150",
            "--cells",
            "2",
            "--px-per-um",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "s" / "sequence.json").read_text())
    assert [f["image"] for f in data["frames"]] == [f"frame_{i:06d}.png" for i in range(4)]
    assert data["sequence"]["slide_width"] == 200 and len(data["sequence"]["cells"]) == 2


def test_cli_reports_bad_settings_without_a_traceback(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["synth", "field", "--out", str(tmp_path), "--width", "8"])
    assert exc.value.code == 2
    assert "Error:" in capsys.readouterr().err
