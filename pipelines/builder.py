"""The one tf.data builder: photos -> (features, target) batches for `model.fit`.

`build_dataset` yields `(features, target)`: features float32
`[B, *feature_shape(S)]` of the representation's encoder applied to the
input crop (float32 0..255, `S = image_size`), and target float32
`[B, T, T, 3]` in 0..1, the same crop resized to the decoder's output side
`T = target_size(S)` (docs/reference.md, Targets).
For representations whose encoder runs inside the training model
(`encode_in_model`, AlexNet) the "features" are the crops themselves,
`[B, S, S, 3]` in 0..255, and with `cache_dir` the cache holds crops; with
`cache_features=True` as well, it holds the network's features instead
(computed once, see `pipelines.network_features`), and the dataset yields them.
HOG and LBP move into the training model the same way with
`features_in_model=True`: the dataset yields crops, and a cache holds crops.

Training examples are random square crops at several scales (side =
uniform(min_crop_scale, 1) x short side, uniform position) plus random
horizontal flips, which the small bundled photo sets need (docs/reference.md, Training);
evaluation examples are the centre square of the full short side.

The module has the step order; its parts have one module each:
`pipelines.dataset_config` (the arguments, validated), `pipelines.decode_check`
(the photos that decode), `pipelines.stream` (the position-keyed order),
`pipelines.examples` (read, decode, crop and target; features of batches),
`pipelines.ops` (per-example ops), `pipelines.cache` (the feature cache),
`pipelines.cache_files` (its folders on disk), `pipelines.network_features`
(the frozen network that fills a network feature cache).

The stream is a function of position (`pipelines.stream`): element `p` of
the uninterrupted single-pipeline stream is fixed by the seed and `p` alone,
so the same arguments give the same stream in every run, independent of
TensorFlow's global seed, and three things are cheap and exact:

- `start_step=k`: the stream starts at element `k * B * num_shards` and yields
  the batches k, k+1, ... of the uninterrupted stream (resuming a run). The
  skipped elements are never read or decoded: only the epoch and the offset
  are computed.
- `num_shards=n, shard_index=i`: one pipeline per tf.distribute worker. Shard
  i takes the elements `p = i, i + n, i + 2n, ...` (before reading), so its
  batch k holds elements `(k * B + m) * n + i`, m < B: the shards are
  disjoint, and their batches k together are exactly the batch k of one
  pipeline with batch size `n * B` (element m of shard i's batch is element
  `m * n + i` of that batch). `batch_size` is the per-pipeline batch.
- `data_service`: the elements are a function of a plain `Dataset.range` of
  positions, which tf.data service can split among its workers.

Caveats. The order of the batches is the seeded one with
`deterministic=True` (the default with a seed); `deterministic=False` lets
parallel steps reorder neighbouring elements. Listed files that do not
decode are left out before the positions are fixed (`pipelines.decode_check`),
so the stream stays exact. TFDS records that do not decode are dropped after
the positions are fixed (they shift the batch boundaries). TFDS sources are
read as a record stream (TFDS's seeded file and buffer shuffle, whose seed pair also
includes `tf.random.set_seed`'s global seed): `start_step` and sharding apply
to the records before decoding, but skipping reads (does not decode) the
skipped records, and every shard reads all records and keeps its share.

Without a seed, a random one is drawn when the dataset is built (logged), so
two builds differ; iterating one unseeded dataset twice repeats its stream.

Two paths, selected by `cache_dir`, with this fixed step order:

- streaming (no cache): 1 list files (those that decode) -> 2 positions
  `range(start, end, n)` (start_step, shard) -> 3 each position's photo
  (per-epoch file order) and key -> 4 read -> 5 decode (drop undecodable;
  training JPEGs: only the crop's window) -> 6 crop/resize + target -> 7
  batch (per pipeline, drop_remainder) -> 8 features on whole batches
  (batched feature ops are much faster) -> [tf.data service] -> prefetch.
  Each photo is read and decoded once per crop.
- cached: 1 list files (those that decode) -> 2 fixed order -> 3 keys (seed,
  file index) -> 4 read -> 5 decode -> 6 `crops_per_image` crops per photo
  (evaluation: the one centre crop) + target -> 7 batch (encoder batches) -> 8 features -> unbatch
  -> 9 cache (built here, once, complete or not at all) -> 10 order: positions
  `range(start, end, n)` over the cached elements (`pipelines.cache`) -> 11
  batch (per pipeline, drop_remainder) -> prefetch. Features are computed once.

tf.data service (`data_service="grpc://HOST:PORT"`, a dispatcher started with
`python -m launch.data_service`): the streaming steps 2-8 run on the service's
workers, in "distributed_epoch" mode (`ShardingPolicy.DYNAMIC`): the
dispatcher hands the positions out to the workers as they ask for them, so
every element is made once and the workers' shares are disjoint, whatever
their number. (The other mode, "parallel_epochs", has every worker produce the
whole stream: with a seed they would all produce the same batches.) Each
element is still the seeded stream's element at its position (its photo and
crop depend on the position only), but a worker batches the positions it got,
and the trainer receives the batches in the order the workers finish them:
with one worker that is the seeded order, with several it is not.
`start_step` then starts the positions at the same element as without the
service (a resumed run sees the data the interrupted one had not reached),
but the batches are not the uninterrupted run's batches one for one (a
warning says so). Sharding (several trainers) is applied to the positions
before the service, so each trainer's job gets its own disjoint share. The
service needs a samples or folder source whose files the workers can read
at the same paths, and an in-graph encoder (not SIFT's numpy function).

Example:
    >>> dataset = build_dataset("samples", "train", representation="hog",
    ...                         image_size=128, batch_size=8, seed=0)
    >>> features, target = next(iter(dataset))  # [8, 16, 16, 31], [8, 128, 128, 3]
    >>> resumed = build_dataset("samples", "train", representation="hog",
    ...                         image_size=128, batch_size=8, seed=0, start_step=1000)
"""

