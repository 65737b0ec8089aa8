"""The one place that pairs a representation with its decoder.

A `Representation` names an encoder (the feature function or network), the
decoder builder of its table, the feature shape and the decoder's target size
for an input image size. Pipelines, training, export and the launch scripts
look representations up here by name, so a new one is usable everywhere once
registered here. HOG, LBP and SIFT are defined in this file; the networks'
taps come from `keras_invert.network_representations`, and `keras:PATH#LAYER`
names are resolved by `keras_invert.keras_representation`.

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

import inspect

import keras

from keras_invert import decoders
from keras_invert.encoders.alexnet import ALEXNET_VARIANTS
from keras_invert.features.hog import hog, hog_num_channels, hog_output_size
from keras_invert.features.lbp import LBP_NUM_BINS, lbp, lbp_output_size
from keras_invert.features.mirror import (
    hog_mirror_permutation,
    lbp_mirror_permutation,
    mirror,
    mirrored_cells_exact,
)
from keras_invert.features.sift import (
    SIFT_BACKENDS,
    SIFT_NUM_CHANNELS,
    sift_batch,
    sift_output_size,
)
from keras_invert.features.sift import default_backend as default_sift_backend
from keras_invert.keras_representation import (
    KERAS_PREFIX,
    absolute_keras_name,
    keras_representation,
    parse_keras_name,
)
from keras_invert.network_representations import (
    alexnet_representations,
    efficientnet_representations,
)
from keras_invert.representation import Representation

__all__ = [
    "KERAS_PREFIX",
    "Representation",
    "absolute_keras_name",
    "build_decoder",
    "get",
    "keras_representation",
    "names",
    "parse_keras_name",
    "register",
    "resolved_encoder_options",
    "takes_sift_backend",
]

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


def build_decoder(representation: str, **options) -> keras.Model:
    """The decoder paired with `representation` (e.g. "hog", "alexnet/conv5").

    Args:
        representation: a registered name (`names()`) or `keras:PATH#LAYER`.
        **options: `image_size`, `width`, `negative_slope` (see
            `keras_invert.decoders`).

    Example:
        >>> build_decoder("hog", image_size=128, width=0.5).output_shape
        (None, 128, 128, 3)
    """
    return get(representation).build_decoder(**options)


def _hog_encoder(cell_size: int = 8, num_orientations: int = 9):
    def encode(images):
        return hog(images, cell_size=cell_size, num_orientations=num_orientations)

    return encode


def _cell_mirror(permutation, image_size: int, cell_size: int, representation: str):
    """`mirror` with `permutation`, if the cell grid of `image_size` crops is symmetric."""
    if not mirrored_cells_exact(image_size, cell_size):
        raise ValueError(
            f"Expected an image size that is a multiple of {representation}'s cell size "
            f"({cell_size}): only then do the features give those of the mirrored image "
            f"exactly. Received: image_size={image_size}"
        )
    return lambda features: mirror(features, permutation)


def _hog_mirror(image_size: int, cell_size: int = 8, num_orientations: int = 9):
    return _cell_mirror(hog_mirror_permutation(num_orientations), image_size, cell_size, "HOG")


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
        mean_colour_invariant=True,
        make_mirror=_hog_mirror,
    )
)


def _lbp_encoder(cell_size: int = 16):
    def encode(images):
        # Served raw centre squares are prepared in the compiled gray step (clipped);
        # the pipelines' crops are in 0..255 already, which the clip leaves as they are.
        return lbp(images, cell_size=cell_size, clip=True)

    return encode


def _lbp_mirror(image_size: int, cell_size: int = 16):
    return _cell_mirror(lbp_mirror_permutation(), image_size, cell_size, "LBP")


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
        prepares_crops=True,
        mean_colour_invariant=True,
        make_mirror=_lbp_mirror,
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
        mean_colour_invariant=True,
    )
)


for _variant in ALEXNET_VARIANTS:
    for _representation in alexnet_representations(_variant):
        register(_representation)
for _representation in efficientnet_representations():
    register(_representation)
