"""LBP's histograms as integer tensor ops: a gray batch -> normalised uniform-pattern cells.

The arithmetic of VLFeat's uniform LBP (docs/reference.md, LBP) that
`keras_invert.features.lbp` compiles and runs: `segment_ids` gives each
interior pixel of a gray batch the id of its (image, cell group, uniform
bin), and `pool` sums those ids into bilinearly pooled, normalised cell
histograms. Both take and return plain tensors, so they run eagerly, in a
graph and under XLA alike (the compiled steps and the gray conversion are
`keras_invert.features.lbp`'s).

How VLFeat's computation maps onto tensor ops (the obvious form, one-hot
patterns pooled by two interpolation matmuls; the one-hot tensor is 58 floats
per pixel, about 1 GB for 64 images of 256x256, and that version was ~6x
slower on a CPU):
- the pattern bins are eight comparisons and a gather from a 256-entry table,
  turned into one int32 segment id per pixel (image, cell group, bin);
- a pixel at x has `2x + 1 + cell = 2 * cell * g + u` with `0 <= u < 2 * cell`:
  it votes `(2 cell - u) / (2 cell)` for cell g-1 and `u / (2 cell)` for cell g.
  The 2-D bilinear weight is therefore a polynomial in (u, v), and each cell
  histogram is a fixed combination of four integer moments per "group" (g_y,
  g_x) and bin: the count and the sums of u, v and u*v. For cell sizes up to
  25 the four moments of a group fit side by side in one int64 (bit fields
  wide enough for their largest sums), so one integer `unsorted_segment_sum`
  of a packed per-pixel constant gives all four (larger cells: four sums).
  Integer sums are exact and deterministic on every device; a small float64
  combination follows.

Example:
    >>> import tensorflow as tf
    >>> gray = tf.random.uniform([2, 64, 64], 0, 255)
    >>> segment = tf.reshape(segment_ids(gray, 16), [-1])
    >>> pool(segment, 64, 64, 16).shape
    TensorShape([2, 4, 4, 58])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

LBP_NUM_BINS = 58
_NORM_EPSILON = 1e-10  # Added to sqrt(sum) per cell, as VLFeat.


def _uniform_bins() -> np.ndarray:
    """VLFeat's 256-entry map from an 8-bit pattern to one of the 58 uniform bins."""
    table = np.full(256, 57, np.int32)
    table[0x00] = table[0xFF] = 56
    for start in range(8):
        for length in range(1, 8):
            run = ((1 << length) - 1) << start
            table[(run | (run >> 8)) & 0xFF] = 7 * start + (length - 1)
    return table


UNIFORM_BINS = _uniform_bins()


def _pattern_bins(gray: tf.Tensor) -> tf.Tensor:
    """`[N, H, W]` float32 -> `[N, H-2, W-2]` int32 uniform bin of each interior pixel."""
    center = gray[:, 1:-1, 1:-1]
    neighbours = (
        gray[:, 1:-1, 2:],  # E
        gray[:, 2:, 2:],  # SE
        gray[:, 2:, 1:-1],  # S
        gray[:, 2:, :-2],  # SW
        gray[:, 1:-1, :-2],  # W
        gray[:, :-2, :-2],  # NW
        gray[:, :-2, 1:-1],  # N
        gray[:, :-2, 2:],  # NE
    )
    pattern = tf.add_n(
        [tf.where(neighbour > center, 1 << bit, 0) for bit, neighbour in enumerate(neighbours)]
    )
    return tf.gather(tf.constant(UNIFORM_BINS), pattern)


