"""Loaders for class folders, the TCIA release and CSV manifests; label mappings; one-class refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from leukoedge.errors import DataError
from leukoedge.train.datasets import (
    DEFAULT_TCIA_MAPPING,
    TCIA_CODES,
    Record,
    detect_layout,
    load_dataset,
    require_evaluable,
    require_two_classes,
)
from leukoedge.train.labels import format_mapping, parse_mapping


def make_images(
    folder: Path, n: int, prefix: str = "img", suffix: str = ".png", mode: str = "RGB"
) -> list[Path]:
    """``n`` small distinct images in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = np.full((8, 8, len(mode)), (i * 37) % 256, np.uint8)
        path = folder / f"{prefix}_{i:04d}{suffix}"
        Image.fromarray(arr, mode).save(path)
        paths.append(path)
    return paths


def test_contract_class_folders(tmp_path):
    make_images(tmp_path / "malignant", 3)
    make_images(tmp_path / "non_malignant", 4)
    (tmp_path / "non_malignant" / "notes.txt").write_text("not an image")
    ds = load_dataset(tmp_path)
    assert ds.layout == "folders"
    assert ds.class_counts == {"non_malignant": 4, "malignant": 3}
    assert ds.mapping == {"malignant": "malignant", "non_malignant": "non_malignant"}
    rec = ds.records[0]
    assert Path(rec.path).is_absolute() and rec.split is None and rec.group is None
    assert {r.source_class for r in ds.records} == {"malignant", "non_malignant"}
    json.dumps(ds.summary())


def test_synonym_folders_under_split_folders(tmp_path):
    for split, n in (("train", 3), ("validation", 2)):
        make_images(tmp_path / split / "Blasts", n)
        make_images(tmp_path / split / "normal", n)
    ds = load_dataset(tmp_path, layout="folders")
    assert ds.class_counts == {"non_malignant": 5, "malignant": 5}
    assert ds.split_counts == {
        "train": {"non_malignant": 3, "malignant": 3},
        "val": {"non_malignant": 2, "malignant": 2},
    }
    assert ds.mapping == {"Blasts": "malignant", "normal": "non_malignant"}


def test_per_patient_subfolders_become_groups(tmp_path):
    make_images(tmp_path / "blast" / "patient_a", 2)
    make_images(tmp_path / "normal" / "patient_a", 1)
    make_images(tmp_path / "normal" / "patient_b", 2)
    ds = load_dataset(tmp_path)
    assert sorted({r.group for r in ds.records}) == ["patient_a", "patient_b"]
    assert ds.summary()["n_groups"] == 2


def test_unknown_folder_names_are_listed_with_how_to_map(tmp_path):
    make_images(tmp_path / "cats", 2)
    make_images(tmp_path / "dogs", 2)
    with pytest.raises(DataError, match=r"cats, dogs.*malignant=NAME1;non_malignant=NAME2"):
        load_dataset(tmp_path)
    ds = load_dataset(tmp_path, mapping="malignant=cats;non_malignant=dogs")
    assert ds.class_counts == {"non_malignant": 2, "malignant": 2}
    ds = load_dataset(tmp_path, mapping={"CATS": "non_malignant", "dogs": "malignant"})
    assert {r.source_class: r.label for r in ds.records} == {"cats": "non_malignant", "dogs": "malignant"}


def test_mixing_split_and_class_folders_is_refused(tmp_path):
    make_images(tmp_path / "train" / "blast", 1)
    make_images(tmp_path / "normal", 1)
    with pytest.raises(DataError, match="mixes split folders"):
        load_dataset(tmp_path)


def make_tcia(root: Path, counts: dict[str, int]) -> None:
    for code, n in counts.items():
        make_images(root / code, n, prefix=code, suffix=".tiff", mode="RGBA")


def test_tcia_default_mapping(tmp_path):
    make_tcia(tmp_path, {"MYO": 3, "MOB": 2, "NGS": 4, "LYT": 1, "PMO": 2})
    assert detect_layout(tmp_path) == "tcia"
    ds = load_dataset(tmp_path)
    assert ds.layout == "tcia"
    assert ds.class_counts == {"non_malignant": 7, "malignant": 5}
    assert ds.source_counts == {"LYT": 1, "MOB": 2, "MYO": 3, "NGS": 4, "PMO": 2}
    # The run records the whole mapping, codes absent from the data included.
    assert ds.mapping == DEFAULT_TCIA_MAPPING and len(ds.mapping) == len(TCIA_CODES) == 15
    assert ds.summary()["mapping_text"].startswith("malignant=MOB,MYO;non_malignant=BAS,")


