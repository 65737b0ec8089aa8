"""Network features for a cache: a frozen network encoder run on crop batches while it fills.

With `cache_features=True`, for a network encoder, `build_dataset` caches
the network's features instead of crops (`pipelines.cache`).
`NetworkFeatures` runs the frozen network (built once from
`encoder_options`, its `weights` included) on whole crop batches outside
tf.data, as a compiled function on the first GPU (else the CPU), and the
cache stores its features. A fixed encoder's features never change, so
repeated experiments (and every epoch) then train the decoder alone, and the
cache is smaller than the crops for every AlexNet layer (conv1 27x27x96
floats = 0.37x a 227x227x3 float crop; fc8 0.007x). The cache key includes a
SHA-256 digest of the network's weights (`weights_digest`), so other
weights never read a stale cache. The network is built (weights loaded and
hashed) on every call, also when the cache exists: about 2 s for the whole
Caffe reference network on a CPU. Runs on several taps of one network fill
their caches in one pass over the crops with `pipelines.network_caches`.

Example:
    >>> network = NetworkFeatures(config.representation, config.encoder_options,
    ...                           config.feature_shape)
    >>> batches = network.features_of(crops.batch(network_batch(config)))
"""

from __future__ import annotations

import hashlib

import numpy as np
import tensorflow as tf

from pipelines.dataset_config import DatasetConfig

# Crops per network call while a network feature cache fills: a network runs
# faster on larger batches (AlexNet conv5 on 2 CPU cores: 68 images/s at 64, 41 at 8).
NETWORK_BATCH = 64


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


def network_batch(config: DatasetConfig) -> int:
    """Crops per network call while the network feature cache of `config` fills."""
    return max(config.batch_size, NETWORK_BATCH)


def network_device() -> str:
    """Where a network encoder runs while its feature cache fills: the first GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "/device:CPU:0"
