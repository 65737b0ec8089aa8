"""Reads Caffe `.caffemodel` files without Caffe or a compiled `caffe.proto`.

A `.caffemodel` is one serialized protobuf `NetParameter`. Only the few fields
that hold learned weights are decoded, by a small reader of the protobuf wire
format; every other field is skipped by its wire type. Field numbers, from
Caffe's `src/caffe/proto/caffe.proto`:

* `NetParameter`: `layer = 100` (`LayerParameter`, current format) and the
  legacy `layers = 2` (`V1LayerParameter`, models saved before 2015, such as
  the BVLC reference CaffeNet).
* `LayerParameter`: `name = 1`, `blobs = 7`.
* `V1LayerParameter`: `name = 4`, `blobs = 6`, and `layer = 1` holding a
  `V0LayerParameter` (`name = 1`, `blobs = 50`) in the oldest files.
* `BlobProto`: `num = 1`, `channels = 2`, `height = 3`, `width = 4` (the old
  4-d shape), `data = 5` (packed float), `shape = 7` (`BlobShape`:
  `dim = 1`, packed int64), `double_data = 8` (packed double).

Repeated numbers are accepted both packed and unpacked, as protobuf parsers
must. A file that ends inside a field, or whose blob sizes disagree with their
shapes, raises `CaffeFormatError`; nothing is returned half-read.

Example:
    >>> from keras_invert.weights import read_caffemodel
    >>> blobs = read_caffemodel("bvlc_reference_caffenet.caffemodel")
    >>> [blob.shape for blob in blobs["conv1"]]
    [(96, 3, 11, 11), (96,)]
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5

_NET_LAYER, _NET_LAYERS_V1 = 100, 2
_LAYER_NAME, _LAYER_BLOBS = 1, 7
_V1_NAME, _V1_BLOBS, _V1_V0_LAYER = 4, 6, 1
_V0_NAME, _V0_BLOBS = 1, 50
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA = 5, 7, 8
_SHAPE_DIM = 1


class CaffeFormatError(ValueError):
    """Raised when a file is not a readable Caffe `NetParameter`."""


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Reads the learned blobs of every layer in a `.caffemodel`.

    Args:
        path: the `.caffemodel` file.

    Returns:
        Layer name to its blobs in Caffe's layout (convolution weights
        `[out, in / groups, h, w]`, inner product weights `[out, in]`, or the
        legacy 4-d `[1, 1, out, in]`; biases `[out]` or `[1, 1, 1, out]`),
        float32, in file order. Layers without blobs are left out.

    Raises:
        CaffeFormatError: the file is truncated or not a `NetParameter`.
    """
    with open(path, "rb") as file:
        buffer = memoryview(file.read())
    try:
        return _read_net(buffer)
    except CaffeFormatError as error:
        raise CaffeFormatError(
            f"Expected a Caffe .caffemodel (a NetParameter protobuf); {error}. "
            f"Received: path={os.fspath(path)!r}"
        ) from None


def _read_net(buffer: memoryview) -> dict[str, list[np.ndarray]]:
    layers = {}
    for field, wire, value in _fields(buffer):
        if field == _NET_LAYER and wire == _LENGTH_DELIMITED:
            name, blobs = _read_layer(value, _LAYER_NAME, _LAYER_BLOBS)
        elif field == _NET_LAYERS_V1 and wire == _LENGTH_DELIMITED:
            name, blobs = _read_layer(value, _V1_NAME, _V1_BLOBS)
        else:
            continue
        if not blobs:
            continue
        if name in layers:
            raise CaffeFormatError(f"two layers named {name!r} both carry weights")
        layers[name] = blobs
    return layers


def _read_layer(buffer: memoryview, name_field: int, blobs_field: int):
    name, blobs = None, []
    for field, wire, value in _fields(buffer):
        if wire != _LENGTH_DELIMITED:
            continue
        if field == name_field:
            name = _text(value)
        elif field == blobs_field:
            blobs.append(_read_blob(value, name))
        elif name_field == _V1_NAME and field == _V1_V0_LAYER:
            # V1 layers upgraded from V0 keep name and blobs in the inner message.
            inner_name, inner_blobs = _read_layer(value, _V0_NAME, _V0_BLOBS)
            name = name or inner_name
            blobs.extend(inner_blobs)
    if blobs and not name:
        raise CaffeFormatError("a layer with weights has no name")
    return name, blobs