from __future__ import annotations

import secrets

import tensorflow as tf
from absl import logging

from pipelines import cache, cache_files, examples, network_features, sources, stream
from pipelines.dataset_config import DatasetConfig
from pipelines.decode_check import decodable

AUTOTUNE = tf.data.AUTOTUNE


def build_dataset(
    source: str,
    split: str = "train",
    *,
    representation="hog",
    image_size: int | None = None,
    batch_size: int = 32,
    training: bool | None = None,
    seed: int | None = None,
    cache_dir: str | None = None,
    crops_per_image: int = 8,
    min_crop_scale: float = 0.35,
    color_jitter: float = 0.0,
    repeat: bool | None = None,
    encoder_options: dict | None = None,
    drop_remainder: bool | None = None,
    deterministic: bool | None = None,
    start_step: int = 0,
    num_shards: int = 1,
    shard_index: int = 0,
    data_service: str | None = None,
    cache_features: bool = False,
    features_in_model: bool = False,
) -> tf.data.Dataset:
    """Builds the `(features, target)` dataset of a source split.

    Args:
        source: "samples", "folder:PATH" or "tfds:NAME[/CONFIG]" (see `pipelines.sources`).
        split: "train" or "test" ("samples", folders), or a TFDS split string.
        representation: a registry name such as "hog", or a `registry.Representation`.
        image_size: side S of the encoder's input crops; default: the
            representation's `default_image_size`.
        batch_size: batch size of this pipeline (with `num_shards` > 1, the
            global batch is `num_shards * batch_size`).
        training: random multi-scale crops and flips, shuffled; default: True
            for split "train" (or a TFDS "train[...]" slice). False: centre
            crops in fixed file order.
        seed: makes the whole stream reproducible (file order, crops, flips,
            order of cached crops); None: a random seed drawn now.
        cache_dir: when given, features of `crops_per_image` fixed crops per
            photo are computed once and cached on disk here (see `pipelines.cache`).
        crops_per_image: crops per photo in the cache (training only).
        min_crop_scale: smallest crop side as a fraction of the short side, in (0, 1].
        color_jitter: strength of the random photometric change of training
            crops (`ops.color_jitter`); 0 turns it off.
        repeat: repeat forever; default: `training`.
        encoder_options: keyword arguments of `representation.make_encoder`.
        drop_remainder: drop a last partial batch; default: `training`.
        deterministic: `tf.data.Options.deterministic`; default: True when
            `seed` is given or not training, else False (faster).
        start_step: the first batch: the dataset yields the batches
            `start_step, start_step + 1, ...` of the uninterrupted stream with
            the same arguments, without reading the skipped photos (to resume
            a run; see the module doc for the exact guarantee).
        num_shards: number of input pipelines (tf.distribute workers), each
            building its own dataset.
        shard_index: this pipeline's index in `[0, num_shards)`; shards are
            disjoint and together make one pipeline's stream.
        data_service: "grpc://HOST:PORT" of a tf.data service dispatcher
            (`python -m launch.data_service`): read, decode, crop, features
            and batching run on its workers (streaming path only; the order
            is then not the seeded order, see the module doc).
        cache_features: for a network encoder (`encode_in_model`, e.g.
            AlexNet) with `cache_dir`: cache and yield the frozen network's
            features rather than the crops (see
            `pipelines.network_features`). Train a bare decoder on them.
        features_in_model: for a feature op in TensorFlow that is not a
            network (HOG, LBP): yield (and cache) the crops as "features",
            for a training model that computes the features itself
            (`TrainConfig.features_in_model`).

    Returns:
        A `tf.data.Dataset` of `(features, target)` for `model.fit`/`evaluate`.

    Example:
        >>> train = build_dataset("samples", "train", representation="hog",
        ...                       image_size=128, batch_size=8, seed=0,
        ...                       start_step=500, num_shards=2, shard_index=1)
    """
    config = DatasetConfig(
        source,
        split,
        representation=representation,
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        seed=seed,
        cache_dir=cache_dir,
        crops_per_image=crops_per_image,
        min_crop_scale=min_crop_scale,
        color_jitter=color_jitter,
        repeat=repeat,
        encoder_options=encoder_options,
        drop_remainder=drop_remainder,
        deterministic=deterministic,
        start_step=start_step,
        num_shards=num_shards,
        shard_index=shard_index,
        data_service=data_service,
        cache_features=cache_features,
        features_in_model=features_in_model,
    )
    seed = config.seed
    if seed is None:
        seed = secrets.randbits(62)
        logging.info("build_dataset: no seed given; drew seed=%d.", seed)

    # 1. List files: a fixed, sorted file list (or a TFDS split); those that do not
    #    decode are left out where files are read (`decodable`), not when a cache is reused.
    source_spec = sources.resolve(config.source, config.split)
    if config.cache_dir is None:
        dataset = _streamed(config, source_spec, seed)
    else:
        dataset = _cached(config, source_spec, seed)

    # Last: prefetch, and the determinism option.
    dataset = dataset.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(config.deterministic)
    return dataset.with_options(options)


