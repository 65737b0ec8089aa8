"""The feature cache: reuse, keys, and no complete-looking cache after a failed build."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_invert import files
from pipelines import build_dataset


def _build(folder, representation, cache_dir, **overrides):
    options = dict(
        representation=representation,
        image_size=16,
        batch_size=4,
        seed=3,
        cache_dir=None if cache_dir is None else str(cache_dir),
        crops_per_image=3,
        repeat=False,
    )
    split = overrides.pop("split", "train")
    return build_dataset(f"folder:{folder}", split, **{**options, **overrides})


def _examples(dataset):
    batches = [(features.numpy(), target.numpy()) for features, target in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


PARTIAL = files.PARTIAL_PREFIX  # How a build killed mid-way names its folder.


def _folders(cache_dir):
    return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def test_second_build_reuses_the_cache(small_folder, cache_dir, make_fake, caplog):
    fake = make_fake()
    features, target = _examples(_build(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and target.shape == (12, 8, 8, 3)  # 4 photos x 3 crops.
    assert 0.0 <= target.min() and target.max() <= 1.0
    calls = (fake.make_encoder_calls, fake.encode_calls)
    assert calls[1] >= 1

    # absl's logger has its own level, which other tests (Keras export) may have raised.
    with caplog.at_level(logging.INFO, logger="absl"):
        again = _build(small_folder, fake.representation, cache_dir)
    assert any("Reusing the feature cache" in record.getMessage() for record in caplog.records)
    features_again, target_again = _examples(again)
    assert (fake.make_encoder_calls, fake.encode_calls) == calls  # Not encoded again.

    # Same examples, shuffled differently.
    def sums(values):
        return np.sort(values.sum(axis=(1, 2, 3)))

    np.testing.assert_allclose(sums(features_again), sums(features))
    assert len(_folders(cache_dir)) == 1


def test_changed_parameters_use_another_cache(small_folder, cache_dir, make_fake):
    fake = make_fake()
    _build(small_folder, fake.representation, cache_dir)
    _build(small_folder, fake.representation, cache_dir, crops_per_image=2)
    _build(small_folder, fake.representation, cache_dir, seed=4)
    _build(small_folder, fake.representation, cache_dir, encoder_options={"scale": 2.0})
    folders = _folders(cache_dir)
    assert len(folders) == 4 and not any(name.startswith(PARTIAL) for name in folders)


def test_evaluation_cache_holds_one_centre_crop_per_photo(small_folder, cache_dir, make_fake):
    fake = make_fake()
    dataset = build_dataset(
        f"folder:{small_folder}",
        "test",
        representation=fake.representation,
        image_size=16,
        batch_size=4,
        cache_dir=str(cache_dir),
    )
    first, second = _examples(dataset), _examples(dataset)
    assert first[0].shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(first[1], second[1])  # Fixed order.


def test_failed_build_leaves_no_cache_and_a_later_build_succeeds(
    small_folder, cache_dir, make_fake
):
    failing = make_fake(fail_on_call=2)  # Dies after the first batch of features.
    with pytest.raises((tf.errors.OpError, RuntimeError)):
        _build(small_folder, failing.representation, cache_dir)
    assert _folders(cache_dir) == []  # Neither a final nor a temporary folder.

    # A build killed with SIGKILL leaves its temporary folder and tf.data lockfile.
    stale = cache_dir / f"{PARTIAL}12345-0123456789ab-stale"
    stale.mkdir(parents=True)
    (stale / "data_0.lockfile").write_text("")
    (stale / "data_0.data-00000-of-00001.tempstate").write_bytes(b"\x00" * 64)

    working = make_fake()
    features, _ = _examples(_build(small_folder, working.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3)
    assert len([name for name in _folders(cache_dir) if not name.startswith(PARTIAL)]) == 1


def test_partly_read_dataset_keeps_the_complete_cache(small_folder, cache_dir, make_fake):
    fake = make_fake()
    iterator = iter(_build(small_folder, fake.representation, cache_dir, repeat=True))
    next(iterator)
    del iterator  # Dropped half-way: the cache was complete before the first batch.
    calls = fake.encode_calls
    features, _ = _examples(_build(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and fake.encode_calls == calls


def _damaged_cache_is_rebuilt(small_folder, cache_dir, make_fake, caplog, damage):
    """Builds a cache, `damage(folder)`s it, builds again: the features are encoded again."""
    fake = make_fake()
    expected = _examples(_build(small_folder, fake.representation, cache_dir))
    (folder,) = _folders(cache_dir)
    damage(cache_dir / folder)
    calls = fake.encode_calls
    with caplog.at_level(logging.WARNING, logger="absl"):
        rebuilt = _examples(_build(small_folder, fake.representation, cache_dir))
    assert fake.encode_calls > calls  # Rebuilt, not read.
    for values, expected_values in zip(rebuilt, expected, strict=True):  # The same examples.
        np.testing.assert_allclose(
            np.sort(values.sum(axis=(1, 2, 3))), np.sort(expected_values.sum(axis=(1, 2, 3)))
        )
    assert _folders(cache_dir) == [folder]
    return caplog.text


def test_a_cache_with_a_truncated_data_file_is_rebuilt(small_folder, cache_dir, make_fake, caplog):
    def truncate(folder):
        (data,) = folder.glob("data.data-*")
        os.truncate(data, 100)  # As a full disk or a half-finished copy leaves it.

    logged = _damaged_cache_is_rebuilt(small_folder, cache_dir, make_fake, caplog, truncate)
    assert "holds 100 bytes, not the" in logged and "it is rebuilt" in logged


def test_a_cache_whose_meta_json_does_not_parse_is_rebuilt(
    small_folder, cache_dir, make_fake, caplog
):
    def damage(folder):
        (folder / "meta.json").write_text("{")

    logged = _damaged_cache_is_rebuilt(small_folder, cache_dir, make_fake, caplog, damage)
    assert "its meta.json does not parse" in logged


def test_a_cache_written_before_sizes_were_recorded_is_reused(small_folder, cache_dir, make_fake):
    fake = make_fake()
    _examples(_build(small_folder, fake.representation, cache_dir))
    (folder,) = _folders(cache_dir)
    meta = cache_dir / folder / "meta.json"
    recorded = json.loads(meta.read_text())
    assert set(recorded["sizes"]) == {
        name for name in os.listdir(cache_dir / folder) if name != "meta.json"
    }
    meta.write_text(json.dumps({"key": recorded["key"], "count": recorded["count"]}))
    calls = fake.encode_calls
    features, _ = _examples(_build(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and fake.encode_calls == calls


# Network features (cache_features): the frozen network runs once, while the cache fills.


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
    features, target = _examples(
        _build(small_folder, representation, cache_dir, split=split, cache_features=True)
    )
    crops, crop_target = _examples(_build(small_folder, representation, cache_dir, split=split))
    count = {"train": 12, "test": 2}[split]  # 4 photos x 3 crops; 2 centre crops.
    assert features.shape == (count, 4, 4, 5) and crops.shape == (count, 16, 16, 3)
    # The same crops in the same (seeded) order, encoded by the network once.
    np.testing.assert_allclose(features, built[0](crops).numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(target, crop_target)
    assert len(_folders(cache_dir)) == 2 and any("features" in f for f in _folders(cache_dir))


def test_network_feature_cache_is_keyed_by_the_weights(small_folder, cache_dir, caplog):
    first, _ = _network_representation(seed=1)
    features = _examples(_build(small_folder, first, cache_dir, cache_features=True))[0]
    with caplog.at_level(logging.INFO, logger="absl"):
        again = _examples(_build(small_folder, first, cache_dir, cache_features=True))[0]
    assert any("Reusing the feature cache" in record.getMessage() for record in caplog.records)
    np.testing.assert_allclose(np.sort(again.ravel()), np.sort(features.ravel()))

    other, _ = _network_representation(seed=2)  # The same network, other weights.
    changed = _examples(_build(small_folder, other, cache_dir, cache_features=True))[0]
    assert len(_folders(cache_dir)) == 2
    assert not np.allclose(np.sort(changed.ravel()), np.sort(features.ravel()))


def test_cache_features_needs_a_network_and_a_cache_dir(small_folder, cache_dir, make_fake):
    with pytest.raises(ValueError, match="network encoders.*fake_numpy"):
        _build(small_folder, make_fake().representation, cache_dir, cache_features=True)
    representation, _ = _network_representation()
    with pytest.raises(ValueError, match="needs a cache_dir"):
        _build(small_folder, representation, None, cache_features=True)
    with pytest.raises(ValueError, match="Expected a bool"):
        _build(small_folder, representation, cache_dir, cache_features="yes")
    assert _folders(cache_dir) == []


def test_network_features_run_on_the_first_gpu_else_the_cpu(monkeypatch):
    from pipelines import cache

    class Device:
        def __init__(self, name):
            self.name = name

    for gpus, expected in (([], "/device:CPU:0"), (["GPU:0", "GPU:1"], "/device:GPU:0")):
        devices = [Device(f"/device:{name}") for name in gpus]
        monkeypatch.setattr(
            tf.config, "list_logical_devices", lambda kind, d=devices: d if kind == "GPU" else []
        )
        assert cache.network_device() == expected


def test_the_size_estimate_is_close_to_a_built_cache(tmp_path):
    from pipelines import cache, sources
    from pipelines.dataset_config import DatasetConfig

    arguments = dict(
        representation="hog", image_size=64, cache_dir=str(tmp_path), crops_per_image=3, seed=0
    )
    build_dataset("samples", "train", batch_size=4, **arguments)
    built = sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(tmp_path)
        for name in names
    )
    config = DatasetConfig("samples", "train", batch_size=4, **arguments)
    photos = sources.photo_count(sources.resolve("samples", "train"))
    estimate = cache.estimated_bytes(config, photos)
    assert photos == 23 and estimate == 23 * 3 * (4 * 8 * 8 * 31 + 3 * 64 * 64)
    assert 0.9 < built / estimate < 1.2, (built, estimate)
