"""The robustness suite: perturbations that behave as named, scored at a fixed threshold."""

from __future__ import annotations

import numpy as np
import pytest

from leukoedge.train.robustness import FAMILIES, perturb, robustness


def _disc(radius: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.full((size, size, 3), 230, np.uint8)
    img[(yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= radius**2] = (120, 60, 160)
    return img


def _area(img: np.ndarray) -> int:
    return int((img[..., 1] < 145).sum())


def test_perturbations_do_what_they_say():
    x = np.stack([_disc(10), _disc(14)])
    for family, strengths in FAMILIES.items():
        assert perturb(x, family, strengths[0]) is x
        for s in strengths[1:]:
            out = perturb(x, family, s)
            assert out.shape == x.shape and out.dtype == np.uint8 and not np.array_equal(out, x)
    assert (
        _area(perturb(x, "scale", 1.2)[0]) > 1.3 * _area(x[0]) > 1.3**2 * _area(perturb(x, "scale", 0.8)[0])
    )
    redder = perturb(x, "stain", 0.2)[0, 32, 32].astype(int)
    assert redder[0] < 120 and redder[2] > 160  # more red optical density, less blue
    blurred = perturb(x, "blur", 2.0)[0]
    assert 0 < blurred[32, 32 - 10, 1] - 60 < 230 - 60  # the disc's edge is smeared


def test_a_size_based_score_loses_sensitivity_when_cells_shrink():
    x = np.stack([_disc(14)] * 4 + [_disc(8)] * 4)  # four "blasts" (large), four small normal cells
    y = np.array([0] * 4 + [1] * 4)

    def p_blast(v: np.ndarray) -> np.ndarray:
        return np.array([_area(img) / 800.0 for img in v])

    result = robustness(p_blast, x, y, [0], threshold=0.5, families={"scale": (1.0, 0.7, 1.4)})
    rows = {r["strength"]: r for r in result["families"]["scale"]}
    assert rows[1.0]["sensitivity"] == 1.0 and rows[1.0]["specificity"] == 1.0
    assert rows[0.7]["sensitivity"] == 0.0  # shrunk blasts fall below the threshold
    assert rows[1.4]["specificity"] == pytest.approx(0.0)  # enlarged normal cells pass it