def test_tcia_mapping_override_and_ignore(tmp_path):
    make_tcia(tmp_path, {"MYO": 3, "MOB": 2, "NGS": 4, "PMO": 2, "KSC": 1})
    ds = load_dataset(tmp_path, mapping="MYO,PMO")
    assert ds.class_counts == {"non_malignant": 7, "malignant": 5}
    assert ds.mapping["MOB"] == "non_malignant" and ds.mapping["PMO"] == "malignant"
    ds = load_dataset(tmp_path, mapping="malignant=MYO,MOB;non_malignant=NGS,PMO;ignore=KSC")
    assert ds.excluded == {"KSC": 1} and len(ds.records) == 11
    with pytest.raises(DataError, match="no label for class name.*KSC"):
        load_dataset(tmp_path, mapping="malignant=MYO,MOB;non_malignant=NGS,PMO")


def test_tcia_under_split_folders(tmp_path):
    make_tcia(tmp_path / "train", {"MYO": 2, "NGS": 2})
    make_tcia(tmp_path / "val", {"MYO": 1, "NGS": 1})
    ds = load_dataset(tmp_path)
    assert ds.layout == "tcia"
    assert {r.split for r in ds.records} == {"train", "val"}


def test_tcia_annotations_relabel_and_group(tmp_path):
    make_tcia(tmp_path, {"MYO": 2, "NGS": 2})
    (tmp_path / "annotations.dat").write_text(
        "image;annotation;patient\nMYO/MYO_0000.tiff;MYO;p1\nNGS/NGS_0001.tiff  MYO  p2\nbroken line\n"
    )
    ds = load_dataset(tmp_path)
    by_name = {Path(r.path).name: r for r in ds.records}
    assert by_name["NGS_0001.tiff"].label == "malignant" and by_name["NGS_0001.tiff"].source_class == "MYO"
    assert by_name["NGS_0001.tiff"].group == "p2" and by_name["MYO_0000.tiff"].group == "p1"
    assert by_name["NGS_0000.tiff"].source_class == "NGS" and by_name["NGS_0000.tiff"].group is None
    assert ds.class_counts == {"non_malignant": 1, "malignant": 3}


