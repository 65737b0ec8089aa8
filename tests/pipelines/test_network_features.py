"""Network features: the frozen network runs once, while the cache fills, keyed by its weights."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from pipelines import network_features

from .conftest import build_cached, cache_folders, examples_of


def _network_representation(seed=1):
    """A registry representation with a small Keras network encoder (encode_in_model)."""
    import keras

    from keras_invert import registry

    built = []

    def make_encoder():
        keras.utils.set_random_seed(seed)
        images = keras.Input((16, 16, 3))
        features = keras.layers.Conv2D(5, 4, strides=4, name="conv")(images)
        built.append(keras.Model(images, features))
        return built[-1]

    representation = registry.Representation(
        name="small_network",
        description="a 4x4 stride-4 convolution (tests only)",
        make_encoder=make_encoder,
        decoder_builder=lambda size, **kwargs: None,
        feature_shape=lambda size: (size // 4, size // 4, 5),
        target_size=lambda size: size // 2,
        default_image_size=16,
        encode_in_model=True,
    )
    return representation, built


@pytest.mark.parametrize("split", ["train", "test"])
def test_cached_network_features_are_the_network_on_the_cached_crops(
    small_folder, cache_dir, split
):
    representation, built = _network_representation()
    features, target = examples_of(
        build_cached(small_folder, representation, cache_dir, split=split, cache_features=True)
    )
    crops, crop_target = examples_of(
        build_cached(small_folder, representation, cache_dir, split=split)
    )
    count = {"train": 12, "test": 2}[split]  # 4 photos x 3 crops; 2 centre crops.
    assert features.shape == (count, 4, 4, 5) and crops.shape == (count, 16, 16, 3)
    # The same crops in the same (seeded) order, encoded by the network once.
    np.testing.assert_allclose(features, built[0](crops).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(target, crop_target)
    assert len(cache_folders(cache_dir)) == 2 and any(
        "features" in f for f in cache_folders(cache_dir)
    )


def test_network_feature_cache_is_keyed_by_the_weights(small_folder, cache_dir, caplog):
    first, _ = _network_representation(seed=1)
    features = examples_of(build_cached(small_folder, first, cache_dir, cache_features=True))[0]
    with caplog.at_level(logging.INFO, logger="absl"):
        again = examples_of(build_cached(small_folder, first, cache_dir, cache_features=True))[0]
    assert any("Reusing the feature cache" in record.getMessage() for record in caplog.records)
    np.testing.assert_allclose(np.sort(again.ravel()), np.sort(features.ravel()))

    other, _ = _network_representation(seed=2)  # The same network, other weights.
    changed = examples_of(build_cached(small_folder, other, cache_dir, cache_features=True))[0]
    assert len(cache_folders(cache_dir)) == 2
    assert not np.allclose(np.sort(changed.ravel()), np.sort(features.ravel()))


def test_cache_features_needs_a_network_and_a_cache_dir(small_folder, cache_dir, make_fake):
    with pytest.raises(ValueError, match="network encoders.*fake_numpy"):
        build_cached(small_folder, make_fake().representation, cache_dir, cache_features=True)
    representation, _ = _network_representation()
    with pytest.raises(ValueError, match="needs a cache_dir"):
        build_cached(small_folder, representation, None, cache_features=True)
    with pytest.raises(ValueError, match="Expected a bool"):
        build_cached(small_folder, representation, cache_dir, cache_features="yes")
    assert cache_folders(cache_dir) == []


def test_network_features_run_on_the_first_gpu_else_the_cpu(monkeypatch):
    class Device:
        def __init__(self, name):
            self.name = name

    for gpus, expected in (([], "/device:CPU:0"), (["GPU:0", "GPU:1"], "/device:GPU:0")):
        devices = [Device(f"/device:{name}") for name in gpus]
        monkeypatch.setattr(
            tf.config, "list_logical_devices", lambda kind, d=devices: d if kind == "GPU" else []
        )
        assert network_features.network_device() == expected
