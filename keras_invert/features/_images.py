"""Input checks and compiler-proof rounding shared by the TensorFlow feature ops."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_invert.image_checks import check_finite


def as_image_batch(
    images: tf.Tensor, *, finite: bool = True, min_side: int = 1, feature: str = "", cell: str = ""
) -> tuple[tf.Tensor, bool]:
    """Checks `[N, H, W, C]` or `[H, W, C]` finite images (C = 1 or 3); returns (batch, was_single).

    NaN or Inf pixels raise a `ValueError` eagerly and an `InvalidArgumentError`
    in a graph (`keras_invert.image_checks.check_finite`); `finite=False` leaves
    that check to the caller. A known height or width below `min_side` (the
    side that gives `feature` its first `cell`) is a `ValueError`.
    """
    rank = images.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            f"Expected images of shape [N, H, W, C] or [H, W, C]. Received: shape={images.shape}"
        )
    if images.shape[-1] not in (1, 3):
        raise ValueError(
            "Expected 1 (grayscale) or 3 (RGB) channels in the last axis. "
            f"Received: shape={images.shape}"
        )
    for side in images.shape[-3:-1]:
        if side is not None and side < min_side:
            raise ValueError(
                f"{feature} needs images of at least {min_side}x{min_side} pixels ({cell}). "
                f"Received: shape={tuple(images.shape)}"
            )
    if finite:
        images = check_finite(images)
    return (images if rank == 4 else images[tf.newaxis]), rank == 3


def rounded(products: tf.Tensor) -> tf.Tensor:
    """`products`, kept rounded to float32 when XLA compiles the sum they feed.

    XLA contracts `a * b + c` into a fused multiply-add, which skips the
    rounding of the product: a different last bit, enough to flip a
    comparison of nearly equal values (an LBP neighbour against its centre, a
    HOG colour channel or orientation against another). A select that maps
    NaN to NaN changes nothing, but the compiler cannot see through it, so
    the products stay rounded as in plain TensorFlow ops and in VLFeat's C.
    """
    return tf.where(tf.math.is_nan(products), tf.constant(np.nan, products.dtype), products)
