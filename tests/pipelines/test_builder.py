"""The streaming builder: shapes, ranges, determinism, evaluation order, odd files, TFDS, fit."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import build_dataset, list_source_files, load_images


def _batches(dataset, count):
    return [tuple(tensor.numpy() for tensor in batch) for batch in dataset.take(count)]


def test_hog_batches_from_samples_have_the_declared_shapes_and_range():
    dataset = build_dataset(
        "samples", "train", representation="hog", image_size=64, batch_size=4, seed=0
    )
    features_spec, target_spec = dataset.element_spec
    assert features_spec.shape == (4, 8, 8, 31) and features_spec.dtype == tf.float32
    assert target_spec.shape == (4, 64, 64, 3) and target_spec.dtype == tf.float32
    for features, target in _batches(dataset, 2):
        assert features.shape == (4, 8, 8, 31) and features.dtype == np.float32
        assert target.shape == (4, 64, 64, 3) and target.dtype == np.float32
        assert 0.0 <= target.min() and target.max() <= 1.0
        assert target.std() > 0.05  # Real photos, not blank crops.


def test_seed_makes_the_stream_reproducible():
    def first_batches(seed):
        return _batches(
            build_dataset("samples", "train", image_size=32, batch_size=4, seed=seed), 2
        )

    first, again, other = first_batches(7), first_batches(7), first_batches(8)
    for (features, target), (features_again, target_again) in zip(first, again, strict=True):
        np.testing.assert_array_equal(features, features_again)
        np.testing.assert_array_equal(target, target_again)
    assert not np.array_equal(first[0][1], other[0][1])
    unseeded = [build_dataset("samples", image_size=32, batch_size=4) for _ in range(2)]
    unseeded = [_batches(dataset, 1)[0][1] for dataset in unseeded]
    assert not np.array_equal(unseeded[0], unseeded[1])


def test_evaluation_is_centre_crops_in_fixed_file_order():
    dataset = build_dataset("samples", "test", image_size=32, batch_size=4)
    passes = [np.concatenate([target for _, target in _batches(dataset, -1)]) for _ in range(2)]
    assert passes[0].shape == (6, 32, 32, 3)  # Not repeated, last batch kept.
    np.testing.assert_array_equal(passes[0], passes[1])
    expected = load_images(list_source_files("samples", "test"), 32) / 255.0
    np.testing.assert_allclose(passes[0], expected, atol=1e-6)


def test_folder_yields_the_decodable_images_only(odd_folder):
    dataset = build_dataset(
        f"folder:{odd_folder}", "train", image_size=16, batch_size=2, training=False
    )
    targets = np.concatenate([target for _, target in _batches(dataset, -1)])
    assert targets.shape == (5, 16, 16, 3)  # 5 valid; truncated.jpg dropped at decode.
    training = build_dataset(f"folder:{odd_folder}", "train", image_size=16, batch_size=5, seed=0)
    assert _batches(training, 3)[2][1].shape == (5, 16, 16, 3)  # Repeats past the bad file.


def test_undecodable_files_are_named_in_a_warning_and_left_out_before_the_positions(
    odd_folder, fake_numpy, caplog
):
    arguments = dict(representation=fake_numpy.representation, image_size=16, batch_size=5, seed=0)
    with caplog.at_level(logging.WARNING, logger="absl"):
        stream = _batches(build_dataset(f"folder:{odd_folder}", "train", **arguments), 3)
    warnings = [r.getMessage() for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(warnings) == 1 and str(odd_folder / "train" / "truncated.jpg") in warnings[0]
    # The stream is the one of the folder without the file: positions count decodable photos.
    (odd_folder / "train" / "truncated.jpg").unlink()
    without = _batches(build_dataset(f"folder:{odd_folder}", "train", **arguments), 3)
    for batch, expected in zip(stream, without, strict=True):
        np.testing.assert_array_equal(batch[1], expected[1])


def test_training_photos_smaller_than_the_crops_are_counted_in_one_warning(
    tmp_path, encode_image, caplog
):
    sizes = {"train/a.png": (1, 1), "train/b.png": (12, 40), "train/c.png": (16, 20)}
    for name, (height, width) in {**sizes, "test/d.png": (2, 2)}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(encode_image(np.zeros((height, width, 3), np.uint8), "PNG"))
    with caplog.at_level(logging.WARNING, logger="absl"):
        for split in ("train", "train", "test"):  # Once per process; evaluation not counted.
            build_dataset(f"folder:{tmp_path}", split, image_size=16, seed=0)
    warnings = [r.getMessage() for r in caplog.records if "smaller than" in r.getMessage()]
    assert warnings == [
        f"2 of the 3 photos of folder:{tmp_path} split 'train' are smaller than the 16 x 16 "
        "crops (the smallest: 1 x 1 pixels, width x height): their crops are upscaled, so the "
        "decoder learns from blurred images."
    ]


def test_a_source_where_no_file_decodes_fails_naming_the_files(tmp_path, encode_image):
    jpeg = encode_image(np.full((32, 32, 3), 100, np.uint8), "JPEG")
    for name in ("train/a.jpg", "train/b.jpg", "test/c.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(jpeg[: len(jpeg) // 2])
    message = r"none of the 2 files of split 'train' does .*train/a\.jpg, .*train/b\.jpg"
    with pytest.raises(ValueError, match=message):
        next(iter(build_dataset(f"folder:{tmp_path}", "train", image_size=16, seed=0)))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "GIF", "BMP", "WEBP"])
def test_large_sources_check_the_first_and_last_bytes(tmp_path, encode_image, image_format):
    from pipelines import decode_check

    array = np.random.default_rng(0).integers(0, 256, (40, 48, 3), np.uint8)
    data = encode_image(array, image_format)
    paths = {}
    for name, contents in [("whole", data), ("cut", data[: len(data) * 2 // 3]), ("empty", b"")]:
        paths[name] = tmp_path / f"{name}.{image_format.lower()}"
        paths[name].write_bytes(contents)
    assert decode_check.complete(str(paths["whole"])) and decode_check.decodes(str(paths["whole"]))
    assert not decode_check.complete(str(paths["cut"])) and not decode_check.decodes(
        str(paths["cut"])
    )
    assert not decode_check.complete(str(paths["empty"]))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert not decode_check.complete(str(text))


def test_a_source_above_the_full_check_limit_is_checked_by_its_bytes(
    tmp_path, encode_image, monkeypatch
):
    from pipelines import decode_check

    monkeypatch.setattr(decode_check, "FULL_DECODE_CHECK_LIMIT", 1)
    monkeypatch.setattr(decode_check, "_decoded_size", None)  # Never called above the limit.
    jpeg = encode_image(np.full((32, 32, 3), 100, np.uint8), "JPEG")
    for name in ("train/a.jpg", "train/b.jpg", "test/c.jpg"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(jpeg[: len(jpeg) // 2] if name.endswith("a.jpg") else jpeg)
    batch = next(iter(build_dataset(f"folder:{tmp_path}", "train", image_size=16, seed=0)))
    assert batch[1].shape[1:] == (16, 16, 3)
    with pytest.raises(ValueError, match=r"none of the 2 files of split 'train'"):
        (tmp_path / "train/b.jpg").write_bytes(jpeg[:100])
        build_dataset(f"folder:{tmp_path}", "train", image_size=16, seed=0)


def test_numpy_representation_runs_through_numpy_function(small_folder, fake_numpy):
    dataset = build_dataset(
        f"folder:{small_folder}",
        "train",
        representation=fake_numpy.representation,
        image_size=16,
        batch_size=3,
        seed=0,
    )
    assert dataset.element_spec[0].shape == (3, 4, 4, 3)
    assert dataset.element_spec[1].shape == (3, 8, 8, 3)
    features, target = _batches(dataset, 1)[0]
    assert features.shape == (3, 4, 4, 3) and target.shape == (3, 8, 8, 3)
    assert fake_numpy.encode_calls >= 1
    # Features are the 4x4 block means of the 0..255 crop, whose 2x2 means are the target.
    np.testing.assert_allclose(
        features / 255.0, target.reshape(3, 4, 2, 4, 2, 3).mean(axis=(2, 4)), atol=1e-5
    )


def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=5):
        train = build_dataset("tfds:cifar10", "train", image_size=32, batch_size=4, seed=0)
        features, target = _batches(train, 1)[0]
        assert features.shape == (4, 4, 4, 31) and target.shape == (4, 32, 32, 3)
        test = build_dataset("tfds:cifar10", "test", image_size=32, batch_size=4)
        assert sum(batch[1].shape[0] for batch in _batches(test, -1)) == 5


def test_tfds_is_offline_by_default(tmp_path):
    with pytest.raises(ValueError, match="download=true"):
        build_dataset(f"tfds:cifar10?data_dir={tmp_path}", "train", image_size=32)


def test_model_fit_runs_on_the_dataset():
    dataset = build_dataset("samples", "train", image_size=16, batch_size=4, seed=0)
    inputs = keras.Input((2, 2, 31))
    outputs = keras.layers.Reshape((16, 16, 3))(
        keras.layers.Dense(16 * 16 * 3)(keras.layers.Flatten()(inputs))
    )
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    features, target = next(iter(dataset))  # The seeded stream's first batch.
    before = model.evaluate(features, target, verbose=0)
    history = model.fit(dataset, steps_per_epoch=1, epochs=1, shuffle=False, verbose=0)
    # The step's loss is that of the dataset's first (features, target) pair, before the update.
    assert history.history["loss"][0] == pytest.approx(before, rel=1e-5)


def test_load_images_says_what_is_wrong_with_a_path(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    for name in ("notes.jpg", "cut.png"):
        with pytest.raises(ValueError, match=f"does not decode.*{name}"):
            load_images([tmp_path / name], 32)
    with pytest.raises(FileNotFoundError, match="existing image file.*missing.png"):
        load_images(str(tmp_path / "missing.png"), 32)
    with pytest.raises(IsADirectoryError, match=f"not a folder.*folder:{tmp_path}"):
        load_images([tmp_path], 32)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="batch_size"):
        build_dataset("samples", batch_size=0)
    with pytest.raises(ValueError, match="min_crop_scale"):
        build_dataset("samples", min_crop_scale=0.0)
    with pytest.raises(ValueError, match="representation"):
        build_dataset("samples", representation="nope")
