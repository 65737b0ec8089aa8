"""Image preparation: decoding, crops, the target and the served crops."""

import numpy as np
import pytest
import tensorflow as tf

from keras_invert import images


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)


def _png(array):
    array = array if array.ndim == 3 else array[..., None]
    return tf.io.encode_png(tf.constant(array)).numpy()


def test_decode_rgb_png_keeps_exact_values(rgb):
    decoded = images.decode(_png(rgb)).numpy()
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, rgb.astype(np.float32))


@pytest.mark.parametrize("encode", ["jpeg", "bmp", "gif"])
def test_decode_8_bit_formats_keeps_the_decoders_values(rgb, encode):
    """JPEG, BMP and GIF values are the 8-bit decoder's own, as a photo sent as uint8 has them."""
    import cv2

    if encode == "jpeg":
        contents = tf.io.encode_jpeg(tf.constant(rgb), quality=90).numpy()
    else:  # OpenCV writes BMP and GIF (palette: whatever it keeps is what decodes).
        ok, buffer = cv2.imencode(f".{encode}", rgb[..., ::-1])
        assert ok
        contents = buffer.tobytes()
    expected = tf.io.decode_image(contents, channels=3, expand_animations=False).numpy()
    np.testing.assert_array_equal(images.decode(contents).numpy(), expected.astype(np.float32))


def test_decode_grayscale_is_repeated_and_alpha_dropped(rgb):
    gray = images.decode(_png(rgb[..., 0])).numpy()
    np.testing.assert_array_equal(gray, np.repeat(rgb[..., :1], 3, axis=-1))
    gray_alpha = images.decode(_png(np.dstack([rgb[..., 0]] * 2))).numpy()
    np.testing.assert_array_equal(gray_alpha, gray)
    rgba = images.decode(_png(np.dstack([rgb, rgb[..., :1]]))).numpy()
    np.testing.assert_array_equal(rgba, rgb.astype(np.float32))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_decode_lossless_webp_keeps_exact_values(rgb, mode):
    import io

    from PIL import Image

    array = rgb if mode == "RGB" else np.dstack([rgb, rgb[..., :1]])
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="WEBP", lossless=True)
    decoded = images.decode(buffer.getvalue()).numpy()
    np.testing.assert_array_equal(decoded, rgb.astype(np.float32))


def test_decode_16_bit_png_is_scaled_to_0_255(rgb):
    deep = rgb[..., 0].astype(np.uint16) * 257 + 100  # Not multiples of 257.
    decoded = images.decode(_png(deep)).numpy()
    np.testing.assert_allclose(decoded[..., 0], deep / 257.0, atol=1e-4)
    assert decoded.max() <= 255.0


def test_decode_raises_on_corrupt_data():
    with pytest.raises(tf.errors.InvalidArgumentError):
        images.decode(b"\xff\xd8\xff" + b"\x00" * 40)


def test_center_crop_of_a_batch_equals_the_crop_of_each_image():
    batch = np.random.default_rng(1).uniform(0, 255, (2, 30, 21, 3)).astype(np.float32)
    crops = images.center_crop(batch, 12).numpy()
    assert crops.shape == (2, 12, 12, 3)
    for image, crop in zip(batch, crops, strict=True):
        np.testing.assert_array_equal(images.center_crop(image, 12).numpy(), crop)


def test_prepare_takes_uint8_gray_and_rgba_as_the_centre_crop():
    rgb = np.random.default_rng(2).integers(0, 256, (1, 20, 14, 3), dtype=np.uint8)
    expected = images.center_crop(rgb.astype(np.float32), 8).numpy()
    np.testing.assert_array_equal(images.prepare(rgb, 8).numpy(), expected)
    rgba = np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=-1)
    np.testing.assert_array_equal(images.prepare(rgba, 8).numpy(), expected)
    gray = images.prepare(rgb[..., :1], 8).numpy()
    np.testing.assert_array_equal(gray, np.repeat(gray[..., :1], 3, axis=-1))


