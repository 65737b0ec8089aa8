"""Decoder networks of the paper's Tables 2-6 and the generic rule (docs/reference.md, Decoders).

Each table is written down once as data (`LayerSpec` rows, in the table's order
and with its layer names) and built by one generic function into a Keras
functional model, so that `model.summary()` reads like the table. Every conv,
up-conv and fully connected layer is followed by a leaky ReLU (slope 0.2 by
default, our choice) except the last one, which is linear.

Two options let the same code train small models on a CPU and the paper's
models on a GPU:
- `width`: multiplies every channel count (and fully connected width) except
  the 3 output channels; 1.0 is the paper's network;
- `image_size`: the input image size the features were computed from. The
  shallow-feature decoders are fully convolutional, so their input and output
  sizes follow the image size (Table 2 is drawn for 256x256 images); the
  AlexNet decoders have the fixed sizes of their layer.

A third, `feature_scale`, divides the features by their typical size before
the first layer (a `Rescaling` layer named "feature_scale", no weights), for
representations whose features are far from unit size (EfficientNet-Lite0's
taps; docs/reference.md, Generic decoder rule). The paper's tables keep 1.0,
which adds no layer. A fourth, `mean_colour`, ends the network with a
`MeanColour` layer (one learnt mean colour for every output image), for
features that cannot tell an image's mean colour (HOG, SIFT, LBP; the
registry's default for them, off in the tables).

Targets are the input image resized to the decoder's output size (paper).

Decoders never know the representations they invert: the registry
(`keras_invert.registry.build_decoder("hog", ...)`) pairs each with its table.

Example:
    >>> from keras_invert.decoders import hog_decoder
    >>> hog_decoder(128, width=0.5).output_shape
    (None, 128, 128, 3)
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras
from keras import layers

from keras_invert.config import check_width


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One row of a decoder table.

    Args:
        name: layer name as in the table (`convA1`, `upconvJ4`, `fc1`, ...).
        kind: "conv", "upconv" (transposed conv), "dense", "reshape" or "concat".
        filters: output channels (units for "dense"; channels for "reshape").
        kernel_size: kernel size K.
        strides: stride S.
        inputs: names of the input rows; empty means the previous row, and
            "input" the decoder's input.
    """

    name: str
    kind: str
    filters: int = 0
    kernel_size: int = 0
    strides: int = 1
    inputs: tuple[str, ...] = ()


def _conv(name, filters, kernel_size, strides=1, inputs=()):
    return LayerSpec(name, "conv", filters, kernel_size, strides, inputs)


def _upconv(name, filters, kernel_size, inputs=()):
    return LayerSpec(name, "upconv", filters, kernel_size, 2, inputs)


# Supplementary Table 2: HOG (two streams; A compresses, B keeps detail; J joins).
HOG_TABLE = (
    _conv("convA1", 256, 5, 2, ("input",)),
    _conv("convA2", 512, 5, 2),
    _conv("convA3", 1024, 3, 2),
    _upconv("upconvA1", 512, 4),
    _upconv("upconvA2", 256, 4),
    _upconv("upconvA3", 128, 4),
    _conv("convB1", 128, 5, 1, ("input",)),
    _conv("convB2", 128, 3, 1),
    LayerSpec("J", "concat", inputs=("upconvA3", "convB2")),
    _conv("convJ1", 256, 3, 1),
    _conv("convJ2", 128, 3, 1),
    _upconv("upconvJ4", 64, 4),
    _upconv("upconvJ5", 32, 4),
    _upconv("upconvJ6", 3, 4),
)

# Supplementary Table 3: SIFT.
SIFT_TABLE = (
    _conv("conv1", 256, 5, 2, ("input",)),
    _conv("conv2", 512, 3, 2),
    _conv("conv3", 1024, 3, 2),
    _conv("conv4", 2048, 3, 2),
    _conv("conv5", 2048, 3, 1),
    _conv("conv6", 1024, 3, 1),
    _upconv("upconv1", 512, 4),
    _upconv("upconv2", 256, 4),
    _upconv("upconv3", 128, 4),
    _upconv("upconv4", 64, 4),
    _upconv("upconv5", 32, 4),
    _upconv("upconv6", 3, 4),
)

# Supplementary Table 4: LBP (two streams, like HOG).
LBP_TABLE = (
    _conv("convA1", 256, 5, 2, ("input",)),
    _conv("convA2", 512, 5, 2),
    _conv("convA3", 1024, 3, 1),
    _upconv("upconvA1", 512, 4),
    _upconv("upconvA2", 256, 4),
    _conv("convB1", 128, 5, 1, ("input",)),
    _conv("convB2", 128, 3, 1),
    LayerSpec("J", "concat", inputs=("upconvA2", "convB2")),
    _conv("convJ1", 256, 3, 1),
    _conv("convJ2", 128, 3, 1),
    _upconv("upconvJ3", 128, 4),
    _upconv("upconvJ4", 64, 4),
    _upconv("upconvJ5", 32, 4),
    _upconv("upconvJ6", 3, 4),
)


