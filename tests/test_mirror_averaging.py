"""Mirror averaging, locally (`keras_invert.load`) and served (`export`)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_invert
from keras_invert import building, config, export
from keras_invert.checkpoints import FINAL_MODEL
from keras_invert.features import lbp

SIZE = 64


def _work_dir(folder, representation, **options):
    """A work dir of an untrained decoder: not symmetric, so mirroring changes its output."""
    run = config.TrainConfig(
        representation=representation, image_size=SIZE, width=0.125, summary_images=0, **options
    )
    config.save(run, str(folder))
    building.build_model(run).save(str(folder / FINAL_MODEL))
    return str(folder)


@pytest.fixture(scope="module")
def work_dirs(tmp_path_factory):
    return {name: _work_dir(tmp_path_factory.mktemp(name), name) for name in ("hog", "lbp")}


def _photos(real_photos):
    return np.stack([real_photos[name][:SIZE, :SIZE] for name in real_photos]).astype(np.uint8)


def test_the_average_is_of_the_photo_and_its_mirror_image_flipped_back(work_dirs, real_photos):
    # LBP's mirror is exact on photos: the averaged reconstruction is the mean of
    # the decoder's images of the photo and of the photo flipped left-right.
    plain = keras_invert.load(work_dirs["lbp"])
    averaged = keras_invert.load(work_dirs["lbp"], mirror_average=True)
    assert averaged.mirror_average and not plain.mirror_average
    photos = _photos(real_photos)
    decoder = plain.decoder
    direct = np.asarray(decoder(lbp(photos.astype(np.float32))))
    flipped = np.asarray(decoder(lbp(photos[:, :, ::-1].astype(np.float32))))[:, :, ::-1]
    expected = np.clip(0.5 * (direct + flipped), 0.0, 1.0)
    np.testing.assert_allclose(averaged.reconstruct(photos), expected, atol=1e-5)
    assert np.abs(plain.reconstruct(photos) - expected).max() > 1e-3


def test_an_export_with_it_serves_what_the_work_dir_gives(work_dirs, real_photos, tmp_path):
    local = keras_invert.load(work_dirs["hog"], mirror_average=True)
    run = config.load(work_dirs["hog"])
    base = str(tmp_path / "exports")
    path = export.export_saved_model(local.model, "hog", base, image_size=SIZE, mirror_average=True)
    assert export.read_metadata(path)["mirror_average"] is True
    served = keras_invert.load(base, mirror_average=True)
    assert served.mirror_average and run.representation == "hog"
    photos = _photos(real_photos)
    features = local.encode(photos)
    np.testing.assert_allclose(served.decode(features), local.decode(features), atol=1e-5)
    np.testing.assert_allclose(served.reconstruct(photos), local.reconstruct(photos), atol=1e-5)
    # The uint8 signature, as TF Serving is called.
    uint8 = served.saved_model.signatures["serving_default"](images=tf.constant(photos))
    np.testing.assert_allclose(uint8["reconstruction"], local.reconstruct(photos), atol=1e-5)
    # Loaded without asking, it still decodes as it was exported.
    np.testing.assert_allclose(
        keras_invert.load(base).decode(features), local.decode(features), atol=1e-5
    )


def test_an_export_without_it_is_refused_when_it_is_asked_for(work_dirs, tmp_path):
    model = keras_invert.load(work_dirs["hog"]).model
    base = str(tmp_path / "exports")
    export.export_saved_model(model, "hog", base, image_size=SIZE)
    assert export.read_metadata(export.latest_version_dir(base))["mirror_average"] is False
    assert not keras_invert.load(base).mirror_average
    with pytest.raises(ValueError, match="written with mirror averaging .* exported without it"):
        keras_invert.load(base, mirror_average=True)


def test_it_is_refused_where_the_features_have_no_exact_mirror(tmp_path):
    sift = _work_dir(tmp_path / "sift", "sift", encoder_options={"backend": "opencv"})
    with pytest.raises(ValueError, match="mirrored image exactly .* representation='sift'"):
        keras_invert.load(sift, mirror_average=True)
    base = str(tmp_path / "exports")
    model = keras_invert.load(sift).model
    with pytest.raises(ValueError, match="representation='sift'"):
        export.export_saved_model(model, "sift", base, image_size=SIZE, mirror_average=True)
    assert not os.path.exists(base) or not os.listdir(base)
    with pytest.raises(ValueError, match="Expected mirror_average a bool"):
        keras_invert.load(sift, mirror_average="yes")


def test_a_model_holding_its_feature_op_exports_the_same_average(real_photos, tmp_path):
    # The export's image signatures run such a model's own encoder, then the average.
    work_dir = _work_dir(tmp_path / "lbp", "lbp", features_in_model=True)
    local = keras_invert.load(work_dir, mirror_average=True)
    assert local.encoder_source == "model"
    base = str(tmp_path / "exports")
    export.export_saved_model(local.model, "lbp", base, image_size=SIZE, mirror_average=True)
    photos = _photos(real_photos)
    served = keras_invert.load(base).saved_model.signatures["serving_default"]
    np.testing.assert_allclose(
        served(images=tf.constant(photos))["reconstruction"], local.reconstruct(photos), atol=1e-5
    )
    plain = keras_invert.load(work_dir).reconstruct(photos)
    assert np.abs(plain - local.reconstruct(photos)).max() > 1e-3
