"""Encoders: networks that compute the representations the decoders invert.

Each encoder is a Keras model that takes RGB images `[N, H, W, 3]` in 0..255
and returns a dict of named representations (docs/reference.md, AlexNet).

Example:
    >>> from keras_invert.encoders import alexnet
    >>> encoder = alexnet("caffe", weights="caffenet.weights.h5", outputs=["conv5"])
    >>> from keras_invert.encoders import efficientnet_lite0, from_keras
    >>> classifier = efficientnet_lite0(outputs=["stage4", "logits"])  # ImageNet weights
    >>> vgg = from_keras("vgg16.keras", ["block5_pool"])  # any Keras model
"""

from keras_invert.encoders.alexnet import (
    ALEXNET_IMAGE_SIZES,
    ALEXNET_LAYERS,
    ALEXNET_OUTPUT_SHAPES,
    ALEXNET_TAP_LAYERS,
    ALEXNET_VARIANTS,
    CAFFE_BGR_MEAN,
    alexnet,
    convert_alexnet_weights,
)
from keras_invert.encoders.efficientnet import (
    EFFICIENTNET_LITE0_FEATURE_RMS,
    EFFICIENTNET_LITE0_IMAGE_SIZE,
    EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    EFFICIENTNET_LITE0_TAPS,
    default_weights_path,
    efficientnet_lite0,
    efficientnet_lite0_torch_keys,
    set_efficientnet_lite0_weights,
)
from keras_invert.encoders.keras_model import from_keras, load_keras_model, network_input_size
from keras_invert.encoders.layers import ImagePreprocessing, LocalResponseNormalization
from keras_invert.encoders.outputs import select_outputs
from keras_invert.weights.alexnet import ALEXNET_WEIGHT_LAYERS, set_alexnet_weights

__all__ = [
    "ALEXNET_IMAGE_SIZES",
    "ALEXNET_LAYERS",
    "ALEXNET_OUTPUT_SHAPES",
    "ALEXNET_TAP_LAYERS",
    "ALEXNET_VARIANTS",
    "ALEXNET_WEIGHT_LAYERS",
    "CAFFE_BGR_MEAN",
    "EFFICIENTNET_LITE0_IMAGE_SIZE",
    "EFFICIENTNET_LITE0_FEATURE_RMS",
    "EFFICIENTNET_LITE0_OUTPUT_SHAPES",
    "EFFICIENTNET_LITE0_TAPS",
    "ImagePreprocessing",
    "LocalResponseNormalization",
    "alexnet",
    "convert_alexnet_weights",
    "default_weights_path",
    "efficientnet_lite0",
    "efficientnet_lite0_torch_keys",
    "from_keras",
    "load_keras_model",
    "network_input_size",
    "select_outputs",
    "set_alexnet_weights",
    "set_efficientnet_lite0_weights",
]
