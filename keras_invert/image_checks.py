"""What a caller's images must be: an array of pixels, of a shape and dtype a photo has, finite.

The checks of caller-given arrays, before any preparation
(`keras_invert.images`) or feature op uses them. Each raises a
`ValueError` that names what was expected and what was received.

- `as_images`: an integer or float array; None, a file name, a ragged list,
  a string, bool or complex dtype are refused.
- `check_photos`: the check of a batch as an export's image signatures and
  `images.prepare` take it: `[N, H, W, C]` with C = 1, 3 or 4 and non-empty
  images, raised as `check_finite` raises.
- `check_range`: the Python API's check (`keras_invert.load(...)`) that
  photos hold pixel values: any uint8 or uint16 photo, other integer and
  float dtypes in 0..255 (floats within half a level of it, which round into
  it). Eager only; the export's signatures and `images.prepare` clip instead.
- `check_finite`: NaN and Inf values are refused, with a `ValueError` when
  running eagerly and an `InvalidArgumentError` inside a graph (tf.data, a
  SavedModel). (XLA drops assertions: a function compiled with
  `jit_compile=True` does not check.)

Example:
    >>> from keras_invert import image_checks
    >>> photos = image_checks.check_photos(np.zeros([2, 64, 48, 3], np.uint8))
    >>> image_checks.check_finite(np.array([1.0, np.nan]))  # ValueError: 1 NaN
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

PIXEL_MAX = 255.0  # Pixel values lie in 0..PIXEL_MAX, the range of every crop.
_SERVED_CHANNELS = (1, 3, 4)
_AN_ARRAY = "Expected images as an integer or float array [N, H, W, C] (uint8, or float in 0..255)"
_ROUNDING = 0.5  # A float pixel within half a level of 0..255 rounds into it.


def as_images(images) -> tf.Tensor:
    """`images` as a tensor of an integer or float dtype, else a `ValueError` saying so.

    (TensorFlow's own errors for None, a file name or a ragged list name
    neither what was expected nor the argument.)
    """
    try:
        images = tf.convert_to_tensor(images)
    except (TypeError, ValueError):
        kind = getattr(images, "dtype", None)
        received = f"dtype={kind}" if kind is not None else type(images).__name__
        raise ValueError(f"{_AN_ARRAY}. Received: {received}") from None
    if not (images.dtype.is_integer or images.dtype.is_floating):
        raise ValueError(f"{_AN_ARRAY}. Received: dtype={images.dtype.name}")
    return images


def check_range(images, name: str = "images") -> tf.Tensor:
    """`images` unchanged after checking that they hold pixel values; eager only.

    uint8 and uint16 (scaled by `images.to_rgb`) hold nothing else. Other integer
    dtypes must lie in 0..255, and floats in -0.5..255.5 (values that round
    into 0..255: float rounding of a computed photo, never a visible change),
    else a `ValueError` names the range, the values received and their dtype:
    clipping them, as `images.prepare` would, changes the photo without a word.
    NaN and Inf are left to `check_finite`.
    """
    images = as_images(images)
    if images.dtype in (tf.uint8, tf.uint16) or not int(tf.size(images)):
        return images
    values = images.numpy()
    low, high = np.nanmin(values).item(), np.nanmax(values).item()
    margin = _ROUNDING if images.dtype.is_floating else 0
    if low < -margin or high > PIXEL_MAX + margin:
        within = "in 0..255 (floats: within half a level)" if margin else "in 0..255"
        raise ValueError(
            f"Expected {name} of dtype {images.dtype.name} with values {within}; they are not "
            "clipped (uint8 and uint16 photos take any value). "
            f"Received: min={low!r}, max={high!r}, dtype={images.dtype.name}"
        )
    return images


def check_photos(images) -> tf.Tensor:
    """`images` unchanged after the checks of `images.prepare`: dtype, rank, channels, non-empty.

    A string, bool or complex dtype is a `ValueError`; the shape is checked as
    `check_finite` checks values (eagerly `ValueError`, in a graph an assertion).
    """
    images = as_images(images)
    expected = "Expected images [N, H, W, C] with C = 1 (gray), 3 (RGB) or 4 (RGBA)"
    if tf.executing_eagerly():
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] not in _SERVED_CHANNELS:
            raise ValueError(f"{expected}. Received: shape={shape}")
        if 0 in shape[1:3]:
            raise ValueError(f"Expected non-empty images. Received: shape={shape}")
        return images
    shape = tf.shape(images)
    checks = [
        tf.debugging.assert_equal(
            tf.reduce_any(tf.equal(shape[-1], _SERVED_CHANNELS)), True, message=expected
        ),
        tf.debugging.assert_positive(shape[1:3], message="Expected non-empty images"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def check_finite(values, name: str = "images", cause: str = ""):
    """`values` unchanged after checking that none is NaN or Inf.

    Eagerly a `ValueError` counts the bad values; inside a graph (tf.data, a
    tf.function, a SavedModel) an assertion raises `InvalidArgumentError`
    with the same expectation. Gradients pass through unchanged. `cause`,
    when given, follows the expectation: what such values would mean.
    """
    values = tf.convert_to_tensor(values)
    if not values.dtype.is_floating:
        return values
    expected = f"Expected finite {name} (no NaN or Inf)." + (f" {cause}" if cause else "")
    if tf.executing_eagerly():
        finite = tf.math.is_finite(values)
        if not bool(tf.reduce_all(finite)):
            nan = int(tf.reduce_sum(tf.cast(tf.math.is_nan(values), tf.int64)))
            bad = int(tf.size(values, tf.int64) - tf.reduce_sum(tf.cast(finite, tf.int64)))
            raise ValueError(
                f"{expected} Received: {name} with {nan} NaN and {bad - nan} Inf values "
                f"(shape {tuple(values.shape)})"
            )
        return values
    check = tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(values)), [f"{expected} Received: NaN or Inf values."]
    )
    with tf.control_dependencies([check]):
        return tf.identity(values)
