"""Sources: the bundled photos' fixed split, local folders, clear errors."""

import logging
import os

import pytest

from pipelines import SAMPLE_PHOTOS, SAMPLE_TEST_PHOTOS, list_source_files, sources


def test_samples_split_is_fixed_disjoint_and_complete():
    train = list_source_files("samples", "train")
    test = list_source_files("samples", "test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == len(SAMPLE_PHOTOS) == 29
    assert sorted(os.path.basename(path) for path in test) == sorted(
        name.split("/")[1] for name in SAMPLE_TEST_PHOTOS
    )
    assert all(os.path.isfile(path) for path in train + test)
    assert [os.path.basename(path) for path in test] == [
        name.split("/")[1] for name in sorted(SAMPLE_TEST_PHOTOS)
    ]


def test_samples_missing_package_names_the_pip_package(monkeypatch):
    find_spec = sources.importlib.util.find_spec
    monkeypatch.setattr(
        sources.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "foolbox" else find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="pip install foolbox"):
        list_source_files("samples", "train")


def test_samples_rejects_other_splits():
    with pytest.raises(ValueError, match="split"):
        list_source_files("samples", "validation")


def test_folder_listing_skips_non_images_with_one_warning(odd_folder, caplog):
    os.mkfifo(odd_folder / "train" / "pipe.jpg")  # Opening it to read would block.
    with caplog.at_level(logging.WARNING, logger="absl"):
        files = list_source_files(f"folder:{odd_folder}", "train")
    names = sorted(os.path.basename(path) for path in files)
    # The truncated JPEG has JPEG magic bytes: it is dropped later, at decode time.
    assert names == [
        "gray.png",
        "gray_alpha.png",
        "rgba.PNG",
        "sixteen_bit.png",
        "tiny.jpg",
        "truncated.jpg",
    ]
    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "skipped" in message]
    assert len(warnings) == 1
    assert "skipped 5 files" in warnings[0]
    assert "3 not images by content, 1 unsupported types, 1 empty" in warnings[0]
    assert [os.path.basename(p) for p in list_source_files(f"folder:{odd_folder}", "test")] == [
        "one.png"
    ]


def test_folder_without_split_folders_splits_by_path_hash(small_folder):
    root = small_folder / "train"  # 4 photos, no train/ test/ inside.
    for index in range(4, 40):
        (root / f"copy_{index}.png").write_bytes((root / "0.png").read_bytes())
    train = list_source_files(f"folder:{root}", "train")
    test = list_source_files(f"folder:{root}", "test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == 40
    assert 0 < len(test) < 12
    assert list_source_files(f"folder:{root}", "test") == test


def test_unknown_sources_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="source"):
        list_source_files("imagenet", "train")
    with pytest.raises(ValueError, match="folder"):
        list_source_files(f"folder:{tmp_path / 'missing'}", "train")
    with pytest.raises(ValueError, match="files"):
        list_source_files("tfds:cifar10", "train")
