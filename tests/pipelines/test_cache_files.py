"""The cache on disk: keys, no complete-looking cache after a failed build, damaged caches."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from keras_invert import files, registry
from pipelines import cache_files, sources

from .conftest import build_cached, cache_folders, examples_of, write

PARTIAL = files.PARTIAL_PREFIX  # How a build killed mid-way names its folder.


def test_changed_parameters_use_another_cache(small_folder, cache_dir, make_fake):
    fake = make_fake()
    build_cached(small_folder, fake.representation, cache_dir)
    build_cached(small_folder, fake.representation, cache_dir, crops_per_image=2)
    build_cached(small_folder, fake.representation, cache_dir, seed=4)
    build_cached(small_folder, fake.representation, cache_dir, encoder_options={"scale": 2.0})
    folders = cache_folders(cache_dir)
    assert len(folders) == 4 and not any(name.startswith(PARTIAL) for name in folders)


def test_a_folder_photo_replaced_under_its_name_gets_a_new_cache(
    small_folder, cache_dir, make_fake
):
    fake = make_fake()
    first = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    build_cached(small_folder, fake.representation, cache_dir)
    assert len(cache_folders(cache_dir)) == 1
    # Another photo under an existing name (a re-export): the old crops must not be read.
    other = np.random.default_rng(9).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    write(small_folder / "train" / "0.png", tf.io.encode_png(other).numpy())
    second = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    assert len(cache_folders(cache_dir)) == 2
    assert not np.array_equal(first[1], second[1])  # The new photo's crops, not the old.


def test_the_samples_key_does_not_depend_on_where_the_packages_lie(tmp_path, monkeypatch):
    """The same bundled photos installed in two places (two worktrees' `.venv`): one key.

    The key held the photos' absolute paths: identical runs from two
    checkouts built identical caches under two keys.
    """
    installed = sources._package_folder
    representation = registry.get("hog")

    def key_with_packages_in(root):
        def package_folder(module):
            folder = root / module
            if not folder.exists():
                folder.symlink_to(installed(module), target_is_directory=True)
            return str(folder)

        monkeypatch.setattr(sources, "_package_folder", package_folder)
        source = sources.resolve("samples", "train")
        assert all(path.startswith(str(root)) for path in source.files)
        return cache_files.cache_key(representation, {}, 64, source, True, 2, 0.5, 0)

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key = key_with_packages_in(tmp_path / "a")
    assert key_with_packages_in(tmp_path / "b") == key
    # Another photo under the same name is another key.
    (tmp_path / "b" / "skimage").unlink()
    (tmp_path / "b" / "skimage").mkdir()
    for path in os.listdir(installed("skimage")):
        os.symlink(os.path.join(installed("skimage"), path), tmp_path / "b" / "skimage" / path)
    (tmp_path / "b" / "skimage" / "coffee.png").unlink()
    shutil.copyfile(
        os.path.join(installed("skimage"), "chelsea.png"), tmp_path / "b" / "skimage" / "coffee.png"
    )
    assert key_with_packages_in(tmp_path / "b") != key


def test_failed_build_leaves_no_cache_and_a_later_build_succeeds(
    small_folder, cache_dir, make_fake
):
    failing = make_fake(fail_on_call=2)  # Dies after the first batch of features.
    with pytest.raises((tf.errors.OpError, RuntimeError)):
        build_cached(small_folder, failing.representation, cache_dir)
    assert cache_folders(cache_dir) == []  # Neither a final nor a temporary folder.

    # A build killed with SIGKILL leaves its temporary folder and tf.data lockfile.
    stale = cache_dir / f"{PARTIAL}12345-0123456789ab-stale"
    stale.mkdir(parents=True)
    (stale / "data_0.lockfile").write_text("")
    (stale / "data_0.data-00000-of-00001.tempstate").write_bytes(b"\x00" * 64)

    working = make_fake()
    features, _ = examples_of(build_cached(small_folder, working.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3)
    assert len([name for name in cache_folders(cache_dir) if not name.startswith(PARTIAL)]) == 1


def _damaged_cache_is_rebuilt(small_folder, cache_dir, make_fake, caplog, damage):
    """Builds a cache, `damage(folder)`s it, builds again: the features are encoded again."""
    fake = make_fake()
    expected = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    (folder,) = cache_folders(cache_dir)
    damage(cache_dir / folder)
    calls = fake.encode_calls
    with caplog.at_level(logging.WARNING, logger="absl"):
        rebuilt = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    assert fake.encode_calls > calls  # Rebuilt, not read.
    for values, expected_values in zip(rebuilt, expected, strict=True):  # The same examples.
        np.testing.assert_allclose(
            np.sort(values.sum(axis=(1, 2, 3))), np.sort(expected_values.sum(axis=(1, 2, 3)))
        )
    assert cache_folders(cache_dir) == [folder]
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
    examples_of(build_cached(small_folder, fake.representation, cache_dir))
    (folder,) = cache_folders(cache_dir)
    meta = cache_dir / folder / "meta.json"
    recorded = json.loads(meta.read_text())
    assert set(recorded["sizes"]) == {
        name for name in os.listdir(cache_dir / folder) if name != "meta.json"
    }
    meta.write_text(json.dumps({"key": recorded["key"], "count": recorded["count"]}))
    calls = fake.encode_calls
    features, _ = examples_of(build_cached(small_folder, fake.representation, cache_dir))
    assert features.shape == (12, 4, 4, 3) and fake.encode_calls == calls


def test_a_sealed_folder_is_complete_until_a_data_file_changes(tmp_path):
    final = str(tmp_path / "root" / "hog-train-64-0123456789abcdef")
    with cache_files.placed(final) as temporary:
        for name, data in [("data.index", b"index"), ("data.data-00000-of-00001", b"x" * 10)]:
            write(os.path.join(temporary, name), data)
        assert not cache_files.is_complete(temporary)  # No meta.json yet.
        cache_files.seal(temporary, final, "key", count=7)
    assert cache_files.is_complete(final) and cache_files.element_count(final) == 7
    assert cache_files.holds_a_complete_cache(str(tmp_path / "root"))
    os.truncate(os.path.join(final, "data.data-00000-of-00001"), 3)
    assert not cache_files.is_complete(final)
    assert not cache_files.holds_a_complete_cache(str(tmp_path / "root"))
