"""The feature cache: reuse, keys, and no complete-looking cache after a failed build."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from pipelines import build_dataset


def _build(folder, representation, cache_dir, **overrides):
    options = dict(
        representation=representation,
        image_size=16,
        batch_size=4,
        seed=3,
        cache_dir=str(cache_dir),
        crops_per_image=3,
        repeat=False,
    )
    return build_dataset(f"folder:{folder}", "train", **{**options, **overrides})


def _examples(dataset):
    batches = [(features.numpy(), target.numpy()) for features, target in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


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
    assert len(folders) == 4 and not any(".tmp-" in name for name in folders)


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
    stale = cache_dir / "stale.tmp-0123456789ab"
    stale.mkdir(parents=True)
    (stale / "data_0.lockfile").write_text("")
    (stale / "data_0.data-00000-of-00001.tempstate").write_bytes(b"\x00" * 64)

    working = make_fake()
    features, _ = _examples(_build(small_folder, working.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3)
    assert len([name for name in _folders(cache_dir) if ".tmp-" not in name]) == 1


def test_partly_read_dataset_keeps_the_complete_cache(small_folder, cache_dir, make_fake):
    fake = make_fake()
    iterator = iter(_build(small_folder, fake.representation, cache_dir, repeat=True))
    next(iterator)
    del iterator  # Dropped half-way: the cache was complete before the first batch.
    calls = fake.encode_calls
    features, _ = _examples(_build(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and fake.encode_calls == calls
