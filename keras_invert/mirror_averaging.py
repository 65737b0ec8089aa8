"""Mirror averaging: decode the features and their mirror, average the two images.

For HOG and LBP the features of the left-right mirrored image follow exactly
from the features (`keras_invert.features.mirror`). A decoder trained on
randomly flipped crops then gives two estimates of the image: one from the
features, and one from the mirrored features, flipped back. The squared
error being convex, their average's is at most the mean of theirs, and lower
wherever they disagree (docs/reference.md, Mirror averaging), for twice the
decoding work. `keras_invert.load(..., mirror_average=True)` and
`export.export_saved_model(..., mirror_average=True)` decode through
`mirror_averaged`, so served and local reconstructions are the same.

Example:
    >>> from keras_invert import registry
    >>> spec = registry.get("hog")
    >>> decode = mirror_averaged(lambda f: decoder(f, training=False), spec.mirror(128))
    >>> images = decode(features)  # [N, 128, 128, 3]
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

LABEL = "mirror-averaged"
"""How tables and rows name a mirror-averaged decoder."""


def check_option(mirror_average) -> None:
    """Refuses a `mirror_average` argument that is not a bool."""
    if not isinstance(mirror_average, bool):
        raise ValueError(f"Expected mirror_average a bool. Received: {mirror_average!r}")


def mirror_averaged(decode: Callable, mirror: Callable) -> Callable:
    """`decode` averaged with the flipped-back decoding of the mirrored features.

    Args:
        decode: features `[N, ...]` -> images `[N, T, T, 3]` (any tensor function).
        mirror: features -> the mirrored images' features (`Representation.mirror`).

    Returns:
        features -> images: one call of `decode` on the features and their
        mirror together (a batch of 2N), then the mean of the first N images
        and the last N flipped left-right.
    """

    def decode_averaged(features):
        features = tf.convert_to_tensor(features)
        count = tf.shape(features)[0]
        both = decode(tf.concat([features, mirror(features)], axis=0))
        return 0.5 * (both[:count] + tf.reverse(both[count:], axis=[2]))

    return decode_averaged
