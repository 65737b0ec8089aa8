"""Any Keras model as an encoder: named layers of a saved or in-memory model become taps.

`from_keras(model, layer_names)` returns a functional model that takes RGB
images `[N, H, W, 3]` in 0..255, as every encoder here does, and returns
`{layer_name: output}` for the named layers. What happens in between:

1. Input range. A saved model takes whatever it was trained on. Models whose
   preprocessing is inside the model (most `keras.applications` models:
   EfficientNet, ConvNeXt, ... take 0..255 RGB) need nothing: the default
   `input_range=(0, 255)` passes pixels through. A model trained on 0..1
   images wants `input_range=(0, 1)`, one trained on -1..1 (MobileNet,
   Inception-style) `input_range=(-1, 1)`: the 0..255 input is mapped
   linearly onto that range. Any other preprocessing (Caffe-style BGR mean
   subtraction of `keras.applications.resnet50`, for instance) has to be part
   of the saved model: wrap the network in a model that starts with the
   preprocessing layers and save that.
2. Size. A model with a static square input size (e.g. 224 x 224) gets
   images centre-cropped and resized to it inside the encoder (as the
   AlexNet and EfficientNet encoders do), so any crop size works; a model
   with an unknown input size sees the images as they come.

The model's own layers are shared, not copied: training the encoder
(autoencoder mode) trains `model`. Taps are layers at the top level of
`model` (`model.layers`), each with a single output.

`keras.applications` models with a local weights file (no internet needed):
build the architecture with `weights=None`, `load_weights` the file, save it
as `.keras`, then use `keras:PATH.keras#LAYER` as the representation:

    >>> network = keras.applications.VGG16(weights=None)
    >>> network.load_weights("vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    >>> network.save("vgg16.keras")
    # python -m launch.train --representation=keras:vgg16.keras#block5_pool

(VGG16 expects Caffe-style input: save a model that wraps it with that
preprocessing, see point 1.)

Example:
    >>> from keras_invert.encoders import from_keras
    >>> encoder = from_keras("mobilenet.keras", ["conv_pw_13_relu"], input_range=(-1, 1))
    >>> encoder(images)["conv_pw_13_relu"].shape
    TensorShape([N, 7, 7, 1024])
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence

import keras
from keras import layers

from keras_invert.encoders.layers import ImagePreprocessing

KERAS_MODEL_SUFFIXES = (".keras", ".h5")


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """Loads a saved Keras model (`.keras`, or legacy `.h5`) for use as an encoder.

    Raises:
        ValueError: the path does not exist, is not a Keras model file, or
            holds a model without a defined input.
    """
    path = os.path.expanduser(os.fspath(path))
    if not path.endswith(KERAS_MODEL_SUFFIXES):
        raise ValueError(
            f"Expected a saved Keras model ending in one of {KERAS_MODEL_SUFFIXES}. "
            f"Received: path={path!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"No such Keras model file. Received: path={path!r}")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        # Keras would say "File not found" of a file that is there but is not a zip archive.
        raise ValueError(
            "Expected a saved Keras model (a .keras file is a zip archive); this file is not "
            f"one: corrupt, truncated or another format. Received: path={path!r}"
        )
    model = keras.saving.load_model(path, compile=False)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # A Sequential model saved before it was built.
        inputs = None
    if not inputs:
        raise ValueError(
            "Expected a Keras model with a defined input (a functional model, or a Sequential "
            "that starts with keras.Input); this one has none, so its layers' shapes are "
            f"unknown. Received: path={path!r}"
        )
    return model


def network_input_size(model: keras.Model) -> int | None:
    """The side of the square images `model` takes, or None when it takes any size.

    Raises:
        ValueError: the model has several inputs, a non-RGB input, or a
            static non-square one.
    """
    if len(model.inputs) != 1:
        raise ValueError(
            f"Expected a model with one image input. Received: {len(model.inputs)} inputs "
            f"in model={model.name!r}"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(
            "Expected a model taking RGB images [N, H, W, 3]. "
            f"Received: input shape {shape} in model={model.name!r}"
        )
    height, width = shape[1], shape[2]
    if height is None and width is None:
        return None
    if height is None or height != width:
        raise ValueError(
            "Expected a square static input size, or none at all. "
            f"Received: input shape {shape} in model={model.name!r}"
        )
    return int(height)


def from_keras(
    model: keras.Model | str | os.PathLike,
    layer_names: str | Sequence[str],
    *,
    input_range: tuple[float, float] = (0.0, 255.0),
    name: str | None = None,
) -> keras.Model:
    """An encoder with named taps from any Keras model (see the module docstring).

    Args:
        model: a built `keras.Model` with one image input, or the path of a
            saved `.keras` (or `.h5`) model.
        layer_names: one layer name or a list of them; each layer's output
            becomes a tap of the same name.
        input_range: `(low, high)`, the range the model's input pixels have;
            images in 0..255 are mapped linearly onto it.
        name: name of the encoder model (default `<model name>_taps`).

    Returns:
        A functional `keras.Model`: images `[N, H, W, 3]` in 0..255 ->
        `{layer_name: tensor}`.

    Raises:
        ValueError: a layer name is unknown (the message lists the model's
            layers), a layer has several outputs, or the input is not one
            RGB image tensor.

    Example:
        >>> encoder = from_keras(network, ["block3_conv3", "fc2"])
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_model(model)
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model or a path. Received: model={model!r}")
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    if not layer_names or len(set(layer_names)) != len(layer_names):
        raise ValueError(
            f"Expected a non-empty list of distinct layer names. Received: {layer_names!r}"
        )
    low, high = (float(v) for v in input_range)
    if not high > low:
        raise ValueError(
            f"`input_range` must be (low, high) with high > low. Received: {input_range!r}"
        )
    size = network_input_size(model)
    available = [layer.name for layer in model.layers]
    taps = {}
    for layer_name in layer_names:
        if layer_name not in available:
            raise ValueError(
                f"Model {model.name!r} has no layer {layer_name!r}. Its layers: "
                f"{_summarise(available)}"
            )
        output = model.get_layer(layer_name).output
        if isinstance(output, (list, tuple, dict)):
            raise ValueError(
                f"Layer {layer_name!r} has several outputs; choose a layer with one. "
                f"Received: layer_names={layer_names!r}"
            )
        taps[layer_name] = output
    tapped = keras.Model(model.inputs[0], taps, name=f"{model.name}_layers")

    images = keras.Input(shape=(None, None, 3), name="image")
    scale = (high - low) / 255.0
    if size is not None:
        x = ImagePreprocessing(size, mean=(-low,) * 3, scale=scale, name="preprocessing")(images)
    else:
        x = layers.Rescaling(scale, offset=low, name="preprocessing", dtype="float32")(images)
    return keras.Model(images, tapped(x), name=name or f"{model.name}_taps")


def _summarise(names: list[str], limit: int = 30) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
