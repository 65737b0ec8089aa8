"""The training dataset of a run, built from its config: one input shard's stream.

`keras_invert.training.train` takes a function `InputShard -> dataset`, so
that each tf.distribute worker reads its own share of the stream; a run's
config (`keras_invert.config.TrainConfig`) holds everything else the
dataset depends on.

Example:
    >>> train = training.train(run, lambda shard: training_dataset(run, shard), work_dir)
"""

from __future__ import annotations

import tensorflow as tf

from keras_invert import config as config_lib
from keras_invert import distribute
from pipelines.builder import build_dataset


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
            (`keras_invert.config.resolve_cache_dir`), or None for no cache.
    """
    return build_dataset(
        run.data,
        run.train_split,
        representation=run.representation,
        image_size=run.image_size,
        encoder_options=config_lib.encoder_options(run),
        batch_size=shard.batch_size,
        training=True,
        seed=run.seed,
        cache_dir=cache_dir,
        crops_per_image=run.crops_per_image,
        min_crop_scale=run.min_crop_scale,
        color_jitter=run.color_jitter,
        start_step=shard.start_step,
        num_shards=shard.num_shards,
        shard_index=shard.shard_index,
        data_service=run.data_service,
        cache_features=run.cache_features,
    )
