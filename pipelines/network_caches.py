"""Several taps' network feature caches from one pass over the crops.

Runs on taps of one network (EfficientNet-Lite0 `stem` ... `logits`, say)
with `cache_features=True` and the same crops each build their own cache
(`pipelines.cache`): each decodes and crops the same photos and runs the
network up to its tap. `materialise_together` makes those caches in one
pass instead: the crops once, the network once up to the deepest tap with
every tap as an output, and each tap's features (and targets at its side)
written, batch by batch, into that tap's cache. Each cache lands in the
folder, under the key, that the tap's own run computes
(`cache_files.cache_folder`, with the digest of the tap's own truncated network),
so the run finds it complete and reuses it. A run that builds its own is
unchanged.

- Atomic as a single build: each cache is renamed into place
  (`files.atomic_path`) only after the complete pass, so a killed pass
  leaves no cache that looks complete. A cache that exists is skipped;
  when all exist there is no pass.
- Memory: a batch of crops and its features (plus tf.data's prefetch), not
  the caches: tf.data's cache writer of each tap is fed batch by batch.
- The features are the truncated networks' (the same layers and weights;
  EfficientNet-Lite0 on a CPU: equal bit for bit, features and targets,
  tested). One graph with several outputs could fuse operations
  differently elsewhere (a GPU), which changes rounding only.

Example:
    >>> configs = [DatasetConfig("samples", representation=f"efficientnet-lite0/{tap}",
    ...                          cache_dir=f"runs/{tap}/cache", cache_features=True, seed=0)
    ...            for tap in ("stem", "stage2")]
    >>> folders = materialise_together(configs)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import time
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging

from pipelines import cache, cache_files, ops, sources
from pipelines.dataset_config import DatasetConfig
from pipelines.examples import fixed_crops
from pipelines.network_features import NetworkFeatures, network_batch, weights_digest

# What the crops depend on (with the network batch): configs filled together share them.
_SHARED_FIELDS = (
    "source",
    "split",
    "image_size",
    "training",
    "crops_per_image",
    "min_crop_scale",
    "seed",
    "color_jitter",
    "encoder_options",
)


def materialise_together(configs: Sequence[DatasetConfig]) -> list[str]:
    """Makes sure every config's network feature cache exists, in one pass; returns the folders.

    Args:
        configs: `build_dataset` arguments (`cache_features=True`, a
            `cache_dir` each) that differ only in the tap of one network and
            in the cache folder.

    Returns:
        Each config's cache folder (`cache_files.cache_folder`), complete.

    Raises:
        ValueError: the configs differ in what shapes the crops, or their
            taps are not outputs of one network with the same weights.
    """
    configs = list(configs)
    _check_together(configs)
    first = configs[0]
    source = sources.resolve(first.source, first.split)
    seed = cache_files.crop_seed(first)
    taps, folders = [], []
    for config in configs:
        network = NetworkFeatures(
            config.representation, config.encoder_options, config.feature_shape
        )
        final, key = cache_files.cache_folder(
            config, source, crop_seed=seed, network_digest=network.digest
        )
        folders.append(final)
        if not cache_files.is_complete(final):
            taps.append(_Tap(config, network, final, key))
    if not taps:
        logging.info("Reusing the %d feature caches of %s.", len(configs), first.source)
        return folders

    start = time.time()
    names = ", ".join(tap.config.representation.name for tap in taps)
    logging.info("Building %d feature caches in one pass: %s.", len(taps), names)
    model = _with_every_output([tap.network for tap in taps])
    encode = tf.function(lambda images: model(images, training=False))
    sizes = sorted({tap.config.target_size for tap in taps})
    crops = fixed_crops(first, source, seed).map(
        lambda crop: {
            "image": crop["image"],
            **{f"target_{size}": cache.to_uint8(_target(crop["image"], size)) for size in sizes},
        },
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    with contextlib.ExitStack() as stack:
        for tap in taps:
            tap.temporary = stack.enter_context(cache_files.placed(tap.final))
            shapes = (tap.config.feature_shape, tap.config.target_size)
            tap.writer = stack.enter_context(_Writer(tap.temporary, *shapes))
        # Prefetch: the next crops are read and decoded while the network runs.
        for batch in crops.batch(network_batch(first)).prefetch(2):
            with tf.device(taps[0].network.device):
                outputs = encode(batch["image"])
            for tap in taps:
                features = tf.cast(outputs[_output_layer(tap.network.network)], tf.float32)
                if tuple(features.shape[1:]) != tap.network.feature_shape:
                    raise ValueError(
                        f"Expected features {tap.network.feature_shape} from "
                        f"{tap.network.name}. Received: {tuple(features.shape[1:])}"
                    )
                target = batch[f"target_{tap.config.target_size}"]
                tap.writer.write({"features": features, "target": target})
        for tap in taps:
            tap.writer.close()
            cache_files.seal(tap.temporary, tap.final, tap.key, tap.writer.count)
    logging.info(
        "Built %d feature caches in one pass: %d examples each in %.1f s.",
        len(taps),
        taps[0].writer.count,
        time.time() - start,
    )
    return folders


@dataclasses.dataclass
class _Tap:
    """A cache to fill: its config, its tap's own network, where it goes, what it holds."""

    config: DatasetConfig
    network: NetworkFeatures
    final: str
    key: str
    temporary: str | None = None
    writer: _Writer | None = None


