"""The feature cache: features of fixed crops, computed once, on disk, read in stream order.

With `cache_dir`, `build_dataset` computes the features of `crops_per_image`
fixed crops per photo (evaluation: the one centre crop) once, and every epoch
reads them from disk (`materialised`), in the position-keyed order of
`pipelines.stream`: element `p` is cached element `p mod C` of epoch
`p // C`'s stateless permutation (C cached crops; evaluation: fixed order;
`in_order`).

- The cache is built eagerly, inside `build_dataset`, complete or not at
  all; its folder, key, atomic placement and integrity check are
  `pipelines.cache_files`.
- Targets are stored as uint8 (0..255), a quarter of the float32 size.
- A cache up to `CACHE_IN_MEMORY_BYTES` (1 GiB) is held in memory (read once,
  when iteration starts), and every position is a stateless lookup; a larger
  one is read as a stream through a seeded shuffle buffer of that size
  instead (shuffle -> repeat -> skip -> shard), where `start_step` reads (but
  does not recompute) the skipped elements and the order also depends on
  TensorFlow's global seed.
- (TF 2.21 logs "The calling iterator did not fully read the dataset being
  cached" after every file-cache pass, even a complete one: the cache is
  complete once `cache_files.seal` has written its `meta.json`.)

Network features (`cache_features=True`, for a network encoder): the
features of `pipelines.network_features.NetworkFeatures` are cached
instead, and read the same way.

Example:
    >>> prefix, count = materialised(make_dataset, config, source, crop_seed=0)
    >>> elements = in_order(prefix, count, config, seed=0)
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import tensorflow as tf
from absl import logging

from pipelines import cache_files, sources, stream
from pipelines.dataset_config import DatasetConfig

CACHE_IN_MEMORY_BYTES = 1 << 30  # Caches up to ~1 GiB are held in memory and permuted.
_SHUFFLE_BUFFER_BYTES = 1 << 30  # A larger cache is shuffled through a buffer of ~1 GiB.


def materialised(
    make_dataset,
    config: DatasetConfig,
    source: sources.Source,
    *,
    crop_seed: int,
    network_digest: str | None = None,
) -> tuple[str, int]:
    """Makes sure a complete cache of `make_dataset()` exists; returns its tf.data prefix and size.

    `make_dataset` makes the uncached `{"features", "target"}` elements
    (targets as uint8); it is only called when no complete cache exists.
    The cache is written into a temporary folder that is renamed to its
    final name after a complete pass (`files.atomic_path`); only then is
    there a `meta.json`. A killed build leaves at most a hidden `.partial-`
    folder, which nothing reads (delete it at leisure). The atomic rename
    needs a local file system (not gs://). `network_digest`: as for
    `cache_files.cache_folder`.
    """
    final, key = cache_files.cache_folder(
        config, source, crop_seed=crop_seed, network_digest=network_digest
    )
    if cache_files.is_complete(final):
        count = cache_files.element_count(final)
        logging.info("Reusing the feature cache at %s (%d examples).", final, count)
        return os.path.join(final, "data"), count

    start = time.time()
    with cache_files.placed(final) as temporary:
        logging.info("Building the feature cache at %s (via %s).", final, temporary)
        dataset = make_dataset().cache(os.path.join(temporary, "data"))
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
        cache_files.seal(temporary, final, key, count)
    count = cache_files.element_count(final)
    logging.info(
        "Built the feature cache at %s: %d examples in %.1f s.", final, count, time.time() - start
    )
    return os.path.join(final, "data"), count


def estimated_bytes(config: DatasetConfig, photos: int) -> int:
    """About the disk bytes of the cache of `config` over `photos` photos.

    Each element is its features as float32 and its target as uint8
    (tf.data's own framing adds little). Evaluation caches one crop a photo.
    """
    crops = photos * (config.crops_per_image if config.training else 1)
    return crops * _element_bytes(config)


def _element_bytes(config: DatasetConfig) -> int:
    """The bytes of one cached element: its features as float32, its target as uint8."""
    return 4 * math.prod(config.feature_shape) + 3 * config.target_size**2


def in_order(prefix: str, count: int, config: DatasetConfig, *, seed: int) -> tf.data.Dataset:
    """The cached elements at this pipeline's positions (uint8 targets).

    Position p is cached element `p mod C` of epoch `p // C`'s order
    (training: a stateless permutation keyed by seed and epoch), held in
    memory when the cache fits in `CACHE_IN_MEMORY_BYTES`; a larger cache
    is streamed through a seeded shuffle buffer instead.
    """
    feature_shape, target_size = config.feature_shape, config.target_size
    element_spec = {
        "features": tf.TensorSpec(feature_shape, tf.float32),
        "target": tf.TensorSpec((target_size, target_size, 3), tf.uint8),
    }
    element_bytes = _element_bytes(config)
    order = dict(
        training=config.training,
        repeat=config.repeat,
        seed=seed,
        first=config.first_position,
        num_shards=config.num_shards,
    )
    if count * element_bytes <= CACHE_IN_MEMORY_BYTES:
        return _permuted_cache(prefix, element_spec, count, **order)
    buffer = max(config.batch_size, _SHUFFLE_BUFFER_BYTES // element_bytes)
    return _streamed_cache(prefix, element_spec, count, buffer, **order)


def to_uint8(target: tf.Tensor) -> tf.Tensor:
    """0..1 floats -> 0..255 uint8, rounded (the cache's target format)."""
    return tf.cast(tf.round(tf.clip_by_value(target, 0.0, 1.0) * 255.0), tf.uint8)


def _placeholder(element_spec) -> tf.data.Dataset:
    """An empty dataset of `element_spec`: the input of a cache that is read, not written."""
    zeros = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), element_spec)
    return tf.data.Dataset.from_tensors(zeros).take(0)


def _permuted_cache(
    prefix, element_spec, count, *, training, repeat, seed, first, num_shards
) -> tf.data.Dataset:
    """In memory: position p is cached element `p mod C` of epoch `p // C`'s order.

    The whole cache is read once into one tensor per field (one outer
    element), and every position is a stateless lookup into it, so skipping
    to any position costs nothing.
    """
    index_of = stream.epoch_order(count, seed=seed, salt=stream.CACHED_ORDER, shuffle=training)
    end = stream.END if repeat else count
    positions = tf.data.Dataset.range(first, end, num_shards)

    def element(cache, position):
        index = index_of(position)
        return tf.nest.map_structure(lambda values: values[index], cache)

    everything = _placeholder(element_spec).cache(prefix).batch(count)
    return everything.flat_map(
        lambda cache: positions.map(lambda position: element(cache, position))
    )


def _streamed_cache(
    prefix, element_spec, count, buffer, *, training, repeat, seed, first, num_shards
) -> tf.data.Dataset:
    """Larger than memory: a seeded shuffle buffer of `buffer` elements, skip, shard."""
    dataset = _placeholder(element_spec).cache(prefix)
    if training:
        buffer = max(1, min(count, buffer))
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if first >= num_shards:
        logging.info(
            "build_dataset: the cache does not fit in memory; skipping %d cached elements "
            "by reading them.",
            first - first % num_shards,
        )
    return dataset.skip(first - first % num_shards).shard(num_shards, first % num_shards)