def _three_convs():
    return tuple(_conv(f"conv{i}", 256, 3, 1) for i in (1, 2, 3))


def _upconvs(channels):
    return tuple(_upconv(f"upconv{i + 1}", c, 5) for i, c in enumerate(channels))


# Supplementary Table 5: AlexNet conv5 (6x6x256 -> 192x192x3).
CONV5_TABLE = _three_convs() + _upconvs((256, 128, 64, 32, 3))
# Our choice (docs/reference.md, AlexNet conv1 to conv4): conv1 -> 216x216, conv2..conv4 -> 208x208.
CONV1_TABLE = _three_convs() + _upconvs((64, 32, 3))
CONV2_TO_CONV4_TABLE = _three_convs() + _upconvs((128, 64, 32, 3))
# Supplementary Table 6: AlexNet fc8 (and fc6, fc7): 3 fc, reshape 4x4x256, 5 up-convs.
FC_TABLE = (
    LayerSpec("fc1", "dense", 4096),
    LayerSpec("fc2", "dense", 4096),
    LayerSpec("fc3", "dense", 4096),
    LayerSpec("reshape", "reshape", 256),
) + _upconvs((256, 128, 64, 32, 3))


def scaled_units(channels: int, width: float) -> int:
    """`channels` times the width multiplier, rounded, at least 1 (decoders and discriminators)."""
    return max(1, int(round(channels * width)))


