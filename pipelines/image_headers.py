"""What an image file's first bytes say: its format and its pixel size, without decoding it.

`image_format` tells JPEG, PNG, GIF, BMP and WebP files apart (a folder
source lists only those). `pixel_size` reads the width and height from the
header, so that a photo too large to decode safely (`MAX_PIXELS`) is refused
or left out with a message instead of the process being killed for memory:
decoding goes through 16-bit and float copies, about 40 bytes a pixel at the
peak (an 8000 x 8000 PNG took 2.1 GB more).

Example:
    >>> image_format(open("photo.jpg", "rb").read(12)), pixel_size(open("photo.jpg", "rb").read())
    ('jpeg', (500, 375))
"""

from __future__ import annotations

MAX_PIXELS = 100_000_000
"""The most pixels a photo may have (width x height): 100 megapixels, about 4 GB to decode."""

_MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
    b"BM": "bmp",
}
# JPEG start-of-frame markers (baseline, progressive, lossless, ...): the ones in
# 0xC0..0xCF but the Huffman table (C4), the extension (C8) and arithmetic table (CC).
_JPEG_FRAMES = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_format(head: bytes) -> str | None:
    """ "jpeg", "png", "gif", "bmp" or "webp" from a file's first 12 bytes, else None."""
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    return "webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None


def pixel_size(contents: bytes) -> tuple[int, int] | None:
    """`(width, height)` from an image file's header; None where it cannot be read there."""
    kind = image_format(contents[:12])
    if kind == "png" and len(contents) >= 24:
        return _big(contents[16:20]), _big(contents[20:24])
    if kind == "gif" and len(contents) >= 10:
        return _little(contents[6:8]), _little(contents[8:10])
    if kind == "bmp" and len(contents) >= 26:
        width = int.from_bytes(contents[18:22], "little", signed=True)
        height = int.from_bytes(contents[22:26], "little", signed=True)
        return abs(width), abs(height)  # A negative height: rows stored top-down.
    if kind == "webp":
        return _webp_size(contents)
    if kind == "jpeg":
        return _jpeg_size(contents)
    return None


def check_pixel_count(contents: bytes, name: str, path: str) -> None:
    """Refuses an image file with more than `MAX_PIXELS` pixels, naming it as `name`."""
    size = pixel_size(contents)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ValueError(
            f"Expected an image of at most {MAX_PIXELS:,} pixels (decoding takes about 40 "
            f"bytes a pixel). Received: {name}={path!r}, "
            f"{size[0]}x{size[1]} pixels"
        )


def _big(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _little(data: bytes) -> int:
    return int.from_bytes(data, "little")


def _webp_size(contents: bytes) -> tuple[int, int] | None:
    chunk = contents[12:16]
    if chunk == b"VP8 " and len(contents) >= 30:  # Lossy: 14-bit sizes after the frame tag.
        return _little(contents[26:28]) & 0x3FFF, _little(contents[28:30]) & 0x3FFF
    if chunk == b"VP8L" and len(contents) >= 25:  # Lossless: 14 bits each, minus one.
        bits = _little(contents[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(contents) >= 30:  # Extended: 24-bit canvas sizes, minus one.
        return _little(contents[24:27]) + 1, _little(contents[27:30]) + 1
    return None


def _jpeg_size(contents: bytes) -> tuple[int, int] | None:
    position = 2  # After the start-of-image marker.
    while position + 4 <= len(contents):
        if contents[position] != 0xFF:
            return None
        marker = contents[position + 1]
        if marker == 0xFF:  # Fill bytes before a marker.
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # Markers without a segment.
            position += 2
            continue
        length = _big(contents[position + 2 : position + 4])
        if marker in _JPEG_FRAMES:
            if position + 9 > len(contents):
                return None
            height = _big(contents[position + 5 : position + 7])
            width = _big(contents[position + 7 : position + 9])
            return width, height
        position += 2 + length
    return None
