"""Import of pretrained weights from the formats found in the wild, without their frameworks.

* Caffe `.caffemodel` (protobuf `NetParameter`): `read_caffemodel`,
  `load_caffe_weights`.
* PyTorch `.pth` state dicts (zip and legacy formats), read by a restricted
  unpickler that never runs code from the file: `read_torch_state_dict`,
  `load_torchvision_weights`.
* Keras `.weights.h5` files: `load_keras_weights`, whose errors name the file.

`alexnet.py` maps Caffe's and torchvision's AlexNet arrays onto the Keras
AlexNet; `keras_invert.encoders.convert_alexnet_weights` (and its command
line, `launch/convert_weights.py`) converts either once into a Keras
`.weights.h5`. This package never imports the encoders, which load their
weight files through it.

Example:
    >>> from keras_invert.encoders import alexnet
    >>> from keras_invert.weights import load_caffe_weights
    >>> encoder = alexnet("caffe")
    >>> load_caffe_weights(encoder, "bvlc_reference_caffenet.caffemodel")
    >>> encoder.save_weights("caffenet.weights.h5")
"""

import errno
import os

from keras_invert.weights.alexnet import (
    ALEXNET_WEIGHT_LAYERS,
    TORCHVISION_ALEXNET_KEYS,
    load_caffe_weights,
    load_torchvision_weights,
    set_alexnet_weights,
)
from keras_invert.weights.caffe import CaffeFormatError, read_caffemodel
from keras_invert.weights.torch_state import (
    TorchFormatError,
    UnsafePickleError,
    read_torch_state_dict,
)

__all__ = [
    "ALEXNET_WEIGHT_LAYERS",
    "load_keras_weights",
    "set_alexnet_weights",
    "TORCHVISION_ALEXNET_KEYS",
    "CaffeFormatError",
    "TorchFormatError",
    "UnsafePickleError",
    "load_caffe_weights",
    "load_torchvision_weights",
    "read_caffemodel",
    "read_torch_state_dict",
]


def load_keras_weights(model, path: str | os.PathLike) -> None:
    """`model.load_weights(path)` of a `.weights.h5` file, with errors that name the file.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is not a Keras weights file (HDF5), or holds
            the weights of another network.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    try:
        model.load_weights(path)
    except OSError as error:  # h5py: not an HDF5 file.
        raise ValueError(
            f"Expected a Keras .weights.h5 file (HDF5, written by save_weights); {error}. "
            f"Received: path={path!r}"
        ) from error
    except ValueError as error:  # Keras: the variables of another network.
        reason = str(error).strip().splitlines()[0].rstrip(":")
        raise ValueError(
            f"Expected the weights of the network {model.name!r}; {reason}. Received: path={path!r}"
        ) from error
