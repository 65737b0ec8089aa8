"""The one tf.data builder: photos -> (features, target) batches for `model.fit`.

`build_dataset` yields `(features, target)`: features float32
`[B, *feature_shape(S)]` of the representation's encoder applied to the
input crop (float32 0..255, `S = image_size`), and target float32
`[B, T, T, 3]` in 0..1, the same crop resized to the decoder's output side
`T = target_size(S)` (SPEC.md section 2, "Targets"; section 3, training data).
For representations whose encoder runs inside the training model
(`encode_in_model`, AlexNet) the "features" are the crops themselves,
`[B, S, S, 3]` in 0..255, and with `cache_dir` the cache holds crops.

Training examples are random square crops at several scales (side =
uniform(min_crop_scale, 1) x short side, uniform position) plus random
horizontal flips, as SPEC.md section 6 asks for the small bundled photo sets;
evaluation examples are the centre square of the full short side.

Randomness (choice): every random draw is a stateless op keyed by the seed and
the example's position in the stream (file order: by seed and epoch), so with
a `seed` the stream is a pure function of the arguments, the same in every
run and independent of TensorFlow's global seed. A seeded dataset that is not
repeated gives the same stream each time it is iterated (use `repeat=True`,
the training default, for new crops every epoch). Without a seed the keys
come from `tf.data.Dataset.random` and change on every iteration. The two
shuffle buffers (TFDS records, and the cache path) use tf.data's seeded
`shuffle`, whose seed pair also includes `tf.random.set_seed`'s global seed.

Two paths, selected by `cache_dir`, with this fixed step order:

- streaming (no cache): 1 list files -> 2 order (file names shuffled per
  epoch when training; repeat) -> 3 per-example keys -> 4 read -> 5 decode
  (drop undecodable) -> 6 crop/resize + target -> 7 batch (global,
  drop_remainder) -> 8 features on whole batches (batched feature ops are
  much faster) -> prefetch. Each photo is read and decoded once per crop.
- cached: 1 list files -> 2 fixed order -> 3 keys (seed, file index) -> 4 read
  -> 5 decode -> 6 `crops_per_image` crops per photo (evaluation: the one
  centre crop) + target -> 7 batch (encoder batches) -> 8 features -> unbatch
  -> 9 cache -> 10 shuffle (training) -> 11 repeat -> 12 batch (global,
  drop_remainder) -> prefetch. Features are computed once. The cache is built
  eagerly inside `build_dataset`, into a private temporary folder that is
  renamed into place only after a complete pass, so a killed or failed build
  never leaves a cache that looks complete, and concurrent builders do not
  collide. Targets are stored as uint8 (0..255) in the cache, a quarter of
  the float32 size. (TF 2.21 logs "The calling iterator did not fully read
  the dataset being cached" after every complete file-cache pass, even a
  complete one: the cache is complete once `meta.json` exists.)

Example:
    >>> dataset = build_dataset("samples", "train", representation="hog",
    ...                         image_size=128, batch_size=8, seed=0)
    >>> features, target = next(iter(dataset))  # [8, 16, 16, 31], [8, 128, 128, 3]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid

import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import registry
from pipelines import ops, sources

AUTOTUNE = tf.data.AUTOTUNE
_CACHE_FORMAT_VERSION = 1
_SHUFFLE_BUFFER_BYTES = 1 << 30  # The cache path's shuffle buffer holds at most ~1 GiB.
# Salts that keep the key streams of different uses apart.
_FILE_ORDER, _EXAMPLE, _CACHED_CROP = 1, 2, 3


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
) -> tf.data.Dataset:
    """Builds the `(features, target)` dataset of a source split.

    Args:
        source: "samples", "folder:PATH" or "tfds:NAME[/CONFIG]" (see `pipelines.sources`).
        split: "train" or "test" ("samples", folders), or a TFDS split string.
        representation: a registry name such as "hog", or a `registry.Representation`.
        image_size: side S of the encoder's input crops; default: the
            representation's `default_image_size`.
        batch_size: global batch size.
        training: random multi-scale crops and flips, shuffled; default: True
            for split "train" (or a TFDS "train[...]" slice). False: centre
            crops in fixed file order.
        seed: makes the whole stream reproducible (file order, crops, flips,
            shuffles); None: random.
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

    Returns:
        A `tf.data.Dataset` of `(features, target)` for `model.fit`/`evaluate`.
    """
    representation = _resolve_representation(representation)
    image_size = representation.default_image_size if image_size is None else image_size
    _check_arguments(
        image_size, batch_size, crops_per_image, min_crop_scale, seed, encoder_options, color_jitter
    )
    encoder_options = dict(encoder_options or {})
    if training is None:
        training = split == "train" or split.startswith("train[")
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if deterministic is None:
        deterministic = seed is not None or not training
    target_size = representation.target_size(image_size)
    if representation.encode_in_model:
        # Network encoders (AlexNet) run inside the training model, on the
        # accelerator: the "features" the pipeline yields are the crops.
        feature_shape = (image_size, image_size, 3)
    else:
        feature_shape = tuple(representation.feature_shape(image_size))

    # 1. List files: a fixed, sorted file list (or a TFDS split).
    source_spec = sources.resolve(source, split)

    def crops(records, key_stream, copies):
        """Steps 3-6: keys, read, decode, crop/resize + target (both paths)."""
        # 3. Give each record its stateless random key.
        dataset = tf.data.Dataset.zip(records, key_stream)
        dataset = dataset.map(lambda record, key: {**record, "seed": key})
        # 4. Read the files (parallel); TFDS records are already bytes.
        if source_spec.files is not None:
            dataset = dataset.map(ops.read, num_parallel_calls=AUTOTUNE)
        # 5. Decode; drop what does not decode (truncated, corrupt), with a warning.
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
        # 2. Order: file names shuffled per epoch when training (stateless, keyed
        #    by seed and epoch); repeat as a stream of epochs.
        records = _ordered_records(source_spec, training=training, repeat=repeat, seed=seed)
        # 3-6. Keys (seed, position in the stream), read, decode, crop/resize.
        dataset = crops(records, _key_stream(seed, _EXAMPLE), copies=1)
        # 7. Batch (global batch).
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        # 8. Features on batches.
        dataset = features_of_batches(dataset)
        dataset = dataset.map(lambda batch: (batch["features"], batch["target"]))
    else:
        crop_seed = 0 if seed is None else int(seed)

        def uncached():
            # 2. Fixed record order, no repeat.
            records = _ordered_records(source_spec, training=False, repeat=False, seed=None)
            # 3-6. Keys (seed, file index; crop index), read, decode,
            #      crops_per_image crops per photo (evaluation: one centre crop).
            copies = crops_per_image if training else 1
            dataset = crops(records, _key_stream(crop_seed, _CACHED_CROP), copies)
            # 7. Batch (for the encoder only); 8. features; back to single examples.
            dataset = features_of_batches(dataset.batch(batch_size)).unbatch()
            return dataset.map(lambda example: {**example, "target": _to_uint8(example["target"])})

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
        )
        name = "-".join(_safe_name(part) for part in (representation.name, split, str(image_size)))
        prefix, count = _materialised_cache(uncached, cache_dir, f"{name}-{key[:16]}", key)
        element_spec = {
            "features": tf.TensorSpec(feature_shape, tf.float32),
            "target": tf.TensorSpec((target_size, target_size, 3), tf.uint8),
        }
        dataset = _placeholder(element_spec).cache(prefix)
        # 10. Shuffle (training), within a memory budget.
        if training:
            element_bytes = 4 * int(np.prod(feature_shape)) + 3 * target_size**2
            buffer = max(1, min(count, max(batch_size, _SHUFFLE_BUFFER_BYTES // element_bytes)))
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        # 11. Repeat.
        if repeat:
            dataset = dataset.repeat()
        # 12. Batch (global batch, drop_remainder).
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
        ValueError: naming the file, when one cannot be read or decoded
            (explicit user input, so an error rather than a skip).
    """
    _check_positive_int("image_size", image_size)
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    images = []
    for path in paths:
        path = os.fspath(path)
        try:
            image = ops.decode_image(tf.io.read_file(path))
        except (tf.errors.OpError, ValueError) as error:
            raise ValueError(
                "Could not read an image (JPEG/PNG/GIF/BMP/WebP) from the file. "
                f"Received: path={path!r}"
            ) from error
        images.append(ops.center_crop({"image": image}, image_size)["image"].numpy())
    if not images:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    return np.stack(images).astype(np.float32)