def _check_together(configs: list[DatasetConfig]) -> None:
    """Refuses configs whose crops differ, or that are not network feature caches."""
    if not configs:
        raise ValueError("Expected one config or more. Received: configs=[]")
    for config in configs:
        if not config.cache_features or config.cache_dir is None or config.yields_crops:
            raise ValueError(
                "Expected network feature caches (cache_features=True and a cache_dir). "
                f"Received: representation={config.representation.name!r}, "
                f"cache_features={config.cache_features!r}, cache_dir={config.cache_dir!r}"
            )
    shared = {name: [getattr(config, name) for config in configs] for name in _SHARED_FIELDS}
    shared["network_batch"] = [network_batch(config) for config in configs]
    for name, values in shared.items():
        if any(value != values[0] for value in values[1:]):
            raise ValueError(
                "Expected configs that differ only in the tap and the cache folder (one "
                f"pass makes one set of crops). Received: {name}={values!r}"
            )


def _output_layer(network: keras.Model) -> str:
    """The name of the layer whose output is `network`'s (single) output."""
    if len(network.outputs) != 1:
        raise ValueError(
            f"Expected a network with one output. Received: {len(network.outputs)} outputs "
            f"of {network.name!r}"
        )
    return network.outputs[0]._keras_history.operation.name


def _with_every_output(networks: list[NetworkFeatures]) -> keras.Model:
    """The network with the most layers, with every one of `networks`' outputs.

    Each output must be a layer of that network, and the network up to it
    must have the weights of the tap's own network (its digest), so the
    features are the ones the tap's run would compute.
    """
    deepest = max((features.network for features in networks), key=lambda net: len(net.layers))
    outputs = {}
    for features in networks:
        name = _output_layer(features.network)
        layer = next((layer for layer in deepest.layers if layer.name == name), None)
        truncated = None if layer is None else keras.Model(deepest.inputs, layer.output)
        if truncated is None or weights_digest(truncated) != features.digest:
            raise ValueError(
                f"Expected taps of one network with the same weights. Received: {features.name!r} "
                f"(layer {name!r}) is not in {deepest.name!r} with its weights"
            )
        outputs[name] = layer.output
    return keras.Model(deepest.inputs, outputs, name=f"{deepest.name}_taps")


def _target(image: tf.Tensor, size: int) -> tf.Tensor:
    """The target of a crop at side `size`, as a single build makes it (`ops.add_target`)."""
    return ops.add_target({"image": image}, size)["target"]


class _Writer:
    """One cache's `data` files, written batch by batch by tf.data's cache.

    The batches go through a queue into a generator dataset, unbatched and
    cached as a single build caches them; each written batch is pulled
    through (the writer runs in tf.data's threads), and `close` ends the
    input, which completes the cache files.
    """

    def __init__(self, folder: str, feature_shape: tuple, target_size: int):
        self._batches = queue.Queue()
        signature = {
            "features": tf.TensorSpec([None, *feature_shape], tf.float32),
            "target": tf.TensorSpec([None, target_size, target_size, 3], tf.uint8),
        }
        dataset = tf.data.Dataset.from_generator(
            lambda: iter(self._batches.get, None), output_signature=signature
        )
        self._elements = iter(dataset.unbatch().cache(os.path.join(folder, "data")))
        self.count = 0

    def write(self, batch: dict) -> None:
        self._batches.put(batch)
        size = int(batch["target"].shape[0])
        for _ in range(size):
            next(self._elements)
        self.count += size

    def close(self) -> None:
        """Ends the input: tf.data completes the cache files when its input ends."""
        self._batches.put(None)
        for _ in self._elements:
            raise RuntimeError("The cache writer read more batches than it was given.")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        # A failed pass: end the generator, so no tf.data thread waits on it.
        self._batches.put(None)
        self._elements = None
