"""Training-time augmentation and the tf.data input pipeline.

Augmentation runs as TensorFlow ops in the dataset's ``map``, never as layers inside the model, so
the exported model is exactly LeukoNet and the edge sees no augmentation code. Every random op is a
stateless op seeded from a seeded stream, so a run with the same seed sees the same augmented images
(a fresh draw each epoch).

What it varies, and why:

- flips and 90-degree rotations: a cell on a smear has no preferred orientation;
- brightness, contrast, hue and saturation: May-Gruenwald-Giemsa staining, lamp and camera white
  balance differ between labs and days, and the model should not key on one lab's colour.

The ``robust`` preset (the differential model's default) adds what differs between microscopes:

- stain strength in optical-density space: each channel's optical density -log(I / I0) scaled and
  shifted, as a thicker or thinner stain, or another stain batch, changes it;
- blur (a Gaussian of random width: focus, a cheaper objective), sensor noise, JPEG compression;
- scale: zoom in or out by up to ``scale`` (other magnifications and camera pixels; the red-cell
  ruler measures px/µm within about 10 %), the border filled by reflection.

Stronger settings (stain 0.25, blur 1.0, noise 0.03, JPEG 60, scale 0.15) with a BatchNorm LeukoNet
left the differential underfitted (train accuracy 0.37 after 30 epochs against 0.72 without them).

Images stay in the model's input range: raw 0-255 RGB (floats, rounded to whole pixel values, as
a camera delivers them). Hue and saturation are jittered on a [0, 1] copy and scaled back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths. ``enabled=False`` passes images through unchanged."""

    enabled: bool = True
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.08  # max additive change on the [0, 1] scale
    contrast: float = 0.15  # contrast factor in [1 - c, 1 + c]
    hue: float = 0.03  # max hue shift, fraction of the colour wheel
    saturation: float = 0.15  # saturation factor in [1 - s, 1 + s]
    stain_od: float = 0.0  # optical density scaled by [1 - s, 1 + s] per channel, shifted by +-s/4
    blur: float = 0.0  # max Gaussian sigma, pixels of the model input
    noise: float = 0.0  # max noise sigma on the [0, 1] scale
    jpeg_min_quality: int = 0  # 0: no JPEG; else quality drawn from [this, 95]
    scale: float = 0.0  # zoom factor in [1 - s, 1 + s]

    @classmethod
    def robust(cls) -> AugmentConfig:
        """The preset for models that must hold on microscopes they never saw."""
        return cls(
            brightness=0.1,
            contrast=0.2,
            hue=0.04,
            saturation=0.2,
            stain_od=0.15,
            blur=0.6,
            noise=0.02,
            jpeg_min_quality=70,
            scale=0.1,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def augment_image(image: Any, seed: Any, config: AugmentConfig) -> Any:
    """Augment one H x W x 3 image (uint8 or 0-255 float) with a stateless ``seed`` of shape [2].

    Returns a float32 0-255 image of the same shape.
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=13)
    x = tf.cast(image, tf.float32) / 255.0
    if config.scale > 0:
        x = _zoom(x, tf.random.stateless_uniform([], seeds[7], 1 - config.scale, 1 + config.scale))
    if config.stain_od > 0:
        x = _stain(x, seeds[8], config.stain_od)
    if config.flips:
        x = tf.image.stateless_random_flip_left_right(x, seeds[0])
        x = tf.image.stateless_random_flip_up_down(x, seeds[1])
    if config.rot90:
        k = tf.random.stateless_uniform([], seeds[2], minval=0, maxval=4, dtype=tf.int32)
        x = tf.image.rot90(x, k)
    if config.brightness > 0:
        x = tf.image.stateless_random_brightness(x, config.brightness, seeds[3])
    if config.contrast > 0:
        x = tf.image.stateless_random_contrast(x, 1 - config.contrast, 1 + config.contrast, seeds[4])
    x = tf.clip_by_value(x, 0.0, 1.0)
    if config.hue > 0:
        x = tf.image.stateless_random_hue(x, config.hue, seeds[5])
    if config.saturation > 0:
        x = tf.image.stateless_random_saturation(x, 1 - config.saturation, 1 + config.saturation, seeds[6])
    if config.blur > 0:
        x = _blur(x, tf.random.stateless_uniform([], seeds[9], 0.0, config.blur))
    if config.noise > 0:
        sigma = tf.random.stateless_uniform([], seeds[10], 0.0, config.noise)
        x = x + sigma * tf.random.stateless_normal(tf.shape(x), seeds[11])
    x = tf.clip_by_value(x, 0.0, 1.0)
    if config.jpeg_min_quality > 0:
        x = tf.image.stateless_random_jpeg_quality(x, config.jpeg_min_quality, 95, seeds[12])
    return tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def _zoom(x: Any, factor: Any) -> Any:
    """Zoom a square [0, 1] image about its centre; the border beyond the image is reflected."""
    import tensorflow as tf

    size = tf.shape(x)[0]
    pad = size // 4
    padded = tf.pad(x, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    full = tf.cast(size + 2 * pad, tf.float32)
    half = tf.cast(size, tf.float32) / (2.0 * factor * full)
    box = tf.stack([0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half])[None]
    return tf.image.crop_and_resize(padded[None], box, [0], tf.stack([size, size]))[0]


def _stain(x: Any, seed: Any, strength: float) -> Any:
    """Scale and shift each channel's optical density (a stronger, weaker or differently tinted stain)."""
    import tensorflow as tf

    a, b = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    scale = tf.random.stateless_uniform([3], a, 1 - strength, 1 + strength)
    shift = tf.random.stateless_uniform([3], b, -strength / 4, strength / 4)
    od = -tf.math.log(tf.clip_by_value(x, 1.0 / 255.0, 1.0))
    return tf.exp(-(od * scale + shift))


def _blur(x: Any, sigma: Any) -> Any:
    """Gaussian blur of width ``sigma`` pixels (5 x 5 kernel, separable, reflected border)."""
    import tensorflow as tf

    r = tf.range(-2.0, 3.0)
    k = tf.exp(-(r**2) / (2.0 * tf.maximum(sigma, 1e-3) ** 2))
    k = k / tf.reduce_sum(k)
    img = tf.pad(x, [[2, 2], [2, 2], [0, 0]], mode="REFLECT")[None]
    kx = tf.tile(tf.reshape(k, [1, 5, 1, 1]), [1, 1, 3, 1])
    ky = tf.tile(tf.reshape(k, [5, 1, 1, 1]), [1, 1, 3, 1])
    img = tf.nn.depthwise_conv2d(img, kx, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(img, ky, [1, 1, 1, 1], "VALID")[0]


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 32,
    *,
    augment: AugmentConfig | None = None,
    shuffle: bool = False,
    seed: int = 0,
    balanced: bool = False,
) -> Any:
    """A batched ``tf.data.Dataset`` of (float32 0-255 images, float32 labels).

    ``x`` is the N x 64 x 64 x 3 uint8 array in memory (small enough: 1,600 crops are 20 MB).
    With ``shuffle``, the order is reshuffled every epoch from ``seed``; with ``augment``, every
    epoch draws new augmentation parameters from a stream seeded by ``seed``. Labels are a vector
    of 0/1 targets (binary) or an N x classes one-hot matrix (differential). With ``balanced``
    (one-hot labels), each epoch is ``len(x)`` images drawn with equal probability from every
    class present, each class's images reshuffled and repeated: small classes are seen as often as
    large ones without class weights, and an epoch costs what an epoch of the data costs.
    """
    import tensorflow as tf

    if len(x) != len(y):
        raise ValueError(f"images ({len(x)}) and labels ({len(y)}) differ in length")
    labels = np.asarray(y, dtype=np.float32)
    labels = labels if labels.ndim == 2 else labels.reshape(-1, 1)
    if balanced:
        idx = labels.argmax(axis=1)
        parts = [
            tf.data.Dataset.from_tensor_slices((x[idx == k], labels[idx == k]))
            .shuffle(int((idx == k).sum()), seed=seed + k, reshuffle_each_iteration=True)
            .repeat()
            for k in sorted(set(idx.tolist()))
        ]
        ds = tf.data.Dataset.sample_from_datasets(parts, seed=seed, rerandomize_each_iteration=True).take(
            len(x)
        )
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, labels))
    if shuffle and not balanced:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment is not None and augment.enabled:
        noise = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, noise))

        def _map(element: tuple[Any, ...], pair: Any) -> tuple[Any, ...]:
            return (augment_image(element[0], pair, augment), *element[1:])

        ds = ds.map(_map, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(lambda *e: (tf.cast(e[0], tf.float32), *e[1:]), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    """Keras ``class_weight`` giving both classes equal total weight: n / (2 * n_class)."""
    y = np.asarray(y).astype(np.int64).reshape(-1)
    n = len(y)
    counts = np.bincount(y, minlength=2)
    return {c: (float(n) / (2.0 * counts[c]) if counts[c] else 0.0) for c in (0, 1)}
