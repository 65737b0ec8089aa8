"""The photos a reproduction reads, as `keras_invert.reproduction.Data`, from these pipelines.

Example:
    >>> config = reproduction.ReproduceConfig(out_dir="results")
    >>> reproduction.reproduce(config, reproduction_data(config))
"""

from __future__ import annotations

import functools
import os
import shutil

from keras_invert import config as config_lib
from keras_invert import reproduction, runs
from pipelines import baselines, cache, cache_files, sources
from pipelines.photos import source_photos
from pipelines.training_data import cache_config, fill_feature_caches, training_dataset


def reproduction_data(config: reproduction.ReproduceConfig) -> reproduction.Data:
    """The training streams, test crops and mean images of `config`'s source.

    The test photos are the first `config.test_image_count` of its test
    split, TFDS splits included; their crops are read once per size. The
    decoders are also measured on the first as many photos of its training
    split, which they trained on (on other crops of them). The
    mean training image needs the training photos as files, so a TFDS
    source has none (logged).

    Raises:
        ValueError: the test split has fewer than two photos (the normalised
            error divides by the distance between test photos), or the
            feature caches would not fit on the disk (`check_cache_room`).
    """
    check_cache_room(config)
    photos = source_photos(config.data, config.test_split, config.test_image_count)
    if len(photos) < 2:
        raise ValueError(f"Expected two test photos or more. Received: {len(photos)} photos")
    seen = source_photos(config.data, config.train_split, config.test_image_count)
    return reproduction.Data(
        training_dataset=training_dataset,
        check_source=lambda run: sources.resolve(run.data, run.train_split),
        crops=functools.lru_cache(maxsize=4)(photos.crops),
        image_names=list(photos.names),
        training_mean=baselines.training_mean_image,
        fill_feature_caches=fill_feature_caches,
        training_crops=functools.lru_cache(maxsize=4)(seen.crops) if len(seen) > 1 else None,
    )


def check_cache_room(config: reproduction.ReproduceConfig) -> None:
    """Refuses, before any work, a reproduction whose feature caches would not fit on its disk.

    Scale "cpu" caches the features of every training crop (32 or 128 per
    photo): right for the bundled photos, terabytes for a large photo set.
    The estimate (`pipelines.cache.estimated_bytes`) counts the jobs not
    started yet whose cache folder holds no complete cache.

    Raises:
        ValueError: the estimate exceeds the free space where `out_dir` is.
    """
    needed, count = 0, None
    for job in reproduction.jobs(config):
        work_dir = os.path.join(config.out_dir, "runs", job.name)
        if config_lib.load(work_dir) is not None:
            continue  # A run started earlier: its cache is built, and the driver judges its plan.
        run = runs.resolve_config(work_dir, dict(job.changes), job.preset)
        folder = runs.cache_dir(run, work_dir)
        if folder is None or cache_files.holds_a_complete_cache(folder):
            continue
        if count is None:
            count = sources.photo_count(sources.resolve(run.data, run.train_split))
            if count is None:
                return  # A TFDS split that cannot be counted: nothing to check against.
        needed += cache.estimated_bytes(cache_config(run, folder), count)
    existing = os.path.abspath(os.path.expanduser(config.out_dir))
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ValueError(
            f"Expected room for the feature caches of {count} training photos: about "
            f"{needed / 1e9:,.1f} GB. Received: {free / 1e9:,.1f} GB free at {existing!r}. "
            "Use --scale=full (it caches nothing) or a smaller photo set."
        )
