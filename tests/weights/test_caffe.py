"""Caffe .caffemodel import, against files written here by a small protobuf writer."""

import struct

import numpy as np
import pytest

from keras_invert.encoders import ALEXNET_LAYERS, alexnet, convert_alexnet_weights
from keras_invert.weights import (
    CaffeFormatError,
    load_caffe_weights,
    read_caffemodel,
)

# --- A minimal protobuf wire-format writer (field numbers from caffe.proto). ---


def _varint(value):
    value &= (1 << 64) - 1  # negative numbers: 10-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire):
    return _varint(field << 3 | wire)


def _message(field, payload):
    return _key(field, 2) + _varint(len(payload)) + payload


def _number(field, value):
    return _key(field, 0) + _varint(value)


def _fixed32(field, value):
    return _key(field, 5) + struct.pack("<f", value)


def blob(array, legacy_shape=False, packed=True, double=False):
    """BlobProto: 4-d num/channels/height/width (old) or BlobShape (new); float or double."""
    array = np.asarray(array)
    if legacy_shape:
        dims = (1,) * (4 - array.ndim) + array.shape
        shape = b"".join(_number(field, dim) for field, dim in zip((1, 2, 3, 4), dims, strict=True))
    else:
        shape = _message(7, _message(1, b"".join(_varint(dim) for dim in array.shape)))
    if double:
        data = _message(8, array.astype("<f8").tobytes())
    elif packed:
        data = _message(5, array.astype("<f4").tobytes())
    else:
        data = b"".join(_fixed32(5, value) for value in array.ravel())
    return shape + data


def layer(name, blobs, legacy=False, kind="Convolution", extra=b""):
    """LayerParameter (name 1, type 2, blobs 7) or V1LayerParameter (name 4, type 5, blobs 6)."""
    if legacy:
        enum = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18}[kind]
        head = _message(2, b"data") + _message(4, name.encode()) + _number(5, enum)
        return head + b"".join(_message(6, b) for b in blobs) + extra
    head = _message(1, name.encode()) + _message(2, kind.encode()) + _message(3, b"data")
    return head + b"".join(_message(7, b) for b in blobs) + extra


def net(layers, legacy=False):
    """NetParameter: name 1, then `layer` (100) or legacy `layers` (2)."""
    field = 2 if legacy else 100
    return _message(1, b"CaffeNet") + b"".join(_message(field, payload) for payload in layers)


def alexnet_caffemodel(parameters, legacy=False):
    layers = []
    for name, (weight, bias) in parameters.items():
        kind = "Convolution" if weight.ndim == 4 else "InnerProduct"
        layers.append(layer(name, [blob(weight, legacy), blob(bias, legacy)], legacy, kind))
        # Layers without weights, and fields the reader must skip (an LRN
        # parameter message with a fixed32 float inside), as in real files.
        lrn_parameter = _message(118, _number(1, 5) + _fixed32(2, 1e-4))
        layers.append(layer(f"relu_{name}", [], legacy, "ReLU", extra=lrn_parameter))
    return net(layers, legacy)


@pytest.fixture(scope="module")
def write_caffemodel(tmp_path_factory, caffe_parameters):
    """Writes the random AlexNet once per format (the files are 244 MB)."""
    paths = {}

    def write(legacy=False):
        if legacy not in paths:
            path = tmp_path_factory.mktemp("caffe") / f"alexnet_legacy{legacy}.caffemodel"
            path.write_bytes(alexnet_caffemodel(caffe_parameters, legacy=legacy))
            paths[legacy] = path
        return paths[legacy]

    return write


@pytest.fixture(scope="module")
def caffemodel_path(write_caffemodel):
    return write_caffemodel(legacy=False)


