"""The checks of a caller's images: an array, a photo's shape, pixel values, finite."""

import re

import numpy as np
import pytest
import tensorflow as tf

from keras_invert import image_checks


def test_as_images_refuses_what_is_not_an_integer_or_float_array():
    assert image_checks.as_images(np.zeros(3, np.uint16)).dtype == tf.uint16
    for received, value in [("NoneType", None), ("dtype=string", "a.jpg"), ("dtype=bool", [True])]:
        with pytest.raises(
            ValueError, match=re.escape(f"(uint8, or float in 0..255). Received: {received}")
        ):
            image_checks.as_images(value)


def test_check_photos_refuses_other_shapes_eagerly_and_in_graphs():
    photos = np.zeros((1, 4, 5, 3), np.uint8)
    np.testing.assert_array_equal(image_checks.check_photos(photos), photos)
    for bad in [np.zeros((4, 5, 3), np.uint8), np.zeros((1, 4, 5, 2), np.uint8)]:
        with pytest.raises(ValueError, match=re.escape(f"Received: shape={bad.shape}")):
            image_checks.check_photos(bad)
    checked = tf.function(
        image_checks.check_photos, input_signature=[tf.TensorSpec([None] * 4, tf.uint8)]
    )
    np.testing.assert_array_equal(checked(photos), photos)
    for bad, message in [((1, 4, 5, 2), "C = 1 \\(gray\\)"), ((1, 0, 5, 3), "non-empty")]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            checked(np.zeros(bad, np.uint8))


def test_check_range_refuses_values_that_are_not_pixels_of_their_dtype():
    for photo in [np.array([0, 65535], np.uint16), np.array([0, 255], np.int64), [-0.5, 255.5]]:
        # uint16 takes any value: to_rgb scales it.
        np.testing.assert_array_equal(image_checks.check_range(photo), photo)
    for photo, received in [
        (np.array([-1, 7], np.int8), "min=-1, max=7, dtype=int8"),
        (np.array([0, 256], np.int32), "min=0, max=256, dtype=int32"),
        (np.array([-0.75, 1.0], np.float32), "min=-0.75, max=1.0, dtype=float32"),
        (np.array([3.0, 255.75]), "min=3.0, max=255.75, dtype=float64"),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"Received: {received}")):
            image_checks.check_range(photo)


def test_non_finite_values_are_refused_eagerly_and_in_graphs():
    image = np.zeros((4, 5, 3), np.float32)
    image[0, 0, 0], image[1, 1, 1], image[2, 2, 2] = np.nan, np.inf, -np.inf
    with pytest.raises(ValueError, match=r"Expected finite images.*1 NaN and 2 Inf"):
        image_checks.check_finite(image)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
        tf.function(image_checks.check_finite)(tf.constant(image))
    clean = np.ones((4, 5, 3), np.float32)
    np.testing.assert_array_equal(tf.function(image_checks.check_finite)(clean).numpy(), clean)
