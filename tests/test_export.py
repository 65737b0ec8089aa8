"""SavedModel export: TF Serving layout, signatures, validation, atomicity."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_invert import decoders, export
from keras_invert.features import hog


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))
    decoder = decoders.hog_decoder(64, width=0.125)
    path = export.export_saved_model(decoder, "hog", base, image_size=64)
    return base, path, decoder


def test_layout_is_versioned_and_complete(exported):
    base, path, _ = exported
    assert path == os.path.join(base, "1")
    assert os.listdir(base) == ["1"]
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert export.read_metadata(path)["feature_shape"] == [8, 8, 31]
    assert export.next_version(base) == 2


def test_signatures_reconstruct_images_and_features(exported, real_photos):
    _, path, decoder = exported
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_float", "from_features"}
    photo = real_photos["astronaut"][:64, :64]
    from_uint8 = loaded.signatures["serving_default"](images=tf.constant(photo[None]))[
        "reconstruction"
    ]
    features = hog(photo[None].astype(np.float32))
    expected = np.clip(decoder(features).numpy(), 0, 1)
    np.testing.assert_allclose(from_uint8.numpy(), expected, atol=1e-4)
    from_features = loaded.signatures["from_features"](features=features)["reconstruction"]
    np.testing.assert_allclose(from_features.numpy(), expected, atol=1e-5)
    # Any size and grayscale or RGBA are accepted: centre crop and resize in the graph.
    gray = np.random.default_rng(0).integers(0, 255, (2, 70, 90, 1)).astype(np.float32)
    assert loaded.signatures["serve_float"](images=gray)["reconstruction"].shape == (2, 64, 64, 3)
    rgba = np.zeros((1, 64, 64, 4), np.uint8)
    assert loaded.signatures["serving_default"](images=rgba)["reconstruction"].shape == (
        1,
        64,
        64,
        3,
    )


def test_bad_requests_name_what_was_expected(exported):
    _, path, _ = exported
    loaded = tf.saved_model.load(path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, 8, 8, 31\]"):
        loaded.signatures["from_features"](features=tf.zeros((1, 9, 8, 31)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        loaded.signatures["from_features"](features=tf.fill((1, 8, 8, 31), np.inf))
    with pytest.raises(tf.errors.InvalidArgumentError, match="RGBA"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 2), tf.uint8))


def test_saved_model_cli_shows_signatures(exported):
    _, path, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run(
        [cli, "show", "--all", "--dir", path], capture_output=True, text=True, check=True
    ).stdout
    for name in ("serving_default", "serve_float", "from_features"):
        assert f"signature_def['{name}']" in shown
    assert "dtype: DT_UINT8" in shown


def test_failed_export_leaves_nothing_loadable(tmp_path, monkeypatch):
    decoder = decoders.hog_decoder(64, width=0.125)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "_write_metadata", crash)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(decoder, "hog", str(tmp_path), image_size=64)
    assert os.listdir(tmp_path) == []


def test_mismatched_image_size_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        export.export_saved_model(
            decoders.hog_decoder(64, width=0.125), "hog", str(tmp_path), image_size=128
        )
