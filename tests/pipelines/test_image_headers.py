"""pipelines.image_headers: the size in a file's header, and photos too large to decode."""

import numpy as np
import pytest

from pipelines import decode_check, image_headers
from pipelines.photos import read_image

FORMATS = [
    ("JPEG", {}),
    ("JPEG", {"progressive": True, "exif": b"Exif\x00\x00" + bytes(3000)}),
    ("PNG", {}),
    ("GIF", {}),
    ("BMP", {}),
    ("WEBP", {"lossless": False}),
    ("WEBP", {"lossless": True}),
]


@pytest.mark.parametrize("image_format, options", FORMATS)
def test_the_header_gives_the_decoded_size(encode_image, image_format, options):
    array = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    data = encode_image(array, image_format, **options)
    assert image_headers.pixel_size(data) == (53, 37)
    assert image_headers.image_format(data[:12]) == image_format.lower()


def test_what_is_no_image_header_has_no_size():
    assert image_headers.pixel_size(b"not an image at all") is None
    assert image_headers.pixel_size(b"\xff\xd8\xff") is None  # A JPEG cut after its start.


def test_a_photo_with_too_many_pixels_is_refused_before_it_is_decoded(
    tmp_path, encode_image, monkeypatch
):
    array = np.zeros((40, 60, 3), np.uint8)
    big, small = tmp_path / "big.png", tmp_path / "small.jpg"
    big.write_bytes(encode_image(array, "PNG"))
    small.write_bytes(encode_image(array[:10, :10], "JPEG"))
    monkeypatch.setattr(image_headers, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"at most 1,000 pixels .*images='.*big.png', 60x40"):
        read_image(str(big), name="images")
    assert read_image(str(small)).shape == (10, 10, 3)
    # A source leaves it out, as it leaves out a file that does not decode.
    assert not decode_check.decodes(str(big)) and decode_check.decodes(str(small))
    assert not decode_check.complete(str(big)) and decode_check.complete(str(small))
