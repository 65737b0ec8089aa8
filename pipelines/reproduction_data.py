"""The photos a reproduction reads, as `keras_invert.reproduction.Data`, from these pipelines.

Example:
    >>> config = reproduction.ReproduceConfig(out_dir="results")
    >>> reproduction.reproduce(config, reproduction_data(config))
"""

from __future__ import annotations

import functools
import os

from keras_invert import reproduction
from pipelines import baselines, sources
from pipelines.photos import load_images
from pipelines.training_data import fill_feature_caches, training_dataset


def reproduction_data(config: reproduction.ReproduceConfig) -> reproduction.Data:
    """The training streams, test crops and mean images of `config`'s source.

    The test photos are the first `config.num_test_images` of its test split
    (all when None); their crops are read once per size.

    Raises:
        ValueError: the test split has fewer than two photos (the normalised
            error divides by the distance between test photos).
    """
    photos = sources.list_source_files(config.data, config.test_split)
    photos = photos[: config.num_test_images] if config.num_test_images else photos
    if len(photos) < 2:
        raise ValueError(f"Expected two test photos or more. Received: {len(photos)} photos")
    return reproduction.Data(
        training_dataset=training_dataset,
        check_source=lambda run: sources.resolve(run.data, run.train_split),
        crops=functools.lru_cache(maxsize=4)(functools.partial(load_images, photos)),
        image_names=[os.path.splitext(os.path.basename(path))[0] for path in photos],
        training_mean=baselines.training_mean_image,
        fill_feature_caches=fill_feature_caches,
    )
