"""`keras_invert.load` of a work dir: what a caller's photos and features are checked for."""

import logging
import os
import re
import shutil

import keras
import numpy as np
import pytest

import keras_invert
from keras_invert import building, config
from keras_invert.checkpoints import CHECKPOINT_DIR, FINAL_MODEL, Checkpoints


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A loaded work dir of an untrained SIFT decoder at image size 64.

    SIFT on OpenCV encodes a photo in milliseconds; HOG's encoder would spend
    seconds compiling with XLA. What is checked is the loader's, not SIFT's.
    """
    work_dir = tmp_path_factory.mktemp("sift")
    run = config.TrainConfig(
        representation="sift", image_size=64, width=0.0625, summary_images=0,
        encoder_options={"backend": "opencv"},
    )  # fmt: skip
    config.save(run, str(work_dir))
    building.build_model(run).save(str(work_dir / FINAL_MODEL))
    return keras_invert.load(str(work_dir))


def _photos(count=1, size=64):
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_photos_and_features_it_cannot_take_are_a_value_error_naming_them(loaded):
    photo = _photos()
    features = np.zeros((1, *loaded.decoder.input_shape[1:]), np.float32)
    nan_photo = photo.astype(np.float32)
    nan_photo[0, 5, 5, 0] = np.nan  # At the image size, where no resize is needed.
    photos = {
        "Expected finite images (no NaN or Inf). Received: images with 1 NaN": nan_photo,
        "Received: shape=(1, 64, 64, 5)": np.zeros((1, 64, 64, 5), np.uint8),
        "Received: shape=(64, 64, 3)": photo[0],
        "Expected non-empty images. Received: shape=(1, 0, 0, 3)": np.zeros((1, 0, 0, 3)),
        "Received: dtype=bool": photo > 100,
        "Received: dtype=complex64": photo.astype(np.complex64),
        "Expected images as one numeric array": [photo[0], photo[0, :10]],
        "Expected images as an integer or float array [N, H, W, C] (uint8, or float in "
        "0..255). Received: dtype=object": None,
    }
    for expected, images in photos.items():
        for call in (loaded.reconstruct, loaded.encode):
            with pytest.raises(ValueError, match=re.escape(expected)):
                call(images)
    bad = np.concatenate([features, features])
    bad[0, 1, 2, 3], bad[1, 2, 3, 4] = np.nan, np.inf
    with pytest.raises(ValueError, match="Expected finite feature values.*1 NaN and 1 Inf"):
        loaded.decode(bad)
    with pytest.raises(ValueError, match="Expected features as one numeric array"):
        loaded.decode([["a"]])
    shape = ", ".join(map(str, features.shape[1:]))
    for wrong in (features[0], features[:, :-1], features.reshape(1, -1)):
        with pytest.raises(ValueError, match=re.escape(f"features of shape [N, {shape}]")):
            loaded.decode(wrong)
    # Finite as given, beyond float32 once cast: named as such, not counted as Inf.
    with pytest.raises(ValueError, match=r"float32's range.*largest magnitude 1e\+39$"):
        loaded.decode(np.full(features.shape, 1e39))
    # Finite but far beyond the training features: the decoder overflows, and the error
    # names that cause beside damaged weights.
    with pytest.raises(ValueError, match=r"far larger than those it was trained on.*3e\+38\)"):
        loaded.decode(np.full_like(features, 3e38))


def test_photos_out_of_range_are_a_value_error_not_clipped(loaded):
    photos = _photos().astype(np.int32)
    photos[0, 0, 0] = [-5, 0, 300]
    expected = "in 0..255; they are not clipped (uint8 and uint16 photos take any value). "
    with pytest.raises(
        ValueError, match=re.escape(f"{expected}Received: min=-5, max=300, dtype=int32")
    ):
        loaded.reconstruct(photos)
    with pytest.raises(ValueError, match=re.escape("Received: min=0.0, max=400.0, dtype=float32")):
        loaded.encode(np.clip(photos, 0, 255).astype(np.float32) * 400 / 255)


def test_empty_batches_give_empty_batches(loaded):
    assert loaded.reconstruct(_photos(0, 70)).shape == (0, 64, 64, 3)
    feature_shape = loaded.decoder.input_shape[1:]
    assert loaded.encode(_photos(0)).shape == (0, *feature_shape)
    assert loaded.decode(np.zeros((0, *feature_shape))).shape == (0, 64, 64, 3)


def test_crops_at_the_image_size_are_prepared_as_other_photos(loaded, caplog):
    photos = _photos()
    expected = loaded.encode(photos)
    # uint16 is scaled to 0..255, as `images.prepare` does for any size.
    np.testing.assert_array_equal(loaded.encode(photos.astype(np.uint16) * 257), expected)
    # Float rounding just past 0..255 is clipped, as the export's signatures clip it.
    overshoot = photos.astype(np.float32)
    overshoot[photos == 255] = 255.25
    np.testing.assert_array_equal(loaded.encode(overshoot), expected)
    # Photos scaled to 0..1 would be taken as nearly black: said, not refused.
    with caplog.at_level(logging.WARNING):
        loaded.reconstruct(photos / 255.0)
    assert "Multiply them by 255" in caplog.text


def test_a_damaged_final_model_falls_back_to_a_checkpoint_or_is_refused(loaded, tmp_path):
    work_dir = tmp_path / "run"
    shutil.copytree(loaded.path, work_dir)
    final = work_dir / FINAL_MODEL
    final.write_bytes(final.read_bytes()[:1000])  # Truncated, as by a full disk or a bad copy.
    with pytest.raises(ValueError, match=f"its {FINAL_MODEL} does not load .* no checkpoint does"):
        keras_invert.load(str(work_dir))
    saved = Checkpoints(str(work_dir / CHECKPOINT_DIR))
    os.makedirs(saved.directory)
    loaded.model.save(saved.path(2))
    photos = _photos()
    np.testing.assert_array_equal(
        keras_invert.load(str(work_dir)).reconstruct(photos), loaded.reconstruct(photos)
    )


def test_a_path_that_holds_no_trained_model_is_refused_under_the_callers_name(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    cases = {
        tmp_path / "notes.txt": "a work dir or an export dir. Received: init_from='{}', a file",
        tmp_path / "missing": "a work dir or an export dir. Received: init_from='{}', not found",
        tmp_path: "the folder holds neither. Received: init_from='{}'",
    }
    for path, expected in cases.items():
        with pytest.raises(ValueError, match=re.escape(expected.format(path))):
            keras_invert.load(str(path), name="init_from")
    config.save(config.TrainConfig(representation="hog"), str(tmp_path))
    with pytest.raises(ValueError, match=f"no trained model yet. Received: model='{tmp_path}'"):
        keras_invert.load(str(tmp_path))


def test_a_config_that_gives_other_features_than_the_model_takes_is_refused_naming_it(
    loaded, tmp_path
):
    work_dir = tmp_path / "run"
    shutil.copytree(loaded.path, work_dir)
    config.save(config.replace(loaded.config, image_size=96), str(work_dir))  # Edited by hand.
    expected = (
        f"Received: {work_dir / config.CONFIG_FILE} gives sift features of shape (24, 24, 133) "
        f"at image_size=96; the model takes {loaded.feature_shape}"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        keras_invert.load(str(work_dir))


def test_a_decoder_whose_output_is_nan_is_refused_naming_the_model(loaded, tmp_path):
    work_dir = tmp_path / "run"
    shutil.copytree(loaded.path, work_dir)
    model = keras.saving.load_model(work_dir / FINAL_MODEL)
    last = [layer for layer in building.decoder_of(model).layers if layer.weights][-1]
    last.set_weights([np.full_like(weight, np.nan) for weight in last.get_weights()])
    model.save(work_dir / FINAL_MODEL)  # As a diverged run, or a damaged file, leaves it.
    expected = (
        "Expected finite reconstructions; the decoder's output holds NaN or Inf (its weights "
        f"are damaged, or its training diverged). Received: model='{work_dir}'"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        keras_invert.load(str(work_dir)).reconstruct(_photos())
