"""Several taps' network feature caches from one pass: the same caches the taps' runs build."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import build_dataset, network_caches
from pipelines.dataset_config import DatasetConfig

from .conftest import encode_image, write

SETTINGS = dict(image_size=32, batch_size=4, seed=3, crops_per_image=2, cache_features=True)


def _configs(source, representations, cache_root, **overrides):
    return [
        DatasetConfig(
            source,
            "train",
            representation=representation,
            cache_dir=os.path.join(cache_root, getattr(representation, "name", representation)),
            **{**SETTINGS, **overrides},
        )
        for representation in representations
    ]


def _cache_contents(config, folder):
    """The stored elements of a cache folder, in stored order."""
    spec = {
        "features": tf.TensorSpec(config.feature_shape, tf.float32),
        "target": tf.TensorSpec((config.target_size, config.target_size, 3), tf.uint8),
    }
    zeros = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), spec)
    stored = tf.data.Dataset.from_tensors(zeros).take(0).cache(os.path.join(folder, "data"))
    elements = list(stored)
    with open(os.path.join(folder, "meta.json")) as file:
        assert json.load(file)["count"] == len(elements)
    return [np.stack([element[name].numpy() for element in elements]) for name in spec]


def _built_alone(config, cache_dir):
    """What a run on `config` alone builds: its cache folder under `cache_dir`."""
    arguments = {name: getattr(config, name) for name in SETTINGS}
    build_dataset(
        config.source, "train", representation=config.representation,
        cache_dir=cache_dir, repeat=False, **arguments,
    )  # fmt: skip
    (name,) = os.listdir(cache_dir)
    return os.path.join(cache_dir, name)


@pytest.fixture(scope="module")
def two_photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for index in range(2):
        array = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
        write(root / "train" / f"{index}.png", encode_image(array, "PNG"))
    return f"folder:{root}"


@pytest.fixture(scope="module")
def filled_together(two_photos, tmp_path_factory):
    """EfficientNet-Lite0's stem and stage1 caches, filled in one pass."""
    root = str(tmp_path_factory.mktemp("together"))
    taps = ("efficientnet-lite0/stem", "efficientnet-lite0/stage1")
    configs = _configs(two_photos, taps, root)
    return configs, network_caches.materialise_together(configs)


def test_caches_filled_together_equal_those_each_tap_builds_alone(filled_together, tmp_path):
    configs, folders = filled_together
    for config, folder in zip(configs, folders, strict=True):
        alone = _built_alone(config, str(tmp_path / config.representation.name))
        assert os.path.basename(alone) == os.path.basename(folder)  # The same key.
        together, single = _cache_contents(config, folder), _cache_contents(config, alone)
        assert together[0].shape[0] == 4  # 2 photos x 2 crops.
        for mine, theirs in zip(together, single, strict=True):
            np.testing.assert_array_equal(mine, theirs)  # Features and targets, exactly.


def test_a_run_reuses_the_caches_filled_together(filled_together, monkeypatch, caplog):
    configs, folders = filled_together
    written = [os.path.getmtime(os.path.join(folder, "meta.json")) for folder in folders]

    def no_pass(*arguments):
        raise AssertionError("the crops were made again")

    monkeypatch.setattr(network_caches, "fixed_crops", no_pass)
    assert network_caches.materialise_together(configs) == folders
    config = configs[1]
    with caplog.at_level(logging.INFO, logger="absl"):
        arguments = {name: getattr(config, name) for name in SETTINGS}
        dataset = build_dataset(
            config.source, "train", representation=config.representation,
            cache_dir=config.cache_dir, repeat=False, **arguments,
        )  # fmt: skip
    assert sum(int(features.shape[0]) for features, _ in dataset) == 4
    assert any(
        f"Reusing the feature cache at {folders[1]}" in r.getMessage() for r in caplog.records
    )
    assert [os.path.getmtime(os.path.join(folder, "meta.json")) for folder in folders] == written
    assert os.listdir(config.cache_dir) == [os.path.basename(folders[1])]


def _small_network_taps(seed=1):
    """Two taps of a two-convolution network, with targets of two sides."""
    import keras

    from keras_invert import registry

    def encoder(depth):
        def make_encoder():
            keras.utils.set_random_seed(seed)
            x = images = keras.Input((16, 16, 3))
            for index in range(depth):
                x = keras.layers.Conv2D(4 + index, 2, strides=2, name=f"conv{index + 1}")(x)
            return keras.Model(images, x)

        return make_encoder

    return [
        registry.Representation(
            name=f"small_network/conv{depth}",
            description="a tap of two strided convolutions (tests only)",
            make_encoder=encoder(depth),
            decoder_builder=lambda size, **kwargs: None,
            feature_shape=lambda size, depth=depth: (size >> depth, size >> depth, 3 + depth),
            target_size=lambda size, depth=depth: size >> depth,
            default_image_size=16,
            encode_in_model=True,
        )
        for depth in (1, 2)
    ]


def test_taps_with_targets_of_other_sides_share_the_pass(two_photos, tmp_path):
    taps = _small_network_taps()
    configs = _configs(two_photos, taps, str(tmp_path / "together"), image_size=16)
    folders = network_caches.materialise_together(configs)
    for config, folder in zip(configs, folders, strict=True):
        alone = _built_alone(config, str(tmp_path / "alone" / config.representation.name))
        for mine, theirs in zip(
            _cache_contents(config, folder), _cache_contents(config, alone), strict=True
        ):
            np.testing.assert_array_equal(mine, theirs)


def test_configs_whose_crops_or_networks_differ_are_refused(two_photos, tmp_path):
    first, second = _small_network_taps()
    root = str(tmp_path)
    mixed = _configs(two_photos, [first], root) + _configs(two_photos, [second], root, seed=4)
    with pytest.raises(ValueError, match=r"^Expected configs that differ only in the tap.*"
                       r"Received: seed=\[3, 4\]$"):  # fmt: skip
        network_caches.materialise_together(mixed)
    other_weights = _small_network_taps(seed=2)[1]
    mixed = _configs(two_photos, [first, other_weights], root, image_size=16)
    with pytest.raises(ValueError, match=r"^Expected taps of one network with the same weights"):
        network_caches.materialise_together(mixed)
    assert [name for name in os.listdir(root) if os.listdir(os.path.join(root, name))] == []
