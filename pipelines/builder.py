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
(computed once, see "Network features" below), and the dataset yields them.

Training examples are random square crops at several scales (side =
uniform(min_crop_scale, 1) x short side, uniform position) plus random
horizontal flips, which the small bundled photo sets need (docs/reference.md, Training);
evaluation examples are the centre square of the full short side.

The stream is a function of position (choice). Element number `p` of the
uninterrupted single-pipeline stream (counting from 0 over all epochs) is
fixed by the seed and `p` alone: its photo is `p mod N` of epoch `p // N`'s
file order (N photos; a stateless permutation keyed by seed and epoch when
training, `tf.random.experimental.index_shuffle`), and its crop, flip and
jitter draws use the key `fold_in((seed, salt), p)`. So the same arguments
give the same stream in every run, independent of TensorFlow's global seed,
and three things are cheap and exact:

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
decode (truncated, corrupt) are left out before the positions are fixed, each
named in a warning: every listed file is checked once when the dataset is
built (in parallel, remembered per process; decoded in full for sources of up
to 20,000 files: on 2 CPU cores 0.2-0.3 s for the 29 bundled photos, about
2.5 ms per 500x375 JPEG; larger sources get a check of each file's first and
last bytes, see `_decodable`), so the stream stays exact, and a source where
no file decodes is a ValueError that names them rather than a repeated
stream that never yields. TFDS records that do not decode are dropped after
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
  (per-epoch file order) and key -> 4 read -> 5 decode (drop undecodable) ->
  6 crop/resize + target -> 7 batch (per pipeline, drop_remainder) -> 8
  features on whole batches (batched feature ops are much faster) ->
  [tf.data service] -> prefetch. Each photo is read and decoded once per crop.
- cached: 1 list files (those that decode) -> 2 fixed order -> 3 keys (seed,
  file index) -> 4 read -> 5 decode -> 6 `crops_per_image` crops per photo
  (evaluation: the one centre crop) + target -> 7 batch (encoder batches) -> 8 features -> unbatch
  -> 9 cache -> 10 order: positions `range(start, end, n)`, element `p` is
  cached element `p mod C` of epoch `p // C`'s stateless permutation (C
  cached crops; evaluation: fixed order) -> 11 batch (per pipeline,
  drop_remainder) -> prefetch. Features are computed once. Step 10 holds the
  whole cache in memory (read once, when iteration starts) when it fits in
  `_CACHE_IN_MEMORY_BYTES` (1 GiB); a larger cache is read as a stream
  through a seeded shuffle buffer of that size instead (10' shuffle -> repeat
  -> skip -> shard), where `start_step` reads (but does not recompute) the
  skipped elements and the order also depends on TensorFlow's global seed.
  The cache is built eagerly inside `build_dataset`, into a private
  temporary folder that is renamed into place only after a complete pass, so
  a killed or failed build never leaves a cache that looks complete, and
  concurrent builders do not collide. Targets are stored as uint8 (0..255) in
  the cache, a quarter of the float32 size. The cache key includes the
  machine-dependent encoder choices (SIFT's backend, VLFeat or OpenCV). (TF
  2.21 logs "The calling iterator did not fully read the dataset being
  cached" after every complete file-cache pass, even a complete one: the
  cache is complete once `meta.json` exists.)

Network features (`cache_features=True`, with `cache_dir`, for a network
encoder): step 8 of the cached path runs the frozen network (built once from
`encoder_options`, its `weights` included) on whole crop batches outside
tf.data, as a compiled function on the first GPU (else the CPU), and the
cache stores its features. A fixed encoder's features
never change, so repeated experiments (and every epoch) then train the
decoder alone, and the cache is smaller than the crops for every AlexNet
layer (conv1 27x27x96 floats = 0.37x a 227x227x3 float crop; fc8 0.007x).
The cache key includes a SHA-256 digest of the network's weights, so other
weights never read a stale cache. The network is built (weights loaded and
hashed) on every call, also when the cache exists: about 2 s for the whole
Caffe reference network on a CPU.

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

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import images, registry
from pipelines import ops, sources

