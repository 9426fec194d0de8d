"""A small trained run on synthetic cells, for the quantization tests.

``make_cell_folder`` draws two easily told-apart kinds of "cell" (a large dark round nucleus for
the malignant class, a few small lobes in pale cytoplasm for the other) as JPEGs in
``train/`` and ``val/`` class folders, the aml-lmu layout. ``make_run`` trains LeukoNet on them
for a few epochs and writes a run folder the way ``leukoedge train`` does: ``model.keras``, the
split manifest, ``run.json`` and ``metrics.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from leukoedge.contract import CropGeometry, InputContract

SIDE = 80


def _cell(rng: np.random.Generator, malignant: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    c = SIDE / 2 + rng.uniform(-3, 3, 2)
    img = np.empty((SIDE, SIDE, 3), np.float32)
    img[:] = (225, 185, 190) + rng.normal(0, 6, 3)
    cyto = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < (rng.uniform(20, 25)) ** 2
    img[cyto] = (205, 175, 215)
    if malignant:
        nucleus = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 < (rng.uniform(15, 19)) ** 2
        img[nucleus] = (95, 55, 140)
    else:
        for angle in rng.uniform(0, 2 * np.pi, 3):
            lx, ly = c[0] + 9 * np.cos(angle), c[1] + 9 * np.sin(angle)
            img[(xx - lx) ** 2 + (yy - ly) ** 2 < rng.uniform(4, 6) ** 2] = (110, 60, 150)
    img += rng.normal(0, 8, img.shape)
    img[0, 0] = 255  # a bright speck, as slides have
    img[0, 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def make_cell_folder(root: Path, n_train: int = 70, n_val: int = 30, seed: int = 0) -> Path:
    """``root/{train,val}/{malignant,non_malignant}/*.jpg``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for label in ("malignant", "non_malignant"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_cell(rng, label == "malignant")).save(
                    folder / f"{label}_{i:03d}.jpg", quality=95
                )
    return root


def make_run(data: Path, run_dir: Path, epochs: int = 4, threshold: float = 0.5) -> Path:
    """Train LeukoNet briefly on ``data`` and write a run folder; returns ``run_dir``.

    Seeded as a whole (weights and shuffling), so the run does not depend on which tests ran before;
    trained long enough that few held-out scores sit at the threshold, where one int8 step flips a label.
    """
    import keras

    from leukoedge.train.datasets import load_dataset
    from leukoedge.train.model import build_leukonet
    from leukoedge.train.splits import make_splits, write_split_manifest
    from leukoedge.vision.images import load_cell

    dataset = load_dataset(data)
    splits = make_splits(dataset, seed=0)
    run_dir.mkdir(parents=True, exist_ok=True)
    x = np.stack([load_cell(r.path) for r in splits["train"]]).astype(np.float32)
    y = np.array([r.y for r in splits["train"]], np.float32)
    keras.utils.set_random_seed(0)
    model = build_leukonet(seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    model.save(run_dir / "model.keras")
    write_split_manifest(run_dir / "splits.json", splits, extra={"data": dataset.summary()})
    contract = InputContract(threshold=threshold, crop=CropGeometry(cell_fraction=0.5, measured_on=10))
    run = {
        "command": f"leukoedge train --data {data} --out {run_dir}",
        "data": dataset.summary(),
        "input_contract": contract.to_dict(),
        "operating_threshold": {"rule": "youden", "value": threshold},
    }
    metrics = {"thresholds": {"youden": {"value": threshold}, "sensitivity": {"value": 0.3, "target": 0.95}}}
    (run_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


#: The cell types of the small differential run: a blast class and two normal types.
DIFF_CLASSES = ("blast", "neutrophil", "lymphocyte")


def _typed_cell(rng: np.random.Generator, cell_type: str) -> np.ndarray:
    """A blast (large round nucleus), a neutrophil (small lobes) or a lymphocyte (small dense nucleus,
    thin rim of pale blue cytoplasm)."""
    if cell_type != "lymphocyte":
        return _cell(rng, cell_type == "blast")
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    c = SIDE / 2 + rng.uniform(-3, 3, 2)
    img = np.empty((SIDE, SIDE, 3), np.float32)
    img[:] = (225, 185, 190) + rng.normal(0, 6, 3)
    r2 = (xx - c[0]) ** 2 + (yy - c[1]) ** 2
    img[r2 < rng.uniform(12, 14) ** 2] = (150, 190, 230)
    img[r2 < rng.uniform(9, 11) ** 2] = (40, 30, 90)
    img += rng.normal(0, 8, img.shape)
    img[0, 0] = 255
    img[0, 1] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def make_differential_run(
    root: Path, run_dir: Path, n_per_class: int = 60, epochs: int = 4, classes: tuple[str, ...] = DIFF_CLASSES
) -> Path:
    """A small softmax LeukoNet over ``classes`` (blast first), trained briefly, as a run folder.

    Lymphocytes carry thumbnail-sheet groups (``thumbs/...``), as the LMU differential manifest
    gives them. metrics.json holds the per-type figures training writes, on val and test.
    """
    import keras

    from leukoedge.train.differential import differential_metrics
    from leukoedge.train.model import build_leukonet
    from leukoedge.train.records import Record
    from leukoedge.train.splits import make_splits, write_split_manifest
    from leukoedge.vision.images import load_cell

    rng = np.random.default_rng(1)
    records = []
    for cell_type in classes:
        folder = root / cell_type
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            path = folder / f"{cell_type}_{i:03d}.png"
            Image.fromarray(_typed_cell(rng, cell_type)).save(path)
            group = f"thumbs/{cell_type}-{i}" if cell_type == "lymphocyte" else None
            records.append(Record(str(path), cell_type, group, cell_type.upper()[:3]))
    splits = make_splits(records, seed=0)
    run_dir.mkdir(parents=True, exist_ok=True)

    def xy(name: str) -> tuple[np.ndarray, np.ndarray]:
        recs = splits[name]
        x = np.stack([load_cell(r.path) for r in recs]).astype(np.float32)
        return x, np.array([classes.index(r.label) for r in recs], np.int64)

    x, y = xy("train")
    keras.utils.set_random_seed(0)
    model = build_leukonet(seed=0, n_classes=len(classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    model.save(run_dir / "model.keras")
    write_split_manifest(run_dir / "splits.json", splits, extra={"data": {"root": str(root)}})
    threshold = 0.5
    contract = InputContract(
        class_names=classes,
        positive_class="blast",
        output="softmax",
        blast_classes=("blast",),
        threshold=threshold,
        crop=CropGeometry(cell_fraction=0.5, measured_on=10),
    )
    metrics = {"task": "differential", "operating_threshold": {"rule": "youden", "value": threshold}}
    metrics["thresholds"] = {"youden": {"value": threshold}}
    for name in ("val", "test"):
        xs, ys = xy(name)
        probs = model.predict(xs, verbose=0)
        metrics[name] = differential_metrics(ys, probs, classes, (0,), threshold)
    run = {
        "command": f"leukoedge train --task differential --out {run_dir}",
        "data": {"root": str(root), "class_counts": {c: n_per_class for c in classes}},
        "input_contract": contract.to_dict(),
        "operating_threshold": {"rule": "youden", "value": threshold},
    }
    (run_dir / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir
