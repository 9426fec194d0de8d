"""The synthetic microscope looks enough like real cells that the real-data model agrees with it."""

from __future__ import annotations

import numpy as np
import pytest

from leukoedge.inference.bundle import load_bundle
from leukoedge.inference.classifier import CellClassifier
from leukoedge.synth import render_cell
from leukoedge.vision.images import to_model_input


@pytest.fixture(scope="module")
def classifier() -> CellClassifier:
    return CellClassifier(load_bundle(None))


@pytest.mark.parametrize(
    ("kind", "suspected", "least"),
    [("blast", True, 27), ("neutrophil", False, 29), ("lymphocyte", False, 29)],
)
def test_bundled_model_decides_synthetic_cells(
    classifier: CellClassifier, kind: str, suspected: bool, least: int
) -> None:
    # measured on seeds 1000-1099 with the differential bundle: blasts 96/100 suspected (typed blast
    # 80), neutrophils 0/100 (typed neutrophil 100), lymphocytes 0/100, monocytes 3/100
    cells = np.stack([to_model_input(render_cell(kind, seed=2000 + i)[0]) for i in range(30)])
    results = classifier.classify(cells)
    decisions = [r.suspected_blast for r in results]
    assert decisions.count(suspected) >= least, [(r.label, round(r.p_blast, 3)) for r in results]
    if kind in ("blast", "neutrophil"):
        assert [r.label for r in results].count(kind) >= 20