AUTOTUNE = tf.data.AUTOTUNE
_CACHE_FORMAT_VERSION = 1
_CACHE_IN_MEMORY_BYTES = 1 << 30  # Caches up to ~1 GiB are held in memory and permuted.
_SHUFFLE_BUFFER_BYTES = 1 << 30  # A larger cache is shuffled through a buffer of ~1 GiB.
# Crops per network call while a network feature cache fills: a network runs
# faster on larger batches (AlexNet conv5 on 2 CPU cores: 68 images/s at 64, 41 at 8).
_NETWORK_BATCH = 64
_END = 1 << 62  # The end of the positions of a repeated stream ("forever").
# Salts that keep the key streams of different uses apart.
_FILE_ORDER, _EXAMPLE, _CACHED_CROP, _CACHED_ORDER = 1, 2, 3, 4


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
            photo are computed once and cached on disk here (see module doc).
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
            features rather than the crops (see "Network features" in the
            module doc). Train a bare decoder on them.

    Returns:
        A `tf.data.Dataset` of `(features, target)` for `model.fit`/`evaluate`.

    Example:
        >>> train = build_dataset("samples", "train", representation="hog",
        ...                       image_size=128, batch_size=8, seed=0,
        ...                       start_step=500, num_shards=2, shard_index=1)
    """
    representation = _resolve_representation(representation)
    image_size = representation.default_image_size if image_size is None else image_size
    _check_arguments(
        image_size, batch_size, crops_per_image, min_crop_scale, seed, encoder_options, color_jitter
    )
    _check_distribution(start_step, num_shards, shard_index, data_service)
    _check_cache_features(cache_features, representation, cache_dir)
    encoder_options = registry.resolved_encoder_options(representation, encoder_options)
    if training is None:
        training = split == "train" or split.startswith("train[")
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if deterministic is None:
        deterministic = seed is not None or not training
    user_seed = seed
    if seed is None:
        seed = secrets.randbits(62)
        logging.info("build_dataset: no seed given; drew seed=%d.", seed)
    target_size = representation.target_size(image_size)
    if representation.encode_in_model and not cache_features:
        # Network encoders (AlexNet) run inside the training model, on the
        # accelerator: the "features" the pipeline yields are the crops.
        feature_shape = (image_size, image_size, 3)
    else:
        feature_shape = tuple(representation.feature_shape(image_size))
    # Element positions of this pipeline: from the first element of batch
    # `start_step` (of the whole, unsharded stream), every num_shards-th.
    first = start_step * batch_size * num_shards + shard_index

    # 1. List files: a fixed, sorted file list (or a TFDS split); those that do not
    #    decode are left out where files are read (`_decodable`), not when a cache is reused.
    source_spec = sources.resolve(source, split)
    if data_service is not None:
        _check_service_inputs(representation, source_spec, cache_dir)

    def crops(records, copies):
        """Steps 4-6: read, decode, crop/resize + target (both paths)."""
        # 4. Read the files (parallel); TFDS records are already bytes.
        dataset = records
        if source_spec.files is not None:
            dataset = dataset.map(ops.read, num_parallel_calls=AUTOTUNE)
        # 5. Decode. Files that do not decode were left out at step 1; what still
        #    fails (a TFDS record, a file changed since) is dropped here.
        dataset = dataset.map(ops.decode, num_parallel_calls=AUTOTUNE)
        dataset = dataset.ignore_errors(log_warning=True)
        # 6. Crop, resize to image_size (training: random scale, position, flip); target.
        if copies > 1:
            dataset = dataset.flat_map(lambda example: _copies(example, copies))
        return dataset.map(
            lambda example: _crop_and_target(
                example, training, image_size, min_crop_scale, target_size, color_jitter
            ),
            num_parallel_calls=AUTOTUNE,
        )

    def features_of_batches(dataset):
        """Step 8: the encoder on whole batches (batched feature ops are much faster)."""
        encode = _batch_encoder(representation, encoder_options, feature_shape)
        return dataset.map(
            lambda batch: {"features": encode(batch["image"]), "target": batch["target"]},
            num_parallel_calls=AUTOTUNE,
        )

    if cache_dir is None:
        # 2-3. Positions -> records: each position's photo (file order shuffled
        #      per epoch when training) and its key (seed, position).
        records = _positioned_records(
            _decodable(source_spec),
            training=training,
            repeat=repeat,
            seed=seed,
            first=first,
            num_shards=num_shards,
        )
        # 4-6. Read, decode, crop/resize.
        dataset = crops(records, copies=1)
        # 7. Batch (this pipeline's batch).
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        # 8. Features on batches.
        dataset = features_of_batches(dataset)
        dataset = dataset.map(lambda batch: (batch["features"], batch["target"]))
        if data_service is not None:
            # Steps 2-8 run on the service's workers; see the module doc.
            if start_step:
                logging.warning(
                    "build_dataset: with a tf.data service the batches arrive in the "
                    "workers' order; start_step=%d starts at the same element as without "
                    "the service but does not reproduce the uninterrupted run's batches "
                    "one for one.",
                    start_step,
                )
            dataset = dataset.apply(
                tf.data.experimental.service.distribute(
                    processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
                    service=data_service,
                )
            )
    else:
        # An unseeded cache has fixed crops (seed 0), so later unseeded builds reuse it.
        crop_seed = 0 if user_seed is None else int(user_seed)
        network = None
        if cache_features:
            network = _NetworkFeatures(representation, encoder_options, feature_shape)

        def uncached():
            # 2-3. Fixed record order, no repeat; keys (seed, file index).
            records = _positioned_records(
                _decodable(source_spec),
                training=False,
                repeat=False,
                seed=crop_seed,
                first=0,
                num_shards=1,
                salt=_CACHED_CROP,
            )
            # 4-6. Read, decode, crops_per_image crops per photo (evaluation: one
            #      centre crop); crop j of a photo is keyed by fold_in(key, j).
            copies = crops_per_image if training else 1
            dataset = crops(records, copies)
            # 7. Batch (for the encoder only); 8. features; back to single examples.
            if network is not None:
                dataset = network.features_of(dataset.batch(max(batch_size, _NETWORK_BATCH)))
            else:
                dataset = features_of_batches(dataset.batch(batch_size))
            return dataset.unbatch().map(
                lambda example: {**example, "target": _to_uint8(example["target"])}
            )

        # 9. Cache on disk: built here, once, complete or not at all.
        key = _cache_key(
            representation,
            encoder_options,
            image_size,
            source_spec,
            training,
            crops_per_image,
            min_crop_scale,
            crop_seed,
            color_jitter,
            network_digest=None if network is None else network.digest,
        )
        parts = (representation.name, split, str(image_size)) + (("features",) if network else ())
        name = "-".join(_safe_name(part) for part in parts)
        prefix, count = _materialised_cache(uncached, cache_dir, f"{name}-{key[:16]}", key)
        element_spec = {
            "features": tf.TensorSpec(feature_shape, tf.float32),
            "target": tf.TensorSpec((target_size, target_size, 3), tf.uint8),
        }
        # 10. Order: positions -> cached elements (per-epoch permutation when training).
        element_bytes = 4 * int(np.prod(feature_shape)) + 3 * target_size**2
        if count * element_bytes <= _CACHE_IN_MEMORY_BYTES:
            dataset = _permuted_cache(
                prefix,
                element_spec,
                count,
                training=training,
                repeat=repeat,
                seed=seed,
                first=first,
                num_shards=num_shards,
            )
        else:
            dataset = _streamed_cache(
                prefix,
                element_spec,
                count,
                element_bytes,
                training=training,
                repeat=repeat,
                seed=seed,
                first=first,
                num_shards=num_shards,
                batch_size=batch_size,
            )
        # 11. Batch (this pipeline's batch, drop_remainder).
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        dataset = dataset.map(
            lambda batch: (batch["features"], tf.cast(batch["target"], tf.float32) / 255.0),
            num_parallel_calls=AUTOTUNE,
        )

    # Last: prefetch, and the determinism option.
    dataset = dataset.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    return dataset.with_options(options)


def load_images(paths, image_size: int) -> np.ndarray:
    """Centre crops of image files, as the evaluation pipeline makes them.

    Args:
        paths: a file name or a list of them.
        image_size: side of the square crops.

    Returns:
        float32 `[N, image_size, image_size, 3]` in 0..255.

    Raises:
        FileNotFoundError: a path does not exist.
        IsADirectoryError: a path is a folder (a folder of photos is a
            source: "folder:PATH").
        ValueError: a file is not an image or is corrupt (explicit user
            input, so an error naming the file rather than a skip).
        OSError: a file exists but cannot be read (permissions).
    """
    _check_positive_int("image_size", image_size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    crops = []
    for path in paths:
        image = read_image(path)
        crops.append(images.center_crop(image, image_size).numpy())
    if not crops:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack(crops).astype(np.float32)


def read_image(path) -> tf.Tensor:
    """One image file, decoded (`keras_invert.images.decode`), with errors that say what is wrong.

    Raises:
        FileNotFoundError, IsADirectoryError, ValueError: as `load_images`;
        OSError: the file exists but cannot be read (permissions).
    """
    path = os.fspath(path)
    # tf.io.gfile, as tf.io.read_file: also for remote paths (gs://...).
    if tf.io.gfile.isdir(path):
        raise IsADirectoryError(
            "Expected an image file, not a folder (a folder of photos is the source "
            f"'folder:{path}'). Received: path={path!r}"
        )
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Expected an existing image file. Received: path={path!r}")
    try:
        contents = tf.io.read_file(path)
    except tf.errors.OpError as error:
        raise OSError(
            f"Could not read the image file ({error.message}). Received: path={path!r}"
        ) from error
    try:
        return images.decode(contents)
    except tf.errors.OpError as error:
        raise ValueError(
            "Expected an image file (JPEG/PNG/GIF/BMP/WebP); this one does not decode: "
            f"not an image, or corrupt or truncated. Received: path={path!r}"
        ) from error


# Steps.


def _positioned_records(
    source, *, training: bool, repeat: bool, seed: int, first: int, num_shards: int, salt=_EXAMPLE
) -> tf.data.Dataset:
    """Steps 2-3: records `{"path" or "bytes", "seed"}` at positions first, first + n, ...

    File sources: position p is photo `p mod N` of epoch `p // N`'s order
    (training: a stateless permutation keyed by seed and epoch), with key
    `fold_in((seed, salt), p)`; nothing before `first` is touched. TFDS: the
    record stream, positions counted along it, skipped and sharded before decoding.
    """
    base = tf.constant([int(seed) % (1 << 63), salt], tf.int64)
    order_base = tf.constant([int(seed) % (1 << 63), _FILE_ORDER], tf.int64)

    def key(position):
        return tf.random.experimental.stateless_fold_in(base, position)

    if source.files is None:
        records = source.tfds_records(shuffle=training, seed=seed)
        records = records.repeat() if repeat else records
        positions = tf.data.Dataset.range(_END)
        dataset = tf.data.Dataset.zip(records, positions).skip(first - first % num_shards)
        dataset = dataset.shard(num_shards, first % num_shards)
        return dataset.map(lambda record, position: {**record, "seed": key(position)})
    files = tf.constant(source.files)
    count = len(source.files)

    def record(position):
        epoch, index = position // count, position % count
        if training:
            epoch_key = tf.random.experimental.stateless_fold_in(order_base, epoch)
            index = tf.random.experimental.index_shuffle(index, epoch_key, count - 1)
        return {"path": tf.gather(files, index), "seed": key(position)}

    end = _END if repeat else count
    return tf.data.Dataset.range(first, end, num_shards).map(record)


_DECODES: dict[tuple, bool] = {}
"""Whether a file passed the check, by (path, size, modification time): once per file."""

FULL_DECODE_CHECK_LIMIT = 20_000
"""Sources of at most this many files are decoded in full once; larger ones get `_complete`."""


def _decodable(source: sources.Source) -> sources.Source:
    """Step 1 (files): `source` without the files that do not decode, each named in a warning.

    Each listed file is checked once, in parallel, and the answer remembered
    for the process (by path, size and modification time), so a file that
    fails is left out before the positions are fixed: the stream and its
    resumption stay exact, and a source where no file passes fails here
    instead of spinning forever in a repeated stream that yields nothing.
    A source of up to `FULL_DECODE_CHECK_LIMIT` files is decoded in full
    (about 2.5 ms per 500x375 JPEG on one core); a larger one (ImageNet's
    1.28 million photos would take an hour on 2 cores) gets a structural check
    of each file's first and last bytes (`_complete`), which finds truncated
    and empty files and files that are no image; a photo corrupt inside is
    then dropped at step 5.

    Raises:
        ValueError: no listed file passes (naming them).
    """
    if source.files is None:
        return source  # TFDS records: step 5 drops what does not decode.
    start = time.perf_counter()
    keys = [_file_key(path) for path in source.files]
    unknown = {
        key: path for key, path in zip(keys, source.files, strict=True) if key not in _DECODES
    }
    check = _decodes if len(source.files) <= FULL_DECODE_CHECK_LIMIT else _complete
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        _DECODES.update(zip(unknown, pool.map(check, unknown.values()), strict=True))
    seconds = time.perf_counter() - start
    if seconds > 1.0:
        logging.info(
            "Checked %d photos of %s split %r once (%s): %.1f s.",
            len(unknown), source.source, source.split, check.__name__.strip("_"), seconds,
        )  # fmt: skip
    files = tuple(path for key, path in zip(keys, source.files, strict=True) if _DECODES[key])
    failed = [path for key, path in zip(keys, source.files, strict=True) if not _DECODES[key]]
    for path in failed:
        logging.warning("Leaving out %s: it does not decode (truncated or corrupt).", path)
    if not files:
        named = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if failed[10:] else "")
        raise ValueError(
            f"Expected photos that decode; none of the {len(failed)} files of split "
            f"{source.split!r} does (truncated or corrupt): {named}. "
            f"Received: source={source.source!r}"
        )
    return dataclasses.replace(source, files=files)


def _file_key(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None, None)
    return (path, stat.st_size, stat.st_mtime_ns)


def _decodes(path: str) -> bool:
    """Whether step 5 decodes the file (run eagerly, in a worker thread)."""
    try:
        images.decode(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError):
        return False
    return True


# What the last bytes of a whole JPEG and PNG hold (a JPEG may carry a few
# bytes after its end marker, hence a search in the tail).
_END_MARKERS = {"jpeg": b"\xff\xd9", "png": b"IEND"}
_TAIL_BYTES = 64


def _complete(path: str) -> bool:
    """Whether the file starts as an image format does and is not cut short.

    Reads the first and last bytes only: JPEG, PNG and GIF must end with
    their end marker, BMP and WebP must be as long as their header says.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(16)
            size = os.fstat(file.fileno()).st_size
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError:
        return False
    image_format = sources.image_format(head)
    if image_format in _END_MARKERS:
        return _END_MARKERS[image_format] in tail
    if image_format == "gif":  # The trailer byte is the file's last.
        return tail.endswith(b"\x3b")
    if image_format == "bmp":  # Little-endian file size at byte 2.
        return len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size
    if image_format == "webp":  # RIFF chunk size at byte 4 counts the bytes after byte 8.
        return int.from_bytes(head[4:8], "little") + 8 <= size
    return False


