"""The position-keyed stream order: which photo, and which random key, each element has.

The stream is a function of position (choice). Element number `p` of the
uninterrupted single-pipeline stream (counting from 0 over all epochs) is
fixed by the seed and `p` alone: its photo is `p mod N` of epoch `p // N`'s
file order (N photos; a stateless permutation keyed by seed and epoch when
training, `tf.random.experimental.index_shuffle`), and its crop, flip and
jitter draws use the key `fold_in((seed, salt), p)`. So the same arguments
give the same stream in every run, independent of TensorFlow's global seed,
and resuming (`start_step`), sharding and a tf.data service are exact and
cheap: a pipeline is a `Dataset.range` of its positions, and the elements it
skips are never read (see `pipelines.builder`).

The cached path orders its cached elements the same way (`pipelines.cache`),
with its own salts.

Example:
    >>> records = positioned_records(source, training=True, repeat=True, seed=0,
    ...                              first=0, num_shards=1)
    >>> next(iter(records))  # {"path": b".../astronaut.png", "seed": [2] int64}
"""

from __future__ import annotations

import tensorflow as tf

from pipelines import sources

END = 1 << 62
"""The end of the positions of a repeated stream ("forever")."""

# Salts that keep the key streams of different uses apart.
FILE_ORDER, EXAMPLE, CACHED_CROP, CACHED_ORDER = 1, 2, 3, 4


def positioned_records(
    source: sources.Source,
    *,
    training: bool,
    repeat: bool,
    seed: int,
    first: int,
    num_shards: int,
    salt: int = EXAMPLE,
) -> tf.data.Dataset:
    """Records `{"path" or "bytes", "seed"}` at the positions first, first + n, ...

    File sources: position p is photo `p mod N` of epoch `p // N`'s order
    (training: a stateless permutation keyed by seed and epoch), with key
    `fold_in((seed, salt), p)`; nothing before `first` is touched. TFDS: the
    record stream, positions counted along it, skipped and sharded before decoding.
    """
    base = tf.constant([int(seed) % (1 << 63), salt], tf.int64)

    def key(position):
        return tf.random.experimental.stateless_fold_in(base, position)

    if source.files is None:
        records = source.tfds_records(shuffle=training, seed=seed)
        records = records.repeat() if repeat else records
        positions = tf.data.Dataset.range(END)
        dataset = tf.data.Dataset.zip(records, positions).skip(first - first % num_shards)
        dataset = dataset.shard(num_shards, first % num_shards)
        return dataset.map(lambda record, position: {**record, "seed": key(position)})
    files = tf.constant(source.files)
    count = len(source.files)
    order = epoch_order(count, seed=seed, salt=FILE_ORDER, shuffle=training)

    def record(position):
        return {"path": tf.gather(files, order(position)), "seed": key(position)}

    end = END if repeat else count
    return tf.data.Dataset.range(first, end, num_shards).map(record)


def epoch_order(count: int, *, seed: int, salt: int, shuffle: bool):
    """`position -> index in [0, count)`: index `p mod count` of epoch `p // count`'s order.

    With `shuffle`, each epoch's order is a stateless permutation keyed by
    `(seed, salt)` and the epoch; without, the fixed order.
    """
    order_base = tf.constant([int(seed) % (1 << 63), salt], tf.int64)

    def index_of(position):
        epoch, index = position // count, position % count
        if shuffle:
            epoch_key = tf.random.experimental.stateless_fold_in(order_base, epoch)
            index = tf.random.experimental.index_shuffle(index, epoch_key, count - 1)
        return index

    return index_of