def test_map_prepared_hands_raw_squares_only_where_no_resampling_is_needed():
    rng = np.random.default_rng(5)
    received = []

    def mean(crops):  # Eagerly tf.cond runs only the branch taken: record its crops' dtype.
        received.append(crops.dtype)
        return tf.reduce_mean(images.prepared_pixels(crops), axis=[1, 2])

    rgb = rng.integers(0, 256, (2, 8, 13, 3), dtype=np.uint8)  # Short side 8: not resampled.
    floats = rgb.astype(np.float32)
    floats[0, 2, 5:8] = [-5.0, 300.0, 128.5]  # In the centre square: clipped per channel.
    photos = [rgb, np.concatenate([rgb, rgb[..., :1]], axis=-1), rgb[..., :1], floats]
    photos.append(rng.integers(0, 256, (2, 11, 12, 3), dtype=np.uint8))  # Resized to 8.
    for photo in photos:
        received.clear()
        expected = mean(images.prepare(photo, 8)).numpy()
        for prepares_crops in (False, True):
            served = images.map_prepared(photo, 8, mean, prepares_crops=prepares_crops).numpy()
            np.testing.assert_array_equal(served, expected)
            raw = prepares_crops and photo.shape[1] == 8
            assert received[-1] == (tf.as_dtype(photo.dtype) if raw else tf.float32)
    # A NaN or Inf anywhere is refused, also in the columns the square drops.
    served = tf.function(lambda photo: images.map_prepared(photo, 8, mean, prepares_crops=True))
    for column, value in [(0, np.nan), (12, -np.inf)]:
        bad = floats.copy()
        bad[1, 3, column, 2] = value
        with pytest.raises(ValueError, match="Expected finite images"):
            images.map_prepared(bad, 8, mean, prepares_crops=True)
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
            served(bad)


def test_prepared_pixels_clip_floats_and_turn_nan_and_inf_into_nan():
    values = np.array([-5.0, 0.0, 127.5, 255.0, 300.0, np.inf, -np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(
        images.prepared_pixels(values).numpy(), [0, 0, 127.5, 255, 255, np.nan, np.nan, np.nan]
    )
    compiled = tf.function(images.prepared_pixels, jit_compile=True)
    np.testing.assert_array_equal(compiled(values), images.prepared_pixels(values))
    as_bytes = np.array([0, 7, 255], np.uint8)
    assert images.prepared_pixels(as_bytes).dtype == tf.float32
    np.testing.assert_array_equal(images.prepared_pixels(as_bytes), [0, 7, 255])


def test_target_is_the_resized_crop_in_unit_range():
    crops = np.random.default_rng(3).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(images.target(crops, 16).numpy(), crops / 255.0)
    # Smaller: each target pixel the mean of the 2x2 crop pixels it covers.
    means = crops.reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4)) / 255.0
    np.testing.assert_allclose(images.target(crops, 8).numpy(), means, atol=1e-6)
    # Larger: the crop resized as crops are.
    larger = images.target(crops, 24).numpy()
    np.testing.assert_allclose(larger, images.resize(crops, 24).numpy() / 255.0, atol=1e-7)
    assert 0.0 <= larger.min() and larger.max() <= 1.0


def test_the_crops_refuse_non_finite_values():
    """No path from a photo to a crop lets NaN or Inf through."""
    image = np.zeros((4, 5, 3), np.float32)
    image[0, 0, 0], image[1, 1, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match="Expected finite images"):
        images.center_crop(image, 2)
    with pytest.raises(ValueError, match="Expected finite images"):
        images.random_crop(image, 2, tf.constant([0, 1], tf.int64), 0.5)


def test_prepare_keeps_a_photo_at_the_crop_size_and_the_static_side():
    photo = np.random.default_rng(4).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    prepare = tf.function(
        lambda batch: images.prepare(batch, 8),
        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)],
    )
    crops = prepare(photo)
    assert prepare.get_concrete_function().structured_outputs.shape.as_list() == [None, 8, 8, 3]
    np.testing.assert_array_equal(crops.numpy(), photo.astype(np.float32))
    # Float pixels outside 0..255 are clipped at the crop size as after a resize.
    values = np.array([[-3.0, 300.0]], np.float32).repeat(3, axis=0)[None, ..., None]
    clipped = images.prepare(np.repeat(values, 3, axis=-1), 2).numpy()
    np.testing.assert_array_equal(clipped[0, :, :, 0], [[0.0, 255.0]] * 2)


def test_decode_random_crop_is_the_random_crop_of_the_decoded_photo():
    rng = np.random.default_rng(5)
    # Noise makes any chroma upsampling difference at a window's edges visible.
    photo = rng.integers(0, 256, (70, 93, 3), dtype=np.uint8)
    files = {
        "jpeg 4:2:0": tf.io.encode_jpeg(photo, chroma_downsampling=True).numpy(),
        "gray jpeg": tf.io.encode_jpeg(photo[..., :1]).numpy(),
        "png": _png(photo),
    }
    whole = tf.function(lambda contents, seed, scale: images.random_crop(
        images.decode(contents), 24, seed, scale))  # fmt: skip
    window = tf.function(lambda contents, seed, scale: images.decode_random_crop(
        contents, 24, seed, scale))  # fmt: skip
    for name, contents in files.items():
        for key in range(8):
            for scale in (tf.constant(0.1), tf.constant(1.0)):
                seed = tf.constant([key, 3])
                expected = whole(contents, seed, scale).numpy()
                np.testing.assert_array_equal(
                    window(contents, seed, scale).numpy(), expected, err_msg=f"{name} {key}"
                )
