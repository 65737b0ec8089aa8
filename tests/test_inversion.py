"""Mahendran & Vedaldi's optimisation-based inversion (keras_invert.inversion)."""

import keras
import numpy as np
import pytest

from keras_invert import inversion, registry


@pytest.fixture(scope="module")
def photos(real_photos):
    import tensorflow as tf

    crops = [tf.image.resize(real_photos[n][:256, :256], [32, 32]) for n in ("astronaut", "coffee")]
    return np.stack([c.numpy() for c in crops]).astype(np.float32)


@pytest.fixture(scope="module")
def hog():
    return registry.get("hog").make_encoder()


def _total_variation(images):
    return float(np.mean(inversion.total_variation(images - images.mean())))


def test_feature_loss_falls_far_below_the_noise_it_starts_from(photos, hog):
    result = inversion.optimize(hog, hog(photos), image_shape=(32, 32, 3), steps=60)
    assert result.images.shape == photos.shape
    assert result.images.min() >= 0 and result.images.max() <= 255
    assert np.all(result.feature_loss < 0.3 * result.initial_feature_loss)
    assert result.history["feature"].shape == (60,)
    assert result.history["total"][-1] < 0.3 * result.history["total"][0]


def test_a_larger_tv_weight_gives_a_smoother_image(photos, hog):
    features = hog(photos)
    rough = inversion.optimize(hog, features, image_shape=(32, 32, 3), steps=40, tv_weight=0.1)
    smooth = inversion.optimize(hog, features, image_shape=(32, 32, 3), steps=40, tv_weight=100)
    assert _total_variation(smooth.images) < 0.5 * _total_variation(rough.images)
    assert smooth.history["tv"][-1] > 0  # The prior is in the objective.


def test_images_of_a_batch_are_optimised_independently(photos, hog):
    # The first image starts from the same noise in both batches; only its partner differs.
    pair = inversion.optimize(hog, hog(photos), image_shape=(32, 32, 3), steps=10, seed=5)
    same = photos[[0, 0]]
    twice = inversion.optimize(hog, hog(same), image_shape=(32, 32, 3), steps=10, seed=5)
    np.testing.assert_allclose(pair.images[0], twice.images[0], atol=0.05)
    np.testing.assert_allclose(pair.feature_loss[0], twice.feature_loss[0], rtol=1e-4)
    assert not np.allclose(pair.images[1], twice.images[1], atol=1)


def test_keras_model_encoders_work():
    encoder = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, activation="relu")]
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    result = inversion.optimize(encoder, encoder(images), image_shape=(16, 16, 3), steps=30)
    assert np.all(result.feature_loss < result.initial_feature_loss)


def test_priors_match_their_definitions():
    x = np.arange(2 * 3 * 4 * 1, dtype=np.float32).reshape(2, 3, 4, 1) - 10
    np.testing.assert_allclose(inversion.alpha_norm(x, 6), np.sum(np.abs(x) ** 6, axis=(1, 2, 3)))
    # Forward steps of 1 along x (3 rows x 3 columns) and 4 along y (2 rows x 4
    # columns); none after the last column and row.
    tv = inversion.total_variation(x, 2).numpy()
    np.testing.assert_allclose(tv, [3 * 3 * 1 + 2 * 4 * 16] * 2, rtol=1e-6)


def test_paper_settings():
    assert inversion.paper_settings("hog")["steps"] == 800
    assert inversion.paper_settings("alexnet/conv1")["tv_weight"] == 1
    assert inversion.paper_settings("alexnet/conv3")["tv_weight"] == 10
    assert inversion.paper_settings("alexnet-torchvision/fc8")["tv_weight"] == 100
    with pytest.raises(ValueError, match="layer"):
        inversion.paper_settings("alexnet/pool9")


def test_paper_settings_of_other_networks_follow_the_kind_of_tap():
    assert inversion.paper_settings("efficientnet-lite0/stage4")["tv_weight"] == 10
    assert inversion.paper_settings("efficientnet-lite0/logits")["tv_weight"] == 100
    assert inversion.paper_settings("efficientnet-lite0/logits")["learning_rate"] == 4e-4
    assert inversion.paper_settings("alexnet/fc8")["learning_rate"] == 0.004
    assert inversion.paper_settings("lbp")["steps"] == 800


def test_a_vector_tap_at_its_settings_does_not_diverge_where_the_fc_rate_does(real_photos):
    import tensorflow as tf

    encoder = registry.get("efficientnet-lite0/logits").make_encoder()
    crops = np.stack(
        [tf.image.resize(real_photos[n][:256, :256], [224, 224]) for n in ("astronaut", "coffee")]
    ).astype(np.float32)
    target = encoder(crops).numpy()
    settings = dict(inversion.paper_settings("efficientnet-lite0/logits"), steps=8)
    result = inversion.optimize(encoder, target, image_shape=(224, 224, 3), **settings)
    assert np.all(result.feature_loss < result.initial_feature_loss)
    with pytest.raises(ValueError, match="diverged"):
        inversion.optimize(encoder, target, image_shape=(224, 224, 3),
                           **dict(settings, learning_rate=0.004))  # fmt: skip


def test_piecewise_constant_encoders_are_refused(photos):
    lbp = registry.get("lbp").make_encoder()
    with pytest.raises(ValueError, match="no gradient"):
        inversion.optimize(lbp, lbp(photos[:, :16, :16]), image_shape=(16, 16, 3), steps=2)


def test_bad_arguments_are_refused(photos, hog):
    with pytest.raises(ValueError, match="steps"):
        inversion.optimize(hog, hog(photos), image_shape=(32, 32, 3), steps=0)
    with pytest.raises(ValueError, match="features"):
        inversion.optimize(hog, hog(photos), image_shape=(40, 40, 3), steps=2)


def test_a_diverging_optimisation_is_one_error_that_names_its_rate(photos, hog):
    with pytest.raises(
        inversion.OptimizationDiverged,
        match=r"diverged at step \d+.*Received: learning_rate=1e\+30",
    ):
        inversion.optimize(hog, hog(photos), image_shape=(32, 32, 3), steps=4, learning_rate=1e30)
    for name in ("learning_rate", "tv_weight", "alpha_weight"):
        with pytest.raises(ValueError, match=f"Received: {name}=inf"):
            inversion.optimize(hog, hog(photos), image_shape=(32, 32, 3), steps=2,
                               **{name: float("inf")})  # fmt: skip


def test_alexnet_layers_from_the_registry_work():
    # The registry's network (preprocessing and resizing to 227 inside) passes gradients.
    encoder = registry.get("alexnet/conv1").make_encoder()  # Random weights (a warning).
    images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    settings = dict(inversion.paper_settings("alexnet/conv1"), steps=5)
    result = inversion.optimize(encoder, encoder(images), image_shape=(64, 64, 3), **settings)
    assert result.images.shape == (1, 64, 64, 3)
    assert np.all(result.feature_loss < result.initial_feature_loss)
    assert np.all(np.diff(result.history["total"]) < 0), result.history["total"]
