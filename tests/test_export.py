"""SavedModel export: TF Serving layout, signatures, validation, atomicity."""

import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_invert
from keras_invert import decoders, export, images, vlfeat
from keras_invert.features import hog, sift_batch
from keras_invert.features.sift import default_backend


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
    serve_float = loaded.signatures["serve_float"]
    gray = np.random.default_rng(0).integers(0, 255, (2, 70, 90, 1)).astype(np.float32)
    from_gray = serve_float(images=gray)["reconstruction"].numpy()
    assert from_gray.shape == (2, 64, 64, 3)
    rgb = np.repeat(gray, 3, axis=-1)  # Gray is the RGB image of three equal channels.
    np.testing.assert_array_equal(from_gray, serve_float(images=rgb)["reconstruction"])
    centre = rgb[:, :, 10:80]  # The centre 70 x 70 square of the 70 x 90 images.
    np.testing.assert_allclose(from_gray, serve_float(images=centre)["reconstruction"], atol=1e-6)
    alpha = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 1), dtype=np.uint8)
    rgba = np.concatenate([photo[None], alpha], axis=-1)  # Alpha is ignored.
    from_rgba = loaded.signatures["serving_default"](images=rgba)["reconstruction"]
    np.testing.assert_array_equal(from_rgba, from_uint8)


def test_bad_requests_name_what_was_expected(exported):
    _, path, _ = exported
    loaded = tf.saved_model.load(path)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, 8, 8, 31\]"):
        loaded.signatures["from_features"](features=tf.zeros((1, 9, 8, 31)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        loaded.signatures["from_features"](features=tf.fill((1, 8, 8, 31), np.inf))
    with pytest.raises(tf.errors.InvalidArgumentError, match="RGBA"):
        loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 2), tf.uint8))


def test_an_export_missing_a_file_is_refused_naming_it(exported, tmp_path):
    _, path, _ = exported
    for missing in ("variables/variables.index", f"assets.extra/{export.METADATA_ASSET}"):
        damaged = tmp_path / missing.split("/")[0] / "1"
        shutil.copytree(path, damaged)
        os.remove(damaged / missing)
        with pytest.raises(ValueError, match=f"does not load .*Received: model='{damaged}'"):
            keras_invert.load(str(damaged))


def test_an_export_with_truncated_variables_is_refused_naming_it(exported, tmp_path):
    _, path, _ = exported
    damaged = tmp_path / "1"
    shutil.copytree(path, damaged)
    (data,) = (damaged / "variables").glob("variables.data-*")
    os.truncate(data, 1000)  # As a half-finished copy leaves it.
    with pytest.raises(
        ValueError,
        match=f"does not load \\(damaged or half-copied\\? .*Received: model='{damaged}'",
    ):
        keras_invert.load(str(damaged))


