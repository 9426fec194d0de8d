"""Decoding records to arrays: bad images skipped and reported, the on-disk cache hit and invalidated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import leukoedge.train.cache as cache_mod
from leukoedge.train.cache import contract_tag, default_cache_dir, load_arrays
from leukoedge.train.datasets import Record


def cell(path: Path, colour: tuple[int, int, int], size: int = 96) -> Record:
    Image.new("RGB", (size, size), colour).save(path)
    label = "malignant" if colour[0] > 128 else "non_malignant"
    return Record(str(path), label, None, label, None)


@pytest.fixture
def recs(tmp_path) -> list[Record]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    return [cell(folder / f"c{i}.png", (200 if i % 2 else 20, 10 * i, 50)) for i in range(6)]


@pytest.fixture
def decode_counter(monkeypatch):
    """Counts calls of the decoder the cache uses."""
    calls: list[str] = []
    real = cache_mod.load_cell

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache_mod, "load_cell", counting)
    return calls


def test_arrays_labels_and_bad_images_skipped(tmp_path, recs):
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    missing = Record(str(tmp_path / "imgs" / "gone.png"), "malignant")
    items = [recs[0], Record(str(bad), "malignant"), *recs[1:], missing]
    ticks: list[int] = []
    out = load_arrays(items, cache_dir=tmp_path / "cache", progress=ticks.append)
    assert out.x.shape == (6, 64, 64, 3) and out.x.dtype == np.uint8
    assert out.y.dtype == np.int8 and out.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert out.records_kept == recs
    assert [p for p, _ in out.errors] == [str(bad), missing.path]
    assert "broken.jpg" in out.errors[0][1] and "no such file" in out.errors[1][1]
    assert sum(ticks) == 8
    assert tuple(out.x[1, 10, 10]) == (200, 10, 50)
    assert out.summary()["n_failed"] == 2 and out.summary()["decoded"] == 6


def test_second_load_reads_the_cache(tmp_path, recs, decode_counter):
    first = load_arrays(recs, cache_dir=tmp_path / "cache", workers=2)
    assert len(decode_counter) == 6 and first.decoded == 6
    decode_counter.clear()
    second = load_arrays(recs, cache_dir=tmp_path / "cache", workers=1)
    assert decode_counter == [] and second.cache_hits == 6
    np.testing.assert_array_equal(first.x, second.x)
    entries = list((tmp_path / "cache" / contract_tag()).rglob("*.u8"))
    assert len(entries) == 6 and not list((tmp_path / "cache").rglob("*.tmp"))


def test_changed_file_is_decoded_again(tmp_path, recs, decode_counter):
    before = load_arrays(recs, cache_dir=tmp_path / "cache")
    cell(Path(recs[2].path), (0, 0, 255))
    decode_counter.clear()
    after = load_arrays(recs, cache_dir=tmp_path / "cache")
    assert decode_counter == [recs[2].path]
    assert tuple(after.x[2, 0, 0]) == (0, 0, 255) and tuple(before.x[2, 0, 0]) != (0, 0, 255)
    np.testing.assert_array_equal(np.delete(after.x, 2, 0), np.delete(before.x, 2, 0))


def test_contract_change_invalidates(tmp_path, recs, decode_counter, monkeypatch):
    load_arrays(recs, cache_dir=tmp_path / "cache")
    tag = contract_tag()
    monkeypatch.setattr(cache_mod.contract, "RESIZE_METHOD", "center_square_crop+bicubic")
    assert contract_tag() != tag and contract_tag(32) != tag
    decode_counter.clear()
    out = load_arrays(recs, cache_dir=tmp_path / "cache")
    assert len(decode_counter) == 6 and out.cache_hits == 0


def test_damaged_entry_is_replaced(tmp_path, recs):
    load_arrays(recs[:1], cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").rglob("*.u8")
    entry.write_bytes(b"short")
    out = load_arrays(recs[:1], cache_dir=tmp_path / "cache")
    assert out.decoded == 1 and entry.stat().st_size == 64 * 64 * 3


def test_unwritable_cache_and_no_cache(tmp_path, recs, caplog):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should be")
    out = load_arrays(recs, cache_dir=blocker)
    assert len(out.records_kept) == 6 and "continuing without it" in caplog.text
    out = load_arrays(recs, cache_dir=tmp_path / "unused", use_cache=False)
    assert out.decoded == 6 and not (tmp_path / "unused").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LEUKOEDGE_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LEUKOEDGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "leukoedge"


def test_empty_record_list(tmp_path):
    out = load_arrays([], cache_dir=tmp_path)
    assert out.x.shape == (0, 64, 64, 3) and out.y.shape == (0,) and out.errors == []


def test_two_loaders_sharing_a_cache(tmp_path, recs):
    """Concurrent runs writing the same entries (temp file + rename) both succeed and agree."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: load_arrays(recs * 3, cache_dir=tmp_path / "cache", workers=2), range(2))
    assert a.errors == b.errors == []
    np.testing.assert_array_equal(a.x, b.x)
    assert len(list((tmp_path / "cache").rglob("*.u8"))) == 6
    assert not list((tmp_path / "cache").rglob("*.tmp"))
