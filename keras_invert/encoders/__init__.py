"""Encoders: networks that compute the representations the decoders invert.

Each encoder is a Keras model that takes RGB images `[N, H, W, 3]` in 0..255
and returns a dict of named representations (SPEC.md section 1).

Example:
    >>> from keras_invert.encoders import alexnet
    >>> encoder = alexnet("caffe", weights="caffenet.weights.h5", outputs=["conv5"])
"""

from keras_invert.encoders.alexnet import (
    ALEXNET_IMAGE_SIZES,
    ALEXNET_LAYERS,
    ALEXNET_OUTPUT_SHAPES,
    ALEXNET_TAP_LAYERS,
    ALEXNET_VARIANTS,
    ALEXNET_WEIGHT_LAYERS,
    CAFFE_BGR_MEAN,
    alexnet,
    select_outputs,
    set_alexnet_weights,
)
from keras_invert.encoders.layers import ImagePreprocessing, LocalResponseNormalization

__all__ = [
    "ALEXNET_IMAGE_SIZES",
    "ALEXNET_LAYERS",
    "ALEXNET_OUTPUT_SHAPES",
    "ALEXNET_TAP_LAYERS",
    "ALEXNET_VARIANTS",
    "ALEXNET_WEIGHT_LAYERS",
    "CAFFE_BGR_MEAN",
    "ImagePreprocessing",
    "LocalResponseNormalization",
    "alexnet",
    "select_outputs",
    "set_alexnet_weights",
]
