"""The differential model's training side: cell-type labels, near-duplicate groups, per-type figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from leukoedge.cli import cli
from leukoedge.contract import DIFFERENTIAL_CLASSES, InputContract
from leukoedge.errors import DataError
from leukoedge.synth.single import render_cell
from leukoedge.train.datasets import load_dataset
from leukoedge.train.differential import differential_metrics, unclassified_shares
from leukoedge.train.labels import DEFAULT_DIFFERENTIAL_MAPPING, TCIA_CODES, parse_differential_mapping
from leukoedge.train.neardup import group_sheet_runs, lmu_differential_rows
from leukoedge.train.splits import make_splits


def test_every_tcia_code_has_a_cell_type_and_only_myo_mob_are_blasts():
    assert set(DEFAULT_DIFFERENTIAL_MAPPING) == set(TCIA_CODES)
    assert set(DEFAULT_DIFFERENTIAL_MAPPING.values()) == set(DIFFERENTIAL_CLASSES)
    assert sorted(c for c, t in DEFAULT_DIFFERENTIAL_MAPPING.items() if t == "blast") == ["MOB", "MYO"]


def test_mapping_overrides_from_a_string_and_a_file(tmp_path):
    assert parse_differential_mapping("blast=MYO,MOB,pmo;ignore=KSC") == {
        "MYO": "blast",
        "MOB": "blast",
        "PMO": "blast",
        "KSC": "ignore",
    }
    good = tmp_path / "map.toml"
    good.write_text('lymphocyte = ["LYT", "LYA"]\n')
    assert parse_differential_mapping(str(good)) == {"LYT": "lymphocyte", "LYA": "lymphocyte"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('blast = ["MYO", 3]\n', r"map\.toml: blast\[1\]: expected a class name"),
        ('plasma_cell = ["X"]\n', r"plasma_cell: unknown cell type"),
        ('blast = "MYO"\n', r"blast: expected a non-empty list"),
        ('blast = ["MYO"]\nneutrophil = ["MYO"]\n', r"neutrophil\[0\]: MYO is already mapped to blast"),
        ("blast = [\n", r"not a readable mapping file"),
    ],
)
def test_mapping_file_errors_name_the_key_path(tmp_path, text, message):
    bad = tmp_path / "map.toml"
    bad.write_text(text)
    with pytest.raises(DataError, match=message):
        parse_differential_mapping(str(bad))


def _folders(root: Path, names: dict[str, str]) -> Path:
    for i, (folder, kind) in enumerate(names.items()):
        (root / folder).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(render_cell(kind, 10 * i + j, 96)[0]).save(root / folder / f"{j}.png")
    return root


def test_folders_load_as_cell_types_and_unknown_names_are_listed(tmp_path):
    data = _folders(tmp_path / "ok", {"MYO": "blast", "lymphocytes": "lymphocyte", "KSC": "monocyte"})
    dataset = load_dataset(data, task="differential", mapping="ignore=KSC")
    assert dataset.class_counts["blast"] == 3 and dataset.class_counts["lymphocyte"] == 3
    assert dataset.excluded == {"KSC": 3} and dataset.mapping["lymphocytes"] == "lymphocyte"
    bad = _folders(tmp_path / "bad", {"MYO": "blast", "plasma": "lymphocyte"})
    with pytest.raises(DataError, match=r"no cell type for class name\(s\) plasma"):
        load_dataset(bad, task="differential")
    with pytest.raises(DataError, match="unknown task"):
        load_dataset(bad, task="triage")


def _sheet(folder: Path) -> dict[str, int]:
    """Three distinct cells, the second with three rotated / flipped copies: sheet order r0c0..r0c5."""
    folder.mkdir(parents=True)
    a, b, c = (render_cell(k, s, 108)[0] for k, s in (("lymphocyte", 1), ("lymphocyte", 2), ("monocyte", 3)))
    images = [a, b, np.rot90(b), np.fliplr(b), np.rot90(b, 3), c]
    names = {}
    for col, img in enumerate(images):
        name = f"BAS_thumb_r0c{col}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(folder / name)
        names[name] = col
    return names


def test_copies_of_one_cell_share_a_group_and_distinct_neighbours_do_not(tmp_path):
    _sheet(tmp_path / "BAS")
    paths = sorted(str(p) for p in (tmp_path / "BAS").glob("*.png"))
    groups = dict(zip((Path(p).name for p in paths), group_sheet_runs(paths), strict=True))
    copies = {groups[f"BAS_thumb_r0c{i}.png"] for i in (1, 2, 3, 4)}
    assert len(copies) == 1
    assert len({groups["BAS_thumb_r0c0.png"], *copies, groups["BAS_thumb_r0c5.png"]}) == 3


def test_lmu_manifest_keeps_copies_in_one_split_and_aml_val_as_test(tmp_path):
    aml = tmp_path / "aml"
    for split in ("train", "val"):
        _folders(aml / split, {"MYO": "blast", "NGS": "neutrophil"})
    thumbs = tmp_path / "thumbs"
    _sheet(thumbs / "BAS")
    _sheet(thumbs / "MYO")  # left out: may repeat aml-lmu cells
    rows = lmu_differential_rows(aml, thumbs)
    assert not [r for r in rows if "thumbs" in r["path"] and "/MYO/" in r["path"]]
    assert {r["split"] for r in rows if "/aml/val/" in r["path"]} == {"test"}
    by_group: dict[str, set[str]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())
    assert len([g for g in by_group if g.startswith("thumbs/BAS")]) == 3


def test_per_type_figures_and_the_threshold_on_p_blast():
    classes = ("blast", "neutrophil", "lymphocyte")
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.7, 0.1, 0.2],
            [0.5, 0.1, 0.4],
            [0.2, 0.1, 0.7],  # a blast called lymphocyte, p_blast below the threshold: missed
            [0.1, 0.8, 0.1],
            [0.1, 0.8, 0.1],
            [0.6, 0.3, 0.1],  # a neutrophil over the threshold: a false blast
            [0.1, 0.1, 0.8],
            [0.3, 0.1, 0.6],
            [0.45, 0.1, 0.45],  # a lymphocyte at p_blast 0.45: above 0.4, a false blast
        ]
    )
    m = differential_metrics(y, probs, classes, [0], threshold=0.4)
    per = m["differential"]["per_type"]
    assert per["blast"]["called_blast"]["k"] == 3 and m["sensitivity"] == pytest.approx(0.75)
    assert per["neutrophil"]["specificity"]["k"] == 2 and per["lymphocyte"]["specificity"]["k"] == 2
    assert per["blast"]["recall"]["k"] == 3 and per["lymphocyte"]["recall"]["k"] == 2
    lo, hi = per["neutrophil"]["specificity"]["ci95"]
    assert lo < 2 / 3 < hi
    assert m["differential"]["confusion"][0] == [3, 0, 1]
    assert m["differential"]["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    shares = unclassified_shares(y, probs, [0], 0.4, min_confidence=0.75)
    # unclassified: not a suspected blast and top type below 0.75: rows 3 and 8
    assert shares["overall"]["k"] == 2 and shares["blast"]["k"] == 1 and shares["lymphocyte"]["k"] == 1


def test_a_softmax_contract_sums_blast_types_and_abstains_only_on_non_blasts():
    c = InputContract(
        class_names=("blast", "promyelocyte", "lymphocyte"),
        positive_class="blast",
        output="softmax",
        blast_classes=("blast", "promyelocyte"),
        threshold=0.5,
        min_confidence=0.6,
    )
    probs = c.probabilities(np.array([[0.3, 0.3, 0.4], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]]))
    assert c.p_blast(probs).tolist() == pytest.approx([0.6, 0.2, 0.4])
    assert c.cell_type(probs[0]) == "lymphocyte"
    assert not c.abstains(probs[0], 0.6, 0.5)  # a suspected blast is always reported
    assert not c.abstains(probs[1], 0.2, 0.5) and c.abstains(probs[2] * [1, 1, 0.9], 0.4, 0.5)
    again = InputContract.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    with pytest.raises(ValueError, match="not among class_names"):
        InputContract.from_dict({**c.to_dict(), "blast_classes": ["myeloblast"]})
    with pytest.raises(ValueError, match="must be two names"):
        InputContract.from_dict({**c.to_dict(), "output": "sigmoid", "blast_classes": []})


@pytest.mark.tf
def test_a_short_differential_run_learns_synthetic_cell_types(tmp_path):
    from leukoedge.synth.writers import write_cell_dataset

    data = tmp_path / "data"
    kinds = ("blast", "neutrophil", "lymphocyte", "monocyte")
    write_cell_dataset(data, 40, seed=0, size=96, layout="tcia", kinds=kinds)
    out = tmp_path / "run"
    args = ["train", "--task", "differential", "--data", str(data), "--out", str(out), "--epochs", "10"]
    args += ["--learning-rate", "0.003"]
    result = CliRunner().invoke(cli, [*args, "--cache-dir", str(tmp_path / "cache"), "--patience", "0"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = json.loads((out / "run.json").read_text())
    contract = InputContract.from_dict(run["input_contract"])
    assert contract.differential and contract.suspect_classes == ("blast",)
    assert contract.class_names == DIFFERENTIAL_CLASSES and 0 < contract.min_confidence < 1
    test = json.loads((out / "metrics.json").read_text())["test"]
    per = test["differential"]["per_type"]
    assert sum(per[k]["n"] for k in kinds) == test["n"] and per["erythroblast"]["n"] == 0
    assert test["differential"]["balanced_accuracy"] > 0.5  # four types: chance is 0.25
    assert "balanced accuracy of the differential" in result.output
    robust = json.loads((out / "metrics.json").read_text())["robustness"]
    assert (
        set(robust["families"]) == {"stain", "blur", "scale", "jpeg"} and (out / "robustness.png").is_file()
    )
    unperturbed = next(r for r in robust["families"]["blur"] if r["strength"] == 0.0)
    assert unperturbed["sensitivity"] == pytest.approx(test["sensitivity"])
    assert "Robustness (perturbed test images)" in (out / "report.md").read_text()
    splits = make_splits(load_dataset(data, task="differential"), seed=0)
    assert sum(len(v) for v in splits.values()) == 160
    # a set of one type only (as a left-out type, or another microscope's normal cells)
    lymphs = _folders(tmp_path / "lymphs", {"lymphocytes": "lymphocyte"})
    result = CliRunner().invoke(
        cli, ["evaluate", "--model", str(out), "--data", str(lymphs), "--out", str(tmp_path / "ev")]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert ev["kind"] == "differential" and ev["metrics"]["overall"]["n"] == 3
    rates = ev["metrics"]["by_source_class"]["lymphocytes"]
    assert rates["type"] == "lymphocyte" and sum(rates["types_given"].values()) == 3
    assert 0 <= rates["called_blast"]["k"] <= 3 and "called blast" in result.output


def test_the_differential_threshold_weighs_every_normal_type_alike():
    from leukoedge.train.differential import type_balanced_youden

    # 100 easy neutrophils far below, 5 hard immature granulocytes between the blasts' scores
    y = np.array([0] * 10 + [1] * 100 + [7] * 5)
    blasts = [0.3, *np.linspace(0.5, 0.9, 9)]
    p = np.concatenate([blasts, np.full(100, 0.01), [0.35, 0.38, 0.4, 0.42, 0.45]])
    t = type_balanced_youden(y, p, [0])
    # per-cell Youden sits under the lowest blast (0.3: J = 1 + 100/105 - 1) and calls every
    # granulocyte a blast; weighing the granulocytes as much as the neutrophils moves it above them
    assert t["validation_score_edge"] == 0.5 and t["value"] == pytest.approx(0.475)
    assert t["val_specificity"] == 1.0 and t["val_sensitivity"] == pytest.approx(0.9)