def _outputs(model, image):
    return {name: np.asarray(value)[0] for name, value in model(image[None]).items()}


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy_layers"])
def test_import_matches_numpy_reference(
    legacy, write_caffemodel, test_image, caffe_reference, numpy_alexnet
):
    model = alexnet("caffe")
    load_caffe_weights(model, write_caffemodel(legacy))
    outputs = _outputs(model, test_image)
    errors = {
        name: numpy_alexnet.max_relative_error(outputs[name], caffe_reference[name])
        for name in ALEXNET_LAYERS
    }
    print("max relative error per tap:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(error < 1e-4 for error in errors.values()), errors


def test_weights_argument_and_output_subset(
    caffemodel_path, test_image, caffe_reference, numpy_alexnet
):
    model = alexnet("caffe", weights=caffemodel_path, outputs=["conv2", "fc6"])
    assert not any(layer.name in ("fc7", "fc8") for layer in model.layers)
    outputs = _outputs(model, test_image)
    assert set(outputs) == {"conv2", "fc6"}
    for name in outputs:
        assert numpy_alexnet.max_relative_error(outputs[name], caffe_reference[name]) < 1e-4


def test_read_caffemodel_keeps_caffe_layout(caffemodel_path, caffe_parameters):
    blobs = read_caffemodel(caffemodel_path)
    assert set(blobs) == set(caffe_parameters)  # layers without blobs are left out
    weight, bias = blobs["conv2"]
    np.testing.assert_array_equal(weight, caffe_parameters["conv2"][0])
    np.testing.assert_array_equal(bias.reshape(-1), caffe_parameters["conv2"][1])


def test_blob_encodings(tmp_path):
    """Unpacked floats, double data, legacy 4-d shapes and V0 layers inside V1 ones."""
    array = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    v0_layer = _message(1, b"old") + _message(50, blob(array, legacy_shape=True))
    payload = net(
        [
            layer("unpacked", [blob(array, packed=False)]),
            layer("double", [blob(array, double=True)]),
        ]
    ) + net([_message(1, v0_layer)], legacy=True)
    blobs = _read_bytes(payload, tmp_path)
    np.testing.assert_array_equal(blobs["unpacked"][0], array)
    np.testing.assert_array_equal(blobs["double"][0], array)
    np.testing.assert_array_equal(blobs["old"][0], array.reshape(1, 1, 2, 3))


def _read_bytes(payload, tmp_path):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(payload)
    return read_caffemodel(path)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file_is_an_error(keep, tmp_path):
    array = np.ones((8, 4, 3, 3), np.float32)
    payload = net([layer("conv", [blob(array), blob(np.ones(8))])])
    with pytest.raises(CaffeFormatError, match="truncated"):
        _read_bytes(payload[: int(len(payload) * keep)], tmp_path)


def test_blob_size_must_match_shape(tmp_path):
    bad = _message(7, _message(1, _varint(4) + _varint(4))) + _message(5, b"\0" * 12)
    with pytest.raises(CaffeFormatError, match=r"shape \(4, 4\) holds 3 values"):
        _read_bytes(net([layer("conv", [bad])]), tmp_path)


def test_truncated_alexnet_file_leaves_model_untouched(caffemodel_path, tmp_path):
    model = alexnet("caffe")
    before = model.get_layer("conv1").kernel.numpy()
    truncated = tmp_path / "cut.caffemodel"
    # Cut inside fc6's data: every earlier layer is intact.
    truncated.write_bytes(caffemodel_path.read_bytes()[:20_000_000])
    with pytest.raises(CaffeFormatError, match="truncated"):
        load_caffe_weights(model, truncated)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_missing_layer_and_shape_mismatch_name_the_layer(tmp_path, caffe_parameters):
    model = alexnet("caffe")
    before = model.get_layer("conv1").kernel.numpy()
    small = {name: caffe_parameters[name] for name in ("conv1", "conv2")}
    path = tmp_path / "partial.caffemodel"
    path.write_bytes(alexnet_caffemodel(small))
    with pytest.raises(ValueError, match=r"'conv3'.*lacks; .* \['conv1', 'conv2'\]"):
        load_caffe_weights(model, path)
    # A conv2 kernel of the wrong shape; the model holds only conv1 and conv2.
    swapped = dict(small, conv2=(np.zeros((64, 3, 11, 11), np.float32), np.zeros(64)))
    path.write_bytes(alexnet_caffemodel(swapped))
    with pytest.raises(ValueError, match=r"'conv2'.*\(64, 3, 11, 11\).*\(256, 48, 5, 5\)"):
        load_caffe_weights(alexnet("caffe", outputs=["conv2"]), path)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_layer_names_mapping(tmp_path, caffe_parameters, test_image, caffe_reference):
    renamed = {f"my_{name}": caffe_parameters[name] for name in ("conv1",)}
    path = tmp_path / "renamed.caffemodel"
    path.write_bytes(alexnet_caffemodel(renamed))
    model = alexnet("caffe", outputs=["conv1"])
    load_caffe_weights(model, path, layer_names={"conv1": "my_conv1"})
    np.testing.assert_allclose(
        _outputs(model, test_image)["conv1"], caffe_reference["conv1"], rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="layer_names"):
        load_caffe_weights(model, path, layer_names={"conv9": "x"})


def test_convert_to_keras_weights_file(
    caffemodel_path, tmp_path, test_image, caffe_reference, numpy_alexnet
):
    output = tmp_path / "out" / "caffenet.weights.h5"
    assert convert_alexnet_weights(caffemodel_path, output) == "caffe"
    assert [path.name for path in output.parent.iterdir()] == ["caffenet.weights.h5"]
    # The full network's file also loads into a model built only up to conv2.
    for outputs in (None, ["conv2"]):
        model = alexnet("caffe", weights=output, outputs=outputs)
        for name, value in _outputs(model, test_image).items():
            assert numpy_alexnet.max_relative_error(value, caffe_reference[name]) < 1e-4, name
    with pytest.raises(ValueError, match="Received: output_path="):
        convert_alexnet_weights(caffemodel_path, tmp_path / "caffenet.h5")