def test_an_export_whose_metadata_does_not_parse_is_refused_naming_the_file(exported, tmp_path):
    _, path, _ = exported
    damaged = tmp_path / "1"
    shutil.copytree(path, damaged)
    metadata = damaged / "assets.extra" / export.METADATA_ASSET
    metadata.write_text("{")
    expected = (
        "Expected a JSON file written by keras_invert; this one does not parse (damaged or "
        f"half-written). Received: path='{metadata}'"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        keras_invert.load(str(damaged))


def test_a_model_with_a_nan_weight_is_not_exported(tmp_path):
    decoder = decoders.hog_decoder(64, width=0.125)
    variable = decoder.weights[-1]
    variable.assign(np.full(variable.shape, np.nan, np.float32))
    expected = (
        "weights hold NaN or Inf (damaged, or its training diverged). "
        f"Received: variable={variable.path!r}"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        export.export_saved_model(decoder, "hog", str(tmp_path), image_size=64)
    assert os.listdir(tmp_path) == []


def test_an_export_whose_output_is_nan_is_refused_when_loaded(tmp_path, monkeypatch):
    # As an export written before exports refused NaN weights serves it.
    decoder = decoders.hog_decoder(64, width=0.125)
    variable = decoder.weights[-1]
    variable.assign(np.full(variable.shape, np.nan, np.float32))
    monkeypatch.setattr(export, "_check_finite_weights", lambda model: None)
    path = export.export_saved_model(decoder, "hog", str(tmp_path), image_size=64)
    photos = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=f"Expected finite reconstructions.*model='{path}'"):
        keras_invert.load(path).reconstruct(photos)


def test_served_features_too_large_for_the_decoder_are_an_error_not_nan(tmp_path):
    # Finite features near float32's limit overflow in the decoder; clipping keeps NaN.
    decoder = decoders.hog_decoder(64, width=0.125)
    path = export.export_saved_model(decoder, "hog", str(tmp_path), image_size=64)
    huge = np.full((2, *decoder.input_shape[1:]), 3e38, np.float32)
    from_features = tf.saved_model.load(path).signatures["from_features"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="output of the decoder holds NaN"):
        from_features(features=tf.constant(huge))
    with pytest.raises(ValueError, match=rf"far larger than those.*3e\+38\)\). .*'{path}'"):
        keras_invert.load(path).decode(huge)
    # Features of the usual size are untouched by the check.
    served = from_features(features=tf.constant(huge / 1e38))["reconstruction"].numpy()
    assert served.shape == (2, 64, 64, 3) and np.isfinite(served).all()


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


def test_an_export_base_that_is_something_else_is_refused_before_writing(tmp_path):
    decoder = decoders.hog_decoder(64, width=0.125)
    work_dir, photos = tmp_path / "run", tmp_path / "photos"
    work_dir.mkdir()
    (work_dir / "config.json").write_text("{}")
    photos.mkdir()
    (photos / "cat.JPG").write_bytes(b"")
    version = export.export_saved_model(decoder, "hog", str(tmp_path / "base"), image_size=64)
    for base, what in [
        (work_dir, "a training work dir"),
        (version, "an export's version folder (it holds saved_model.pb): give the folder above"),
        (photos, "a folder of photos (1, e.g. 'cat.JPG')"),
    ]:
        before = sorted(os.listdir(base))
        with pytest.raises(ValueError, match=re.escape(f"export_base={str(base)!r}, {what}")):
            export.export_saved_model(decoder, "hog", str(base), image_size=64)
        assert sorted(os.listdir(base)) == before
    # A base of versions takes the next one.
    again = export.export_saved_model(decoder, "hog", str(tmp_path / "base"), image_size=64)
    assert os.path.basename(again) == "2"


def test_a_version_that_would_not_name_a_version_folder_is_rejected(tmp_path):
    # "-3" would be written, and neither TF Serving nor `latest_version_dir` would see it;
    # TF Serving reads a version as an int64.
    decoder = decoders.hog_decoder(64, width=0.125)
    for version in (-3, "2", True, 2**63):
        with pytest.raises(
            ValueError, match=rf"non-negative integer version below 2\*\*63 .*{version!r}$"
        ):
            export.export_saved_model(decoder, "hog", str(tmp_path), image_size=64, version=version)
    assert os.listdir(tmp_path) == []


# SIFT: no image signature, features computed by the client with the backend
# the decoder was trained on (VLFeat's and OpenCV's maps differ).


@pytest.fixture
def libvl(monkeypatch):
    """Sets whether `libvl` loads, as the SIFT backend resolution sees it."""

    def set_available(available):
        monkeypatch.setattr(vlfeat, "is_available", lambda: available)
        default_backend.cache_clear()

    yield set_available
    default_backend.cache_clear()


@pytest.fixture(scope="module")
def sift_exports(tmp_path_factory):
    """Version 1: backend resolved on an exporting machine with libvl; 2: the run's opencv."""
    base = str(tmp_path_factory.mktemp("sift_exports"))
    decoder = decoders.sift_decoder(64, width=0.05)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlfeat, "is_available", lambda: True)
        default_backend.cache_clear()
        resolved = export.export_saved_model(decoder, "sift", base, image_size=64)
    default_backend.cache_clear()
    given = export.export_saved_model(
        decoder, "sift", base, image_size=64, encoder_options={"backend": "opencv"}
    )
    return resolved, given


def _photos(real_photos):
    return np.stack([real_photos[name][:160, :160] for name in ("astronaut", "coffee")])


def test_sift_export_records_the_training_backend(sift_exports, exported):
    resolved, given = sift_exports
    assert export.read_metadata(resolved)["encoder_options"] == {"backend": "vlfeat"}
    assert export.read_metadata(given)["encoder_options"] == {"backend": "opencv"}
    # Representations without a backend keep their options as given.
    assert export.read_metadata(exported[1])["encoder_options"] == {}
    with pytest.raises(ValueError, match="backend='vlfeat2'"):
        export.export_saved_model(
            decoders.sift_decoder(64, width=0.05), "sift", os.path.dirname(resolved),
            image_size=64, encoder_options={"backend": "vlfeat2"},
        )  # fmt: skip


