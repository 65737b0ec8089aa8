"""Decoding and cropping ops: channel handling, bit depth, crop geometry, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines import ops


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)


def test_decode_rgb_png_keeps_exact_values(rgb, encode_image):
    decoded = ops.decode_image(encode_image(rgb, "PNG")).numpy()
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, rgb.astype(np.float32))


def test_decode_grayscale_is_repeated_and_alpha_dropped(rgb, encode_image):
    gray = ops.decode_image(encode_image(rgb[..., 0], "PNG")).numpy()
    np.testing.assert_array_equal(gray, np.repeat(rgb[..., :1], 3, axis=-1))
    gray_alpha = ops.decode_image(encode_image(np.dstack([rgb[..., 0]] * 2), "PNG")).numpy()
    np.testing.assert_array_equal(gray_alpha, gray)
    rgba = ops.decode_image(encode_image(np.dstack([rgb, rgb[..., :1]]), "PNG")).numpy()
    np.testing.assert_array_equal(rgba, rgb.astype(np.float32))


def test_decode_16_bit_png_is_scaled_to_0_255(rgb, encode_image):
    deep = rgb[..., 0].astype(np.uint16) * 257 + 100  # Not multiples of 257.
    decoded = ops.decode_image(encode_image(deep, "PNG")).numpy()
    np.testing.assert_allclose(decoded[..., 0], deep / 257.0, atol=1e-4)
    assert decoded.max() <= 255.0


def test_decode_raises_on_corrupt_data():
    with pytest.raises(tf.errors.InvalidArgumentError):
        ops.decode_image(b"\xff\xd8\xff" + b"\x00" * 40)


def test_center_crop_takes_the_full_short_side():
    image = np.zeros((10, 30, 3), np.float32)
    image[:, 10:20] = 255.0  # The centre square is white, the rest black.
    crop = ops.center_crop({"image": tf.constant(image)}, image_size=5)["image"].numpy()
    assert crop.shape == (5, 5, 3)
    np.testing.assert_allclose(crop, 255.0)


def test_random_crop_is_a_pure_function_of_the_key_and_upscales_tiny_images():
    image = tf.random.stateless_uniform([5, 7, 3], seed=[0, 0], maxval=255.0)

    def crop(key):
        example = {"image": image, "seed": tf.constant(key, tf.int64)}
        return ops.random_crop(example, image_size=16, min_crop_scale=0.35)["image"].numpy()

    first = crop([1, 2])
    assert first.shape == (16, 16, 3)
    np.testing.assert_array_equal(first, crop([1, 2]))
    assert any(not np.array_equal(first, crop([1, key])) for key in range(3, 8))
    assert 0.0 <= first.min() and first.max() <= 255.0


def test_add_target_resizes_to_target_size_in_unit_range():
    image = tf.fill([8, 8, 3], 255.0)
    target = ops.add_target({"image": image}, target_size=4)["target"].numpy()
    assert target.shape == (4, 4, 3)
    np.testing.assert_allclose(target, 1.0)


def test_color_jitter_is_keyed_and_keeps_range():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (16, 16, 3)).astype(np.float32))
    key = tf.constant([3, 4], tf.int64)
    first = ops.color_jitter({"image": image, "seed": key}, 1.0)["image"].numpy()
    again = ops.color_jitter({"image": image, "seed": key}, 1.0)["image"].numpy()
    other = ops.color_jitter({"image": image, "seed": key + 1}, 1.0)["image"].numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert not np.allclose(first, image.numpy())
    assert first.min() >= 0.0 and first.max() <= 255.0
    untouched = ops.color_jitter({"image": image, "seed": key}, 0.0)["image"].numpy()
    np.testing.assert_allclose(untouched, image.numpy(), atol=1e-3)