def _groups(num_pixels, cell_size: int, num_cells):
    """Group index g and offset u of interior pixels 1..num_pixels-2 along one axis.

    Groups past `num_cells` only vote for cells that do not exist; they are
    merged into group `num_cells + 1`, whose votes are dropped.
    """
    twice = 2 * tf.range(1, num_pixels - 1) + 1 + cell_size
    group = tf.minimum(twice // (2 * cell_size), num_cells + 1)
    return group, twice % (2 * cell_size)


def segment_ids(gray: tf.Tensor, cell_size: int) -> tf.Tensor:
    """`[N, H-2, W-2]` int32 id of (image, group y, group x, bin) of each interior pixel."""
    shape = tf.shape(gray)
    batch_size, height, width = shape[0], shape[1], shape[2]
    cells_y, cells_x = height // cell_size, width // cell_size
    group_y, _ = _groups(height, cell_size, cells_y)
    group_x, _ = _groups(width, cell_size, cells_x)
    groups = (group_y[:, None] * (cells_x + 2) + group_x[None, :]) * LBP_NUM_BINS
    images = tf.range(batch_size)[:, None, None] * ((cells_y + 2) * (cells_x + 2) * LBP_NUM_BINS)
    return images + groups[None] + _pattern_bins(gray)


def _moment_fields(cell_size: int) -> tuple[int, ...] | None:
    """Bit widths of a group's count, sum of u, sum of v and sum of u*v.

    A group has at most cell_size**2 pixels and u, v < 2 * cell_size. None
    when the four fields do not fit in 63 bits (cell sizes above 25).
    """
    pixels, largest = cell_size**2, 2 * cell_size - 1
    sums = (pixels, pixels * largest, pixels * largest, pixels * largest**2)
    widths = tuple(int(value).bit_length() for value in sums)
    return widths if sum(widths) <= 63 else None


def pool(segment: tf.Tensor, height, width, cell_size: int) -> tf.Tensor:
    """Flat segment ids of `[N, H-2, W-2]` pixels -> normalised `[N, H//cell, W//cell, 58]`."""
    # From the shape, so that XLA knows it when compiling.
    batch_size = tf.size(segment) // ((height - 2) * (width - 2))
    cells_y, cells_x = height // cell_size, width // cell_size
    groups_y, groups_x = cells_y + 2, cells_x + 2
    _, v = _groups(height, cell_size, cells_y)
    _, u = _groups(width, cell_size, cells_x)
    u = tf.cast(u, tf.int64)[tf.newaxis, tf.newaxis, :]
    v = tf.cast(v, tf.int64)[tf.newaxis, :, tf.newaxis]
    per_pixel = (tf.ones_like(u), u, v, u * v)
    widths = _moment_fields(cell_size)
    if widths is not None:
        shifts = np.cumsum((0,) + widths[:-1]).tolist()
        packed = sum(data * (1 << shift) for data, shift in zip(per_pixel, shifts, strict=True))
        per_pixel = (packed,)
    num_segments = batch_size * groups_y * groups_x * LBP_NUM_BINS
    pixels = [batch_size, height - 2, width - 2]
    sums = [
        tf.math.unsorted_segment_sum(
            tf.reshape(tf.broadcast_to(data, pixels), [-1]), segment, num_segments
        )
        for data in per_pixel
    ]
    if widths is not None:
        sums = [
            tf.bitwise.bitwise_and(
                tf.bitwise.right_shift(sums[0], tf.constant(shift, tf.int64)),
                tf.constant((1 << width_bits) - 1, tf.int64),
            )
            for shift, width_bits in zip(shifts, widths, strict=True)
        ]
    # Integer moments -> float64 keeps the combination exact for any practical cell.
    count, sum_u, sum_v, sum_uv = (
        tf.reshape(tf.cast(moment, tf.float64), [batch_size, groups_y, groups_x, LBP_NUM_BINS])
        for moment in sums
    )
    scale = 2.0 * cell_size
    # Votes of group (gy, gx) for the cells (gy-1, gx-1), (gy-1, gx), (gy, gx-1), (gy, gx).
    up_left = scale * scale * count - scale * (sum_u + sum_v) + sum_uv
    up_right = scale * sum_u - sum_uv
    down_left = scale * sum_v - sum_uv
    down_right = sum_uv
    histograms = (
        up_left[:, 1 : cells_y + 1, 1 : cells_x + 1]
        + up_right[:, 1 : cells_y + 1, :cells_x]
        + down_left[:, :cells_y, 1 : cells_x + 1]
        + down_right[:, :cells_y, :cells_x]
    ) / (scale * scale)
    histograms = tf.cast(histograms, tf.float32)
    norms = tf.sqrt(tf.reduce_sum(histograms, axis=-1, keepdims=True)) + _NORM_EPSILON
    return tf.sqrt(histograms) / norms
