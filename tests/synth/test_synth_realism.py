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
    ("kind", "expected"),
    [("blast", "malignant"), ("neutrophil", "non_malignant"), ("lymphocyte", "non_malignant")],
)
def test_bundled_model_labels_synthetic_cells(classifier: CellClassifier, kind: str, expected: str) -> None:
    # measured on seeds 1000-1099: blasts 100/100 malignant, neutrophils and lymphocytes 100/100 not
    cells = np.stack([to_model_input(render_cell(kind, seed=2000 + i)[0]) for i in range(30)])
    labels = [r.label for r in classifier.classify(cells)]
    assert labels.count(expected) >= 29, labels
