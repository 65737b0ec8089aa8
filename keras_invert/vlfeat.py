"""VLFeat's C library through ctypes: the reference the paper's features come from.

The paper computed HOG, LBP and SIFT with VLFeat 0.9.x defaults (docs/reference.md).
Debian and Ubuntu ship the library as `libvlfeat1` (`libvl.so.1`); this module
binds the few C functions we need, with no compiled extension of our own. It is
used as the exact reference in tests and by the `vlfeat` SIFT backend.

Images are passed as NumPy arrays in our layout (`[H, W]` or `[H, W, C]`,
channels last) and converted to VLFeat's channel-major, x-fastest layout here.

Example:
    >>> from keras_invert import vlfeat
    >>> if vlfeat.is_available():
    ...     features = vlfeat.hog(image_hwc, cell_size=8, num_orientations=9)
    ...     patterns = vlfeat.lbp(gray_hw, cell_size=16)  # [H // 16, W // 16, 58]
    ...     keypoints = vlfeat.sift_keypoints(gray_hw)  # dict: x, y, sigma, angle, descriptor
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

import numpy as np

# Tried in order. `KERAS_INVERT_LIBVL` lets a user point at a self-built library.
_LIBRARY_NAMES = ("libvl.so.1", "libvl.so", "libvl.dylib")

_vl_size = ctypes.c_uint64
_vl_index = ctypes.c_int64
_vl_bool = ctypes.c_int
_VL_HOG_VARIANT_UOCTTI = 1
_VL_LBP_UNIFORM = 0
_VL_ERR_EOF = 5
_LBP_DIMENSION = 58
_SIFT_DESCRIPTOR_SIZE = 128


class _VlSiftKeypoint(ctypes.Structure):
    """`VlSiftKeypoint` from `vl/sift.h`."""

    _fields_ = [
        ("o", ctypes.c_int),
        ("ix", ctypes.c_int),
        ("iy", ctypes.c_int),
        ("is_", ctypes.c_int),
        ("x", ctypes.c_float),
        ("y", ctypes.c_float),
        ("s", ctypes.c_float),
        ("sigma", ctypes.c_float),
    ]


class _VlSiftFilt(ctypes.Structure):
    """`VlSiftFilt` from `vl/sift.h`.

    Declared in full because the keypoint list and the thresholds are read and
    written through `VL_INLINE` accessors that the shared library does not export.
    """

    _fields_ = [
        ("sigman", ctypes.c_double),
        ("sigma0", ctypes.c_double),
        ("sigmak", ctypes.c_double),
        ("dsigma0", ctypes.c_double),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("O", ctypes.c_int),
        ("S", ctypes.c_int),
        ("o_min", ctypes.c_int),
        ("s_min", ctypes.c_int),
        ("s_max", ctypes.c_int),
        ("o_cur", ctypes.c_int),
        ("temp", ctypes.c_void_p),
        ("octave", ctypes.c_void_p),
        ("dog", ctypes.c_void_p),
        ("octave_width", ctypes.c_int),
        ("octave_height", ctypes.c_int),
        ("gaussFilter", ctypes.c_void_p),
        ("gaussFilterSigma", ctypes.c_double),
        ("gaussFilterWidth", _vl_size),
        ("keys", ctypes.POINTER(_VlSiftKeypoint)),
        ("nkeys", ctypes.c_int),
        ("keys_res", ctypes.c_int),
        ("peak_thresh", ctypes.c_double),
        ("edge_thresh", ctypes.c_double),
        ("norm_thresh", ctypes.c_double),
        ("magnif", ctypes.c_double),
        ("windowSize", ctypes.c_double),
        ("grad", ctypes.c_void_p),
        ("grad_o", ctypes.c_int),
    ]


class VLFeatUnavailableError(RuntimeError):
    """Raised when `libvl` cannot be loaded."""


@functools.cache
def _library() -> ctypes.CDLL:
    candidates = []
    if os.environ.get("KERAS_INVERT_LIBVL"):
        candidates.append(os.environ["KERAS_INVERT_LIBVL"])
    candidates.extend(_LIBRARY_NAMES)
    found = ctypes.util.find_library("vl")
    if found:
        candidates.append(found)
    errors = []
    for name in candidates:
        try:
            library = ctypes.CDLL(name)
        except OSError as error:
            errors.append(f"{name}: {error}")
            continue
        _declare(library)
        return library
    raise VLFeatUnavailableError(
        "VLFeat's shared library (libvl.so.1) could not be loaded. Install it with "
        "`apt-get install libvlfeat1` (Debian/Ubuntu) or set KERAS_INVERT_LIBVL to its path. "
        f"Tried: {'; '.join(errors)}"
    )


def _declare(library: ctypes.CDLL) -> None:
    """Declares argument and return types of the functions used here."""
    pointer = ctypes.c_void_p
    float_pointer = ctypes.POINTER(ctypes.c_float)
    library.vl_hog_new.argtypes = [ctypes.c_int, _vl_size, _vl_bool]
    library.vl_hog_new.restype = pointer
    library.vl_hog_delete.argtypes = [pointer]
    library.vl_hog_delete.restype = None
    library.vl_hog_put_image.argtypes = [
        pointer,
        float_pointer,
        _vl_size,
        _vl_size,
        _vl_size,
        _vl_size,
    ]
    library.vl_hog_put_image.restype = None
    library.vl_hog_get_width.argtypes = [pointer]
    library.vl_hog_get_width.restype = _vl_size
    library.vl_hog_get_height.argtypes = [pointer]
    library.vl_hog_get_height.restype = _vl_size
    library.vl_hog_get_dimension.argtypes = [pointer]
    library.vl_hog_get_dimension.restype = _vl_size
    library.vl_hog_extract.argtypes = [pointer, float_pointer]
    library.vl_hog_extract.restype = None
    library.vl_hog_get_permutation.argtypes = [pointer]
    library.vl_hog_get_permutation.restype = ctypes.POINTER(_vl_index)

    library.vl_lbp_new.argtypes = [ctypes.c_int, _vl_bool]
    library.vl_lbp_new.restype = pointer
    library.vl_lbp_delete.argtypes = [pointer]
    library.vl_lbp_delete.restype = None
    library.vl_lbp_get_dimension.argtypes = [pointer]
    library.vl_lbp_get_dimension.restype = _vl_size
    library.vl_lbp_process.argtypes = [
        pointer,
        float_pointer,
        float_pointer,
        _vl_size,
        _vl_size,
        _vl_size,
    ]
    library.vl_lbp_process.restype = None

    sift_pointer = ctypes.POINTER(_VlSiftFilt)
    keypoint_pointer = ctypes.POINTER(_VlSiftKeypoint)
    library.vl_sift_new.argtypes = [ctypes.c_int] * 5
    library.vl_sift_new.restype = sift_pointer
    library.vl_sift_delete.argtypes = [sift_pointer]
    library.vl_sift_delete.restype = None
    library.vl_sift_process_first_octave.argtypes = [sift_pointer, float_pointer]
    library.vl_sift_process_first_octave.restype = ctypes.c_int
    library.vl_sift_process_next_octave.argtypes = [sift_pointer]
    library.vl_sift_process_next_octave.restype = ctypes.c_int
    library.vl_sift_detect.argtypes = [sift_pointer]
    library.vl_sift_detect.restype = None
    library.vl_sift_calc_keypoint_orientations.argtypes = [
        sift_pointer,
        ctypes.POINTER(ctypes.c_double),
        keypoint_pointer,
    ]
    library.vl_sift_calc_keypoint_orientations.restype = ctypes.c_int
    library.vl_sift_calc_keypoint_descriptor.argtypes = [
        sift_pointer,
        float_pointer,
        keypoint_pointer,
        ctypes.c_double,
    ]
    library.vl_sift_calc_keypoint_descriptor.restype = None


def is_available() -> bool:
    """Returns True when `libvl` loads on this machine."""
    try:
        _library()
    except VLFeatUnavailableError:
        return False
    return True


def _as_float_pointer(array: np.ndarray):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def hog(image: np.ndarray, cell_size: int = 8, num_orientations: int = 9) -> np.ndarray:
    """VLFeat's UoCTTI HOG (`vl_hog_put_image` + `vl_hog_extract`) of one image.

    Args:
        image: `[H, W]` or `[H, W, C]` array, converted to float32 as is (no scaling).
        cell_size: HOG cell size in pixels.
        num_orientations: undirected orientations (31 channels for 9).

    Returns:
        float32 array `[hog_height, hog_width, 4 + 3 * num_orientations]`, channels last.
    """
    library = _library()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"Expected an image [H, W] or [H, W, C]. Received: shape={image.shape!r}")
    height, width, channels = image.shape
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    handle = library.vl_hog_new(_VL_HOG_VARIANT_UOCTTI, num_orientations, 0)
    try:
        library.vl_hog_put_image(
            handle, _as_float_pointer(planes), width, height, channels, cell_size
        )
        hog_width = library.vl_hog_get_width(handle)
        hog_height = library.vl_hog_get_height(handle)
        dimension = library.vl_hog_get_dimension(handle)
        features = np.zeros((dimension, hog_height, hog_width), dtype=np.float32)
        library.vl_hog_extract(handle, _as_float_pointer(features))
    finally:
        library.vl_hog_delete(handle)
    return features.transpose(1, 2, 0).copy()


def hog_flip_permutation(num_orientations: int = 9) -> np.ndarray:
    """VLFeat's `vl_hog_get_permutation` (UoCTTI): channel c of a left-right flipped image's cell.

    Flipping the image flips the cell columns and sends channel `c` of a cell
    to channel `permutation[c]`.
    """
    library = _library()
    handle = library.vl_hog_new(_VL_HOG_VARIANT_UOCTTI, num_orientations, 0)
    try:
        dimension = library.vl_hog_get_dimension(handle)
        permutation = library.vl_hog_get_permutation(handle)
        return np.array([permutation[index] for index in range(dimension)], dtype=np.int64)
    finally:
        library.vl_hog_delete(handle)


def lbp(image: np.ndarray, cell_size: int = 16) -> np.ndarray:
    """VLFeat's uniform LBP (`vl_lbp_process`, `VlLbpUniform`, not transposed) of one image.

    Args:
        image: grayscale `[H, W]` array, converted to float32 as is (no scaling).
        cell_size: cell size in pixels.

    Returns:
        float32 array `[H // cell_size, W // cell_size, 58]`, channels last.
    """
    library = _library()
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"Expected a grayscale image [H, W]. Received: shape={image.shape!r}")
    if not isinstance(cell_size, int) or cell_size < 1:
        raise ValueError(
            f"Expected a positive integer cell_size. Received: cell_size={cell_size!r}"
        )
    height, width = image.shape
    handle = library.vl_lbp_new(_VL_LBP_UNIFORM, 0)
    try:
        dimension = library.vl_lbp_get_dimension(handle)
        # VLFeat writes channel-major: features[k, cy, cx].
        features = np.zeros((dimension, height // cell_size, width // cell_size), np.float32)
        library.vl_lbp_process(
            handle, _as_float_pointer(features), _as_float_pointer(image), width, height, cell_size
        )
    finally:
        library.vl_lbp_delete(handle)
    return features.transpose(1, 2, 0).copy()


def sift_keypoints(
    image: np.ndarray,
    num_levels: int = 3,
    first_octave: int = 0,
    peak_threshold: float = 0.0,
    edge_threshold: float = 10.0,
) -> dict[str, np.ndarray]:
    """VLFeat's SIFT keypoints of one grayscale image, with their first orientation only.

    Runs `vl_sift_new(width, height, -1, num_levels, first_octave)` and, octave by
    octave, `vl_sift_detect`, `vl_sift_calc_keypoint_orientations` and
    `vl_sift_calc_keypoint_descriptor` for the first orientation, as the paper's
    features (VLFeat defaults; docs/reference.md, SIFT). Keypoints for which VLFeat finds
    no orientation (too close to the border) are dropped, as `vl_sift` does.

    Args:
        image: grayscale `[H, W]` array, converted to float32 as is (no scaling).
        num_levels: levels per octave.
        first_octave: index of the first octave (-1 doubles the image first).
        peak_threshold: VLFeat's peak threshold on the DoG value.
        edge_threshold: VLFeat's edge threshold (ratio of principal curvatures).

    Returns:
        Dict of arrays in detection order: `x`, `y` (pixels, x to the right, y
        down, pixel centres at integers), `sigma` (pixels), `angle` (radians, in
        VLFeat's image frame with y down, in `[0, 2*pi)`) each `[K]` float32, and
        `descriptor` `[K, 128]` float32 (VLFeat's normalised vector).
    """
    library = _library()
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"Expected a grayscale image [H, W]. Received: shape={image.shape!r}")
    if image.size == 0:
        raise ValueError(f"Expected a non-empty image. Received: shape={image.shape!r}")
    height, width = image.shape
    filt = library.vl_sift_new(width, height, -1, num_levels, first_octave)
    if not filt:
        raise ValueError(
            f"VLFeat could not build a scale space for this image. Received: shape={image.shape!r}"
        )
    rows = []
    descriptors = []
    angles = (ctypes.c_double * 4)()
    try:
        filt.contents.peak_thresh = peak_threshold
        filt.contents.edge_thresh = edge_threshold
        status = library.vl_sift_process_first_octave(filt, _as_float_pointer(image))
        while status != _VL_ERR_EOF:
            library.vl_sift_detect(filt)
            keys = filt.contents.keys
            for index in range(filt.contents.nkeys):
                keypoint = keys[index]
                count = library.vl_sift_calc_keypoint_orientations(
                    filt, angles, ctypes.byref(keypoint)
                )
                if count == 0:
                    continue
                descriptor = np.zeros(_SIFT_DESCRIPTOR_SIZE, np.float32)
                library.vl_sift_calc_keypoint_descriptor(
                    filt, _as_float_pointer(descriptor), ctypes.byref(keypoint), angles[0]
                )
                rows.append((keypoint.x, keypoint.y, keypoint.sigma, angles[0]))
                descriptors.append(descriptor)
            status = library.vl_sift_process_next_octave(filt)
    finally:
        library.vl_sift_delete(filt)
    table = np.asarray(rows, np.float32).reshape(-1, 4)
    return {
        "x": table[:, 0].copy(),
        "y": table[:, 1].copy(),
        "sigma": table[:, 2].copy(),
        "angle": table[:, 3].copy(),
        "descriptor": np.asarray(descriptors, np.float32).reshape(-1, _SIFT_DESCRIPTOR_SIZE),
    }
