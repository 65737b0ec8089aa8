"""LBP and SIFT through the launch scripts: train, export, reconstruct, and the SIFT cache.

LBP is TensorFlow ops, so its export takes images and features. SIFT is a C
library call per image: its export takes keypoint maps (`from_features`, also
as `serving_default`), and `launch.reconstruct` and `keras_invert.load`
compute the maps from images on the client side.
"""

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

import keras_invert
from keras_invert.features import lbp, sift_batch, sift_tf

TINY = ["--data=samples", "--image_size=64", "--width=0.125", "--batch_size=4", "--seed=3"]
BUILDING, REUSING = "Building the feature cache", "Reusing the feature cache"


def _caches(cache_dir):
    """Complete cache folders (the builder renames a folder into place when complete)."""
    return sorted(
        name
        for name in os.listdir(cache_dir)
        if os.path.exists(os.path.join(cache_dir, name, "meta.json"))
    )


def _write_images(folder):
    """A photo crop, a flat grey image (no keypoints) and a 3x3 one (smaller than a cell)."""
    import skimage.data

    os.makedirs(folder, exist_ok=True)
    images = {
        "photo.png": skimage.data.astronaut()[100:260, 150:310],
        "flat.png": np.full((80, 96, 3), 128, np.uint8),
        "tiny.png": np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = os.path.join(folder, name)
        cv2.imwrite(paths[name], cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return paths


@pytest.fixture(scope="module")
def lbp_run(tmp_path_factory, launch_script):
    root = tmp_path_factory.mktemp("lbp")
    work_dir, export_dir = str(root / "run"), str(root / "exports")
    launch_script("train", f"--work_dir={work_dir}", "--representation=lbp", *TINY, "--steps=2")
    launch_script("export", f"--work_dir={work_dir}", f"--export_dir={export_dir}")
    return work_dir, export_dir


@pytest.fixture(scope="module")
def sift_run(tmp_path_factory, launch_script):
    root = tmp_path_factory.mktemp("sift")
    work_dir, export_dir = str(root / "run"), str(root / "exports")
    first = launch_script("train", f"--work_dir={work_dir}", "--representation=sift", *TINY,
                 "--steps=2", "--steps_per_epoch=2")  # fmt: skip
    launch_script("export", f"--work_dir={work_dir}", f"--export_dir={export_dir}")
    return work_dir, export_dir, first, root


def test_lbp_export_takes_images_and_features(lbp_run, real_photos):
    _, export_dir = lbp_run
    path = os.path.join(export_dir, "1")
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_float", "from_features"}
    photos = np.stack([real_photos[name][:64, :64] for name in ("astronaut", "coffee")])
    from_images = loaded.signatures["serving_default"](images=tf.constant(photos))
    features = lbp(photos.astype(np.float32))
    assert features.shape == (2, 4, 4, 58)
    from_features = loaded.signatures["from_features"](features=features)
    np.testing.assert_allclose(
        from_images["reconstruction"], from_features["reconstruction"], atol=1e-5
    )
    model = keras_invert.load(export_dir)
    assert model.representation == "lbp" and model.encoder_source == "export"
    np.testing.assert_allclose(model.reconstruct(photos), from_images["reconstruction"], atol=1e-6)


def test_lbp_reconstruct_from_export(lbp_run, tmp_path, launch_script):
    _, export_dir = lbp_run
    result = launch_script(
        "reconstruct", f"--model={export_dir}", "--data=samples", "--split=test",
        f"--out={tmp_path / 'grid.png'}", f"--metrics_out={tmp_path / 'metrics.json'}",
    )  # fmt: skip
    assert "lbp decoder" in result.stdout
    with open(tmp_path / "metrics.json") as file:
        figures = json.load(file)["results"]["lbp decoder"]
    assert np.isfinite(figures["normalized_error"]) and figures["normalized_error"] > 0


def test_sift_export_takes_keypoint_maps(sift_run, real_photos):
    _, export_dir, _, _ = sift_run
    path = os.path.join(export_dir, "1")
    loaded = tf.saved_model.load(path)
    # SIFT is not a TF op: no image signature; serving_default is from_features.
    assert set(loaded.signatures) == {"serving_default", "from_features"}
    assert list(loaded.signatures["serving_default"].structured_input_signature[1]) == ["features"]
    photos = np.stack([real_photos[name][:64, :64] for name in ("astronaut", "coffee")])
    maps = sift_batch(photos)
    assert maps.shape == (2, 16, 16, 133) and np.count_nonzero(maps) > 0
    expected = loaded.signatures["serving_default"](features=tf.constant(maps))["reconstruction"]
    # The Python API takes images and computes the maps on the client side.
    model = keras_invert.load(export_dir)
    assert model.representation == "sift" and model.encoder_source == "registry"
    np.testing.assert_array_equal(model.encode(photos), maps)
    np.testing.assert_allclose(model.reconstruct(photos), expected, atol=1e-6)
    # Bad feature shapes are refused by the SavedModel itself, naming the shape.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, 16, 16, 133\]"):
        loaded.signatures["serving_default"](features=tf.zeros((1, 16, 16, 58)))


def test_sift_reconstruct_computes_maps_from_images(sift_run, tmp_path, launch_script):
    _, export_dir, _, _ = sift_run
    paths = _write_images(str(tmp_path / "images"))
    result = launch_script(
        "reconstruct", f"--model={export_dir}", f"--images={','.join(paths.values())}",
        f"--out={tmp_path / 'grid.png'}", f"--metrics_out={tmp_path / 'metrics.json'}",
    )  # fmt: skip
    # A 3x3 image is smaller than one SIFT cell: upsampled with a warning, not an error.
    assert "tiny.png is 3x3 pixels" in result.stderr and "upsampled to 64x64" in result.stderr
    with open(tmp_path / "metrics.json") as file:
        figures = json.load(file)["results"]["sift decoder"]
    assert np.isfinite(figures["normalized_error"]) and figures["normalized_error"] > 0
    assert cv2.imread(str(tmp_path / "grid.png")).shape == (24 + 3 * 64, 128, 3)


def test_sift_cache_is_reused_and_rebuilt_when_a_parameter_changes(sift_run, launch_script):
    import pipelines
    from keras_invert import config as config_lib

    work_dir, _, first, _ = sift_run
    cache_dir = os.path.join(work_dir, "cache")  # the sift preset's cache_dir="cache"
    assert BUILDING in first.stderr and REUSING not in first.stderr
    built = _caches(cache_dir)
    assert len(built) == 1
    meta = os.path.join(cache_dir, built[0], "meta.json")
    stamp = os.stat(meta).st_mtime_ns
    # The same run continued: the maps are read back, not computed again.
    again = launch_script("train", f"--work_dir={work_dir}", "--steps=4")
    assert REUSING in again.stderr and BUILDING not in again.stderr
    assert _caches(cache_dir) == built and os.stat(meta).st_mtime_ns == stamp
    # The run's own parameters find its cache from another process; a changed one does not.
    run = config_lib.load(work_dir)
    arguments = dict(
        representation="sift", image_size=run.image_size, batch_size=run.batch_size,
        seed=run.seed, cache_dir=cache_dir, min_crop_scale=run.min_crop_scale,
    )  # fmt: skip
    pipelines.build_dataset(run.data, "train", crops_per_image=run.crops_per_image, **arguments)
    assert _caches(cache_dir) == built
    dataset = pipelines.build_dataset(run.data, "train", crops_per_image=2, **arguments)
    assert len(_caches(cache_dir)) == 2 and set(built) < set(_caches(cache_dir))
    features, _ = next(iter(dataset))
    assert features.shape == (run.batch_size, 16, 16, 133)


def test_images_without_keypoints_give_zero_maps_through_the_pipeline(tmp_path, real_photos):
    import pipelines

    folder = tmp_path / "photos"
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
    cv2.imwrite(str(folder / "test" / "a_flat.png"), np.full((70, 90, 3), 200, np.uint8))
    photo = real_photos["chelsea"][:128, :128]
    cv2.imwrite(str(folder / "test" / "b_photo.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    dataset = pipelines.build_dataset(
        f"folder:{folder}", "test", representation="sift", image_size=64, batch_size=2
    )
    features, targets = next(iter(dataset))
    assert features.shape == (2, 16, 16, 133) and targets.shape == (2, 64, 64, 3)
    assert not np.any(features[0]) and np.count_nonzero(features[1]) > 0


def test_images_smaller_than_one_cell_fail_clearly():
    tiny = np.zeros((1, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="at least 4x4"):
        sift_batch(tiny)
    with pytest.raises(ValueError, match="at least 16x16"):
        lbp(tiny)
    # Inside tf.data the message survives the numpy_function boundary.
    dataset = tf.data.Dataset.from_tensors(tiny[0]).map(sift_tf)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 4x4"):
        next(iter(dataset))
