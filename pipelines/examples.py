"""The examples of the builder's steps 4-8: photos read, decoded, cropped, paired with targets.

`crops` turns records (a file path or a TFDS record's bytes, and a seed) into
`{"image", "target"}` examples: read (4), decode, dropping what does not
decode (5), crop and resize to the image size with the target at the
decoder's side (6; training: random scale, position, flip and colour jitter;
evaluation: the centre square). `fixed_crops` makes the fixed crops a cache
holds, `features_of_batches` applies the representation's encoder to whole
batches (8). The order of the steps, and which records they see, are
`pipelines.builder`'s.

Example:
    >>> examples = crops(config, records, copies=1)
    >>> batches = features_of_batches(config, examples.batch(config.batch_size))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipelines import ops, sources, stream
from pipelines.dataset_config import DatasetConfig
from pipelines.decode_check import decodable

AUTOTUNE = tf.data.AUTOTUNE


def fixed_crops(config: DatasetConfig, source: sources.Source, crop_seed: int) -> tf.data.Dataset:
    """Cached steps 2-6: the fixed `{"image", "target"}` crops whose features a cache holds."""
    # 2-3. Fixed record order, no repeat; keys (seed, file index).
    records = stream.positioned_records(
        decodable(source, image_size=config.image_size if config.training else None),
        training=False,
        repeat=False,
        seed=crop_seed,
        first=0,
        num_shards=1,
        salt=stream.CACHED_CROP,
    )
    # 4-6. Read, decode, crops_per_image crops per photo (evaluation: one
    #      centre crop); crop j of a photo is keyed by fold_in(key, j).
    copies = config.crops_per_image if config.training else 1
    return crops(config, records, copies)


def crops(config: DatasetConfig, records: tf.data.Dataset, copies: int) -> tf.data.Dataset:
    """Steps 4-6: read, decode, crop/resize + target (both paths)."""
    # 4. Read the files (parallel); TFDS records are already bytes.
    dataset = records
    if "path" in records.element_spec:
        dataset = dataset.map(ops.read, num_parallel_calls=AUTOTUNE)
    # 5. Decode. Files that do not decode were left out at step 1; what still
    #    fails (a TFDS record, a file changed since) is dropped here. One
    #    training crop per photo decodes only its window of a JPEG (the same
    #    crop, without the CPU time of the pixels it drops).
    cropped = config.training and copies == 1

    def decode(example):
        if cropped:
            return ops.decode_random_crop(example, config.image_size, config.min_crop_scale)
        return ops.decode(example)

    dataset = dataset.map(decode, num_parallel_calls=AUTOTUNE)
    dataset = dataset.ignore_errors(log_warning=True)
    # 6. Crop, resize to image_size (training: random scale, position, flip); target.
    if copies > 1:
        dataset = dataset.flat_map(lambda example: _copies(example, copies))
    return dataset.map(
        lambda example: _crop_and_target(example, config, cropped), num_parallel_calls=AUTOTUNE
    )


def features_of_batches(config: DatasetConfig, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Step 8: the encoder on whole batches (batched feature ops are much faster)."""
    encode = _batch_encoder(config)
    return dataset.map(
        lambda batch: {"features": encode(batch["image"]), "target": batch["target"]},
        num_parallel_calls=AUTOTUNE,
    )


def _batch_encoder(config: DatasetConfig):
    """`images [B, S, S, 3] -> features [B, *feature_shape]`, in the graph or via numpy."""
    if config.yields_crops:
        return lambda images: images
    representation, feature_shape = config.representation, config.feature_shape
    encode = representation.batch_encoder(**config.encoder_options)
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


def _copies(example: dict, count: int) -> tf.data.Dataset:
    """`count` copies of a decoded photo, copy j keyed by `fold_in(key, j)`."""
    return tf.data.Dataset.range(count).map(
        lambda index: {
            "image": example["image"],
            "seed": tf.random.experimental.stateless_fold_in(example["seed"], index),
        }
    )


def _crop_and_target(example: dict, config: DatasetConfig, cropped: bool) -> dict:
    if config.training:
        if not cropped:
            example = ops.random_crop(example, config.image_size, config.min_crop_scale)
        if config.color_jitter > 0:
            example = ops.color_jitter(example, config.color_jitter)
    else:
        example = ops.center_crop(example, config.image_size)
    example = ops.add_target(example, config.target_size)
    return {"image": example["image"], "target": example["target"]}
