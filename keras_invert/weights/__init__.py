"""Import of pretrained weights from the formats found in the wild, without their frameworks.

* Caffe `.caffemodel` (protobuf `NetParameter`): `read_caffemodel`,
  `load_caffe_weights`.
* PyTorch `.pth` state dicts (zip and legacy formats), read by a restricted
  unpickler that never runs code from the file: `read_torch_state_dict`,
  `load_torchvision_weights`.

`launch/convert_weights.py` converts either once into a Keras `.weights.h5`.

Example:
    >>> from keras_invert.encoders import alexnet
    >>> from keras_invert.weights import load_caffe_weights
    >>> encoder = alexnet("caffe")
    >>> load_caffe_weights(encoder, "bvlc_reference_caffenet.caffemodel")
    >>> encoder.save_weights("caffenet.weights.h5")
"""

from keras_invert.weights.caffe import CaffeFormatError, load_caffe_weights, read_caffemodel
from keras_invert.weights.torch_state import (
    TORCHVISION_ALEXNET_KEYS,
    TorchFormatError,
    UnsafePickleError,
    load_torchvision_weights,
    read_torch_state_dict,
)

__all__ = [
    "TORCHVISION_ALEXNET_KEYS",
    "CaffeFormatError",
    "TorchFormatError",
    "UnsafePickleError",
    "load_caffe_weights",
    "load_torchvision_weights",
    "read_caffemodel",
    "read_torch_state_dict",
]
