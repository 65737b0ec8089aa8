"""The paper's normalised error and the structure measures beside it."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import pdist
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from keras_invert import metrics


def _images(n=4, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3))


@pytest.fixture(scope="module")
def photo_pairs(real_photos):
    """Three 48x48 photo crops in [0, 1] and degraded copies: noise, blur, a dark shift."""
    photos = np.stack(
        [real_photos[n][100:148, 150:198] for n in ("astronaut", "coffee", "chelsea")]
    ).astype(np.float64)
    originals = photos / 255.0
    rng = np.random.default_rng(0)
    noisy = np.clip(originals[0] + rng.normal(0, 0.08, originals[0].shape), 0, 1)
    blurred = (originals[1] + np.roll(originals[1], 1, 0) + np.roll(originals[1], 1, 1)) / 3
    dark = 0.6 * originals[2] + 0.05
    return originals, np.stack([noisy, blurred, dark])


def test_normalized_error_by_hand():
    originals = np.zeros((2, 1, 1, 3))
    originals[1] = 1.0  # pairwise distance sqrt(3)
    reconstructions = originals.copy()
    reconstructions[0, 0, 0, 0] = 0.5  # errors 0.5 and 0
    expected = (0.5 / 2) / np.sqrt(3)
    assert metrics.normalized_reconstruction_error(originals, reconstructions) == pytest.approx(
        expected
    )
    assert metrics.normalized_reconstruction_error(originals, originals) == 0.0


def test_psnr_equals_scikit_images_per_image_mean(photo_pairs):
    originals, reconstructions = photo_pairs
    expected = [
        peak_signal_noise_ratio(a, b, data_range=1.0)
        for a, b in zip(originals, reconstructions, strict=True)
    ]
    assert len(set(np.round(expected, 1))) == 3  # Three different qualities.
    assert metrics.psnr(originals, reconstructions) == pytest.approx(np.mean(expected), rel=1e-12)
    # Deliberate difference: an exact copy scores 120 dB where scikit-image gives inf.
    assert metrics.psnr(originals, originals) == pytest.approx(120.0)


def test_ssim_equals_scikit_images_ssim_of_wang_et_al_on_the_luma(photo_pairs):
    import tensorflow as tf

    originals, reconstructions = photo_pairs

    def luma(images):  # BT.601, computed by TensorFlow rather than by the library.
        return tf.image.rgb_to_grayscale(images).numpy()[..., 0]

    # scikit-image's documented settings for Wang et al. (2004): 11x11 Gaussian
    # window of sigma 1.5, population covariances.
    expected = [
        structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        for a, b in zip(luma(originals), luma(reconstructions), strict=True)
    ]
    assert all(0.2 < value < 0.99 for value in expected), expected
    assert metrics.ssim(originals, reconstructions) == pytest.approx(np.mean(expected), abs=1e-6)
    assert metrics.ssim(originals, originals) == pytest.approx(1.0)


def test_luma_correlation_equals_numpys_pearson_correlation(photo_pairs):
    originals, reconstructions = photo_pairs
    weights = np.array([0.2989, 0.5870, 0.1140])
    expected = [
        np.corrcoef((a @ weights).ravel(), (b @ weights).ravel())[0, 1]
        for a, b in zip(originals, reconstructions, strict=True)
    ]
    assert metrics.luma_correlation(originals, reconstructions) == pytest.approx(
        np.mean(expected), rel=1e-12
    )
    # A brightness change keeps the structure: the dark copy correlates exactly.
    assert expected[2] == pytest.approx(1.0)


def test_mean_image_baseline_equals_its_definition():
    originals = _images(8)
    flat = originals.reshape(8, -1)
    mean = flat.mean(axis=0)
    pairwise = pdist(flat).mean()
    assert metrics.mean_pairwise_distance(originals) == pytest.approx(pairwise, rel=1e-12)
    expected_error = np.mean(np.linalg.norm(flat - mean, axis=1)) / pairwise
    baseline = metrics.mean_image_baseline(originals)
    assert baseline["normalized_error"] == pytest.approx(expected_error, rel=1e-12)
    # About sqrt(1/2): for independent images ||x - mean|| ~ ||x_i - x_j|| / sqrt(2).
    assert 0.6 < baseline["normalized_error"] < 0.75
    # A given mean image (the training photos' mean) replaces the test photos' own.
    grey = np.full((16, 16, 3), 0.5)
    given = metrics.mean_image_baseline(originals, grey)
    expected_given = np.mean(np.linalg.norm(flat - 0.5, axis=1)) / pairwise
    assert given["normalized_error"] == pytest.approx(expected_given, rel=1e-12)
    assert given["psnr"] == pytest.approx(
        np.mean([peak_signal_noise_ratio(x, grey, data_range=1.0) for x in originals])
    )


def test_perfect_reconstructions_score_the_ends_of_each_scale():
    originals = _images(3)
    perfect = metrics.summarize(originals, originals)
    assert perfect == pytest.approx(
        {
            "normalized_error": 0.0,
            "error_given_mean_colour": 0.0,
            "luma_correlation": 1.0,
            "ssim": 1.0,
            "psnr": 120.0,
        }
    )


def test_the_error_given_mean_colour_forgives_the_colour_and_nothing_else():
    originals = _images(4)
    pairwise = np.mean(pdist(originals.reshape(4, -1)))
    tint = np.array([0.3, -0.2, 0.1])
    # A tinted copy is wrong only in its mean colour.
    tinted = metrics.summarize(originals, originals + tint)
    assert tinted["normalized_error"] == pytest.approx(
        np.linalg.norm(np.ones((16, 16, 1)) * tint) / pairwise
    )
    assert tinted["error_given_mean_colour"] == pytest.approx(0.0, abs=1e-12)
    # Noise is not forgiven, bar the mean colour it adds, which is taken out.
    noise = np.random.default_rng(1).normal(0, 0.1, originals.shape)
    shown = metrics.with_mean_colour_of(originals, originals + noise)
    np.testing.assert_allclose(shown.mean(axis=(1, 2)), originals.mean(axis=(1, 2)), atol=1e-12)
    centred = noise - noise.mean(axis=(1, 2), keepdims=True)
    expected = np.mean(np.linalg.norm(centred.reshape(4, -1), axis=1)) / pairwise
    noisy = metrics.summarize(originals, originals + noise)
    assert noisy["error_given_mean_colour"] == pytest.approx(expected, rel=1e-12)
    assert noisy["error_given_mean_colour"] < noisy["normalized_error"]
    # The mean image of the photos keeps the error of its structure only.
    baseline = metrics.mean_image_baseline(originals)
    assert 0 < baseline["error_given_mean_colour"] < baseline["normalized_error"]


def test_feature_error_is_relative():
    features = np.ones((2, 4))
    assert metrics.feature_error(features, features * 1.5) == pytest.approx(0.5)
    other = np.array([[3.0, 4.0], [1.0, 0.0]])
    np.testing.assert_allclose(
        metrics.feature_errors(other, np.zeros_like(other)), [1.0, 1.0], rtol=1e-12
    )
    np.testing.assert_allclose(
        metrics.feature_errors(other, other + [[0.0, 0.5], [0.0, 2.0]]), [0.1, 2.0], rtol=1e-12
    )


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        metrics.summarize(_images(2), _images(3))
    with pytest.raises(ValueError, match="NaN"):
        bad = _images(2)
        bad[0, 0, 0, 0] = np.nan
        metrics.summarize(bad, _images(2))
    with pytest.raises(ValueError, match="two images"):
        metrics.mean_pairwise_distance(_images(1))


def test_one_image_has_every_measure_but_the_normalized_error():
    original, reconstruction = _images(1), _images(2)[1:]
    values = metrics.summarize(original, reconstruction)
    assert list(values) == list(metrics.MEASURES) and values["normalized_error"] is None
    assert values["error_given_mean_colour"] is None
    assert values["psnr"] == pytest.approx(metrics.psnr(original, reconstruction))
    assert values["ssim"] == pytest.approx(metrics.ssim(original, reconstruction))


def test_originals_that_are_all_the_same_image_have_no_normalized_error():
    originals = np.repeat(_images(1), 3, axis=0)  # No distance between them to divide by.
    reconstructions = _images(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # No division by zero, said or not.
        values = metrics.summarize(originals, reconstructions)
        assert metrics.normalized_reconstruction_error(originals, reconstructions) is None
        assert metrics.normalized_reconstruction_errors(originals, reconstructions) is None
    assert values["normalized_error"] is None and values["error_given_mean_colour"] is None
    assert values["psnr"] == pytest.approx(metrics.psnr(originals, reconstructions))
