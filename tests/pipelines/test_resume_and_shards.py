"""start_step (resume), num_shards/shard_index on both paths; the SIFT backend in cache keys."""

import dataclasses
import os

import numpy as np
import pytest

from keras_invert import registry
from pipelines import build_dataset, cache, cache_files, sources


def _batches(dataset, count=-1):
    return [tuple(tensor.numpy() for tensor in batch) for batch in dataset.take(count)]


def _assert_same(batches, expected):
    assert len(batches) == len(expected)
    for (features, target), (features_expected, target_expected) in zip(
        batches, expected, strict=True
    ):
        np.testing.assert_array_equal(features, features_expected)
        np.testing.assert_array_equal(target, target_expected)


def _interleaved(first, second):
    """Batches of two shards -> the batch of one pipeline: elements 0, 1, 2, ... alternate."""
    return tuple(
        np.stack([row for pair in zip(a, b, strict=True) for row in pair])
        for a, b in zip(first, second, strict=True)
    )


@pytest.fixture(params=["streaming", "cached", "cached_streamed"])
def build(request, small_folder, tmp_path, fake_numpy, monkeypatch):
    """`build(**overrides)` on the 4 training photos: seeded, batch 3, each path."""
    if request.param == "cached_streamed":
        # A cache "too large for memory": read through the shuffle buffer.
        monkeypatch.setattr(cache, "CACHE_IN_MEMORY_BYTES", 0)
    options = dict(
        representation=fake_numpy.representation,
        image_size=16,
        batch_size=3,
        seed=5,
        color_jitter=0.3,
    )
    if request.param != "streaming":
        options.update(cache_dir=str(tmp_path / "cache"), crops_per_image=2)

    def make(**overrides):
        return build_dataset(f"folder:{small_folder}", "train", **{**options, **overrides})

    return make


def test_start_step_continues_the_uninterrupted_stream(build):
    # 4 photos (streaming) or 8 cached crops per epoch, 3 per batch: epochs end
    # inside batches 1 and 2, so the starts below cross epoch boundaries.
    expected = _batches(build(), 8)
    assert not np.array_equal(expected[0][1], expected[1][1])
    for start_step in (1, 3, 6):
        _assert_same(_batches(build(start_step=start_step), 8 - start_step), expected[start_step:])


def test_shards_are_disjoint_and_together_one_pipeline(build):
    whole = _batches(build(batch_size=4), 5)
    shards = [_batches(build(batch_size=2, num_shards=2, shard_index=i), 5) for i in (0, 1)]
    for step in range(5):
        _assert_same([_interleaved(shards[0][step], shards[1][step])], [whole[step]])
    # With start_step, each shard resumes its own stream.
    resumed = _batches(build(batch_size=2, num_shards=2, shard_index=1, start_step=3), 2)
    _assert_same(resumed, shards[1][3:5])


def test_sharded_evaluation_covers_every_photo_once(small_folder, fake_numpy):
    def targets(**options):
        dataset = build_dataset(
            f"folder:{small_folder}", "train", representation=fake_numpy.representation,
            image_size=16, batch_size=1, training=False, **options,
        )  # fmt: skip
        return np.concatenate([target for _, target in _batches(dataset)])

    whole = targets()
    shards = [targets(num_shards=2, shard_index=i) for i in (0, 1)]
    assert whole.shape[0] == 4 and [len(shard) for shard in shards] == [2, 2]
    np.testing.assert_array_equal(
        np.stack([shards[0], shards[1]], axis=1).reshape(whole.shape), whole
    )


def test_in_memory_cache_skips_without_reading_the_skipped_elements(
    small_folder, tmp_path, fake_numpy
):
    options = dict(
        representation=fake_numpy.representation,
        image_size=16,
        batch_size=3,
        seed=1,
        cache_dir=str(tmp_path / "cache"),
        crops_per_image=2,
    )
    far = build_dataset(f"folder:{small_folder}", "train", start_step=10**12, **options)
    features, target = _batches(far, 1)[0]  # Instant: positions are computed, not read.
    assert features.shape == (3, 4, 4, 3) and target.shape == (3, 8, 8, 3)


def test_invalid_distribution_arguments_are_rejected():
    for options, name in (
        ({"start_step": -1}, "start_step"),
        ({"start_step": 1.5}, "start_step"),
        ({"num_shards": 0}, "num_shards"),
        ({"num_shards": 2, "shard_index": 2}, "shard_index"),
        ({"shard_index": -1}, "shard_index"),
        ({"data_service": "localhost"}, "data_service"),
    ):
        with pytest.raises(ValueError, match=name):
            build_dataset("samples", image_size=16, **options)


def test_data_service_refuses_what_its_workers_cannot_run(small_folder, tmp_path, fake_numpy):
    service = "grpc://localhost:5050"  # Never contacted: the arguments are refused first.
    with pytest.raises(ValueError, match="cache_dir"):
        build_dataset("samples", data_service=service, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="in-graph"):
        build_dataset("samples", representation=fake_numpy.representation, data_service=service)


def test_sift_backend_is_part_of_the_cache_key(monkeypatch):
    representation = registry.get("sift")
    source = sources.resolve("samples", "train")

    def key(encoder_options):
        options = registry.resolved_encoder_options(representation, encoder_options)
        return cache_files.cache_key(representation, options, 32, source, True, 2, 0.5, 0)

    monkeypatch.setattr(registry, "default_sift_backend", lambda: "vlfeat")
    on_vlfeat = key({})
    monkeypatch.setattr(registry, "default_sift_backend", lambda: "opencv")
    on_opencv = key({})
    assert on_vlfeat != on_opencv
    assert on_opencv == key({"backend": "opencv"}) and on_vlfeat == key({"backend": "vlfeat"})


def test_cache_built_with_one_backend_is_not_read_with_another(
    small_folder, tmp_path, fake_numpy, monkeypatch
):
    received = []

    def make_encoder(backend=None):
        received.append(backend)
        return fake_numpy.representation.make_encoder()

    representation = dataclasses.replace(fake_numpy.representation, make_encoder=make_encoder)
    cache_dir = tmp_path / "cache"
    for backend in ("vlfeat", "opencv"):
        monkeypatch.setattr(registry, "default_sift_backend", lambda backend=backend: backend)
        build_dataset(
            f"folder:{small_folder}", "train", representation=representation, image_size=16,
            batch_size=4, seed=0, cache_dir=str(cache_dir), crops_per_image=1,
        )  # fmt: skip
    assert received == ["vlfeat", "opencv"]  # The encoder gets the resolved backend.
    assert len(os.listdir(cache_dir)) == 2  # The OpenCV machine built its own cache.


def test_tfds_records_resume_and_shard_before_decoding(fake_numpy):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):

        def build(**options):
            dataset = build_dataset(
                "tfds:cifar10",
                "train",
                representation=fake_numpy.representation,
                image_size=16,
                seed=2,
                **{"batch_size": 2, **options},
            )
            return _batches(dataset, 6 - options.get("start_step", 0))

        expected = build()
        _assert_same(build(start_step=4), expected[4:])  # Across the 5-record epochs.
        whole = build(batch_size=4)
        shards = [build(batch_size=2, num_shards=2, shard_index=i) for i in (0, 1)]
        for step in range(6):
            _assert_same([_interleaved(shards[0][step], shards[1][step])], [whole[step]])
        with pytest.raises(ValueError, match="'samples' or 'folder:PATH'"):
            build_dataset("tfds:cifar10", data_service="grpc://localhost:5050")
