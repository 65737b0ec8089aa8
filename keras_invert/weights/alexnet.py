"""AlexNet's weights from Caffe and torchvision files: layer mapping and layout conversion.

The readers (`caffe.read_caffemodel`, `torch_state.read_torch_state_dict`)
return arrays in their framework's layout; this module knows which arrays are
which AlexNet layer and turns them into Keras' layout. It needs only the
layer names of the Keras AlexNet (`keras_invert.encoders.alexnet`), which
builds on it to load weight files.

Example:
    >>> from keras_invert.encoders import alexnet
    >>> from keras_invert.weights import load_caffe_weights
    >>> encoder = alexnet("caffe")
    >>> load_caffe_weights(encoder, "bvlc_reference_caffenet.caffemodel")
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from keras import layers

from keras_invert.weights.caffe import read_caffemodel
from keras_invert.weights.torch_state import read_torch_state_dict

ALEXNET_WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
"""The layers that carry weights, named as in Caffe's prototxt and Table 1."""

TORCHVISION_ALEXNET_KEYS = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}
"""Keras layer name to the module prefix in torchvision's AlexNet state dict."""


def load_caffe_weights(
    model: keras.Model,
    path: str | os.PathLike,
    layer_names: Mapping[str, str] | None = None,
) -> None:
    """Loads a Caffe AlexNet's weights into a model from `alexnet("caffe")`.

    Kernels go from Caffe's OIHW to Keras' HWIO (grouped layers keep Caffe's
    group order, which is Keras'); fc6's rows are permuted from Caffe's C, H, W
    flattening of pool5 to Keras' H, W, C. conv1's kernels are used as stored:
    Caffe models take BGR, and the model's preprocessing feeds conv1 BGR.
    The whole file is read and every shape checked before any weight is
    assigned.

    Args:
        model: the Keras model (all eight weight layers, or the subset a model
            with fewer outputs has).
        path: the `.caffemodel` file.
        layer_names: Keras layer name to Caffe layer name, for files whose
            layers are not called `conv1` ... `fc8`.

    Raises:
        CaffeFormatError: the file is truncated or malformed.
        ValueError: a layer is missing or a shape differs (the message names
            the layer and both shapes).
    """
    layer_names = dict(layer_names or {})
    unknown = sorted(set(layer_names) - set(ALEXNET_WEIGHT_LAYERS))
    if unknown:
        raise ValueError(
            f"`layer_names` keys must be among {ALEXNET_WEIGHT_LAYERS}. "
            f"Received: layer_names={layer_names!r}"
        )
    blobs = read_caffemodel(path)
    present = {layer.name for layer in model.layers}
    parameters = {}
    for name in ALEXNET_WEIGHT_LAYERS:
        if name not in present:
            continue
        caffe_name = layer_names.get(name, name)
        if caffe_name not in blobs:
            raise ValueError(
                f"Layer {name!r} needs the Caffe layer {caffe_name!r}, which "
                f"{os.fspath(path)} lacks; its layers with weights are {list(blobs)!r}."
            )
        parameters[name] = blobs[caffe_name]
    set_alexnet_weights(model, parameters)


