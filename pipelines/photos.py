"""Photos as arrays, outside tf.data: `load_images` (centre crops), `read_image` (one file),
`source_photos` (the first photos of any source's split, TFDS included) and
`chosen_photos` (image files or a source's photos, as the scripts' flags give them).

The reconstruct, evaluate and experiment scripts and the reproduction read
their photos with these: each file is decoded as the training pipeline
decodes it (`keras_invert.images.decode`), and a file that cannot be used is
an error that names it and says why (missing, a folder, not an image),
rather than a skip.

Example:
    >>> crops = load_images(["photo.jpg"], image_size=128)  # [1, 128, 128, 3], 0..255
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import images
from keras_invert.reproduction.plan import DEFAULT_TEST_IMAGES
from pipelines import image_headers, sources
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
    image_headers.check_pixel_count(contents.numpy(), name, path)
    try:
        return images.decode(contents)
    except tf.errors.OpError as error:
        raise ValueError(
            "Expected an image file (JPEG/PNG/GIF/BMP/WebP); this one does not decode: "
            "another format (TIFF, HEIC, ...: convert it), not an image, or corrupt or "
            f"truncated. Received: {name}={path!r}"
        ) from error


@dataclasses.dataclass(frozen=True)
class Photos:
    """Photos chosen to be reconstructed or shown, read on demand at any crop size.

    Attributes:
        labels: what identifies each photo: a file's path, or a TFDS record's
            "SPLIT-INDEX" (records have no file).
        names: one short name per photo (a file's name without its
            extension; a record's label).
        crops: `image_size -> float32 [N, S, S, 3]` 0..255, the photos'
            centre crops, as `load_images` makes them.
    """

    labels: tuple
    names: tuple
    crops: Callable[[int], np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, labels, image_size: int) -> np.ndarray:
        """The crops of some of the photos, by label (the experiments' `load_images`)."""
        index = {label: position for position, label in enumerate(self.labels)}
        unknown = [label for label in labels if label not in index]
        if unknown:
            raise ValueError(f"Expected labels of these photos. Received: {unknown!r}")
        return self.crops(image_size)[[index[label] for label in labels]]


def chosen_photos(images=None, source=None, split="test", count=None) -> Photos:
    """The photos a user chose by flags: image files, else the first photos of a source's split.

    The one place the reconstruct, evaluate and experiment scripts turn
    `--images` or `--data`/`--split` into photos, so that they read the same
    photos the same way, TFDS splits included.

    Args:
        images: image files (the `--images` flag); they win over `source`.
        source: "samples" (None), "folder:PATH" or "tfds:NAME".
        split: the source's split.
        count: only the first `count` photos. None: all of them, except for
            a TFDS split, of which the first `DEFAULT_TEST_IMAGES` are read
            (a split such as ImageNet's 50,000 validation photos would
            otherwise be decoded into memory).
    """
    if images:
        paths = tuple(os.fspath(path) for path in images)[:count]
        names = tuple(os.path.splitext(os.path.basename(path))[0] for path in paths)
        photos = Photos(paths, names, functools.partial(load_images, paths, name="images"))
        origin = "--images"
    else:
        source = source or "samples"
        if count is None and source.startswith("tfds:"):
            count = DEFAULT_TEST_IMAGES
            logging.info("%s split %s: the first %d photos.", source, split, count)
        photos = source_photos(source, split, count)
        origin = f"{source} split {split}"
    if count is not None and len(photos) < count:
        logging.warning(
            "%s has %d photos, fewer than the %d asked for: using all of them.",
            origin, len(photos), count,
        )  # fmt: skip
    return photos


def source_photos(source: str, split: str, count: int | None = None) -> Photos:
    """The first `count` photos of a source's split (None: all).

    Args:
        source: "samples", "folder:PATH" or "tfds:NAME" (`pipelines.sources`).
        split: the split.
        count: how many photos, in the source's fixed order (files sorted,
            TFDS records as stored).

    Returns:
        `Photos`: files are labelled by their paths and read with
        `load_images` (whose errors name `data`); TFDS records are labelled
        "SPLIT-INDEX", decoded once by the same op and centre-cropped alike.
    """
    resolved = sources.resolve(source, split)
    if resolved.files is not None:
        paths = tuple(resolved.files)[:count] if count else tuple(resolved.files)
        names = tuple(os.path.splitext(os.path.basename(path))[0] for path in paths)
        return Photos(paths, names, functools.partial(load_images, paths, name="data"))
    records = resolved.tfds_records(shuffle=False, seed=None)
    names, decoded = [], []
    for index, record in enumerate((records.take(count) if count else records).as_numpy_iterator()):
        try:
            decoded.append(images.decode(record["bytes"]))
        except tf.errors.InvalidArgumentError:  # As the pipelines, which drop such records.
            logging.warning(
                "%s split %s: record %d does not decode; left out.", source, split, index
            )
            continue
        names.append(f"{split}-{index}")

    def crops(image_size: int) -> np.ndarray:
        check_positive_int("image_size", image_size)
        if not decoded:
            return np.zeros((0, image_size, image_size, 3), np.float32)
        return np.stack([images.center_crop(image, image_size).numpy() for image in decoded])

    return Photos(tuple(names), tuple(names), crops)
