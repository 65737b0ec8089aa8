"""The representations marked `mean_colour_invariant` really cannot tell an image's mean colour.

Their decoders get a learnt mean colour (`decoders.MeanColour`) on that
ground; these tests hold the registry's flag to what the features do.
"""

import numpy as np
import pytest

from keras_invert import registry

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# A different whole number per colour channel; the photos are first squeezed
# into whole numbers in 40..200 so that no shifted pixel leaves 0..255. (With
# fractional pixels, rounding can flip HOG's choice between colour channels
# whose gradients are nearly equal.)
SHIFT = np.array([25.0, -30.0, 15.0], np.float32)


def _photos(real_photos, size=128):
    crops = np.stack([real_photos[name][:size, :size] for name in PHOTOS]).astype(np.float32)
    return np.round(40.0 + crops * (160.0 / 255.0))


@pytest.mark.parametrize("name", ["hog", "lbp"])
def test_features_marked_mean_colour_invariant_ignore_a_colour_shift(real_photos, name):
    representation = registry.get(name)
    assert representation.mean_colour_invariant
    encode = representation.make_encoder()
    photos = _photos(real_photos)
    features = np.asarray(encode(photos))
    assert np.abs(features).max() > 0
    np.testing.assert_allclose(np.asarray(encode(photos + SHIFT)), features, atol=1e-5)


def test_sift_ignores_a_colour_shift_but_for_a_few_borderline_keypoints(real_photos):
    # SIFT sees a gray image, in floating point: a keypoint whose contrast sits
    # on VLFeat's threshold may come and go. Measured: 22 of 4,096 cells.
    representation = registry.get("sift")
    assert representation.mean_colour_invariant
    encode = representation.make_encoder()
    photos = _photos(real_photos)
    features = np.asarray(encode(photos))
    changed = np.abs(np.asarray(encode(photos + SHIFT)) - features).max(axis=-1) > 1e-3
    assert np.abs(features).max() > 0 and changed.mean() < 0.01


def test_a_network_tap_tells_a_colour_shift_and_is_not_marked(real_photos):
    representation = registry.get("efficientnet-lite0/stem")
    assert not representation.mean_colour_invariant
    encode = representation.make_encoder()
    photos = _photos(real_photos, 224)
    features = np.asarray(encode(photos))
    shifted = np.asarray(encode(photos + SHIFT))
    assert np.abs(shifted - features).max() > 0.1 * np.abs(features).max()
