"""Splits: deterministic, stratified, group-aware, the folder policy, and the split manifest."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from leukoedge.errors import DataError
from leukoedge.train.datasets import Record, load_dataset
from leukoedge.train.splits import make_splits, read_split_manifest, write_split_manifest


def records(n: int, malignant_share: float = 0.3, groups: int | None = None, split: str | None = None):
    """``n`` in-memory records (no files needed for splitting); optional group ids 0..groups-1."""
    rng = np.random.default_rng(123)
    out = []
    for i in range(n):
        label = "malignant" if i < n * malignant_share else "non_malignant"
        group = f"g{rng.integers(groups)}" if groups else None
        out.append(Record(f"/data/{split or 'all'}/{i:05d}.png", label, group, label, split))
    return out


def paths(recs) -> set[str]:
    return {r.path for r in recs}


def test_same_seed_same_split_different_seed_different():
    data = records(400)
    a, b, c = make_splits(data, seed=7), make_splits(list(reversed(data)), seed=7), make_splits(data, seed=8)
    for name in ("train", "val", "test"):
        assert [r.path for r in a[name]] == [r.path for r in b[name]]
    assert paths(a["test"]) != paths(c["test"])
    assert "seed 7" in a.policy


def test_stratified_fractions():
    data = records(1000, malignant_share=0.2)
    s = make_splits(data, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert sum(len(v) for v in s.values()) == 1000
    assert len(paths(s["train"]) | paths(s["val"]) | paths(s["test"])) == 1000
    assert abs(len(s["test"]) - 200) <= 2 and abs(len(s["val"]) - 100) <= 2
    for name, recs in s.items():
        share = sum(r.label == "malignant" for r in recs) / len(recs)
        assert abs(share - 0.2) < 0.01, name
        assert all(r.split == name for r in recs)


def test_groups_never_cross_splits_and_stay_roughly_stratified():
    data = records(1200, malignant_share=0.4, groups=80)
    s = make_splits(data, val_fraction=0.15, test_fraction=0.15, seed=3)
    owner: dict[str, str] = {}
    for name, recs in s.items():
        for r in recs:
            assert owner.setdefault(r.group, name) == name
    assert "whole groups per split" in s.policy
    for name, frac in (("test", 0.15), ("val", 0.15), ("train", 0.7)):
        assert abs(len(s[name]) / 1200 - frac) < 0.04, name
        share = sum(r.label == "malignant" for r in s[name]) / len(s[name])
        assert abs(share - 0.4) < 0.06, name


def test_folder_policy_train_val_folders_give_test_from_val():
    data = records(200, split="train") + records(60, split="val")
    s = make_splits(data, val_fraction=0.2, seed=0)
    assert paths(s["test"]) == paths(data[200:])
    assert paths(s["train"]) | paths(s["val"]) == paths(data[:200])
    assert len(s["val"]) == 40
    assert all(r.split == "test" for r in s["test"])
    assert "val folder is the held-out test split" in s.policy


def test_folder_policy_other_cases():
    three = records(50, split="train") + records(10, split="val") + records(10, split="test")
    s = make_splits(three)
    assert [len(s[n]) for n in ("train", "val", "test")] == [50, 10, 10]
    only_test = records(100, split="train") + records(20, split="test")
    s = make_splits(only_test, val_fraction=0.1)
    assert paths(s["test"]) == paths(only_test[100:]) and len(s["val"]) == 10
    with pytest.raises(DataError, match="only a 'train' split folder"):
        make_splits(records(20, split="train"))
    with pytest.raises(DataError, match="no 'train' folder"):
        make_splits(records(20, split="val"))
    with pytest.raises(DataError, match="some records come with a split folder"):
        make_splits(records(20, split="train") + records(5))
    s = make_splits(three, keep_folder_splits=False, val_fraction=0.2, test_fraction=0.2)
    assert len(s["test"]) == 14
    with pytest.raises(DataError, match="fractions"):
        make_splits(three, val_fraction=0.6, test_fraction=0.5)


def test_real_aml_lmu_policy(aml_dir):
    s = make_splits(load_dataset(aml_dir), val_fraction=0.15, seed=0)
    assert s.counts() == {
        "train": {"non_malignant": 510, "malignant": 510},
        "val": {"non_malignant": 90, "malignant": 90},
        "test": {"non_malignant": 200, "malignant": 200},
    }
    assert all("/val/" in r.path for r in s["test"])
    assert not any("/val/" in r.path for r in s["train"] + s["val"])


def make_files(folder: Path, n: int) -> list[Record]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"f{i:03d}.png"
        path.write_bytes(bytes([i]) * 100)
        out.append(Record(str(path), "malignant" if i % 2 else "non_malignant", f"p{i % 5}", "x", None))
    return out


def test_manifest_round_trip(tmp_path):
    s = make_splits(make_files(tmp_path / "img", 30), seed=4)
    out = write_split_manifest(tmp_path / "runs" / "splits.json", s, extra={"mapping": {"x": "malignant"}})
    back = read_split_manifest(out)
    assert back == s
    assert back.policy == s.policy and back.seed == 4
    assert back.meta["extra"] == {"mapping": {"x": "malignant"}}
    assert back.meta["counts"] == s.counts()


def test_manifest_detects_changed_and_missing_files(tmp_path):
    recs = make_files(tmp_path / "img", 10)
    s = make_splits(recs, seed=0)
    manifest = write_split_manifest(tmp_path / "splits.json", s)
    # Same size, new content and mtime: found by hashing the file whose mtime moved.
    Path(recs[3].path).write_bytes(b"\xee" * 100)
    st = os.stat(recs[3].path)
    os.utime(recs[3].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match=r"1 of 10 files changed.*f003.png: content changed"):
        read_split_manifest(manifest)
    assert read_split_manifest(manifest, verify="none") == s
    # A copy with the same content but a new mtime is not a change.
    Path(recs[3].path).write_bytes(bytes([3]) * 100)
    assert read_split_manifest(manifest) == s
    os.remove(recs[5].path)
    with pytest.raises(DataError, match="f005.png: missing"):
        read_split_manifest(manifest, verify="hash")


def test_manifest_refuses_foreign_json(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not a leukoedge split manifest"):
        read_split_manifest(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read the split manifest"):
        read_split_manifest(tmp_path / "y.json")


def test_groups_shared_by_provided_folders_are_reported(caplog):
    data = [Record(f"/d/{s}/{i}.png", lab, "patient_1", lab, s) for s in ("train", "val") for i, lab in
            enumerate(["malignant", "non_malignant"] * 5)]  # fmt: skip
    make_splits(data)
    assert "1 groups (e.g. 'patient_1') are in more than one split" in caplog.text
