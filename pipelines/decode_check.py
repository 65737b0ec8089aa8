"""The decode check of a file source: which listed photos the stream may use.

Listed files that do not decode (truncated, corrupt) are left out before the
stream's positions are fixed (`pipelines.stream`), each named in a warning,
so the stream stays exact, and a source where no file decodes is a
ValueError that names them rather than a repeated stream that never yields.
Every listed file is checked once when a dataset is built (in parallel,
remembered per process; decoded in full for sources of up to
`FULL_DECODE_CHECK_LIMIT` files: on 2 CPU cores 0.2-0.3 s for the 29 bundled
photos, about 2.5 ms per 500x375 JPEG; larger sources get a check of each
file's first and last bytes, `complete`). A training stream's photos whose
short side is smaller than its crops are counted in one warning: they are
upscaled.

Example:
    >>> source = decodable(sources.resolve("samples", "train"))
    >>> len(source.files)
    23
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time

import tensorflow as tf
from absl import logging

from keras_invert import images
from pipelines import image_headers, sources

_CHECKED: dict[tuple, tuple[bool, tuple[int, int] | None]] = {}
"""By (path, size, modification time), once per file: whether it passed the check,
and its (height, width) where the check read it."""

_WARNED_SMALL: set[tuple] = set()
"""The (source, split, image size) whose small photos were named: once per process."""

FULL_DECODE_CHECK_LIMIT = 20_000
"""Sources of at most this many files are decoded in full once; larger ones get `complete`."""


def decodable(source: sources.Source, *, image_size: int | None = None) -> sources.Source:
    """`source` without the files that do not decode, each named in a warning.

    Each listed file is checked once, in parallel, and the answer remembered
    for the process (by path, size and modification time), so a file that
    fails is left out before the positions are fixed: the stream and its
    resumption stay exact, and a source where no file passes fails here
    instead of spinning forever in a repeated stream that yields nothing.
    A source of up to `FULL_DECODE_CHECK_LIMIT` files is decoded in full
    (about 2.5 ms per 500x375 JPEG on one core); a larger one (ImageNet's
    1.28 million photos would take an hour on 2 cores) gets a structural check
    of each file's first and last bytes (`complete`), which finds truncated
    and empty files and files that are no image; a photo corrupt inside is
    then dropped when the stream decodes it.

    With `image_size` (the training crops' side), the photos whose short
    side is smaller are counted in one warning, with the smallest size,
    once per process: their crops are upscaled, so the decoder learns from
    blurred images. Not refused: a few small photos may be meant. (Above
    the limit a JPEG's size is not read, so those are not counted.)

    Raises:
        ValueError: no listed file passes (naming them).
    """
    if source.files is None:
        return source  # TFDS records: the stream drops what does not decode.
    checked = _check(source)
    files = tuple(path for path, (passed, _) in zip(source.files, checked, strict=True) if passed)
    failed = [path for path, (passed, _) in zip(source.files, checked, strict=True) if not passed]
    for path in failed:
        logging.warning(
            "Leaving out %s: it does not decode (truncated or corrupt), or has more than "
            "%d pixels (image_headers.MAX_PIXELS).", path, image_headers.MAX_PIXELS,
        )  # fmt: skip
    if not files:
        named = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if failed[10:] else "")
        raise ValueError(
            f"Expected photos that decode; none of the {len(failed)} files of split "
            f"{source.split!r} does (truncated or corrupt): {named}. "
            f"Received: source={source.source!r}"
        )
    if image_size is not None:
        _warn_small(source, [size for passed, size in checked if passed and size], image_size)
    return dataclasses.replace(source, files=files)


def _check(source: sources.Source) -> list[tuple[bool, tuple[int, int] | None]]:
    """The check of each of `source`'s files, run where it has not been yet (in parallel)."""
    start = time.perf_counter()
    keys = [_file_key(path) for path in source.files]
    unknown = {
        key: path for key, path in zip(keys, source.files, strict=True) if key not in _CHECKED
    }
    full = len(source.files) <= FULL_DECODE_CHECK_LIMIT
    check = _decoded_size if full else _complete_size
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        _CHECKED.update(zip(unknown, pool.map(check, unknown.values()), strict=True))
    seconds = time.perf_counter() - start
    if seconds > 1.0:
        logging.info(
            "Checked %d photos of %s split %r once (%s): %.1f s.",
            len(unknown), source.source, source.split, "decodes" if full else "complete", seconds,
        )  # fmt: skip
    return [_CHECKED[key] for key in keys]


def _warn_small(source: sources.Source, sizes: list[tuple[int, int]], image_size: int) -> None:
    small = [size for size in sizes if min(size) < image_size]
    key = (source.source, source.split, image_size)
    if not small or key in _WARNED_SMALL:
        return
    _WARNED_SMALL.add(key)
    height, width = min(small, key=lambda size: (min(size), size[0] * size[1]))
    logging.warning(
        "%d of the %d photos of %s split %r are smaller than the %d x %d crops (the "
        "smallest: %d x %d pixels, width x height): their crops are upscaled, so the "
        "decoder learns from blurred images.",
        len(small), len(sizes), source.source, source.split, image_size, image_size, width, height,
    )  # fmt: skip


def _file_key(path: str) -> tuple:
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None, None)
    return (path, stat.st_size, stat.st_mtime_ns)


def decodes(path: str) -> bool:
    """Whether the stream's decode step decodes the file (run eagerly, in a worker thread).

    A file with more pixels than `image_headers.MAX_PIXELS` does not: decoding
    it could exhaust the memory of every process that reads the source.
    """
    return _decoded_size(path)[0]


def _decoded_size(path: str) -> tuple[bool, tuple[int, int] | None]:
    """`decodes(path)`, and the decoded photo's (height, width) when it does."""
    try:
        contents = tf.io.read_file(path)
        image_headers.check_pixel_count(contents.numpy(), "path", path)
        image = images.decode(contents)
    except (tf.errors.OpError, ValueError):
        return False, None
    return True, (int(image.shape[0]), int(image.shape[1]))


# What the last bytes of a whole JPEG and PNG hold (a JPEG may carry a few
# bytes after its end marker, hence a search in the tail).
_END_MARKERS = {"jpeg": b"\xff\xd9", "png": b"IEND"}
_TAIL_BYTES = 64


def complete(path: str) -> bool:
    """Whether the file starts as an image format does and is not cut short.

    Reads the first and last bytes only: JPEG, PNG and GIF must end with
    their end marker, BMP and WebP must be as long as their header says. A
    PNG, GIF, BMP or WebP header of more than `image_headers.MAX_PIXELS`
    pixels fails too (a JPEG's size is further in: the stream reads it).
    """
    return _complete_size(path)[0]


def _complete_size(path: str) -> tuple[bool, tuple[int, int] | None]:
    """`complete(path)`, and the (height, width) its header gives (not a JPEG's)."""
    try:
        with open(path, "rb") as file:
            head = file.read(32)
            size = os.fstat(file.fileno()).st_size
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError:
        return False, None
    pixels = image_headers.pixel_size(head)  # PNG, GIF, BMP, WebP: in the first 30 bytes.
    if pixels is not None and pixels[0] * pixels[1] > image_headers.MAX_PIXELS:
        return False, None
    image_format = image_headers.image_format(head)
    if image_format in _END_MARKERS:
        passed = _END_MARKERS[image_format] in tail
    elif image_format == "gif":  # The trailer byte is the file's last.
        passed = tail.endswith(b"\x3b")
    elif image_format == "bmp":  # Little-endian file size at byte 2.
        passed = len(head) >= 6 and int.from_bytes(head[2:6], "little") <= size
    elif image_format == "webp":  # RIFF chunk size at byte 4 counts the bytes after byte 8.
        passed = int.from_bytes(head[4:8], "little") + 8 <= size
    else:
        passed = False
    return passed, pixels[::-1] if passed and pixels is not None else None
