"""SIFT keypoints rasterised into a dense map, through VLFeat or OpenCV.

Implements docs/reference.md, SIFT: the paper ran VLFeat's `vl_sift` with its
defaults (3 levels per octave, first octave 0, automatic number of octaves,
peak threshold 0, edge threshold 10), kept the first orientation of every
keypoint and wrote the keypoints into a map of `(H // 4) x (W // 4)` cells of
133 channels (supplementary Table 3):

| channels | content                                            |
|----------|----------------------------------------------------|
| 0..127   | VLFeat's normalised descriptor (unit L2 norm)      |
| 128, 129 | sin(angle), cos(angle)                             |
| 130, 131 | dx = x - 4 * cx, dy = y - 4 * cy (in [0, 4))       |
| 132      | log(sigma)                                         |

The keypoint at (x, y) (pixel centres at integers, y down) goes to cell
`map[floor(y / 4), floor(x / 4)]`; empty cells are zero; a later keypoint (in
the library's detection order) overwrites an earlier one in the same cell; a
keypoint whose cell lies outside the map (only possible when H or W is not a
multiple of 4) is dropped. An image without keypoints gives an all-zero map.

Backends, with one output convention (VLFeat's):
- `"vlfeat"`: `libvl` through `keras_invert.vlfeat.sift_keypoints`; the
  paper's exact features. Used by default when `libvl` loads.
- `"opencv"`: `cv2.SIFT_create(nOctaveLayers=3, contrastThreshold=0,
  edgeThreshold=10, sigma=1.6, enable_precise_upscale=True)`, converted to
  VLFeat's conventions as measured on the same images: descriptor divided by
  512 and its orientation bins reversed (VLFeat bin t is OpenCV bin -t mod 8;
  the 4x4 spatial order is the same); angle from degrees to radians (same
  direction, both in [0, 2 pi)); sigma = size / 2. OpenCV always doubles the
  image first (first octave -1, not settable): its keypoints from that extra
  octave are dropped, so that the detector covers the scales of VLFeat's first
  octave 0. OpenCV returns one keypoint per orientation; only the one with the
  smallest angle is kept, as VLFeat's first orientation is its first histogram
  peak counted from angle 0. What still differs: OpenCV builds octave 0 from
  its upsampled image, takes uint8 images only (float input is rounded and
  clipped to 0..255; this alone moves ~9% of VLFeat's keypoints), and its
  sub-pixel refinement, orientation histogram and descriptor interpolation
  differ in detail. On 256x256 photos ~80% of VLFeat's cells also hold an
  OpenCV keypoint, and matched descriptors differ by ~0.17 in L2 (see
  tests/features/test_sift.py).

Example:
    >>> import numpy as np
    >>> from keras_invert.features.sift import sift
    >>> image = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype("float32")
    >>> sift(image).shape
    (16, 16, 133)
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import vlfeat
from keras_invert.image_checks import as_images

SIFT_CELL_SIZE = 4
SIFT_DESCRIPTOR_SIZE = 128
SIFT_NUM_CHANNELS = SIFT_DESCRIPTOR_SIZE + 5
SIFT_BACKENDS = ("vlfeat", "opencv")
# tf.image.rgb_to_grayscale's luma weights.
_LUMA_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)
# OpenCV writes descriptors multiplied by this (SIFT_INT_DESCR_FCTR).
_OPENCV_DESCRIPTOR_SCALE = 512.0
_OPENCV_EXTRA_OCTAVE = -1


def sift_output_size(size: int) -> int:
    """Number of map cells along a side of `size` pixels."""
    return size // SIFT_CELL_SIZE


def _opencv_to_vlfeat_bins() -> np.ndarray:
    """Index array `p` with `vlfeat_descriptor = opencv_descriptor[p]`.

    Both store spatial bin (row, column) major and the 8 orientations fastest;
    OpenCV counts orientation bins the other way round (measured: with this
    permutation the median L2 distance of matched descriptors drops from ~0.9
    to ~0.1, and no other flip or shift does better).
    """
    bins = np.arange(SIFT_DESCRIPTOR_SIZE).reshape(4, 4, 8)
    return bins[:, :, (-np.arange(8)) % 8].reshape(-1)


_OPENCV_TO_VLFEAT_BINS = _opencv_to_vlfeat_bins()


@functools.cache
def default_backend() -> str:
    """`"vlfeat"` when `libvl` loads, else `"opencv"` (logged once)."""
    backend = "vlfeat" if vlfeat.is_available() else "opencv"
    logging.info(
        "SIFT backend: %s (libvl %s).",
        backend,
        "loaded" if backend == "vlfeat" else "not available",
    )
    return backend


def _resolve_backend(backend: str | None) -> str:
    if backend is None:
        return default_backend()
    if backend not in SIFT_BACKENDS:
        raise ValueError(
            f"Expected a backend in {SIFT_BACKENDS} or None. Received: backend={backend!r}"
        )
    return backend


def _to_gray(image) -> np.ndarray:
    """`[H, W]`, `[H, W, 1]` or `[H, W, 3]` (0..255) -> float32 `[H, W]`."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 3):
        image = image.astype(np.float32)
        image = image[..., 0] if image.shape[-1] == 1 else image @ _LUMA_WEIGHTS
    elif image.ndim == 2:
        image = image.astype(np.float32)
    else:
        raise ValueError(
            f"Expected one image [H, W], [H, W, 1] or [H, W, 3]. Received: shape={image.shape!r}"
        )
    if min(image.shape) < SIFT_CELL_SIZE:
        raise ValueError(
            f"SIFT maps need images of at least {SIFT_CELL_SIZE}x{SIFT_CELL_SIZE} pixels (one "
            f"map cell). Received: shape={image.shape!r}"
        )
    return np.ascontiguousarray(image)


