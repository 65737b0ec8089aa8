"""Any layer of a saved Keras model as a representation: the names `keras:PATH#LAYER`.

`keras:PATH#LAYER`, optionally followed by `?input_range=LOW,HIGH` (default
0,255) for models trained on other pixel ranges, is layer LAYER of the
`.keras` (or `.h5`) file at PATH, relative to the working directory or
absolute. `registry.get` resolves such names here, on the fly, since no
table can list every file a user has.

Example:
    >>> from keras_invert import registry
    >>> vgg = registry.get("keras:vgg16.keras#block5_pool")
    >>> vgg.feature_shape(224), vgg.target_size(224)
    ((7, 7, 512), 224)
"""

from __future__ import annotations

import os
import urllib.parse

import keras

from keras_invert import decoders
from keras_invert.encoders.keras_model import from_keras, load_keras_model, network_input_size
from keras_invert.representation import Representation

KERAS_PREFIX = "keras:"
"""Names with this prefix are resolved here, not looked up in the registry's table."""

_KERAS_DEFAULT_IMAGE_SIZE = 224  # For models that take any input size (choice).
_KERAS_CACHE: dict[tuple, Representation] = {}


def parse_keras_name(name: str) -> tuple[str, str, tuple[float, float]]:
    """Splits `keras:PATH#LAYER[?input_range=LOW,HIGH]` into (path, layer, input_range).

    Example:
        >>> parse_keras_name("keras:models/net.keras#conv4?input_range=-1,1")
        ('models/net.keras', 'conv4', (-1.0, 1.0))
    """
    body = name[len(KERAS_PREFIX) :] if name.startswith(KERAS_PREFIX) else None
    path, _, layer = (body or "").rpartition("#")
    layer, _, query = layer.partition("?")
    if not path or not layer:
        raise ValueError(
            f"Expected 'keras:PATH.keras#LAYER' (optionally '?input_range=LOW,HIGH'). "
            f"Received: name={name!r}"
        )
    input_range = (0.0, 255.0)
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key != "input_range":
            raise ValueError(
                f"The only option of a keras: representation is input_range. Received: {key!r} "
                f"in name={name!r}"
            )
        try:
            low, high = (float(v) for v in values[-1].split(","))
        except ValueError:
            raise ValueError(
                f"Expected input_range=LOW,HIGH (e.g. 0,1 or -1,1). Received: name={name!r}"
            ) from None
        input_range = (low, high)
    return path, layer, input_range


def absolute_keras_name(name: str) -> str:
    """`name` with the model path of a `keras:PATH#LAYER` name made absolute; others unchanged.

    A relative path resolves only from the directory the run started in, so
    a stored config that names one could not be resumed or evaluated from
    elsewhere.

    Example:
        >>> absolute_keras_name("keras:net.keras#conv4")  # From /home/me.
        'keras:/home/me/net.keras#conv4'
    """
    if not name.startswith(KERAS_PREFIX):
        return name
    path, _, _ = parse_keras_name(name)
    rest = name[len(KERAS_PREFIX) + len(path) :]
    return KERAS_PREFIX + os.path.abspath(path) + rest


def keras_representation(name: str) -> Representation:
    """The `Representation` of `keras:PATH#LAYER`: layer LAYER of the saved model at PATH.

    The encoder is `keras_invert.encoders.from_keras(load(PATH), [LAYER])`
    (images in 0..255, mapped onto `input_range`; resized to the model's
    input size when it has a static one). The decoder follows the generic
    rule (docs/reference.md) for the layer's output shape (`decoders.generic_table`),
    with the model's input size (or the crop size, for a model that takes any
    size) as the image size. The model is read when the name is looked up
    (again when the file changes), and afresh by every `make_encoder()`.

    Example:
        >>> spec = keras_representation("keras:vgg16.keras#block5_pool")
        >>> spec.feature_shape(224), spec.target_size(224)
        ((7, 7, 512), 224)
    """
    path, layer, input_range = parse_keras_name(name)
    absolute = os.path.abspath(os.path.expanduser(path))
    stamp = os.stat(absolute).st_mtime_ns if os.path.isfile(absolute) else None
    key = (name, absolute, stamp)
    if key in _KERAS_CACHE:
        return _KERAS_CACHE[key]
    network = load_keras_model(absolute)
    network_size = network_input_size(network)
    probe = from_keras(network, [layer], input_range=input_range)
    default_size = network_size or _KERAS_DEFAULT_IMAGE_SIZE

    def feature_shape(size):
        shape = probe.compute_output_shape((None, network_size or size, network_size or size, 3))
        return tuple(int(d) for d in shape[layer][1:])

    def seen_size(size):
        return network_size or size

    def make_encoder(weights=None):
        """`images -> features` of LAYER, read afresh from PATH (its weights are in the file)."""
        if weights is not None:
            raise ValueError(
                f"A keras: representation takes its weights from its .keras file; save the "
                f"model with the weights you want. Received: weights={weights!r}"
            )
        encoder = from_keras(load_keras_model(absolute), [layer], input_range=input_range)
        return keras.Model(encoder.input, encoder.output[layer], name=f"keras_{layer}")

    def build(image_size, *, width=1.0, negative_slope=0.2):
        return decoders.decoder_for_shape(
            feature_shape(image_size), seen_size(image_size), width=width,
            negative_slope=negative_slope, name=f"keras_{layer}_decoder",
        )  # fmt: skip

    def target_size(size):
        return decoders.generic_table(feature_shape(size), seen_size(size))[1]

    shape = feature_shape(default_size)
    representation = Representation(
        name=name,
        description=f"layer {layer} ({'x'.join(map(str, shape))}) of the Keras model {path}",
        make_encoder=make_encoder,
        decoder_builder=build,
        feature_shape=feature_shape,
        target_size=target_size,
        default_image_size=default_size,
        encode_in_model=True,
    )
    _KERAS_CACHE.clear()  # One model at a time: a cached one holds its weights in memory.
    _KERAS_CACHE[key] = representation
    return representation