def _permuted_cache(
    prefix, element_spec, count, *, training, repeat, seed, first, num_shards
) -> tf.data.Dataset:
    """Step 10, in memory: position p is cached element `p mod C` of epoch `p // C`'s order.

    The whole cache is read once into one tensor per field (one outer
    element), and every position is a stateless lookup into it, so skipping
    to any position costs nothing.
    """
    order_base = tf.constant([int(seed) % (1 << 63), _CACHED_ORDER], tf.int64)
    end = _END if repeat else count
    positions = tf.data.Dataset.range(first, end, num_shards)

    def element(cache, position):
        epoch, index = position // count, position % count
        if training:
            epoch_key = tf.random.experimental.stateless_fold_in(order_base, epoch)
            index = tf.random.experimental.index_shuffle(index, epoch_key, count - 1)
        return tf.nest.map_structure(lambda values: values[index], cache)

    everything = _placeholder(element_spec).cache(prefix).batch(count)
    return everything.flat_map(
        lambda cache: positions.map(lambda position: element(cache, position))
    )


def _streamed_cache(
    prefix,
    element_spec,
    count,
    element_bytes,
    *,
    training,
    repeat,
    seed,
    first,
    num_shards,
    batch_size,
) -> tf.data.Dataset:
    """Step 10 for a cache larger than memory: a seeded shuffle buffer, skip, shard."""
    dataset = _placeholder(element_spec).cache(prefix)
    if training:
        buffer = max(1, min(count, max(batch_size, _SHUFFLE_BUFFER_BYTES // element_bytes)))
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


def _copies(example: dict, count: int) -> tf.data.Dataset:
    """`count` copies of a decoded photo, copy j keyed by `fold_in(key, j)`."""
    return tf.data.Dataset.range(count).map(
        lambda index: {
            "image": example["image"],
            "seed": tf.random.experimental.stateless_fold_in(example["seed"], index),
        }
    )


def _crop_and_target(
    example, training, image_size, min_crop_scale, target_size, color_jitter=0.0
) -> dict:
    if training:
        example = ops.random_crop(example, image_size, min_crop_scale)
        if color_jitter > 0:
            example = ops.color_jitter(example, color_jitter)
    else:
        example = ops.center_crop(example, image_size)
    example = ops.add_target(example, target_size)
    return {"image": example["image"], "target": example["target"]}


def _batch_encoder(representation, encoder_options: dict, feature_shape: tuple):
    """`images [B, S, S, 3] -> features [B, *feature_shape]`, in the graph or via numpy."""
    if representation.encode_in_model:
        return lambda images: images
    encode = representation.make_encoder(**encoder_options)
    if representation.jit_compile:
        # XLA fuses the feature op into a few loops: HOG runs ~15x faster on a CPU.
        encode = tf.function(encode, jit_compile=True)

    if representation.in_graph:

        def features(images):
            values = tf.cast(encode(images), tf.float32)
            return tf.ensure_shape(values, [images.shape[0], *feature_shape])

        return features

    def encode_numpy(images):
        return np.asarray(encode(images), dtype=np.float32)

    def features(images):
        values = tf.numpy_function(encode_numpy, [images], tf.float32, stateful=False)
        return tf.ensure_shape(values, [images.shape[0], *feature_shape])

    return features


# The cache.


def _cache_key(
    representation,
    encoder_options,
    image_size,
    source,
    training,
    crops_per_image,
    min_crop_scale,
    seed,
    color_jitter=0.0,
    network_digest=None,
) -> str:
    description = {
        "version": _CACHE_FORMAT_VERSION,
        "representation": representation.name,
        # Crops cached for an encoder inside the model do not depend on its options.
        # The options are the resolved ones (`registry.resolved_encoder_options`): a SIFT
        # cache built with VLFeat is never read on a machine that runs OpenCV.
        "encoder_options": None if representation.encode_in_model else encoder_options,
        "image_size": image_size,
        "target_size": representation.target_size(image_size),
        "source": source.source,
        "split": source.split,
        "examples": source.identity,
        "training": training,
        # Evaluation caches one centre crop per photo: these do not matter then.
        "crops_per_image": crops_per_image if training else None,
        "min_crop_scale": float(min_crop_scale) if training else None,
        "seed": seed if training else None,
        "color_jitter": float(color_jitter) if training else None,
    }
    if network_digest is not None:
        # Network features: what the cache holds depends on the weights, not on a path.
        description["network_weights_sha256"] = network_digest
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _NetworkFeatures:
    """A frozen network encoder run over crop batches while a cache is built.

    The network is built once, from `encoder_options`, on `_network_device()`
    (the first GPU, else the CPU; named explicitly, since tf.distribute calls
    dataset functions inside a CPU device scope); `digest` is the SHA-256 of
    its weights (the cache key's). `features_of` maps a dataset of
    `{"image", "target"}` batches to `{"features", "target"}` batches: the
    crop batches are read in Python and the network runs on them as a
    compiled function on that device, not in a CPU `tf.data` map; this runs
    once, while the cache fills.
    """

    def __init__(self, representation, encoder_options: dict, feature_shape: tuple):
        self.name = representation.name
        # Explicitly: tf.distribute calls dataset functions inside a CPU device scope.
        self.device = _network_device()
        with tf.device(self.device):
            self.network = representation.make_encoder(**encoder_options)
        self.feature_shape = tuple(feature_shape)
        digest = hashlib.sha256()
        # Shapes and values in order, not names: auto-generated layer names
        # depend on what else the process built.
        for weight in self.network.weights:
            digest.update(repr(tuple(weight.shape)).encode("utf-8"))
            digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
        self.digest = digest.hexdigest()
        self._encode = tf.function(lambda images: self.network(images, training=False))

    def features_of(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        target_spec = batches.element_spec["target"]

        def generate():
            # Prefetch: the next crops are read and decoded while the network runs.
            for batch in batches.prefetch(2):
                with tf.device(self.device):
                    features = tf.cast(self._encode(batch["image"]), tf.float32)
                if tuple(features.shape[1:]) != self.feature_shape:
                    raise ValueError(
                        f"The {self.name} network gave features {tuple(features.shape[1:])}; "
                        f"expected {self.feature_shape}."
                    )
                yield {"features": features, "target": batch["target"]}

        return tf.data.Dataset.from_generator(
            generate,
            output_signature={
                "features": tf.TensorSpec([None, *self.feature_shape], tf.float32),
                "target": target_spec,
            },
        )


def _network_device() -> str:
    """Where a network encoder runs while its feature cache fills: the first GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "/device:CPU:0"


def _check_cache_features(cache_features, representation, cache_dir) -> None:
    if not isinstance(cache_features, bool):
        raise ValueError(f"Expected a bool. Received: cache_features={cache_features!r}")
    if not cache_features:
        return
    if not representation.encode_in_model:
        raise ValueError(
            "cache_features applies to network encoders (alexnet/..., efficientnet-lite0/..., "
            "keras:...), whose caches otherwise hold crops; other caches always hold "
            f"features. Received: representation={representation.name!r}"
        )
    if cache_dir is None:
        raise ValueError(
            "cache_features needs a cache_dir: the features are computed once, into it. "
            "Received: cache_dir=None"
        )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "x"


def _placeholder(element_spec) -> tf.data.Dataset:
    """An empty dataset of `element_spec`: the input of a cache that is read, not written."""
    zeros = tf.nest.map_structure(lambda spec: tf.zeros(spec.shape, spec.dtype), element_spec)
    return tf.data.Dataset.from_tensors(zeros).take(0)


def _is_complete(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, name)) for name in ("meta.json", "data.index"))


def _materialised_cache(make_dataset, cache_dir: str, name: str, key: str) -> tuple[str, int]:
    """Makes sure a complete cache exists; returns its tf.data prefix and size.

    Builds into `<name>.tmp-<random>` and renames that folder to `<name>` after
    a complete pass; only then is there a `<name>/meta.json`. A killed build
    leaves at most a `.tmp-` folder, which nothing reads (delete it at leisure).
    The atomic rename needs a local file system (not gs://).
    """
    final = os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), name)
    if _is_complete(final):
        with open(os.path.join(final, "meta.json")) as file:
            meta = json.load(file)
        logging.info("Reusing the feature cache at %s (%d examples).", final, meta["count"])
        return os.path.join(final, "data"), int(meta["count"])

    temporary = f"{final}.tmp-{uuid.uuid4().hex[:12]}"
    os.makedirs(temporary)
    logging.info("Building the feature cache at %s (via %s).", final, temporary)
    start = time.time()
    try:
        dataset = make_dataset().cache(os.path.join(temporary, "data"))
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
        if count == 0:
            raise ValueError(f"No decodable images for the cache {final}.")
        with open(os.path.join(temporary, "meta.json"), "w") as file:
            json.dump({"key": key, "count": count}, file)
        if os.path.exists(final) and not _is_complete(final):
            logging.warning("Removing an incomplete cache folder %s.", final)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(temporary, final)
        except OSError:
            if not _is_complete(final):
                raise
            # A concurrent build finished first; its cache is equivalent.
            shutil.rmtree(temporary, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logging.info(
        "Built the feature cache at %s: %d examples in %.1f s.", final, count, time.time() - start
    )
    return os.path.join(final, "data"), count


def _check_service_inputs(representation, source, cache_dir) -> None:
    if cache_dir is not None:
        raise ValueError(
            "Expected cache_dir=None with a data_service: the cache path computes the "
            "features once on this machine, leaving nothing expensive for the service. "
            f"Received: cache_dir={cache_dir!r}"
        )
    if source.files is None:
        raise ValueError(
            "Expected a 'samples' or 'folder:PATH' source with a data_service (its "
            "positions are split among the workers; TFDS record streams are not). "
            f"Received: source={source.source!r}"
        )
    if not representation.in_graph:
        raise ValueError(
            "Expected an in-graph encoder with a data_service: the service's workers run "
            "the serialised dataset graph, which cannot hold a numpy_function. "
            f"Received: representation={representation.name!r}"
        )


def _resolve_representation(representation) -> registry.Representation:
    if isinstance(representation, str):
        return registry.get(representation)
    if not isinstance(representation, registry.Representation):
        raise ValueError(
            "Expected a registry name or a registry.Representation. "
            f"Received: representation={representation!r}"
        )
    return representation


def _check_arguments(
    image_size, batch_size, crops_per_image, min_crop_scale, seed, encoder_options, color_jitter
) -> None:
    _check_positive_int("image_size", image_size)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("crops_per_image", crops_per_image)
    if not 0.0 <= float(color_jitter) <= 1.0:
        raise ValueError(
            f"Expected 0 <= color_jitter <= 1. Received: color_jitter={color_jitter!r}"
        )
    if not 0.0 < float(min_crop_scale) <= 1.0:
        raise ValueError(
            f"Expected 0 < min_crop_scale <= 1. Received: min_crop_scale={min_crop_scale!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"Expected an integer seed or None. Received: seed={seed!r}")
    if encoder_options is not None and not isinstance(encoder_options, dict):
        raise ValueError(f"Expected a dict or None. Received: encoder_options={encoder_options!r}")


def _check_distribution(start_step, num_shards, shard_index, data_service) -> None:
    if (
        isinstance(start_step, bool)
        or not isinstance(start_step, (int, np.integer))
        or start_step < 0
    ):
        raise ValueError(
            f"Expected an integer start_step >= 0. Received: start_step={start_step!r}"
        )
    _check_positive_int("num_shards", num_shards)
    if (
        isinstance(shard_index, bool)
        or not isinstance(shard_index, (int, np.integer))
        or not 0 <= shard_index < num_shards
    ):
        raise ValueError(
            f"Expected 0 <= shard_index < num_shards={num_shards}. "
            f"Received: shard_index={shard_index!r}"
        )
    if data_service is not None and (
        not isinstance(data_service, str)
        or not re.fullmatch(r"(grpc://)?[^:/\s]+:\d+", data_service)
    ):
        raise ValueError(
            "Expected a tf.data service dispatcher address 'grpc://HOST:PORT' or None. "
            f"Received: data_service={data_service!r}"
        )


def _to_uint8(target: tf.Tensor) -> tf.Tensor:
    """0..1 floats -> 0..255 uint8, rounded (the cache's target format)."""
    return tf.cast(tf.round(tf.clip_by_value(target, 0.0, 1.0) * 255.0), tf.uint8)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")