# Steps.


def _ordered_records(source, *, training: bool, repeat: bool, seed) -> tf.data.Dataset:
    """Records ({"path"} or {"bytes"}) in epoch order: shuffled when training."""
    if source.files is None:
        dataset = source.tfds_records(shuffle=training, seed=seed)
        return dataset.repeat() if repeat else dataset
    if not source.files:
        raise ValueError(
            f"No images found. Received: source={source.source!r}, split={source.split!r}"
        )
    files = tf.constant(source.files)
    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    if not training:
        return epochs.flat_map(lambda epoch: tf.data.Dataset.from_tensor_slices({"path": files}))

    def shuffled_epoch(epoch, key):
        order = tf.argsort(tf.random.stateless_uniform([len(source.files)], seed=key))
        return tf.data.Dataset.from_tensor_slices({"path": tf.gather(files, order)})

    return tf.data.Dataset.zip(epochs, _key_stream(seed, _FILE_ORDER)).flat_map(shuffled_epoch)


def _key_stream(seed, salt: int) -> tf.data.Dataset:
    """An endless stream of `[2]` stateless-random keys.

    With a seed the i-th key is `fold_in(fold_in((seed, 0), salt), i)`, so it is
    fixed run to run; without one the keys are random and differ each iteration.
    """
    if seed is None:
        return tf.data.Dataset.random(rerandomize_each_iteration=True).batch(2)
    base = tf.constant([int(seed) % (1 << 63), salt], tf.int64)
    return tf.data.Dataset.counter().map(
        lambda index: tf.random.experimental.stateless_fold_in(base, index)
    )


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
) -> str:
    description = {
        "version": _CACHE_FORMAT_VERSION,
        "representation": representation.name,
        # Crops cached for an encoder inside the model do not depend on its options.
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
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def _to_uint8(target: tf.Tensor) -> tf.Tensor:
    """0..1 floats -> 0..255 uint8, rounded (the cache's target format)."""
    return tf.cast(tf.round(tf.clip_by_value(target, 0.0, 1.0) * 255.0), tf.uint8)


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")