def test_client_uses_the_recorded_backend(sift_exports, libvl, real_photos):
    _, given = sift_exports
    libvl(True)  # libvl loads here, yet the export says OpenCV.
    model = keras_invert.load(given)
    assert model.encoder_options == {"backend": "opencv"}
    photos = _photos(real_photos)
    prepared = images.prepare(tf.constant(photos), 64).numpy()
    maps = sift_batch(prepared, backend="opencv")
    assert np.count_nonzero(maps) > 0
    np.testing.assert_array_equal(model.encode(photos), maps)


def test_client_without_libvl_refuses_a_vlfeat_export_unless_overridden(
    sift_exports, libvl, real_photos
):
    resolved, _ = sift_exports
    libvl(False)
    with pytest.raises(ValueError, match="libvlfeat1") as error:
        keras_invert.load(resolved)
    message = str(error.value)
    assert "recorded at export: 'vlfeat'" in message and "docs/reference.md, SIFT" in message
    assert "encoder_options={'backend': 'opencv'}" in message
    model = keras_invert.load(resolved, encoder_options={"backend": "opencv"})
    assert model.encoder_options == {"backend": "opencv"}
    photos = _photos(real_photos)
    prepared = images.prepare(tf.constant(photos), 64).numpy()
    np.testing.assert_array_equal(model.encode(photos), sift_batch(prepared, backend="opencv"))
    assert model.reconstruct(photos).shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="encoder_options"):
        keras_invert.load(resolved, encoder_options={"backend": "opencv", "cell_size": 8})


def test_old_export_without_backend_resolves_on_the_client(sift_exports, libvl, tmp_path, caplog):
    resolved, _ = sift_exports
    old = str(tmp_path / "1")
    shutil.copytree(resolved, old)
    metadata_path = os.path.join(old, "assets.extra", export.METADATA_ASSET)
    with open(metadata_path) as file:
        metadata = json.load(file)
    metadata["encoder_options"] = {}
    with open(metadata_path, "w") as file:
        json.dump(metadata, file)
    libvl(False)
    with caplog.at_level(logging.WARNING, logger="absl"):
        model = keras_invert.load(str(tmp_path))
    assert model.encoder_options == {"backend": "opencv"}
    assert "records no SIFT backend" in caplog.text


def test_encoder_options_are_refused_for_image_signatures(exported):
    base, _, _ = exported
    with pytest.raises(ValueError, match="inside the SavedModel"):
        keras_invert.load(base, encoder_options={"cell_size": 8})


# One image preparation: the served graph crops a photo as the evaluation pipeline does.

SERVED = ("hog", "lbp", "alexnet/conv1")
OUTPUT_SIZES = {"hog": 64, "lbp": 64, "alexnet/conv1": 216}


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """Name -> (loaded export at image size 64, its encoder); AlexNet's weights from a file."""
    from keras_invert import registry
    from keras_invert.encoders import alexnet

    root = tmp_path_factory.mktemp("served")
    weights = str(root / "conv1.weights.h5")
    alexnet("caffe", outputs=["conv1"]).save_weights(weights)
    paths = {"hog": exported[1]}
    paths["lbp"] = export.export_saved_model(
        decoders.lbp_decoder(64, width=0.125), "lbp", str(root / "lbp"), image_size=64
    )
    paths["alexnet/conv1"] = export.export_saved_model(
        registry.get("alexnet/conv1").build_decoder(64, width=0.0625), "alexnet/conv1",
        str(root / "conv1"), image_size=64, encoder_options={"weights": weights},
    )  # fmt: skip
    encoders = {"hog": {}, "lbp": {}, "alexnet/conv1": {"weights": weights}}
    return {
        name: (tf.saved_model.load(paths[name]), registry.get(name).make_encoder(**options))
        for name, options in encoders.items()
    }


@pytest.mark.parametrize("name", SERVED)
def test_a_served_photo_is_prepared_as_the_evaluation_pipeline_prepares_it(
    name, served, real_photos, tmp_path
):
    import pipelines

    photo = real_photos["astronaut"][100:250, 150:350]  # 150 x 200: cropped and resized.
    path = str(tmp_path / "photo.png")
    tf.io.write_file(path, tf.io.encode_png(photo))
    loaded, encode = served[name]
    crop = pipelines.load_images([path], 64)
    features = tf.constant(encode(crop), tf.float32)
    expected = loaded.signatures["from_features"](features=features)["reconstruction"].numpy()
    served_photo = loaded.signatures["serving_default"](images=tf.constant(photo[None]))
    difference = np.abs(served_photo["reconstruction"].numpy() - expected).max()
    # The same ops on the same crop: equal up to rounding (an area resize in the graph
    # instead of the pipeline's antialiased bilinear differs by 3e-4 to 2e-3 here).
    assert difference <= 1e-4
    assert expected.std() > 0  # The reconstruction depends on the photo, not a constant.


