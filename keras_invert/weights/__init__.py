"""Import of pretrained weights from the formats found in the wild, without their frameworks.

* Caffe `.caffemodel` (protobuf `NetParameter`): `read_caffemodel`,
  `load_caffe_weights`.
* PyTorch `.pth` state dicts (zip and legacy formats), read by a restricted
  unpickler that never runs code from the file: `read_torch_state_dict`,
  `load_torchvision_weights`.
* Keras `.weights.h5` files: `load_keras_weights`, whose errors name the file.

`convert_alexnet_weights` (and its command line, `launch/convert_weights.py`)
converts either once into a Keras `.weights.h5`.

Example:
    >>> from keras_invert.encoders import alexnet
    >>> from keras_invert.weights import load_caffe_weights
    >>> encoder = alexnet("caffe")
    >>> load_caffe_weights(encoder, "bvlc_reference_caffenet.caffemodel")
    >>> encoder.save_weights("caffenet.weights.h5")
"""

import errno
import os

from keras_invert import files
from keras_invert.weights.caffe import CaffeFormatError, load_caffe_weights, read_caffemodel
from keras_invert.weights.torch_state import (
    TORCHVISION_ALEXNET_KEYS,
    TorchFormatError,
    UnsafePickleError,
    load_torchvision_weights,
    read_torch_state_dict,
)

__all__ = [
    "convert_alexnet_weights",
    "load_keras_weights",
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


def convert_alexnet_weights(
    input_path: str | os.PathLike, output_path: str | os.PathLike, variant: str | None = None
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

    Returns:
        The variant converted.

    Example:
        >>> convert_alexnet_weights("bvlc_reference_caffenet.caffemodel", "caffenet.weights.h5")
        'caffe'
    """
    from keras_invert.encoders.alexnet import ALEXNET_VARIANTS, alexnet

    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    if not output_path.endswith(".weights.h5"):
        raise ValueError(
            f"`output_path` must end in .weights.h5. Received: output_path={output_path!r}"
        )
    if variant is None:
        if input_path.endswith(".caffemodel"):
            variant = "caffe"
        elif input_path.endswith((".pth", ".pt")):
            variant = "torchvision"
        else:
            raise ValueError(
                "Cannot tell the variant from the file name; pass `variant`. "
                f"Received: input_path={input_path!r}"
            )
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(
            f"`variant` must be one of {ALEXNET_VARIANTS}. Received: variant={variant!r}"
        )
    # Caffe networks come as .caffemodel files, torchvision's as .pth state dicts.
    loader = load_caffe_weights if variant == "caffe" else load_torchvision_weights
    model = alexnet(variant)
    loader(model, input_path)

    with files.atomic_path(output_path) as temporary:
        model.save_weights(temporary)
    return variant
