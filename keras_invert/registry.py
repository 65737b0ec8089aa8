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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from keras_invert import decoders
from keras_invert.features.hog import hog, hog_num_channels, hog_output_size
from keras_invert.features.lbp import LBP_NUM_BINS, lbp, lbp_output_size
from keras_invert.features.sift import SIFT_NUM_CHANNELS, sift_batch, sift_output_size


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
    """

    name: str
    description: str
    make_encoder: Callable[..., Callable]
    decoder_builder: Callable[..., keras.Model]
    feature_shape: Callable[[int], tuple[int, ...]]
    target_size: Callable[[int], int]
    default_image_size: int
    in_graph: bool = True

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
    """Looks a representation up by name, with a clear error listing the known names."""
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown representation; expected one of {names()}. Received: name={name!r}"
        )
    return _REGISTRY[name]


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
