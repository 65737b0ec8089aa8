"""The photos a reproduction reads, as `keras_invert.reproduction.Data`, from these pipelines.

Example:
    >>> config = reproduction.ReproduceConfig(out_dir="results")
    >>> reproduction.reproduce(config, reproduction_data(config))
"""

from __future__ import annotations

import functools

from keras_invert import reproduction
from pipelines import baselines, sources
from pipelines.photos import source_photos
from pipelines.training_data import fill_feature_caches, training_dataset


def reproduction_data(config: reproduction.ReproduceConfig) -> reproduction.Data:
    """The training streams, test crops and mean images of `config`'s source.

    The test photos are the first `config.test_image_count` of its test
    split, TFDS splits included; their crops are read once per size. The
    mean training image needs the training photos as files, so a TFDS
    source has none (logged).

    Raises:
        ValueError: the test split has fewer than two photos (the normalised
            error divides by the distance between test photos).
    """
    names, crops = source_photos(config.data, config.test_split, config.test_image_count)
    if len(names) < 2:
        raise ValueError(f"Expected two test photos or more. Received: {len(names)} photos")
    return reproduction.Data(
        training_dataset=training_dataset,
        check_source=lambda run: sources.resolve(run.data, run.train_split),
        crops=functools.lru_cache(maxsize=4)(crops),
        image_names=names,
        training_mean=baselines.training_mean_image,
        fill_feature_caches=fill_feature_caches,
    )
