"""The DeepSiM discriminator: is this image real, given the features it was made from?

The discriminator of Dosovitskiy & Brox, NIPS 2016 (see `keras_invert.losses`),
as recalled from its supplementary material, scaled by `width`: five
convolutions on the image
(32 7x7 stride 4, 64 5x5, 128 3x3 stride 2, 256 3x3, 256 3x3 stride 2),
global average pooling; two fully connected layers (1024, 512) on the
generator's input features (the discriminator is conditioned on what is
being inverted); the two joined and passed through a fully connected layer
of 512 and a single logit (choice: one logit instead of a two-way softmax,
leaky ReLU 0.2 as in the decoders, no dropout). For a `Reconstructor` the
conditioning features are its encoder's output. The paper also paused the
discriminator while it was far ahead of the generator: `losses.PerceptualModel`
does (`pause_ratio`).

Example:
    >>> from keras_invert.discriminator import build_discriminator
    >>> discriminator = build_discriminator((128, 128, 3), (16, 16, 31), width=0.25)
"""

from __future__ import annotations

import keras
from keras import layers

from keras_invert.config import check_width
from keras_invert.decoders import scaled_units

# (name, filters, kernel, stride): the paper's discriminator image path.
_DISCRIMINATOR_CONVS = (
    ("convD1", 32, 7, 4),
    ("convD2", 64, 5, 1),
    ("convD3", 128, 3, 2),
    ("convD4", 256, 3, 1),
    ("convD5", 256, 3, 2),
)
_DISCRIMINATOR_FEATURE_UNITS = (("fcF1", 1024), ("fcF2", 512))
_DISCRIMINATOR_JOINT_UNITS = 512


def build_discriminator(
    image_shape,
    condition_shape,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    name: str = "discriminator",
) -> keras.Model:
    """The DeepSiM discriminator: `(images in [0, 1], features) -> one logit per image`.

    Args:
        image_shape: `(T, T, 3)`, the generator's output shape.
        condition_shape: shape of the generator's input features (no batch axis).
        width: multiplies every channel count and fully connected width.
        negative_slope: leaky ReLU slope.
        name: model name.

    Example:
        >>> discriminator = build_discriminator((128, 128, 3), (16, 16, 31), width=0.25)
        >>> discriminator.output_shape
        (None, 1)
    """
    check_width(width)
    images = keras.Input(shape=tuple(image_shape), name="images")
    condition = keras.Input(shape=tuple(condition_shape), name="condition")
    x = layers.Rescaling(2.0, offset=-1.0, name="centre")(images)
    for layer_name, filters, kernel, stride in _DISCRIMINATOR_CONVS:
        x = layers.Conv2D(
            scaled_units(filters, width), kernel, strides=stride, padding="same", name=layer_name
        )(x)
        x = layers.LeakyReLU(negative_slope, name=f"{layer_name}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="poolD")(x)
    y = layers.Flatten(name="flatten_condition")(condition)
    for layer_name, units in _DISCRIMINATOR_FEATURE_UNITS:
        y = layers.Dense(scaled_units(units, width), name=layer_name)(y)
        y = layers.LeakyReLU(negative_slope, name=f"{layer_name}_relu")(y)
    joint = layers.Concatenate(name="join")([x, y])
    joint = layers.Dense(scaled_units(_DISCRIMINATOR_JOINT_UNITS, width), name="fcJ1")(joint)
    joint = layers.LeakyReLU(negative_slope, name="fcJ1_relu")(joint)
    logits = layers.Dense(1, name="fcJ2", dtype="float32")(joint)
    return keras.Model([images, condition], logits, name=name)
