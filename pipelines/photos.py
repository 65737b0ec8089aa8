"""Photos as arrays, outside tf.data: `load_images` (centre crops) and `read_image` (one file).

The reconstruct and evaluate scripts, the experiments and the tests read
explicit files with these: each file is decoded as the training pipeline
decodes it (`keras_invert.images.decode`), and a file that cannot be used is
an error that names it and says why (missing, a folder, not an image),
rather than a skip.

Example:
    >>> crops = load_images(["photo.jpg"], image_size=128)  # [1, 128, 128, 3], 0..255
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_invert import images
from pipelines.dataset_config import check_positive_int


def load_images(paths, image_size: int, *, name: str = "paths") -> np.ndarray:
    """Centre crops of image files, as the evaluation pipeline makes them.

    Args:
        paths: a file name or a list of them.
        image_size: side of the square crops.
        name: the argument or flag that gave `paths`, which the errors name
            (`Received: images='photos'`).

    Returns:
        float32 `[N, image_size, image_size, 3]` in 0..255.

    Raises:
        FileNotFoundError: a path does not exist.
        IsADirectoryError: a path is a folder (a folder of photos is a
            source: "folder:PATH").
        ValueError: a file is not an image, is corrupt, or is a pipe (explicit user
            input, so an error naming the file rather than a skip).
        OSError: a file exists but cannot be read (permissions).
    """
    check_positive_int("image_size", image_size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    crops = []
    for path in paths:
        image = read_image(path, name=name)
        crops.append(images.center_crop(image, image_size).numpy())
    if not crops:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack(crops).astype(np.float32)


def read_image(path, *, name: str = "path") -> tf.Tensor:
    """One image file, decoded (`keras_invert.images.decode`), with errors that say what is wrong.

    The errors name `path` as `name` (the argument or flag that gave it).

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: as `load_images`;
        OSError: the file exists but cannot be read (permissions).
    """
    path = os.fspath(path)
    # tf.io.gfile, as tf.io.read_file: also for remote paths (gs://...).
    if tf.io.gfile.isdir(path):
        raise IsADirectoryError(
            "Expected an image file, not a folder (a folder of photos is the source "
            f"'folder:{path}'). Received: {name}={path!r}"
        )
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Expected an existing image file. Received: {name}={path!r}")
    if os.path.exists(path) and not os.path.isfile(path):  # A FIFO or device: reading blocks.
        raise ValueError(f"Expected an image file, not a pipe or device. Received: {name}={path!r}")
    try:
        contents = tf.io.read_file(path)
    except tf.errors.OpError as error:
        raise OSError(
            f"Could not read the image file ({error.message}). Received: {name}={path!r}"
        ) from error
    try:
        return images.decode(contents)
    except tf.errors.OpError as error:
        raise ValueError(
            "Expected an image file (JPEG/PNG/GIF/BMP/WebP); this one does not decode: "
            f"not an image, or corrupt or truncated. Received: {name}={path!r}"
        ) from error
