"""The paper's normalised error and the structure measures beside it."""

import numpy as np
import pytest

from keras_invert import metrics


def _images(n=4, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3))


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


def test_mean_image_baseline_is_below_one_and_perfect_scores():
    originals = _images(8)
    baseline = metrics.mean_image_baseline(originals)
    assert 0.5 < baseline["normalized_error"] < 0.8
    perfect = metrics.summarize(originals, originals)
    assert perfect["luma_correlation"] == pytest.approx(1.0)
    assert perfect["ssim"] == pytest.approx(1.0)
    assert baseline["luma_correlation"] < 0.6


def test_feature_error_is_relative():
    features = np.ones((2, 4))
    assert metrics.feature_error(features, features * 1.5) == pytest.approx(0.5)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same shape"):
        metrics.summarize(_images(2), _images(3))
    with pytest.raises(ValueError, match="NaN"):
        bad = _images(2)
        bad[0, 0, 0, 0] = np.nan
        metrics.summarize(bad, _images(2))
    with pytest.raises(ValueError, match="two images"):
        metrics.mean_pairwise_distance(_images(1))
