"""The features of a left-right mirrored image, computed from the features alone.

HOG and LBP treat left and right alike: the features of an image flipped
left-right are its own features with the cell columns in reverse order and
the channels permuted (docs/reference.md, Mirror averaging). This needs an
image width that is a multiple of the cell size, so that the cell grid is
symmetric (otherwise the mirrored image's cells sit at other places). LBP is
then exact. HOG is exact but for one tie: a gradient that points straight up
or down (the left and right neighbours equal, common in 8-bit photos) lies
midway between two orientation bins, and VLFeat gives it the first one in the
image and in its mirror alike. On 8-bit photos that moves the mirrored
features by 5-10% of their mean magnitude; on images without such ties the
mirror is exact to float rounding.

- HOG (UoCTTI, n orientations): directed bin k (angle k pi / n, 0 <= k < 2n)
  goes to bin (n - k) mod 2n, undirected bin k to (n - k) mod n, and the four
  texture channels, one per 2x2 block around the cell (up-left, up-right,
  down-left, down-right), swap left for right. VLFeat's own flip permutation
  (`vl_hog_get_permutation`) is the same.
- LBP (uniform, neighbours E, SE, S, SW, W, NW, N, NE as bits 0..7): the
  mirror sends bit k to bit (4 - k) mod 8, so a run of j ones starting at bit
  i (bin 7 i + j - 1) becomes the run of j ones starting at (5 - i - j) mod 8;
  bins 56 (flat) and 57 (not uniform) stay.

Example:
    >>> import numpy as np
    >>> from keras_invert.features import hog
    >>> images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    >>> flipped = hog(images[:, :, ::-1])
    >>> np.abs(mirror(hog(images), hog_mirror_permutation()) - flipped).max() < 1e-6
    True
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_invert.features.hog import hog_num_channels
from keras_invert.features.lbp_histograms import LBP_NUM_BINS

_LBP_NEIGHBOURS = 8
_LBP_FLAT_BINS = 2  # All zeros or all ones (bin 56), and the patterns that are not uniform (57).


def hog_mirror_permutation(num_orientations: int = 9) -> np.ndarray:
    """Channel `c` of a mirrored image's HOG cell is channel `permutation[c]` of the cell."""
    n = num_orientations
    directed = (n - np.arange(2 * n)) % (2 * n)
    undirected = 2 * n + (n - np.arange(n)) % n
    texture = 3 * n + np.array([1, 0, 3, 2])
    permutation = np.concatenate([directed, undirected, texture])
    assert len(permutation) == hog_num_channels(n)
    return permutation


def lbp_mirror_permutation() -> np.ndarray:
    """Channel `c` of a mirrored image's LBP cell is channel `permutation[c]` of the cell."""
    runs = _LBP_NEIGHBOURS - 1
    permutation = list(range(LBP_NUM_BINS))
    for start in range(_LBP_NEIGHBOURS):
        for ones in range(1, runs + 1):
            mirrored_start = (5 - start - ones) % _LBP_NEIGHBOURS
            permutation[runs * start + ones - 1] = runs * mirrored_start + ones - 1
    assert len(permutation) == runs * _LBP_NEIGHBOURS + _LBP_FLAT_BINS
    return np.array(permutation)


def mirror(features, permutation) -> tf.Tensor:
    """`features` `[N, rows, columns, C]` of mirrored images: columns reversed, channels permuted.

    The permutation is an involution (mirroring twice gives the features back).
    """
    features = tf.convert_to_tensor(features)
    return tf.gather(tf.reverse(features, axis=[-2]), permutation, axis=-1)


def mirrored_cells_exact(image_size: int, cell_size: int) -> bool:
    """Whether the cells of the mirrored image are the cells mirrored (a symmetric cell grid)."""
    return image_size % cell_size == 0