def _opencv_keypoints(gray: np.ndarray) -> dict[str, np.ndarray]:
    import cv2

    detector = cv2.SIFT_create(
        nfeatures=0,
        nOctaveLayers=3,
        contrastThreshold=0.0,  # VLFeat's peak threshold 0.
        edgeThreshold=10,
        sigma=1.6,
        descriptorType=cv2.CV_32F,
        # Maps x to 2x when doubling: measured ~25% more cells in agreement with VLFeat.
        enable_precise_upscale=True,
    )
    # OpenCV's SIFT only accepts uint8.
    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    keypoints, descriptors = detector.detectAndCompute(pixels, None)
    if descriptors is None:
        descriptors = np.zeros((0, SIFT_DESCRIPTOR_SIZE), np.float32)
    rows = np.array(
        [(k.pt[0], k.pt[1], k.size, k.angle, k.octave & 0xFF) for k in keypoints], np.float64
    ).reshape(-1, 5)
    x, y, size, degrees, octave = rows.T
    octave = np.where(octave > 127, octave - 256, octave)  # OpenCV packs it as a signed byte.
    angle = np.mod(np.deg2rad(degrees), 2 * np.pi)
    keep = octave != _OPENCV_EXTRA_OCTAVE
    # One keypoint per (position, scale): VLFeat's first orientation is the smallest angle.
    order = np.lexsort((angle, octave, size, y, x))
    first = np.ones(len(order), bool)
    same = (
        (x[order][1:] == x[order][:-1])
        & (y[order][1:] == y[order][:-1])
        & (size[order][1:] == size[order][:-1])
        & (octave[order][1:] == octave[order][:-1])
    )
    first[1:] = ~same
    keep &= np.isin(np.arange(len(x)), order[first])
    index = np.flatnonzero(keep)  # The library's order is kept.
    return {
        "x": x[index].astype(np.float32),
        "y": y[index].astype(np.float32),
        "sigma": (size[index] / 2).astype(np.float32),
        "angle": angle[index].astype(np.float32),
        "descriptor": descriptors[index][:, _OPENCV_TO_VLFEAT_BINS] / _OPENCV_DESCRIPTOR_SCALE,
    }


def sift_keypoints(image, backend: str | None = None) -> dict[str, np.ndarray]:
    """SIFT keypoints of one image in VLFeat's conventions, in detection order.

    Args:
        image: `[H, W]`, `[H, W, 1]` or `[H, W, 3]` numpy array, uint8 or float
            in 0..255; RGB is converted with `tf.image.rgb_to_grayscale`'s weights.
        backend: `"vlfeat"`, `"opencv"` or None (VLFeat when `libvl` loads).

    Returns:
        Dict of float32 arrays: `x`, `y`, `sigma`, `angle` (radians, [0, 2 pi))
        each `[K]`, and `descriptor` `[K, 128]` (unit L2 norm).
    """
    backend = _resolve_backend(backend)
    gray = _to_gray(image)
    if backend == "vlfeat":
        return vlfeat.sift_keypoints(gray)
    return _opencv_keypoints(gray)