def _read_blob(buffer: memoryview, layer_name) -> np.ndarray:
    legacy_shape = {}
    shape = None
    floats, doubles = [], []
    for field, wire, value in _fields(buffer):
        if field in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH) and wire == _VARINT:
            legacy_shape[field] = _int32(value)
        elif field == _BLOB_SHAPE and wire == _LENGTH_DELIMITED:
            shape = [
                dim
                for inner_field, inner_wire, inner_value in _fields(value)
                if inner_field == _SHAPE_DIM
                for dim in _integers(inner_wire, inner_value)
            ]
        elif field == _BLOB_DATA:
            floats.append(_numbers(wire, value, "<f4", _FIXED32))
        elif field == _BLOB_DOUBLE_DATA:
            doubles.append(_numbers(wire, value, "<f8", _FIXED64))
    if shape is None:
        shape = [
            legacy_shape.get(field, 0)
            for field in (_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH)
        ]
    data = np.concatenate(floats + doubles).astype("float32") if floats or doubles else None
    size = int(np.prod(shape, dtype=np.int64))
    if data is None or any(dim < 0 for dim in shape) or data.size != size:
        count = 0 if data is None else data.size
        raise CaffeFormatError(
            f"layer {layer_name!r}: a blob of shape {tuple(shape)} holds {count} values "
            f"instead of {size} (truncated or corrupt file)"
        )
    return data.reshape(shape)


def _fields(buffer: memoryview) -> Iterator[tuple[int, int, object]]:
    """Yields `(field number, wire type, value)`; length-delimited values are views."""
    position, end = 0, len(buffer)
    while position < end:
        key, position = _varint(buffer, position)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise CaffeFormatError(f"field number 0 at byte {position} (not a protobuf message)")
        if wire == _VARINT:
            value, position = _varint(buffer, position)
        elif wire in (_FIXED64, _FIXED32):
            width = 8 if wire == _FIXED64 else 4
            value = buffer[position : position + width]
            position += width
        elif wire == _LENGTH_DELIMITED:
            length, position = _varint(buffer, position)
            value = buffer[position : position + length]
            position += length
        else:
            # Wire types 3 and 4 (groups) are not used by caffe.proto; 6 and 7 do not exist.
            raise CaffeFormatError(f"unsupported wire type {wire} for field {field}")
        if position > end:
            raise CaffeFormatError(f"field {field} runs past the end of its message (truncated)")
        yield field, wire, value


def _varint(buffer: memoryview, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise CaffeFormatError("the data ends inside a number (truncated)")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift >= 70:
            raise CaffeFormatError(f"a number longer than 10 bytes at byte {position}")


def _int32(value: int) -> int:
    # Negative int32/int64 values are 10-byte two's-complement varints.
    return value - (1 << 64) if value >= 1 << 63 else value


def _integers(wire: int, value) -> list[int]:
    if wire == _VARINT:
        return [_int32(value)]
    if wire != _LENGTH_DELIMITED:
        raise CaffeFormatError(f"an integer list with wire type {wire}")
    numbers, position = [], 0
    while position < len(value):
        number, position = _varint(value, position)
        numbers.append(_int32(number))
    return numbers


def _numbers(wire: int, value, dtype: str, scalar_wire: int) -> np.ndarray:
    if wire not in (_LENGTH_DELIMITED, scalar_wire):
        raise CaffeFormatError(f"a {dtype} list with wire type {wire}")
    itemsize = np.dtype(dtype).itemsize
    if len(value) % itemsize:
        raise CaffeFormatError(f"a packed {dtype} list of {len(value)} bytes (truncated)")
    return np.frombuffer(value, dtype=dtype)


def _text(value: memoryview) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise CaffeFormatError("a layer name is not UTF-8 (not a caffemodel?)") from None
