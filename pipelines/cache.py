"""The feature cache: features of fixed crops, computed once, on disk, read in stream order.

With `cache_dir`, `build_dataset` computes the features of `crops_per_image`
fixed crops per photo (evaluation: the one centre crop) once, and every epoch
reads them from disk (`materialised`), in the position-keyed order of
`pipelines.stream`: element `p` is cached element `p mod C` of epoch
`p // C`'s stateless permutation (C cached crops; evaluation: fixed order;
`in_order`).

- The cache is built eagerly, inside `build_dataset`, into a hidden
  temporary folder that `keras_invert.files.atomic_path` renames into place
  only after a complete pass, so a killed or failed build never leaves a
  cache that looks complete, and concurrent builders do not collide (the
  first to finish wins; the others keep its equivalent cache).
- The folder name holds a key (`cache_key`) of everything the cached
  elements depend on, the machine-dependent encoder choices included (SIFT's
  backend, VLFeat or OpenCV), so changed arguments use another cache.
- Targets are stored as uint8 (0..255), a quarter of the float32 size.
- A cache up to `CACHE_IN_MEMORY_BYTES` (1 GiB) is held in memory (read once,
  when iteration starts), and every position is a stateless lookup; a larger
  one is read as a stream through a seeded shuffle buffer of that size
  instead (shuffle -> repeat -> skip -> shard), where `start_step` reads (but
  does not recompute) the skipped elements and the order also depends on
  TensorFlow's global seed.
- (TF 2.21 logs "The calling iterator did not fully read the dataset being
  cached" after every file-cache pass, even a complete one: the cache is
  complete once `meta.json` exists.)
- `meta.json` records the byte size of each data file: a cache whose
  `meta.json` does not parse, or whose files were cut short since, is
  rebuilt with a warning (`is_complete`).

Network features (`cache_features=True`, for a network encoder):
`NetworkFeatures` runs the frozen network (built once from
`encoder_options`, its `weights` included) on whole crop batches outside
tf.data, as a compiled function on the first GPU (else the CPU), and the
cache stores its features. A fixed encoder's features never change, so
repeated experiments (and every epoch) then train the decoder alone, and the
cache is smaller than the crops for every AlexNet layer (conv1 27x27x96
floats = 0.37x a 227x227x3 float crop; fc8 0.007x). The cache key includes a
SHA-256 digest of the network's weights, so other weights never read a stale
cache. The network is built (weights loaded and hashed) on every call, also
when the cache exists: about 2 s for the whole Caffe reference network on a
CPU. Runs on several taps of one network fill their caches in one pass
over the crops with `pipelines.network_caches`.

Example:
    >>> prefix, count = materialised(make_dataset, config, source, crop_seed=0)
    >>> elements = in_order(prefix, count, config, seed=0)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import time

import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import files
from pipelines import sources, stream
from pipelines.dataset_config import DatasetConfig

_CACHE_FORMAT_VERSION = 1
CACHE_IN_MEMORY_BYTES = 1 << 30  # Caches up to ~1 GiB are held in memory and permuted.
_SHUFFLE_BUFFER_BYTES = 1 << 30  # A larger cache is shuffled through a buffer of ~1 GiB.
# Crops per network call while a network feature cache fills: a network runs
# faster on larger batches (AlexNet conv5 on 2 CPU cores: 68 images/s at 64, 41 at 8).
NETWORK_BATCH = 64


def materialised(
    make_dataset,
    config: DatasetConfig,
    source: sources.Source,
    *,
    crop_seed: int,
    network: NetworkFeatures | None = None,
) -> tuple[str, int]:
    """Makes sure a complete cache of `make_dataset()` exists; returns its tf.data prefix and size.

    `make_dataset` makes the uncached `{"features", "target"}` elements
    (targets as uint8); it is only called when no complete cache exists.
    The cache is written into a temporary folder that is renamed to its
    final name after a complete pass (`files.atomic_path`); only then is
    there a `meta.json`. A killed build leaves at most a hidden `.partial-`
    folder, which nothing reads (delete it at leisure). The atomic rename
    needs a local file system (not gs://).
    """
    final, key = cache_folder(config, source, crop_seed=crop_seed, network=network)
    if is_complete(final):
        count = _count(final)
        logging.info("Reusing the feature cache at %s (%d examples).", final, count)
        return os.path.join(final, "data"), count

    start = time.time()
    with placed(final) as temporary:
        logging.info("Building the feature cache at %s (via %s).", final, temporary)
        dataset = make_dataset().cache(os.path.join(temporary, "data"))
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
        seal(temporary, final, key, count)
    count = _count(final)
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
    features = 4 * math.prod(config.feature_shape)
    return crops * (features + 3 * config.target_size**2)


def cache_folder(
    config: DatasetConfig,
    source: sources.Source,
    *,
    crop_seed: int,
    network: NetworkFeatures | None = None,
) -> tuple[str, str]:
    """The folder that holds the cache of `config` (under its `cache_dir`), and its key."""
    key = cache_key(
        config.representation,
        config.encoder_options,
        config.image_size,
        source,
        config.training,
        config.crops_per_image,
        config.min_crop_scale,
        crop_seed,
        config.color_jitter,
        network_digest=None if network is None else network.digest,
        crops=config.yields_crops,
    )
    parts = (config.representation.name, source.split, str(config.image_size))
    parts += ("crops",) if config.yields_crops else ("features",) if network else ()
    name = "-".join(_safe_name(part) for part in parts) + f"-{key[:16]}"
    return os.path.join(os.path.abspath(os.path.expanduser(config.cache_dir)), name), key


@contextlib.contextmanager
def placed(final: str):
    """Yields a new temporary folder that becomes the cache folder `final` (`files.atomic_path`).

    When another builder placed an equivalent cache at `final` first, the
    rename fails and its cache is kept: no error then.
    """
    try:
        with files.atomic_path(final) as temporary:
            os.makedirs(temporary)
            yield temporary
    except OSError:
        if not is_complete(final):
            raise


def seal(temporary: str, final: str, key: str, count: int) -> None:
    """Marks the written cache in `temporary` complete (`meta.json`), to be renamed to `final`.

    `meta.json` records the byte size of every data file, so that a file cut
    short later (a full disk, a half-finished copy) is seen (`is_complete`).
    """
    if count == 0:
        raise ValueError(f"No decodable images for the cache {final}.")
    sizes = {
        name: os.path.getsize(os.path.join(temporary, name))
        for name in sorted(os.listdir(temporary))
        if name != "meta.json" and os.path.isfile(os.path.join(temporary, name))
    }
    with open(os.path.join(temporary, "meta.json"), "w") as file:
        json.dump({"key": key, "count": count, "sizes": sizes}, file)
    if os.path.exists(final) and _incomplete(final) is not None:
        logging.warning("Removing an incomplete cache folder %s.", final)
        shutil.rmtree(final, ignore_errors=True)


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
    element_bytes = 4 * int(np.prod(feature_shape)) + 3 * target_size**2
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


def cache_key(
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
    crops=False,
) -> str:
    """SHA-256 of everything the cached elements depend on (the folder name holds its start).

    `crops`: the cache holds crops for a model that computes the features
    (`DatasetConfig.yields_crops`); a crops cache and a features cache of
    one representation never share a key. (Only the crops cache of a feature
    op carries the entry; a network's crops and features caches differed
    already, so the keys of existing caches stay as they were.)
    """
    description = {
        "version": _CACHE_FORMAT_VERSION,
        "representation": representation.name,
        # Crops cached for an encoder inside the model do not depend on its options.
        # The options are the resolved ones (`registry.resolved_encoder_options`): a SIFT
        # cache built with VLFeat is never read on a machine that runs OpenCV.
        "encoder_options": None if crops or representation.encode_in_model else encoder_options,
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
    if crops and not representation.encode_in_model:
        description["holds"] = "crops"
    if network_digest is not None:
        # Network features: what the cache holds depends on the weights, not on a path.
        description["network_weights_sha256"] = network_digest
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class NetworkFeatures:
    """A frozen network encoder run over crop batches while a cache is built.

    The network is built once, from `encoder_options`, on `network_device()`
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
        self.device = network_device()
        with tf.device(self.device):
            self.network = representation.make_encoder(**encoder_options)
        self.feature_shape = tuple(feature_shape)
        self.digest = weights_digest(self.network)
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


def weights_digest(network) -> str:
    """SHA-256 of a network's weights, as a network feature cache's key holds it."""
    digest = hashlib.sha256()
    # Shapes and values in order, not names: auto-generated layer names
    # depend on what else the process built.
    for weight in network.weights:
        digest.update(repr(tuple(weight.shape)).encode("utf-8"))
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def crop_seed(config: DatasetConfig) -> int:
    """The seed of a cache's fixed crops: an unseeded cache has seed 0's, so later unseeded
    builds reuse it."""
    return 0 if config.seed is None else int(config.seed)


def network_batch(config: DatasetConfig) -> int:
    """Crops per network call while the network feature cache of `config` fills."""
    return max(config.batch_size, NETWORK_BATCH)


def network_device() -> str:
    """Where a network encoder runs while its feature cache fills: the first GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "/device:CPU:0"


def to_uint8(target: tf.Tensor) -> tf.Tensor:
    """0..1 floats -> 0..255 uint8, rounded (the cache's target format)."""
    return tf.cast(tf.round(tf.clip_by_value(target, 0.0, 1.0) * 255.0), tf.uint8)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "x"


def is_complete(folder: str) -> bool:
    """Whether `folder` holds a complete cache (its `meta.json` is written last).

    A cache whose `meta.json` does not parse, or whose data files do not
    have the byte sizes it records, is not (a warning says why): it is
    rebuilt, as the cache is only a cache. A cache written before the sizes
    were recorded is taken on its `meta.json` alone.
    """
    problem = _incomplete(folder)
    if problem is not None and os.path.isfile(os.path.join(folder, "meta.json")):
        logging.warning("The feature cache at %s is damaged (%s): it is rebuilt.", folder, problem)
    return problem is None


def _incomplete(folder: str) -> str | None:
    """Why `folder` holds no complete cache, or None when it holds one."""
    for name in ("meta.json", "data.index"):
        if not os.path.isfile(os.path.join(folder, name)):
            return f"no {name}"
    meta = _meta(folder)
    if meta is None:
        return "its meta.json does not parse: damaged or half-written"
    for name, size in meta.get("sizes", {}).items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name}, recorded in its meta.json, is missing"
        if os.path.getsize(path) != size:
            return f"{name} holds {os.path.getsize(path)} bytes, not the {size} recorded"
    return None


def _meta(folder: str) -> dict | None:
    """The `meta.json` that `seal` wrote in `folder`, or None where it does not parse as one."""
    try:
        with open(os.path.join(folder, "meta.json"), "rb") as file:
            meta = json.loads(file.read())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError.
        return None
    valid = (
        isinstance(meta, dict)
        and isinstance(meta.get("count"), int)
        and isinstance(meta.get("sizes", {}), dict)
        and all(isinstance(size, int) for size in meta.get("sizes", {}).values())
    )
    return meta if valid else None


def holds_a_complete_cache(root: str) -> bool:
    """Whether the cache root `root` (a run's `cache_dir`) holds a complete cache of any key."""
    return os.path.isdir(root) and any(
        is_complete(os.path.join(root, name)) for name in os.listdir(root)
    )


def _count(folder: str) -> int:
    meta = _meta(folder)
    if meta is None:  # Damaged since `is_complete` read it.
        raise ValueError(
            "Expected a JSON file written by keras_invert; this one does not parse (damaged or "
            f"half-written). Received: path={os.path.join(folder, 'meta.json')!r}"
        )
    return meta["count"]


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