def test_unparseable_annotations_are_ignored_with_a_warning(tmp_path, caplog):
    make_tcia(tmp_path, {"MYO": 2, "NGS": 2})
    (tmp_path / "annotations.dat").write_bytes(b"\x00\xff garbage \x01\n1 2 3\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(tmp_path)
    assert ds.class_counts == {"non_malignant": 2, "malignant": 2}
    assert "annotations.dat" in caplog.text


def test_csv_manifest(tmp_path, caplog):
    imgs = make_images(tmp_path / "imgs", 5)
    rows = [
        "path,label,group",
        "imgs/img_0000.png,malignant,p1",
        "imgs/img_0001.png,MYO,p1",
        f"{imgs[2]},NGS,p2",
        "imgs/img_0003.png,non_malignant,",
        "imgs/gone.png,malignant,p3",
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(tmp_path / "data.csv")
    assert ds.layout == "csv"
    assert ds.class_counts == {"non_malignant": 2, "malignant": 2}
    assert [r.group for r in ds.records] == ["p1", "p1", "p2", None]
    assert ds.records[1].source_class == "MYO"
    assert len(ds.missing) == 1 and "gone.png" in ds.missing[0]
    assert any("do not exist" in w for w in ds.summary()["warnings"]) and "do not exist" in caplog.text


def test_csv_manifest_errors(tmp_path):
    make_images(tmp_path, 1)
    (tmp_path / "nohead.csv").write_text("img_0000.png,malignant\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        load_dataset(tmp_path / "nohead.csv")
    (tmp_path / "odd.csv").write_text("path,label\nimg_0000.png,tumour\n")
    with pytest.raises(DataError, match="tumour"):
        load_dataset(tmp_path / "odd.csv")
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(DataError, match="folder or a .csv manifest"):
        load_dataset(tmp_path / "list.txt")
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "absent")


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "blast").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_dataset(tmp_path)


def test_unlabelled_kaggle_folder_is_refused(tmp_path):
    """The shape that once produced "perfect accuracy": unlabelled Blood_Cancer/Sample_N.tiff RGBA files."""
    folder = tmp_path / "Blood_Cancer"
    make_images(folder, 6, prefix="Sample", suffix=".tiff", mode="RGBA")
    # Pointing at the image folder: no class folders, so no labels, and file names are not labels.
    with pytest.raises(DataError, match=r"6 images lie directly.*never from file names.*leukoedge classify"):
        load_dataset(folder)
    # Pointing at its parent: "Blood_Cancer" is not a class name anything maps.
    with pytest.raises(DataError, match="no label for class name.*Blood_Cancer"):
        load_dataset(tmp_path)
    # Forcing a label on it gives one class, which training refuses.
    ds = load_dataset(tmp_path, mapping={"Blood_Cancer": "malignant"})
    assert ds.class_counts == {"non_malignant": 0, "malignant": 6}
    with pytest.raises(DataError, match=r"all 6 images have label 'malignant'.*cannot learn from one class"):
        require_two_classes(ds.records, "training")
    with pytest.raises(DataError, match="all 6 images are malignant"):
        require_evaluable(ds.records, "test set")


def test_minority_class_warning(tmp_path, caplog):
    make_images(tmp_path / "normal", 40)
    make_images(tmp_path / "blast", 1)
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(tmp_path)
    assert any("only 1 of 41 images (2.4%) are malignant" in w for w in ds.summary()["warnings"])
    assert "under 5%" in caplog.text
    assert require_two_classes(ds.records) == {"non_malignant": 40, "malignant": 1}


def test_require_evaluable_accepts_targets():
    assert require_evaluable(np.array([0, 1, 1], np.int8)) == {"non_malignant": 1, "malignant": 2}
    with pytest.raises(DataError, match="all 3 images are non_malignant"):
        require_evaluable([0, 0, 0], "external set")
    with pytest.raises(DataError, match="no labelled images"):
        require_two_classes([])
    assert Record("a.png", "malignant").y == 1


@pytest.mark.parametrize(
    ("text", "malignant"),
    [("MYO,MOB", {"MYO", "MOB"}), ("malignant=myo", {"MYO"}), (" malignant = MYO , PMO ", {"MYO", "PMO"})],
)
def test_parse_mapping_one_side_fills_other_codes(text, malignant):
    mapping = parse_mapping(text)
    assert {k for k, v in mapping.items() if v == "malignant"} == malignant
    assert set(mapping) == set(TCIA_CODES)
    assert parse_mapping(format_mapping(mapping)) == mapping


def test_parse_mapping_forms_and_errors():
    assert parse_mapping("non_malignant=NGS") == {
        c: ("non_malignant" if c == "NGS" else "malignant") for c in TCIA_CODES
    }
    both = parse_mapping("malignant=blast_cells;non_malignant=normal_cells;ignore=KSC")
    assert both == {"blast_cells": "malignant", "normal_cells": "non_malignant", "KSC": "ignore"}
    for bad, message in [("", "empty"), ("tumour=MYO", "unknown class"), ("malignant=", "no names"),
                         ("malignant=MYO;non_malignant=MYO", "both")]:  # fmt: skip
        with pytest.raises(DataError, match=message):
            parse_mapping(bad)


def test_default_mapping_is_myeloblasts_and_monoblasts():
    assert {c for c, v in DEFAULT_TCIA_MAPPING.items() if v == "malignant"} == {"MYO", "MOB"}


def test_real_aml_lmu_folders(aml_dir):
    ds = load_dataset(aml_dir)
    assert ds.layout == "tcia"
    assert len(ds.records) == 1600
    assert ds.class_counts == {"non_malignant": 800, "malignant": 800}
    assert ds.source_counts == {"MYO": 800, "NGS": 800}
    assert ds.split_counts == {
        "train": {"non_malignant": 600, "malignant": 600},
        "val": {"non_malignant": 200, "malignant": 200},
    }
    assert ds.warnings == []
