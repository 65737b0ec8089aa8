"""pipelines.photos: the photos a script or the reproduction reads, from files and from TFDS."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_invert import config as config_lib
from keras_invert import images
from keras_invert.reproduction import ReproduceConfig, jobs
from keras_invert.reproduction.plan import DEFAULT_TEST_IMAGES
from pipelines import sources
from pipelines.photos import chosen_photos, load_images, source_photos
from pipelines.reproduction_data import reproduction_data


def test_file_sources_give_the_first_photos_as_load_images_crops_them():
    photos = source_photos("samples", "test", 4)
    names = ("imagenet_00_243", "imagenet_04_949", "imagenet_08_915", "imagenet_14_129")
    assert photos.names == names
    paths = sources.list_source_files("samples", "test")[:4]
    assert photos.labels == tuple(paths)
    np.testing.assert_array_equal(photos.crops(64), load_images(paths, 64))
    assert len(source_photos("samples", "test")) == 6


def test_chosen_photos_are_the_files_given_else_the_sources_first():
    paths = sources.list_source_files("samples", "test")
    given = chosen_photos([paths[3], paths[1]], "folder:/ignored", "train", count=None)
    assert given.labels == (paths[3], paths[1]) and given.names[0] == "imagenet_14_129"
    np.testing.assert_array_equal(given.crops(32), load_images([paths[3], paths[1]], 32))
    assert chosen_photos(paths, count=2).labels == tuple(paths[:2])
    # No files and no source: the bundled test photos.
    assert chosen_photos().labels == tuple(paths)
    assert chosen_photos(None, "samples", "test", 3).labels == tuple(paths[:3])
    # A missing file is named by the flag that gave it.
    with pytest.raises(FileNotFoundError, match="Received: images='nope.jpg'"):
        chosen_photos(["nope.jpg"]).crops(32)


def test_asking_for_more_photos_than_there_are_says_so(caplog):
    with caplog.at_level("WARNING"):
        assert len(chosen_photos(None, "samples", "test", 1000)) == 6
    assert "samples split test has 6 photos, fewer than the 1000 asked for" in caplog.text


def test_photos_load_a_subset_by_label_as_the_experiments_ask():
    photos = chosen_photos(None, "samples", "test", 4)
    every = photos.crops(32)
    wanted = [photos.labels[2], photos.labels[0]]
    np.testing.assert_array_equal(photos.load(wanted, 32), every[[2, 0]])
    with pytest.raises(ValueError, match="Expected labels of these photos. Received: .'x.jpg'"):
        photos.load(["x.jpg"], 32)


def test_tfds_test_photos_are_decoded_and_centre_cropped_like_files():
    with tfds.testing.mock_data(num_examples=7):
        photos = source_photos("tfds:cifar10", "test", 5)
        records = sources.resolve("tfds:cifar10", "test").tfds_records(shuffle=False, seed=None)
        first = next(records.as_numpy_iterator())["bytes"]
        assert photos.names == photos.labels == tuple(f"test-{index}" for index in range(5))
        pixels = photos.crops(48)
        assert pixels.shape == (5, 48, 48, 3) and pixels.dtype == np.float32
        np.testing.assert_array_equal(
            pixels[0], images.center_crop(images.decode(first), 48).numpy()
        )
        assert len(source_photos("tfds:cifar10", "test")) == 7


def test_a_tfds_split_chosen_without_a_count_is_read_up_to_the_default():
    with tfds.testing.mock_data(num_examples=DEFAULT_TEST_IMAGES + 5):
        photos = chosen_photos(None, "tfds:cifar10", "test")
        assert len(photos) == DEFAULT_TEST_IMAGES
        assert photos.labels[-1] == f"test-{DEFAULT_TEST_IMAGES - 1}"
        assert len(chosen_photos(None, "tfds:cifar10", "test", 3)) == 3
        assert photos.load(["test-4"], 16).shape == (1, 16, 16, 3)


def test_a_tfds_reproduction_reads_its_test_split_capped_and_has_no_training_mean(tmp_path):
    config = ReproduceConfig(out_dir=str(tmp_path), data="tfds:cifar10", taps=("logits",))
    assert config.test_image_count == DEFAULT_TEST_IMAGES
    with tfds.testing.mock_data(num_examples=DEFAULT_TEST_IMAGES + 20):
        data = reproduction_data(config)
        assert data.image_names[-1] == f"test-{DEFAULT_TEST_IMAGES - 1}"
        assert data.crops(32).shape == (DEFAULT_TEST_IMAGES, 32, 32, 3)
        data.check_source(config)  # The train split resolves (offline, prepared).
    # The training photos of a TFDS source are records, not files: no mean image.
    config_lib.save(config_lib.TrainConfig(data="tfds:cifar10"), str(tmp_path))
    assert data.training_mean(str(tmp_path), 32, 32) is None
    with pytest.raises(ValueError, match="two test photos or more"):
        reproduction_data(ReproduceConfig(out_dir=str(tmp_path), num_test_images=1))


def test_a_reproduction_whose_caches_would_fill_the_disk_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    import shutil

    from pipelines import reproduction_data as data_module

    config = ReproduceConfig(out_dir=str(tmp_path / "out"))
    full = shutil._ntuple_diskusage(10**12, 10**12 - 10**8, 10**8)  # 0.1 GB free.
    monkeypatch.setattr(data_module.shutil, "disk_usage", lambda path: full)
    with pytest.raises(ValueError, match=r"23 training photos: about 6\.0 GB\. Received: 0\.1 GB"):
        reproduction_data(config)
    assert not (tmp_path / "out").exists()
    # Caches already built need no more room, nor do runs started earlier (resumed).
    planned = jobs(config)
    for job in planned[:3]:
        folder = tmp_path / "out" / "runs" / job.name / "cache" / "built"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data.index").write_text("")
        (folder / "meta.json").write_text('{"key": "built", "count": 736}')
    for job in planned[3:]:
        config_lib.save(config_lib.TrainConfig(), str(tmp_path / "out" / "runs" / job.name))
    reproduction_data(config)


def test_photos_are_counted_and_an_uncountable_tfds_split_is_not_checked(tmp_path, monkeypatch):
    import shutil

    from pipelines import reproduction_data as data_module

    assert sources.photo_count(sources.resolve("samples", "test")) == 6
    full = shutil._ntuple_diskusage(10**12, 10**12 - 10**8, 10**8)
    monkeypatch.setattr(data_module.shutil, "disk_usage", lambda path: full)
    # Faked TFDS data records no split sizes (a prepared dataset does): unknown, not refused.
    with tfds.testing.mock_data(num_examples=9):
        assert sources.photo_count(sources.resolve("tfds:cifar10", "train")) is None
        config = ReproduceConfig(out_dir=str(tmp_path), data="tfds:cifar10", taps=("logits",))
        data_module.check_cache_room(config)