def load_torchvision_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads torchvision's AlexNet state dict into `alexnet("torchvision")`.

    Reads `features.{0,3,6,8,10}` and `classifier.{1,4,6}` (`.weight`,
    `.bias`), e.g. from `alexnet-owt-7be5be79.pth`; a `module.` prefix (from
    `DataParallel`) is accepted. Kernels go from OIHW to HWIO and fc6's rows
    from PyTorch's C, H, W flattening of pool5 to Keras' H, W, C. All tensors
    are read and checked before any weight is assigned.

    Args:
        model: a model from `alexnet("torchvision")`, possibly with fewer
            outputs.
        path: the `.pth` file.

    Raises:
        UnsafePickleError, TorchFormatError: see `read_torch_state_dict`.
        ValueError: a tensor is missing or a shape differs.
    """
    state = read_torch_state_dict(path)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    layer_names = {layer.name for layer in model.layers}
    parameters = {}
    for name, prefix in TORCHVISION_ALEXNET_KEYS.items():
        if name not in layer_names:
            continue
        keys = (f"{prefix}.weight", f"{prefix}.bias")
        missing = [key for key in keys if key not in state]
        if missing:
            raise ValueError(
                f"Layer {name!r} needs {missing[0]!r}, which {os.fspath(path)} lacks; it holds "
                f"{len(state)} tensors, e.g. {list(state)[:4]!r}."
            )
        parameters[name] = [state[key] for key in keys]
    set_alexnet_weights(model, parameters)


def set_alexnet_weights(model: keras.Model, parameters: Mapping[str, Sequence[np.ndarray]]):
    """Assigns weights given in Caffe/PyTorch layout to an AlexNet model.

    Convolution kernels are `[out, in / groups, height, width]` (OIHW) and
    become Keras' `[height, width, in / groups, out]`; fully connected
    matrices are `[out, in]` and become `[in, out]`. fc6's input rows follow
    the C, H, W flattening of pool5 in Caffe and PyTorch and are permuted to
    Keras' H, W, C order. Leading axes of size 1 (Caffe's legacy 4-d blobs for
    fully connected layers and biases) are dropped. Every weight is converted
    and shape-checked before any is assigned, so an error leaves the model
    untouched.

    Args:
        model: a model from `alexnet()`, possibly with a subset of outputs;
            only the weight layers it contains are set.
        parameters: layer name (`ALEXNET_WEIGHT_LAYERS`) to `(kernel, bias)`.

    Raises:
        ValueError: a layer is missing from `parameters` or a shape differs;
            the message names the layer and both shapes.
    """
    present = [name for name in ALEXNET_WEIGHT_LAYERS if _has_layer(model, name)]
    if not present:
        raise ValueError(
            f"`model` has none of the AlexNet layers {ALEXNET_WEIGHT_LAYERS}. "
            f"Received: model={model.name!r}"
        )
    missing = [name for name in present if name not in parameters]
    if missing:
        raise ValueError(
            f"The weights have no entries for layer(s) {missing}. "
            f"Received layers: {sorted(parameters)!r}"
        )
    converted = {}
    for name in present:
        layer = model.get_layer(name)
        if len(parameters[name]) != 2:
            raise ValueError(
                f"Layer {name!r} needs a kernel and a bias. "
                f"Received: {len(parameters[name])} array(s)"
            )
        kernel, bias = (np.asarray(array, dtype="float32") for array in parameters[name])
        keras_shape = tuple(layer.kernel.shape)
        if isinstance(layer, layers.Conv2D):
            # Keras [h, w, in/groups, out] <- OIHW [out, in/groups, h, w].
            expected = tuple(keras_shape[i] for i in (3, 2, 0, 1))
            layout = "OIHW"
        else:
            kernel = _drop_leading_ones(kernel, 2)
            expected = keras_shape[::-1]
            layout = "[out, in]"
        if kernel.shape != expected:
            raise ValueError(
                f"Layer {name!r}: the kernel in the weights has shape {kernel.shape}, the "
                f"model needs {expected} ({layout}; Keras layout {keras_shape})."
            )
        bias = _drop_leading_ones(bias, 1)
        if bias.shape != tuple(layer.bias.shape):
            raise ValueError(
                f"Layer {name!r}: the bias in the weights has shape {bias.shape}, the "
                f"model needs {tuple(layer.bias.shape)}."
            )
        if isinstance(layer, layers.Conv2D):
            kernel = kernel.transpose(2, 3, 1, 0)
        else:
            if name == "fc6" and _has_layer(model, "pool5"):
                kernel = _chw_rows_to_hwc(kernel, tuple(model.get_layer("pool5").output.shape[1:]))
            kernel = kernel.T
        converted[name] = (kernel, bias)
    for name, (kernel, bias) in converted.items():
        layer = model.get_layer(name)
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)


def _has_layer(model: keras.Model, name: str) -> bool:
    return any(layer.name == name for layer in model.layers)


def _drop_leading_ones(array: np.ndarray, ndim: int) -> np.ndarray:
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    return array


def _chw_rows_to_hwc(kernel: np.ndarray, spatial_shape: tuple[int, int, int]) -> np.ndarray:
    height, width, channels = spatial_shape
    units, inputs = kernel.shape
    return (
        kernel.reshape(units, channels, height, width).transpose(0, 2, 3, 1).reshape(units, inputs)
    )
