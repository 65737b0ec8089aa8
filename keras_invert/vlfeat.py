"""VLFeat's C library through ctypes: the reference the paper's features come from.

The paper computed HOG, LBP and SIFT with VLFeat 0.9.x defaults (SPEC.md section 1).
Debian and Ubuntu ship the library as `libvlfeat1` (`libvl.so.1`); this module
binds the few C functions we need, with no compiled extension of our own. It is
used as the exact reference in tests and by the `vlfeat` SIFT backend.

Images are passed as NumPy arrays in our layout (`[H, W]` or `[H, W, C]`,
channels last) and converted to VLFeat's channel-major, x-fastest layout here.

Example:
    >>> from keras_invert import vlfeat
    >>> if vlfeat.is_available():
    ...     features = vlfeat.hog(image_hwc, cell_size=8, num_orientations=9)
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
_vl_bool = ctypes.c_int
_VL_HOG_VARIANT_UOCTTI = 1


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
    library.vl_hog_put_image.argtypes = [pointer, float_pointer, _vl_size, _vl_size, _vl_size, _vl_size]
    library.vl_hog_put_image.restype = None
    library.vl_hog_get_width.argtypes = [pointer]
    library.vl_hog_get_width.restype = _vl_size
    library.vl_hog_get_height.argtypes = [pointer]
    library.vl_hog_get_height.restype = _vl_size
    library.vl_hog_get_dimension.argtypes = [pointer]
    library.vl_hog_get_dimension.restype = _vl_size
    library.vl_hog_extract.argtypes = [pointer, float_pointer]
    library.vl_hog_extract.restype = None


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
        library.vl_hog_put_image(handle, _as_float_pointer(planes), width, height, channels, cell_size)
        hog_width = library.vl_hog_get_width(handle)
        hog_height = library.vl_hog_get_height(handle)
        dimension = library.vl_hog_get_dimension(handle)
        features = np.zeros((dimension, hog_height, hog_width), dtype=np.float32)
        library.vl_hog_extract(handle, _as_float_pointer(features))
    finally:
        library.vl_hog_delete(handle)
    return features.transpose(1, 2, 0).copy()
