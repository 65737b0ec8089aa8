"""Uniform LBP as batched TensorFlow ops, equal to VLFeat's `vl_lbp` (`VlLbpUniform`).

Implements docs/reference.md, LBP: the local binary patterns the paper
computed with VLFeat (`vl_lbp_process`, uniform quantisation, not transposed,
cell size 16). The op runs on a batch `[N, H, W, C]` inside
`tf.data.Dataset.map`, inside a Keras model and inside a SavedModel (the batch
size, H and W may be unknown when tracing).

What VLFeat computes, checked against `libvl` (`keras_invert.vlfeat.lbp`):
- one grayscale channel (RGB through `tf.image.rgb_to_grayscale`);
- at every pixel 1..W-2 x 1..H-2 an 8-bit pattern whose bit k is set iff the
  k-th neighbour is strictly brighter than the centre, neighbours in the order
  E, SE, S, SW, W, NW, N, NE (y grows downwards);
- 58 bins: the 56 patterns made of one circular run of j ones (1 <= j <= 7)
  that starts at bit i go to bin `7 * i + (j - 1)` (for a run that wraps, such
  as bits {7, 0}, i is where the run starts, 7, not the lowest set bit); all
  zeros and all ones go to bin 56; every other pattern to bin 57;
- bilinear pooling into `H // cell` x `W // cell` cells with
  `w = (x + 0.5) / cell - 0.5` per axis; votes that fall outside the cells are
  dropped (pixels past the last cell centre vote only for the last cell);
- per cell `sqrt(bin) / (sqrt(sum of bins) + 1e-10)`.

The patterns and the pooled histograms are integer tensor ops
(`keras_invert.features.lbp_histograms`: `segment_ids`, `pool`). When H and
W are known at trace time, three XLA-compiled steps run: the gray
conversion, the segment ids, and the pooling with normalisation (the last one
on the flattened ids: XLA's scatter is ~4x faster on a 1-D operand than on
the `[N, H, W]` one). Comparisons and integer sums cannot change under
compilation; the gray conversion can (XLA contracts `r*w0 + g*w1` into fused
multiply-adds), so `_gray_fused` routes each product through a select that
the compiler cannot look through, which keeps the products rounded and the
result bit-identical to `tf.image.rgb_to_grayscale` (the parity tests check
this through the VLFeat comparison). Each step was measured separately: the
three in one XLA cluster, or the gray conversion fused into the comparisons,
were 2-4x slower (elementwise work recomputed per neighbour, reshape copies).
Each compiled step runs on one thread, so a batch of two images or more is
cut in halves whose steps TensorFlow runs at the same time on two cores (in
a graph; eagerly one after the other). A uint8 batch is converted to float
inside the compiled gray conversion, reading a quarter of the bytes, and with
`clip=True` float pixels are clipped to 0..255 there, with NaN for NaN and
Inf that the check of the gray image after the step refuses
(`keras_invert.images.prepared_pixels`): the export's image signatures send
a photo's centre square that needs no resampling as it came, uint8 or float
(`keras_invert.images.map_prepared`). With dynamic H or W the same functions
run as plain ops, to avoid one XLA compilation per image size.
`benchmarks/bench_lbp.py` and `benchmarks/bench_served_features.py` print
the figures.

Example:
    >>> import numpy as np
    >>> from keras_invert.features.lbp import lbp
    >>> images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    >>> lbp(images).shape
    TensorShape([2, 4, 4, 58])
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from keras_invert.features._images import as_image_batch, rounded
from keras_invert.features.lbp_histograms import LBP_NUM_BINS, pool, segment_ids
from keras_invert.image_checks import as_images, check_finite
from keras_invert.images import prepared_pixels

# tf.image.rgb_to_grayscale's luma weights.
_LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)


def lbp_output_size(size: int, cell_size: int = 16) -> int:
    """Number of LBP cells along a side of `size` pixels (VLFeat's rounding: floor)."""
    return size // cell_size


def _pixels(images: tf.Tensor, clip: bool) -> tf.Tensor:
    """`images` as float32, prepared as served crops are where `clip` (`prepared_pixels`)."""
    return prepared_pixels(images) if clip else tf.cast(images, tf.float32)


def _gray_fused(images: tf.Tensor, clip: bool = False) -> tf.Tensor:
    """`[N, H, W, 3]` of any dtype -> float32 `[N, H, W]`, as `tf.image.rgb_to_grayscale`.

    Bit-identical under XLA: `rgb_to_grayscale` rounds each product and sums
    left to right, and `rounded` keeps XLA from fusing them into multiply-adds
    (different rounding in ~20% of the pixels, enough to flip comparisons of
    nearly equal neighbours).
    The conversion to float32 (and with `clip` the clip of each channel to
    0..255) happens here, so that under XLA a uint8 batch is read as bytes
    and a float one read once, converted in the same pass (exact: every
    uint8 and uint16 value is a float32, and clipping rounds nothing).
    """
    images = _pixels(images, clip)
    products = rounded(images * tf.constant(_LUMA_WEIGHTS, tf.float32))
    return (products[..., 0] + products[..., 1]) + products[..., 2]


# Exact under compilation (see the module docstring); H, W and the cell size are
# trace-time constants of the static path.
_gray_xla = tf.function(_gray_fused, jit_compile=True)
_segment_ids_xla = tf.function(segment_ids, jit_compile=True)
_pool_xla = tf.function(pool, jit_compile=True)


def _validate(images: tf.Tensor, cell_size: int, *, finite: bool) -> tuple[tf.Tensor, bool]:
    if not isinstance(cell_size, (int, np.integer)) or isinstance(cell_size, bool) or cell_size < 1:
        raise ValueError(
            f"Expected a positive integer cell_size. Received: cell_size={cell_size!r}"
        )
    return as_image_batch(
        images, finite=finite, min_side=cell_size, feature="LBP",
        cell=f"one cell of cell_size={cell_size}",
    )  # fmt: skip


def _compiled_lbp(
    images: tf.Tensor, cell_size: int, check_gray: bool = False, clip: bool = False
) -> tf.Tensor:
    """The three XLA steps on a batch whose H and W are known.

    `check_gray`: refuse NaN and Inf in the gray image, for RGB pixels that
    were not checked. It is finite exactly when all three channels are (the
    luma weights are positive and sum below 1, so finite pixels cannot
    overflow; clipped, a NaN or Inf channel gives NaN), and it is a third of
    the values, in a graph where XLA would drop the check.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    if images.shape[-1] == 3:
        gray = _gray_xla(images, clip)
        if check_gray:
            gray = check_finite(gray, "images")
    else:
        gray = _pixels(images[..., 0], clip)
    # Flattened outside XLA (free here, a copy inside the compiled pooling).
    segment = tf.reshape(_segment_ids_xla(gray, cell_size), [-1])
    return _pool_xla(segment, height, width, cell_size)


def _in_halves(images: tf.Tensor, compute) -> tf.Tensor:
    """`compute(images)`, as two calls on the halves of a batch of two images or more.

    A compiled XLA step runs on one thread; in a graph the two halves'
    steps are independent, so TensorFlow runs them at the same time on two
    cores (eagerly they simply run one after the other).
    """
    size = tf.shape(images)[0]

    def halves():
        half = size // 2
        return tf.concat([compute(images[:half]), compute(images[half:])], axis=0)

    if images.shape[0] is not None:
        return halves() if images.shape[0] >= 2 else compute(images)
    return tf.cond(size >= 2, halves, lambda: compute(images))


def lbp(images, cell_size: int = 16, *, clip: bool = False) -> tf.Tensor:
    """Uniform LBP of a batch of images, equal to VLFeat's `vl_lbp_process`.

    Args:
        images: `[N, H, W, C]` or `[H, W, C]` with C = 1 (taken as is) or
            3 (converted with `tf.image.rgb_to_grayscale`), any value range
            (patterns only compare pixels). Other dtypes than float32 (uint8
            photos, say) are converted to float32 exactly as `tf.cast` does.
            H and W must be at least `cell_size`; they may be dynamic.
        cell_size: cell size in pixels (paper: 16).
        clip: clip float pixels to 0..255, each channel before the gray
            conversion, as the served crops are (`images.prepared_pixels`):
            the features of a photo's raw centre square are those of its crop.

    Returns:
        float32 `[N, H // cell_size, W // cell_size, 58]` (no batch axis for
        rank-3 input); each cell is `sqrt(histogram) / (sqrt(sum) + 1e-10)`.

    Raises:
        ValueError: NaN or Inf pixels (eagerly; in a graph an `InvalidArgumentError`).
    """
    images = as_images(images)
    # In a graph the compiled path checks the gray image instead (_compiled_lbp);
    # eagerly the pixels are checked, so the error counts NaN and Inf pixels.
    check_gray = (
        images.shape.rank in (3, 4)
        and None not in images.shape[-3:]
        and images.shape[-1] == 3
        and images.dtype.is_floating  # Integer pixels are finite.
        and not tf.executing_eagerly()
    )
    images, unbatched = _validate(images, cell_size, finite=not check_gray)
    static_height, static_width = images.shape[1], images.shape[2]
    if static_height is None or static_width is None:
        images = _pixels(images, clip)
        gray = tf.image.rgb_to_grayscale(images) if images.shape[-1] == 3 else images
        gray = gray[..., 0]
        shape = tf.shape(gray)
        height, width = shape[1], shape[2]
        # Shapes known only at run time: the same check as in _validate.
        message = f"LBP needs images of at least {cell_size}x{cell_size} pixels (one cell)."
        with tf.control_dependencies(
            [tf.debugging.assert_greater_equal(tf.minimum(height, width), cell_size, message)]
        ):
            gray = tf.identity(gray)
        segment = tf.reshape(segment_ids(gray, cell_size), [-1])
        features = pool(segment, height, width, cell_size)
    else:
        # A uint8 batch reaches the compiled gray conversion as bytes, and a float
        # one unclipped (see _gray_fused).
        features = _in_halves(images, lambda part: _compiled_lbp(part, cell_size, check_gray, clip))
    features = tf.ensure_shape(
        features,
        [
            images.shape[0],
            None if static_height is None else static_height // cell_size,
            None if static_width is None else static_width // cell_size,
            LBP_NUM_BINS,
        ],
    )
    return features[0] if unbatched else features


@keras.saving.register_keras_serializable(package="keras_invert")
class LBP(layers.Layer):
    """Keras layer computing uniform LBP (VLFeat's `vl_lbp`) of its input images.

    docs/reference.md, LBP: the representation of the paper's LBP decoder
    (supplementary Table 4). It has no weights and no useful gradient (the
    patterns are piecewise constant in the image).

    Args:
        cell_size: cell size in pixels (paper: 16).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
        >>> import keras
        >>> from keras_invert.features.lbp import LBP
        >>> inputs = keras.Input((256, 256, 3))
        >>> model = keras.Model(inputs, LBP(cell_size=16)(inputs))
        >>> model.output_shape
        (None, 16, 16, 58)
    """

    def __init__(self, cell_size: int = 16, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(cell_size, int) or isinstance(cell_size, bool) or cell_size < 1:
            raise ValueError(
                f"Expected a positive integer cell_size. Received: cell_size={cell_size!r}"
            )
        self.cell_size = cell_size

    def call(self, inputs):
        return lbp(inputs, cell_size=self.cell_size)

    def compute_output_shape(self, input_shape):
        *batch, height, width, _ = input_shape
        return (
            *batch,
            None if height is None else height // self.cell_size,
            None if width is None else width // self.cell_size,
            LBP_NUM_BINS,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"cell_size": self.cell_size})
        return config
