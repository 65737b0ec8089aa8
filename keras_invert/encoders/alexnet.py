"""AlexNet encoders: the eight representations the paper inverts (docs/reference.md, AlexNet).

`alexnet()` builds a Keras functional model whose output is a dict of the
eight named representations of supplementary Table 1, each the output of the
last step of its group:

| tap   | Caffe blob | Caffe shape | torchvision layer | torchvision shape |
|-------|------------|-------------|-------------------|-------------------|
| conv1 | norm1      | 27x27x96    | pool1             | 27x27x64          |
| conv2 | norm2      | 13x13x256   | pool2             | 13x13x192         |
| conv3 | relu3      | 13x13x384   | relu3             | 13x13x384         |
| conv4 | relu4      | 13x13x384   | relu4             | 13x13x256         |
| conv5 | pool5      | 6x6x256     | pool5             | 6x6x256           |
| fc6   | relu6      | 4096        | relu6             | 4096              |
| fc7   | relu7      | 4096        | relu7             | 4096              |
| fc8   | fc8        | 1000        | fc8               | 1000              |

Variants:
* `"caffe"` (the paper's network, Table 1): the BVLC reference network.
  conv1 96 11x11 stride 4 -> relu1 -> pool1 (max 3x3 stride 2) -> norm1
  (LRN 5, alpha 1e-4, beta 0.75, k 1); conv2 256 5x5 pad 2, 2 groups -> relu2
  -> pool2 -> norm2; conv3 384 3x3 pad 1 -> relu3; conv4 384 3x3 pad 1,
  2 groups -> relu4; conv5 256 3x3 pad 1, 2 groups -> relu5 -> pool5; fc6 4096
  -> relu6 -> drop6; fc7 4096 -> relu7 -> drop7; fc8 1000. Caffe rounds pooling
  output sizes up, but at 227 x 227 every pooling divides exactly
  (55 -> 27 -> 13 -> 6), so plain valid max pooling gives the same result.
  The network always sees 227 x 227 (the preprocessing resizes), so this
  holds for every input.
* `"torchvision"`: `torchvision.models.alexnet` (the "one weird trick"
  variant): 64-192-384-256-256 channels, conv1 11x11 stride 4 pad 2, no LRN,
  no groups, 224 x 224 input. Its `AdaptiveAvgPool2d((6, 6))` is the identity
  at 224 (pool5 is already 6x6) and is left out. The taps are the same "end
  of each group": for conv1 and conv2 that is the pooling, as there is no LRN.
  Dropout sits before fc6 and fc7 as in torchvision (`drop5`, `drop6`).

Preprocessing is part of the model (layer `preprocessing`): it takes RGB
images `[N, H, W, 3]`, uint8 or float in 0..255, of any size, centre-crops and
resizes them to the network's size when they are not already that size, and
then:
* caffe: RGB -> BGR and subtracts the per-channel ImageNet mean in BGR order,
  `CAFFE_BGR_MEAN` = (104.007, 116.669, 122.679), the channel means of
  Caffe's `ilsvrc_2012_mean.binaryproto` (what Caffe's own Python classifier
  example subtracts). The networks were trained with the mean *image*, whose
  pixels differ from these channel means by a few grey levels; the per-channel
  form is size-independent and is the common deployment choice (choice).
  Because the model feeds BGR to conv1, Caffe's conv1 kernels are used as
  stored, with no channel flip.
* torchvision: scales to 0..1 and normalises with the ImageNet mean and std
  in RGB order, as `torchvision.transforms.Normalize` does.

With `include_preprocessing=False` the model instead takes what the network
itself takes: `[N, 227, 227, 3]` BGR mean-subtracted (caffe) or
`[N, 224, 224, 3]` normalised RGB (torchvision).

Example:
    >>> from keras_invert.encoders import alexnet
    >>> encoder = alexnet("caffe", weights="bvlc_reference_caffenet.caffemodel")
    >>> features = encoder(images)  # dict: features["conv5"].shape == (N, 6, 6, 256)
    >>> conv5 = alexnet("caffe", weights="caffenet.weights.h5", outputs=["conv5"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import layers

from keras_invert import files
from keras_invert import weights as weights_io
from keras_invert.encoders.layers import ImagePreprocessing, LocalResponseNormalization
from keras_invert.encoders.outputs import static_input_size, validate_outputs

ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
"""The eight representations, in network order (docs/reference.md, AlexNet)."""

ALEXNET_VARIANTS = ("caffe", "torchvision")

ALEXNET_IMAGE_SIZES = {"caffe": 227, "torchvision": 224}
"""Side of the square image each variant's first convolution sees."""

