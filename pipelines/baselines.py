"""The mean training image of a work dir: the constant prediction its model could learn.

`keras_invert.evaluation` scores it beside the decoders (the "mean training
image" rows of `launch.evaluate` and `launch.reconstruct`); reading the
training photos is this module's part.

Example:
    >>> from pipelines import baselines
    >>> mean, description = baselines.training_mean_image("runs/hog", 64, 64)
"""

from __future__ import annotations

import functools
import math

import numpy as np
from absl import logging

from keras_invert import config as config_lib
from keras_invert import images
from pipelines import list_source_files, read_image

MAX_MEAN_PHOTOS = 1000
"""At most this many training photos make a mean image (evenly spaced beyond it)."""


def training_mean_image(model_path: str, image_size: int, size: int):
    """The mean of a work dir's training targets: what a constant predictor could learn.

    The photos are the model's own training data, the source and split in
    its `config.json`, centre cropped at `image_size` and made targets of
    side `size` (`keras_invert.images.target`), as the evaluated photos are.

    Returns:
        `(mean image [size, size, 3] in [0, 1], description)`, or None when
        the training data is unknown (an export, which records none) or not
        readable here (a TFDS source has no files to list; a folder that is
        not on this machine), with a logged warning.
    """
    run = config_lib.load(model_path)
    if run is None:
        return None
    try:
        return mean_target(run.data, run.train_split, image_size, size)
    except (ValueError, OSError) as error:
        logging.warning("No mean training image for %s: %s", model_path, error)
        return None


@functools.lru_cache(maxsize=8)
def mean_target(data: str, split: str, image_size: int, size: int):
    """`(mean image, description)` of a source's training targets, as `training_mean_image`
    gives them; computed once for models trained on the same data.

    Up to `MAX_MEAN_PHOTOS` photos: a larger split gives every k-th photo of
    its sorted list, k the smallest stride that keeps to the limit.
    """
    paths = list_source_files(data, split)
    # A large split is sampled evenly along its sorted list (which a class-per-folder
    # layout sorts by class): its mean, not a day of decoding.
    stride = max(1, math.ceil(len(paths) / MAX_MEAN_PHOTOS))
    sampled = paths[::stride]
    total, count = np.zeros((size, size, 3), np.float64), 0
    for path in sampled:
        try:
            image = read_image(path)
        except ValueError:
            continue  # Training dropped it too (the pipelines skip undecodable photos).
        total += images.target(images.center_crop(image, image_size), size).numpy()
        count += 1
    if not count:
        raise ValueError(f"no photo of {data} (split {split}) decodes.")
    mean = (total / count).astype(np.float32)
    mean.flags.writeable = False  # Shared by every caller.
    description = f"mean of {count} training photos ({data}, split {split})"
    if stride > 1:
        description += f", 1 in {stride} of {len(paths)}"
    return mean, description
