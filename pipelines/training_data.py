"""The training dataset of a run, built from its config: one input shard's stream.

`keras_invert.training.train` takes a function `InputShard -> dataset`, so
that each tf.distribute worker reads its own share of the stream; a run's
config (`keras_invert.config.TrainConfig`) holds everything else the
dataset depends on.

Example:
    >>> train = training.train(run, lambda shard: training_dataset(run, shard), work_dir)
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_invert import config as config_lib
from keras_invert import distribute
from pipelines import network_caches, service, sources
from pipelines.builder import build_dataset
from pipelines.dataset_config import DatasetConfig


def training_dataset(
    run: config_lib.TrainConfig,
    shard: distribute.InputShard,
    *,
    cache_dir: str | None = None,
) -> tf.data.Dataset:
    """The seeded training stream of `run` for one input shard.

    The same seed on resume: the stream continues at the shard's batch
    `start_step`, exactly as the uninterrupted run would have read it.

    Args:
        run: the run's config (source, split, representation, crops, seed...).
        shard: this pipeline's batch size, first batch and shard.
        cache_dir: the resolved feature cache folder
            (`keras_invert.runs.cache_dir`), or None for no cache.
    """
    return build_dataset(
        run.data,
        run.train_split,
        **_stream_arguments(run, cache_dir),
        batch_size=shard.batch_size,
        start_step=shard.start_step,
        num_shards=shard.num_shards,
        shard_index=shard.shard_index,
    )


def check_input(run: config_lib.TrainConfig) -> None:
    """Refuses a run that could not read its training photos (`runs.check_start`'s `check_data`).

    Raises:
        ValueError: its source split does not resolve (`sources.resolve`), or
            its tf.data service dispatcher does not answer (`service.check_reachable`).
    """
    sources.resolve(run.data, run.train_split)
    if run.data_service:
        service.check_reachable(run.data_service)


def fill_feature_caches(runs: Sequence[tuple[config_lib.TrainConfig, str]]) -> list[str]:
    """Fills the network feature caches of runs on taps of one network, in one pass.

    Each cache is the one `training_dataset(run, shard, cache_dir=...)` would
    build, where it would build it, so the run reuses it
    (`pipelines.network_caches`); existing caches are kept.

    Args:
        runs: `(run config, resolved cache folder)` pairs of runs with
            `cache_features` that differ only in the tap.

    Returns:
        The cache folders, in the order of `runs`.

    Raises:
        ValueError: the runs' crops would differ (one line).
    """
    configs = [cache_config(run, cache_dir) for run, cache_dir in runs]
    return network_caches.materialise_together(configs)


def cache_config(run: config_lib.TrainConfig, cache_dir: str) -> DatasetConfig:
    """The dataset config of the feature cache that `run`'s training stream reads.

    Its fixed crops (`pipelines.examples.fixed_crops`) are the photos' crops
    whose features the cache holds.
    """
    return DatasetConfig(
        run.data, run.train_split, **_stream_arguments(run, cache_dir), batch_size=run.batch_size
    )


def _stream_arguments(run: config_lib.TrainConfig, cache_dir: str | None) -> dict:
    """`build_dataset`'s arguments of a run's training stream but the shard's."""
    return dict(
        **_encoding(run),
        training=True,
        seed=run.seed,
        cache_dir=cache_dir,
        crops_per_image=run.crops_per_image,
        min_crop_scale=run.min_crop_scale,
        color_jitter=run.color_jitter,
        data_service=run.data_service,
        cache_features=run.cache_features,
    )


def sample_batch(run: config_lib.TrainConfig, *, cache_dir: str | None = None):
    """The fixed batch whose reconstructions a run logs: `run.summary_images` test crops.

    Returns:
        `(features, targets)` as NumPy arrays, or None when the run logs no
        images or its test split is empty. The "features" are crops where
        the model computes the features (a network, `features_in_model`).
        A run on cached network features trains a bare decoder, so its
        sample batch holds features too.
    """
    if not run.summary_images:
        return None
    cached = dict(cache_dir=cache_dir, cache_features=True) if run.cache_features else {}
    test = build_dataset(
        run.data,
        run.test_split,
        **_encoding(run),
        batch_size=run.summary_images,
        training=False,
        seed=run.seed,  # Centre crops either way; a seed only saves a "drew seed" log line.
        **cached,
    )
    batch = next(iter(test.take(1)), None)
    return None if batch is None else tuple(tensor.numpy() for tensor in batch)


def _encoding(run: config_lib.TrainConfig) -> dict:
    """What both of a run's datasets encode with: its representation, size and encoder,
    and whether the model computes the features (then both yield crops)."""
    return dict(
        representation=run.representation,
        image_size=run.image_size,
        encoder_options=config_lib.encoder_options(run),
        features_in_model=run.features_in_model,
    )
