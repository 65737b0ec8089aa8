"""The per-example dict ops: crop geometry, determinism, targets, jitter, refused NaNs."""

import numpy as np
import pytest
import tensorflow as tf

from pipelines import ops


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)


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


def test_crops_refuse_non_finite_images_inside_tf_data():
    image = np.full((8, 8, 3), 100.0, np.float32)
    image[3, 4, 0] = np.nan
    key = tf.constant([0, 1], tf.int64)
    crops = {
        "center": lambda example: ops.center_crop(example, image_size=4),
        "random": lambda example: ops.random_crop(example, image_size=4, min_crop_scale=0.5),
    }
    for crop in crops.values():
        dataset = tf.data.Dataset.from_tensors({"image": image, "seed": key}).map(crop)
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
            next(iter(dataset))