ALEXNET_OUTPUT_SHAPES = {
    "caffe": {
        "conv1": (27, 27, 96),
        "conv2": (13, 13, 256),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 384),
        "conv5": (6, 6, 256),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    },
    "torchvision": {
        "conv1": (27, 27, 64),
        "conv2": (13, 13, 192),
        "conv3": (13, 13, 384),
        "conv4": (13, 13, 256),
        "conv5": (6, 6, 256),
        "fc6": (4096,),
        "fc7": (4096,),
        "fc8": (1000,),
    },
}
"""Per variant, each representation's shape without the batch axis."""

ALEXNET_TAP_LAYERS = {
    "caffe": {
        "conv1": "norm1",
        "conv2": "norm2",
        "conv3": "relu3",
        "conv4": "relu4",
        "conv5": "pool5",
        "fc6": "relu6",
        "fc7": "relu7",
        "fc8": "fc8",
    },
    "torchvision": {
        "conv1": "pool1",
        "conv2": "pool2",
        "conv3": "relu3",
        "conv4": "relu4",
        "conv5": "pool5",
        "fc6": "relu6",
        "fc7": "relu7",
        "fc8": "fc8",
    },
}
"""Per variant, the Keras layer whose output is each representation."""

CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
"""Channel means of Caffe's `ilsvrc_2012_mean.binaryproto`, BGR order, 0..255."""

_WEIGHT_SUFFIXES = (".weights.h5", ".caffemodel", ".pth", ".pt")

TORCHVISION_RGB_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_RGB_STD = (0.229, 0.224, 0.225)

# (filters, kernel, stride, padding, groups) per convolution. Padding "same"
# equals Caffe's symmetric pad at stride 1 (pad 2 for 5x5, pad 1 for 3x3).
_CONVOLUTIONS = {
    "caffe": (
        (96, 11, 4, "valid", 1),
        (256, 5, 1, "same", 2),
        (384, 3, 1, "same", 1),
        (384, 3, 1, "same", 2),
        (256, 3, 1, "same", 2),
    ),
    "torchvision": (
        (64, 11, 4, 2, 1),  # pad 2 explicitly: "same" at stride 4 would give 56, not 55
        (192, 5, 1, "same", 1),
        (384, 3, 1, "same", 1),
        (256, 3, 1, "same", 1),
        (256, 3, 1, "same", 1),
    ),
}


def alexnet(
    variant: str = "caffe",
    weights: str | os.PathLike | None = None,
    outputs: Sequence[str] | None = None,
    input_size: int | tuple[int, int] | None = None,
    include_preprocessing: bool = True,
    name: str | None = None,
) -> keras.Model:
    """Builds an AlexNet encoder whose outputs are the named representations.

    Args:
        variant: `"caffe"` (the paper's BVLC reference network) or
            `"torchvision"`.
        weights: `None` for random initialisation, or a path to a
            `.weights.h5` file written by `convert_alexnet_weights` /
            `launch.convert_weights` (or by `model.save_weights` on a model of
            the same variant), a Caffe
            `.caffemodel`, or a torchvision `.pth` state dict.
        outputs: names from `ALEXNET_LAYERS` to return, in any order; `None`
            returns all eight. Only the layers up to the deepest one named are
            built (a conv5 encoder has no fully connected layers); weight
            files of the full network load into such a model all the same.
        input_size: static image size the model takes, an int (square) or
            `(height, width)`; `None` accepts any size. Images not at the
            network's size are centre-cropped to a square and resized inside
            the model.
        include_preprocessing: whether the model takes RGB 0..255 images (the
            default) or already preprocessed network input (see module
            docstring).
        name: model name; defaults to `alexnet_<variant>` (plus the taps when
            `outputs` selects some).

    Returns:
        A functional `keras.Model` mapping images `[N, H, W, 3]` to a dict
        `{tap: tensor}`.

    Example:
        >>> encoder = alexnet("caffe")
        >>> encoder(np.zeros((1, 227, 227, 3), "uint8"))["conv1"].shape
        TensorShape([1, 27, 27, 96])
    """
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(
            f"`variant` must be one of {ALEXNET_VARIANTS}. Received: variant={variant!r}"
        )
    image_size = ALEXNET_IMAGE_SIZES[variant]
    height, width = static_input_size(input_size)
    if not include_preprocessing and (height, width) not in ((None, None), (image_size,) * 2):
        raise ValueError(
            f"Without preprocessing the {variant} network takes {image_size}x{image_size} "
            f"input. Received: input_size={input_size!r}"
        )
    if not include_preprocessing:
        height = width = image_size

    if weights is not None and not os.fspath(weights).endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            f"`weights` must be None or a path ending in one of {_WEIGHT_SUFFIXES}. "
            f"Received: weights={weights!r}"
        )

    images = keras.Input(shape=(height, width, 3), name="image")
    if include_preprocessing:
        if variant == "caffe":
            preprocessing = ImagePreprocessing(
                image_size, mean=CAFFE_BGR_MEAN, reverse_channels=True, name="preprocessing"
            )
        else:
            preprocessing = ImagePreprocessing(
                image_size,
                mean=TORCHVISION_RGB_MEAN,
                std=TORCHVISION_RGB_STD,
                scale=1.0 / 255.0,
                name="preprocessing",
            )
        x = preprocessing(images)
    else:
        x = images

    outputs = ALEXNET_LAYERS if outputs is None else validate_outputs(outputs, ALEXNET_LAYERS)
    taps = _build_taps(x, variant, depth=max(ALEXNET_LAYERS.index(tap) for tap in outputs))
    default_name = f"alexnet_{variant}"
    if tuple(outputs) != ALEXNET_LAYERS:
        default_name += "_" + "_".join(outputs)
    model = keras.Model(images, {tap: taps[tap] for tap in outputs}, name=name or default_name)
    if weights is not None:
        _load_weights(model, weights)
    return model


