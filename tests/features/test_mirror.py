"""The features of a mirrored image, from the features alone (`keras_invert.features.mirror`)."""

import numpy as np
import pytest
import scipy.ndimage

from keras_invert import registry, vlfeat
from keras_invert.features import hog, lbp
from keras_invert.features.mirror import (
    hog_mirror_permutation,
    lbp_mirror_permutation,
    mirror,
)


def _smooth_images(size, count=2, seed=0):
    """Float images without exactly vertical gradients (no ties between HOG's orientations)."""
    noise = np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3))
    return scipy.ndimage.gaussian_filter(noise, (0, 1.5, 1.5, 0)).astype(np.float32)


FEATURES = {
    "hog": (hog, hog_mirror_permutation()),
    "lbp": (lbp, lbp_mirror_permutation()),
}


@pytest.mark.parametrize("name, size", [("hog", 64), ("hog", 72), ("lbp", 64), ("lbp", 96)])
def test_the_mirror_of_the_features_is_the_features_of_the_mirrored_image(name, size):
    features, permutation = FEATURES[name]
    images = _smooth_images(size)
    mirrored = np.asarray(mirror(features(images), permutation))
    expected = np.asarray(features(images[:, :, ::-1]))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(mirrored, expected, atol=1e-6)


def test_lbp_is_exactly_mirrored_on_photos_and_hog_but_for_its_vertical_gradient_tie(real_photos):
    # 8-bit photos have many pixels whose left and right neighbours are equal:
    # a vertical gradient, midway between two of HOG's orientations.
    photos = np.stack([real_photos[name][:128, :128] for name in real_photos]).astype(np.float32)
    lbp_features = lbp(photos)
    np.testing.assert_array_equal(
        np.asarray(mirror(lbp_features, lbp_mirror_permutation())),
        np.asarray(lbp(photos[:, :, ::-1])),
    )

    def relative_difference(images):
        expected = np.asarray(hog(images[:, :, ::-1]))
        mirrored = np.asarray(mirror(hog(images), hog_mirror_permutation()))
        return np.abs(mirrored - expected).mean() / np.abs(expected).mean()

    # Measured: 0.10 on these photos, 6e-5 once a hundredth of a grey level breaks the ties.
    assert 0.01 < relative_difference(photos) < 0.15
    jitter = np.random.default_rng(0).uniform(0, 0.01, photos.shape).astype(np.float32)
    assert relative_difference(photos + jitter) < 1e-3


@pytest.mark.parametrize("num_orientations", [9, 4, 6])
def test_the_hog_permutation_is_vlfeats_flip_permutation(num_orientations):
    np.testing.assert_array_equal(
        hog_mirror_permutation(num_orientations), vlfeat.hog_flip_permutation(num_orientations)
    )


def test_mirroring_twice_gives_the_features_back():
    for features, permutation in FEATURES.values():
        values = np.asarray(features(_smooth_images(64)))
        np.testing.assert_array_equal(
            np.asarray(mirror(mirror(values, permutation), permutation)), values
        )
        assert sorted(permutation) == list(range(values.shape[-1]))


@pytest.mark.parametrize("name, size", [("hog", 132), ("lbp", 136)])
def test_a_cell_grid_that_is_not_symmetric_is_refused(name, size):
    # The mirror would be wrong there: the mirrored image's cells sit elsewhere.
    features, permutation = FEATURES[name]
    images = _smooth_images(size)
    wrong = np.abs(
        np.asarray(mirror(features(images), permutation)) - np.asarray(features(images[:, :, ::-1]))
    )
    assert wrong.max() > 0.01
    with pytest.raises(
        ValueError, match=f"multiple of {name.upper()}'s cell size .* image_size={size}"
    ):
        registry.get(name).mirror(size)


def test_the_registry_mirror_follows_the_encoder_options():
    images = _smooth_images(48)
    encode = registry.get("hog").make_encoder(cell_size=6, num_orientations=5)
    mirrored = registry.get("hog").mirror(48, cell_size=6, num_orientations=5)(encode(images))
    np.testing.assert_allclose(
        np.asarray(mirrored), np.asarray(encode(images[:, :, ::-1])), atol=1e-6
    )


@pytest.mark.parametrize("name", ["sift", "efficientnet-lite0/stage2", "alexnet/conv5"])
def test_representations_without_an_exact_mirror_are_refused(name):
    with pytest.raises(ValueError, match=f"mirrored image exactly .* representation='{name}'"):
        registry.get(name).mirror()
