"""LeukoNet: the small CNN that scores a 64x64 RGB cell crop for AML blast morphology.

The default architecture is kept exactly as designed (683,329 parameters). A Rescaling layer
inside the model takes raw 0-255 RGB pixels, so the int8 model's uint8 input takes camera pixels
with no float preprocessing on the device.
"""

from __future__ import annotations

from typing import Any

from leukoedge.contract import INPUT_CHANNELS, INPUT_SIZE

#: Parameter count of the default architecture; tests and the quantizer check it.
LEUKONET_PARAMS = 683_329
#: Architectures ``build_model`` knows; "leukonet" is the default and the one the edge expects.
ARCHITECTURES = ("leukonet", "leukonet_bn", "leukonet_gap")


def build_leukonet(
    input_size: int = INPUT_SIZE,
    architecture: str = "leukonet",
    l2: float = 0.0,
    dropout: float = 0.5,
    seed: int | None = None,
    n_classes: int = 1,
) -> Any:
    """Build (not compile) LeukoNet as a Keras functional model taking raw uint8-range RGB.

    ``leukonet``: Conv(32)-Pool-Conv(64)-Pool-Conv(128)-Pool-Flatten-Dense(128)-Dropout-Dense(1).
    ``leukonet_bn`` adds BatchNorm after each convolution; ``leukonet_gap`` replaces Flatten by
    global average pooling (far fewer parameters). ``l2`` adds weight decay to every kernel.
    ``n_classes`` 1 gives the binary sigmoid output (p_malignant); more give a softmax over the
    differential's cell types (``probabilities``).
    """
    import keras
    from keras import layers

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    reg = keras.regularizers.L2(l2) if l2 > 0 else None
    inputs = keras.Input(shape=(input_size, input_size, INPUT_CHANNELS), name="rgb_pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((32, 64, 128), start=1):
        x = layers.Conv2D(filters, 3, activation=None, kernel_regularizer=reg, name=f"conv{i}")(x)
        if architecture == "leukonet_bn":
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.Activation("relu", name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    if architecture == "leukonet_gap":
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", kernel_regularizer=reg, name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    if n_classes > 1:
        outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    else:
        outputs = layers.Dense(1, activation="sigmoid", name="p_malignant")(x)
    return keras.Model(inputs, outputs, name=architecture)
