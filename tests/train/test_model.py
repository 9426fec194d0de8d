"""LeukoNet's shape and parameter count, and the training-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from leukoedge.contract import INPUT_SIZE

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def leukonet():
    from leukoedge.train.model import build_leukonet

    return build_leukonet(seed=0)


def test_leukonet_shape_and_exact_parameter_count(leukonet):
    from leukoedge.train.model import LEUKONET_PARAMS

    assert LEUKONET_PARAMS == 683_329
    assert leukonet.count_params() == 683_329
    assert tuple(leukonet.input_shape) == (None, INPUT_SIZE, INPUT_SIZE, 3)
    assert tuple(leukonet.output_shape) == (None, 1)
    assert leukonet.layers[-1].get_config()["activation"] == "sigmoid"


def test_leukonet_rescales_raw_pixels_inside_the_model(leukonet):
    import keras

    rescaling = [layer for layer in leukonet.layers if isinstance(layer, keras.layers.Rescaling)]
    assert len(rescaling) == 1
    assert rescaling[0].get_config()["scale"] == pytest.approx(1 / 255)
    # Raw 0-255 pixels go straight in and give a probability.
    x = np.full((2, INPUT_SIZE, INPUT_SIZE, 3), 200, np.float32)
    p = np.asarray(leukonet(x, training=False))
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))


def test_unknown_architecture_is_refused():
    from leukoedge.train.model import build_leukonet

    with pytest.raises(ValueError, match="unknown architecture"):
        build_leukonet(architecture="resnet")


def _batch(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    return x, np.arange(n) % 2


def _first_epoch(ds) -> np.ndarray:
    return np.concatenate([b[0].numpy() for b in ds])


def test_augmentation_keeps_shape_range_and_whole_pixel_values():
    from leukoedge.train.augment import AugmentConfig, make_dataset

    x, y = _batch()
    out = _first_epoch(make_dataset(x, y, batch_size=4, augment=AugmentConfig(), seed=3))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    assert np.array_equal(out, np.round(out))
    assert not np.array_equal(out, x.astype(np.float32))  # something changed


def test_augmentation_is_reproducible_and_redrawn_each_epoch():
    from leukoedge.train.augment import AugmentConfig, make_dataset

    x, y = _batch()
    ds_a = make_dataset(x, y, batch_size=6, augment=AugmentConfig(), seed=5)
    ds_b = make_dataset(x, y, batch_size=6, augment=AugmentConfig(), seed=5)
    first_a, second_a = _first_epoch(ds_a), _first_epoch(ds_a)
    assert np.array_equal(first_a, _first_epoch(ds_b))
    assert not np.array_equal(first_a, second_a)


def test_geometric_augmentation_only_permutes_pixels():
    from leukoedge.train.augment import AugmentConfig, make_dataset

    x, y = _batch(4)
    geometric = AugmentConfig(brightness=0, contrast=0, hue=0, saturation=0)
    out = _first_epoch(make_dataset(x, y, batch_size=4, augment=geometric, seed=1))
    for a, b in zip(out, x, strict=True):  # flips and 90-degree turns move pixels, never change them
        assert np.array_equal(
            np.sort(a.reshape(-1, 3), axis=0), np.sort(b.reshape(-1, 3).astype(np.float32), axis=0)
        )


def test_no_augment_passes_images_through_in_order():
    from leukoedge.train.augment import AugmentConfig, make_dataset

    x, y = _batch()
    ds = make_dataset(x, y, batch_size=4, augment=AugmentConfig(enabled=False))
    assert np.array_equal(_first_epoch(ds), x.astype(np.float32))
    labels = np.concatenate([b[1].numpy() for b in ds]).reshape(-1)
    assert np.array_equal(labels, y)


def test_balanced_class_weight_equalises_class_totals():
    from leukoedge.train.augment import balanced_class_weight

    y = np.array([0] * 30 + [1] * 10)
    w = balanced_class_weight(y)
    assert w[0] * 30 == pytest.approx(w[1] * 10) == pytest.approx(20)