def _build_taps(x, variant: str, depth: int) -> dict:
    """Calls the layers from conv1 up to tap `ALEXNET_LAYERS[depth]`; returns the taps."""
    taps = {}
    for index, (filters, kernel, stride, padding, groups) in enumerate(_CONVOLUTIONS[variant]):
        block = index + 1
        if not isinstance(padding, str):
            x = layers.ZeroPadding2D(padding, name=f"pad{block}")(x)
            padding = "valid"
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, groups=groups, name=f"conv{block}"
        )(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        if block in (1, 2, 5):
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{block}")(x)
        if variant == "caffe" and block in (1, 2):
            x = LocalResponseNormalization(5, alpha=1e-4, beta=0.75, k=1.0, name=f"norm{block}")(x)
        taps[f"conv{block}"] = x
        if len(taps) > depth:
            return taps

    # Caffe and torchvision flatten pool5 as C, H, W and Keras as H, W, C; the
    # weight importers permute fc6's input rows accordingly.
    x = layers.Flatten(name="flatten")(x)
    for block, units in ((6, 4096), (7, 4096)):
        if variant == "torchvision":
            x = layers.Dropout(0.5, name=f"drop{block - 1}")(x)
        x = layers.Dense(units, name=f"fc{block}")(x)
        x = layers.ReLU(name=f"relu{block}")(x)
        taps[f"fc{block}"] = x
        if len(taps) > depth:
            return taps
        if variant == "caffe":
            x = layers.Dropout(0.5, name=f"drop{block}")(x)
    taps["fc8"] = layers.Dense(1000, name="fc8")(x)
    return taps


def _load_weights(model: keras.Model, weights):
    path = os.fspath(weights)
    if path.endswith(".weights.h5"):
        weights_io.load_keras_weights(model, path)
        return
    if path.endswith(".caffemodel"):
        weights_io.load_caffe_weights(model, path)
    else:
        weights_io.load_torchvision_weights(model, path)


def convert_alexnet_weights(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    variant: str | None = None,
    *,
    names: tuple[str, str] = ("input_path", "output_path"),
) -> str:
    """Converts a Caffe or torchvision AlexNet file into a Keras `.weights.h5`.

    The output is written to a temporary file beside it and renamed, so it
    either appears complete or not at all. `alexnet(variant, weights=output_path)`
    loads it.

    Args:
        input_path: a `.caffemodel` (variant "caffe") or `.pth`/`.pt` file
            (variant "torchvision").
        output_path: the file to write; must end in `.weights.h5`.
        variant: "caffe" or "torchvision"; by default from `input_path`'s suffix.
        names: what the errors call the two paths (a script's flags: `("in", "out")`).

    Returns:
        The variant converted.

    Example:
        >>> convert_alexnet_weights("bvlc_reference_caffenet.caffemodel", "caffenet.weights.h5")
        'caffe'
    """
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    input_name, output_name = names
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"Expected {output_name} to end in .weights.h5. Received: {output_name}={output_path!r}"
        )
    if variant is None:
        if input_path.endswith(".caffemodel"):
            variant = "caffe"
        elif input_path.endswith((".pth", ".pt")):
            variant = "torchvision"
        else:
            raise ValueError(
                "Expected a file name ending in .caffemodel, .pth or .pt, or a variant. "
                f"Received: {input_name}={input_path!r}"
            )
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(
            f"`variant` must be one of {ALEXNET_VARIANTS}. Received: variant={variant!r}"
        )
    # Caffe networks come as .caffemodel files, torchvision's as .pth state dicts.
    loader = (
        weights_io.load_caffe_weights if variant == "caffe" else weights_io.load_torchvision_weights
    )
    model = alexnet(variant)
    loader(model, input_path)

    with files.atomic_path(output_path) as temporary:
        model.save_weights(temporary)
    return variant