def build_from_table(
    table,
    input_shape,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    feature_scale: float = 1.0,
    mean_colour: bool = False,
    name: str = "decoder",
) -> keras.Model:
    """Builds a decoder from `LayerSpec` rows.

    Args:
        table: sequence of `LayerSpec`; the last row is the linear output layer
            and keeps its channel count whatever the width.
        input_shape: feature shape without the batch axis.
        width: channel multiplier for every row but the last.
        negative_slope: slope of the leaky ReLU after every row but the last.
        feature_scale: the features' typical size (root mean square); the
            first layer divides them by it. 1.0 adds no layer.
        mean_colour: end with a `MeanColour` layer named "mean_colour": each
            output image's mean colour is replaced by one learnt colour. Off
            in the paper's tables.
        name: model name.

    Returns:
        A functional `keras.Model` mapping features to an image.
    """
    check_width(width)
    if negative_slope < 0:
        raise ValueError(
            f"Expected a non-negative leaky ReLU slope. Received: negative_slope={negative_slope!r}"
        )
    if (
        isinstance(feature_scale, bool)
        or not isinstance(feature_scale, numbers.Real)
        or not 0 < feature_scale < math.inf
    ):
        raise ValueError(
            f"Expected a positive, finite feature scale. Received: feature_scale={feature_scale!r}"
        )
    features = keras.Input(shape=tuple(input_shape), name="features")
    previous = features
    if feature_scale != 1.0:
        # Features of size ~9 (EfficientNet-Lite0's stage2) make the first
        # layers' outputs ~9x their initial scale: the decoder then spends its
        # first steps shrinking them. Dividing once gives the same network
        # unit-sized inputs (measured: docs/reference.md, Generic decoder rule).
        previous = layers.Rescaling(1.0 / float(feature_scale), name="feature_scale")(features)
    outputs = {"input": previous}
    last = len(table) - 1
    for index, spec in enumerate(table):
        sources = [outputs[n] for n in spec.inputs] if spec.inputs else [previous]
        is_last = index == last
        # The output layer computes in float32 even under a mixed-precision policy,
        # and starts at mid-grey (choice): targets are images in [0, 1], and a
        # decoder that starts at 0 spends its first hundreds of steps learning the mean.
        dtype = "float32" if is_last else None
        extra = {"bias_initializer": keras.initializers.Constant(0.45)} if is_last else {}
        filters = spec.filters if is_last else scaled_units(spec.filters, width)
        following = table[index + 1] if index < last else None
        if spec.kind == "dense" and following is not None and following.kind == "reshape":
            # Sized from the table's own square (4096 = 4x4x256 in Table 6), so
            # that every width reshapes: 4096 * w need not equal 16 * round(256 * w).
            side = math.isqrt(spec.filters // following.filters)
            filters = side * side * scaled_units(following.filters, width)
        if spec.kind == "concat":
            tensor = layers.Concatenate(name=spec.name)(sources)
        elif spec.kind == "reshape":
            units = sources[0].shape[-1]
            side = math.isqrt(units // filters)
            if side * side * filters != units:
                raise ValueError(
                    f"Cannot reshape {units} units into a square map with {filters} channels."
                )
            tensor = layers.Reshape((side, side, filters), name=spec.name)(sources[0])
        else:
            if spec.kind == "conv":
                layer = layers.Conv2D(
                    filters,
                    spec.kernel_size,
                    spec.strides,
                    padding="same",
                    name=spec.name,
                    dtype=dtype,
                    **extra,
                )
            elif spec.kind == "upconv":
                layer = layers.Conv2DTranspose(
                    filters,
                    spec.kernel_size,
                    spec.strides,
                    padding="same",
                    name=spec.name,
                    dtype=dtype,
                    **extra,
                )
            elif spec.kind == "dense":
                layer = layers.Dense(filters, name=spec.name, dtype=dtype, **extra)
            else:
                raise ValueError(
                    f"Unknown layer kind in decoder table. Received: kind={spec.kind!r}"
                )
            tensor = layer(sources[0])
            if not is_last:
                tensor = layers.LeakyReLU(negative_slope, name=f"{spec.name}_lrelu")(tensor)
        outputs[spec.name] = tensor
        previous = tensor
    if mean_colour:
        previous = MeanColour(name=MEAN_COLOUR_LAYER, dtype="float32")(previous)
    return keras.Model(features, previous, name=name)


MEAN_COLOUR_LAYER = "mean_colour"
"""The name of a decoder's `MeanColour` layer."""


@keras.saving.register_keras_serializable(package="keras_invert")
class MeanColour(layers.Layer):
    """Replaces each image's mean colour with one learnt colour.

    `images - (the mean over height and width of each image) + colour`, where
    `colour` has one weight per channel, starts at mid-grey (0.45, as the
    output layers' bias) and is learnt with the rest of the decoder: under
    the pixel loss it settles near the training targets' mean colour.

    For features that stay the same when a constant is added to a colour
    channel (HOG, SIFT, LBP: gradients and comparisons of pixels), no
    decoder can read an image's mean colour from them. One trained without
    this layer learns its training photos' colours and paints them into new
    photos, which costs more than the structure it gets right (measured:
    docs/reference.md, Decoders). The output layer's bias no longer changes
    anything after it and keeps its starting value.
    """

    def build(self, input_shape):
        self.colour = self.add_weight(
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(0.45),
            name="colour",
        )

    def call(self, images):
        return images - keras.ops.mean(images, axis=(1, 2), keepdims=True) + self.colour


SHALLOW_IMAGE_MULTIPLE = 64
"""HOG, SIFT and LBP decoders take image sizes that are multiples of this."""


def check_shallow_image_size(name: str, image_size, argument: str = "image_size") -> None:
    """Refuses an image size the `name` decoder (HOG, SIFT, LBP) cannot take.

    The tables' stride-2 stacks need maps whose side is a multiple of 4 (LBP),
    8 (HOG) or 16 (SIFT) cells: all three hold for image sizes divisible by 64.
    `argument` is the name the error gives the size under.
    """
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size <= 0
        or image_size % SHALLOW_IMAGE_MULTIPLE
    ):
        raise ValueError(
            f"The {name} decoder needs an image size that is a positive multiple of "
            f"{SHALLOW_IMAGE_MULTIPLE}. Received: {argument}={image_size!r}"
        )


def _shallow_decoder(
    name, table, cell_size, channels, image_size, width, negative_slope, mean_colour
):
    """A fully convolutional table for a feature map of `image_size // cell_size` cells."""
    check_shallow_image_size(name, image_size)
    cells = image_size // cell_size
    return build_from_table(
        table,
        (cells, cells, channels),
        width=width,
        negative_slope=negative_slope,
        mean_colour=mean_colour,
        name=f"{name}_decoder",
    )


def hog_decoder(
    image_size: int = 256,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    mean_colour: bool = False,
):
    """Table 2: HOG (cell 8, 31 channels) of an `image_size` image -> `image_size` image.

    `mean_colour` ends it with a `MeanColour` layer (the registry's default).
    """
    return _shallow_decoder("hog", HOG_TABLE, 8, 31, image_size, width, negative_slope, mean_colour)


def lbp_decoder(
    image_size: int = 256,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    mean_colour: bool = False,
):
    """Table 4: LBP (cell 16, 58 channels) of an `image_size` image -> `image_size` image.

    `mean_colour` ends it with a `MeanColour` layer (the registry's default).
    """
    return _shallow_decoder(
        "lbp", LBP_TABLE, 16, 58, image_size, width, negative_slope, mean_colour
    )


def sift_decoder(
    image_size: int = 256,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    mean_colour: bool = False,
):
    """Table 3: SIFT keypoint map (`image_size/4`, 133 channels) -> `image_size` image.

    `mean_colour` ends it with a `MeanColour` layer (the registry's default).
    """
    return _shallow_decoder(
        "sift", SIFT_TABLE, 4, 133, image_size, width, negative_slope, mean_colour
    )


def alexnet_decoder(layer: str, feature_shape, *, width: float = 1.0, negative_slope: float = 0.2):
    """Table 5 (conv5), Table 6 (fc6..fc8) and the generic rule (conv1..conv4).

    Args:
        layer: "conv1" ... "fc8".
        feature_shape: the encoder tap's shape, e.g. (6, 6, 256) or (1000,).
    """
    tables = {
        "conv1": CONV1_TABLE,
        "conv2": CONV2_TO_CONV4_TABLE,
        "conv3": CONV2_TO_CONV4_TABLE,
        "conv4": CONV2_TO_CONV4_TABLE,
        "conv5": CONV5_TABLE,
        "fc6": FC_TABLE,
        "fc7": FC_TABLE,
        "fc8": FC_TABLE,
    }
    if layer not in tables:
        raise ValueError(
            f"Expected an AlexNet layer in {sorted(tables)}. Received: layer={layer!r}"
        )
    return build_from_table(
        tables[layer],
        feature_shape,
        width=width,
        negative_slope=negative_slope,
        name=f"alexnet_{layer}_decoder",
    )


def generic_table(feature_shape, image_size: int, *, max_output_size: int = 256):
    """docs/reference.md, Generic decoder rule, as `LayerSpec` rows, for a tap of any shape.

    - Feature maps `(s, s, c)`: 3 conv 3x3 with 256 channels, then `n` 5x5
      stride-2 up-convs, `n` the largest with `s * 2**n <= min(image_size,
      max_output_size)` (the output is the biggest doubling of the map that
      does not exceed the image the features came from, nor 256). The
      up-convs have 256, 128, 64, 32 channels counting back from the last
      (which has 3), and never more than 256. A map already at least that
      large gets no up-conv; a fourth 3x3 conv (3 channels) is the output.
    - Vectors `(d,)`: Table 6: 3 fully connected layers of 4096, reshape to
      4x4x256, and up-convs as above from side 4 up to at most
      `min(image_size, 128)` (Table 6 predicts 128x128 images).

    For AlexNet at 227 this gives Tables 5 (conv5, 6x6 -> 192) and 6 (fc6..fc8,
    -> 128) and the reference's conv1 (27x27 -> 216) and conv2..conv4 (13x13 -> 208)
    tables exactly; for EfficientNet-Lite0 at 224 every map decodes to 224.

    Args:
        feature_shape: the tap's shape without the batch axis, `(s, s, c)` or `(d,)`.
        image_size: side of the image the network saw (its input size).
        max_output_size: largest decoder output side for feature maps.

    Returns:
        `(rows, output_size)`.

    Example:
        >>> rows, size = generic_table((6, 6, 256), 227)
        >>> rows == CONV5_TABLE, size
        (True, 192)
    """
    shape = tuple(int(d) for d in feature_shape)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(
            f"`image_size` must be a positive integer. Received: image_size={image_size!r}"
        )
    if len(shape) == 1 and shape[0] > 0:
        rows, side, limit = FC_TABLE[:4], 4, min(image_size, 128)
    elif len(shape) == 3 and shape[0] == shape[1] and min(shape) > 0:
        rows, side, limit = _three_convs(), shape[0], min(image_size, max_output_size)
    else:
        raise ValueError(
            "Expected a square feature map (s, s, c) or a vector (d,). "
            f"Received: feature_shape={feature_shape!r}"
        )
    doublings = 0
    while side * 2 ** (doublings + 1) <= limit:
        doublings += 1
    if doublings == 0:
        return rows + (_conv("conv4", 3, 3, 1),), side
    channels = [min(256, 32 * 2 ** (doublings - 2 - i)) for i in range(doublings - 1)] + [3]
    return rows + _upconvs(channels), side * 2**doublings


def decoder_for_shape(
    feature_shape,
    image_size: int,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    feature_scale: float = 1.0,
    max_output_size: int = 256,
    name: str = "decoder",
) -> keras.Model:
    """The decoder the generic rule gives a tap of `feature_shape` (see `generic_table`).

    Args:
        feature_shape: `(s, s, c)` or `(d,)`.
        image_size: side of the image the network saw.
        width, negative_slope, feature_scale: as in `build_from_table`.
        max_output_size: largest output side for feature maps.
        name: model name.

    Example:
        >>> decoder_for_shape((14, 14, 80), 224, width=0.25).output_shape
        (None, 224, 224, 3)
    """
    rows, _ = generic_table(feature_shape, image_size, max_output_size=max_output_size)
    return build_from_table(
        rows,
        feature_shape,
        width=width,
        negative_slope=negative_slope,
        feature_scale=feature_scale,
        name=name,
    )
