"""The feature cache: reuse, the evaluation crops, reading in stream order, the size estimate."""

import logging
import os

import numpy as np

from pipelines import build_dataset

from .conftest import build_cached, cache_folders, examples_of


def test_second_build_reuses_the_cache(small_folder, cache_dir, make_fake, caplog):
    fake = make_fake()
    features, target = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and target.shape == (12, 8, 8, 3)  # 4 photos x 3 crops.
    assert 0.0 <= target.min() and target.max() <= 1.0
    calls = (fake.make_encoder_calls, fake.encode_calls)
    assert calls[1] >= 1

    # absl's logger has its own level, which other tests (Keras export) may have raised.
    with caplog.at_level(logging.INFO, logger="absl"):
        again = build_cached(small_folder, fake.representation, cache_dir)
    assert any("Reusing the feature cache" in record.getMessage() for record in caplog.records)
    features_again, target_again = examples_of(again)
    assert (fake.make_encoder_calls, fake.encode_calls) == calls  # Not encoded again.

    # Same examples, shuffled differently.
    def sums(values):
        return np.sort(values.sum(axis=(1, 2, 3)))

    np.testing.assert_allclose(sums(features_again), sums(features))
    assert len(cache_folders(cache_dir)) == 1


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
    first, second = examples_of(dataset), examples_of(dataset)
    assert first[0].shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(first[1], second[1])  # Fixed order.


def test_partly_read_dataset_keeps_the_complete_cache(small_folder, cache_dir, make_fake):
    fake = make_fake()
    iterator = iter(build_cached(small_folder, fake.representation, cache_dir, repeat=True))
    next(iterator)
    del iterator  # Dropped half-way: the cache was complete before the first batch.
    calls = fake.encode_calls
    features, _ = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and fake.encode_calls == calls


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