def _streamed(config: DatasetConfig, source: sources.Source, seed: int) -> tf.data.Dataset:
    """Streaming steps 2-8 (and the tf.data service): every crop made when it is read."""
    # 2-3. Positions -> records: each position's photo (file order shuffled
    #      per epoch when training) and its key (seed, position).
    records = stream.positioned_records(
        decodable(source, image_size=config.image_size if config.training else None),
        training=config.training,
        repeat=config.repeat,
        seed=seed,
        first=config.first_position,
        num_shards=config.num_shards,
    )
    # 4-6. Read, decode, crop/resize.
    dataset = examples.crops(config, records, copies=1)
    # 7. Batch (this pipeline's batch).
    dataset = dataset.batch(config.batch_size, drop_remainder=config.drop_remainder)
    # 8. Features on batches.
    dataset = examples.features_of_batches(config, dataset)
    dataset = dataset.map(lambda batch: (batch["features"], batch["target"]))
    if config.data_service is None:
        return dataset
    # Steps 2-8 run on the service's workers; see the module doc.
    if config.start_step:
        logging.warning(
            "build_dataset: with a tf.data service the batches arrive in the "
            "workers' order; start_step=%d starts at the same element as without "
            "the service but does not reproduce the uninterrupted run's batches "
            "one for one.",
            config.start_step,
        )
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=config.data_service,
        )
    )


def _cached(config: DatasetConfig, source: sources.Source, seed: int) -> tf.data.Dataset:
    """Cached steps 2-11: fixed crops' features computed once, then read in stream order."""
    crop_seed = cache_files.crop_seed(config)
    network = None
    if config.cache_features:
        network = network_features.NetworkFeatures(
            config.representation, config.encoder_options, config.feature_shape
        )

    def uncached():
        dataset = examples.fixed_crops(config, source, crop_seed)
        # 7. Batch (for the encoder only); 8. features; back to single examples.
        if network is not None:
            dataset = network.features_of(dataset.batch(network_features.network_batch(config)))
        else:
            dataset = examples.features_of_batches(config, dataset.batch(config.batch_size))
        return dataset.unbatch().map(
            lambda example: {**example, "target": cache.to_uint8(example["target"])}
        )

    # 9. Cache on disk: built here, once, complete or not at all.
    prefix, count = cache.materialised(
        uncached,
        config,
        source,
        crop_seed=crop_seed,
        network_digest=None if network is None else network.digest,
    )
    # 10. Order: positions -> cached elements (per-epoch permutation when training).
    dataset = cache.in_order(prefix, count, config, seed=seed)
    # 11. Batch (this pipeline's batch, drop_remainder).
    dataset = dataset.batch(config.batch_size, drop_remainder=config.drop_remainder)
    return dataset.map(
        lambda batch: (batch["features"], tf.cast(batch["target"], tf.float32) / 255.0),
        num_parallel_calls=AUTOTUNE,
    )
