"""Input checks shared by the TensorFlow feature ops."""

from __future__ import annotations

import tensorflow as tf


def as_image_batch(images: tf.Tensor) -> tuple[tf.Tensor, bool]:
    """Checks `[N, H, W, C]` or `[H, W, C]` images (C = 1 or 3); returns (batch, was_single)."""
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
    return (images if rank == 4 else images[tf.newaxis]), rank == 3