def test_non_finite_images_and_empty_batches(served, sift_exports):
    loaded, _ = served["hog"]
    image = np.full((1, 70, 90, 3), 100.0, np.float32)
    image[0, 30, 40, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
        loaded.signatures["serve_float"](images=image)
    # An empty batch of any signature returns an empty batch of reconstructions.
    sift = tf.saved_model.load(sift_exports[1])
    requests = {
        "hog": [("serving_default", "images", tf.zeros((0, 70, 90, 3), tf.uint8)),
                ("serve_float", "images", tf.zeros((0, 70, 90, 1))),
                ("from_features", "features", tf.zeros((0, 8, 8, 31)))],
        "alexnet/conv1": [("serve_float", "images", tf.zeros((0, 64, 64, 3))),
                          ("from_features", "features", tf.zeros((0, 27, 27, 96)))],
        "sift": [("serving_default", "features", tf.zeros((0, 16, 16, 133))),
                 ("from_features", "features", tf.zeros((0, 16, 16, 133)))],
    }  # fmt: skip
    for name, calls in requests.items():
        model = sift if name == "sift" else served[name][0]
        size = OUTPUT_SIZES.get(name, 64)
        for signature, key, batch in calls:
            output = model.signatures[signature](**{key: batch})["reconstruction"]
            assert output.shape == (0, size, size, 3), (name, signature)


def test_served_features_equal_vlfeat_on_0_255_and_0_1_pixels(real_photos, tmp_path):
    """HOG (XLA-compiled in the export) and LBP in the image signatures, as VLFeat computes them.

    A pass-through "decoder" makes the reconstruction the features themselves (HOG
    and LBP values lie in [0, 1], so the output clip keeps them); the batch and image
    sizes are unknown when the signatures are traced, and the photos' short side is
    the image size, so the centre crop cuts them without resampling (LBP's
    signatures hand such squares to the encoder as they came, which converts, clips
    and checks them in its compiled step: `images.map_prepared`).
    """
    import keras

    from keras_invert import registry

    wide = np.stack([real_photos[name][:64, :80] for name in ("astronaut", "coffee", "rocket")])
    photos = wide[:, :, 8:72]  # The centre squares of the wide photos.
    rgba = np.concatenate([wide, np.full_like(wide[..., :1], 7)], axis=-1)
    references = {
        "hog": vlfeat.hog,
        "lbp": lambda image: vlfeat.lbp(tf.image.rgb_to_grayscale(image)[..., 0].numpy(), 16),
    }
    for name, reference in references.items():
        inputs = keras.Input(registry.get(name).feature_shape(64))
        identity = keras.Model(inputs, keras.layers.Identity()(inputs))
        path = export.export_saved_model(identity, name, str(tmp_path / name), image_size=64)
        signatures = tf.saved_model.load(path).signatures
        unit = photos.astype(np.float32) / np.float32(255)
        # Out of range: each channel is clipped to 0..255 before the gray conversion.
        beyond = wide.astype(np.float32) * np.float32(1.4) - np.float32(40)
        for signature, batch, crops in [
            ("serving_default", photos, photos),
            ("serving_default", rgba, photos),  # Cropped, alpha dropped (LBP: as bytes).
            ("serve_float", photos.astype(np.float32), photos),
            ("serve_float", unit, unit),
            ("serve_float", beyond, beyond[:, :, 8:72].clip(0, 255)),
        ]:
            served = signatures[signature](images=tf.constant(batch))["reconstruction"].numpy()
            expected = np.stack([reference(image.astype(np.float32)) for image in crops])
            assert np.abs(served - expected).max() <= 1e-4, (name, signature, batch.max())
            assert expected.max() > 0.1
        # NaN or Inf anywhere, in the square or in the columns its crop drops, is refused
        # (an Inf that the clip would make 255 too).
        for row, column, value in [(5, 40, np.nan), (60, 30, np.inf), (9, 79, -np.inf)]:
            bad = wide.astype(np.float32)
            bad[1, row, column, 1] = value
            with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
                signatures["serve_float"](images=tf.constant(bad))