def keypoint_map(keypoints: dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterises keypoints (as `sift_keypoints` returns them) into a `[H//4, W//4, 133]` map."""
    rows, cols = sift_output_size(height), sift_output_size(width)
    features = np.zeros((rows, cols, SIFT_NUM_CHANNELS), np.float32)
    x = np.asarray(keypoints["x"], np.float32)
    y = np.asarray(keypoints["y"], np.float32)
    cx = np.floor(x / SIFT_CELL_SIZE).astype(np.int64)
    cy = np.floor(y / SIFT_CELL_SIZE).astype(np.int64)
    inside = (cx >= 0) & (cx < cols) & (cy >= 0) & (cy < rows)
    # NumPy leaves the winner of repeated indices in one assignment unspecified:
    # keep the last keypoint of each cell explicitly.
    cell = np.where(inside, cy * cols + cx, -1)
    reversed_cells = cell[::-1]
    _, first_in_reversed = np.unique(reversed_cells, return_index=True)
    last = len(cell) - 1 - first_in_reversed
    last = last[cell[last] >= 0]
    angle = np.asarray(keypoints["angle"], np.float32)[last]
    values = np.concatenate(
        [
            np.asarray(keypoints["descriptor"], np.float32)[last],
            np.sin(angle)[:, None],
            np.cos(angle)[:, None],
            (x[last] - SIFT_CELL_SIZE * cx[last])[:, None],
            (y[last] - SIFT_CELL_SIZE * cy[last])[:, None],
            np.log(np.asarray(keypoints["sigma"], np.float32)[last])[:, None],
        ],
        axis=1,
    )
    features[cy[last], cx[last]] = values
    return features


def sift(image, backend: str | None = None) -> np.ndarray:
    """The paper's SIFT keypoint map of one image.

    Args:
        image: `[H, W]`, `[H, W, 1]` or `[H, W, 3]` numpy array, uint8 or float
            in 0..255, at least 4x4.
        backend: `"vlfeat"`, `"opencv"` or None (VLFeat when `libvl` loads).

    Returns:
        float32 `[H // 4, W // 4, 133]` (layout in the module docstring).
    """
    keypoints = sift_keypoints(image, backend)
    height, width = np.shape(image)[:2]
    return keypoint_map(keypoints, height, width)


def sift_batch(images, backend: str | None = None) -> np.ndarray:
    """`sift` of every image of a `[N, H, W, C]` (or `[N, H, W]`) numpy batch.

    Returns:
        float32 `[N, H // 4, W // 4, 133]`.
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(
            f"Expected a batch [N, H, W] or [N, H, W, C]. Received: shape={images.shape!r}"
        )
    backend = _resolve_backend(backend)
    height, width = images.shape[1:3]
    if len(images) == 0:
        return np.zeros(
            (0, sift_output_size(height), sift_output_size(width), SIFT_NUM_CHANNELS), np.float32
        )
    return np.stack([sift(image, backend) for image in images])


def sift_tf(images, backend: str | None = None) -> tf.Tensor:
    """`sift` as a TensorFlow op (`tf.numpy_function`), e.g. for `tf.data.Dataset.map`.

    The computation runs in Python on the host (it is not part of a SavedModel
    and has no gradient); the static output shape is set from the input's.

    Args:
        images: float32 (or uint8) tensor `[H, W, C]` or `[N, H, W, C]`, 0..255,
            C = 1 or 3.
        backend: `"vlfeat"`, `"opencv"` or None (resolved now, when tracing).

    Returns:
        float32 `[H // 4, W // 4, 133]` or `[N, H // 4, W // 4, 133]`.
    """
    images = as_images(images)
    rank = images.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            f"Expected images [H, W, C] or [N, H, W, C]. Received: shape={images.shape}"
        )
    backend = _resolve_backend(backend)
    function = sift if rank == 3 else sift_batch
    features = tf.numpy_function(
        lambda array: function(array, backend), [images], tf.float32, stateful=False
    )
    height, width = images.shape[-3], images.shape[-2]
    features.set_shape(
        images.shape[:-3].concatenate(
            [
                None if height is None else sift_output_size(height),
                None if width is None else sift_output_size(width),
                SIFT_NUM_CHANNELS,
            ]
        )
    )
    return features
