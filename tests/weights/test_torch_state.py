"""PyTorch state-dict import, against files written here without PyTorch.

The writer reproduces `torch.save`'s two layouts: the zip archive
(`archive/data.pkl`, `archive/data/<key>`, `archive/version`, `archive/byteorder`)
and the legacy stream (magic, protocol, system info, pickle, storage keys, raw
storages). Globals such as `torch._utils._rebuild_tensor_v2` are written by name
through a pure-Python pickler, so no `torch` module is needed or faked.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from keras_invert.encoders import ALEXNET_LAYERS, alexnet
from keras_invert.weights import (
    TORCHVISION_ALEXNET_KEYS,
    TorchFormatError,
    UnsafePickleError,
    load_torchvision_weights,
    read_torch_state_dict,
)

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage",
    np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage",
    np.dtype("int64"): "LongStorage",
    np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class _Global:
    """Pickled as the GLOBAL `module name`, whatever the process has imported."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler insists reduce functions be callable
        raise NotImplementedError


class Storage:
    def __init__(self, array, storage_name=None):
        self.array = np.ascontiguousarray(array).reshape(-1)
        self.storage_name = storage_name or _STORAGE_NAMES[self.array.dtype]


class Tensor:
    """A view `size`/`stride` (in elements) at `offset` into `storage`, as torch pickles it."""

    def __init__(self, storage, size, stride=None, offset=0):
        if stride is None:
            stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
        self.storage, self.size, self.stride, self.offset = storage, size, stride, offset

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return _Global("torch._utils", "_rebuild_tensor_v2"), args


def tensor(array):
    array = np.asarray(array)
    return Tensor(Storage(array), array.shape)


class _TorchPickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages = {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        key = self.storages.setdefault(id(obj), (str(len(self.storages)), obj))[0]
        storage_type = _Global("torch", obj.storage_name)
        if self.legacy:
            return ("storage", storage_type, key, "cpu", obj.array.size, None)
        return ("storage", storage_type, key, "cpu", obj.array.size)

    def _save_global_reference(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global_reference


def _pickle(obj, legacy):
    buffer = io.BytesIO()
    pickler = _TorchPickler(buffer, legacy)
    pickler.dump(obj)
    return buffer.getvalue(), [storage for _, storage in pickler.storages.values()]


def _state_dict(tensors):
    # torch's state dicts are OrderedDicts with a `_metadata` attribute (pickled via BUILD).
    state = collections.OrderedDict(tensors)
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    return state


def write_zip(path, obj, prefix="archive"):
    data, storages = _pickle(obj, legacy=False)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", data)
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, storage in enumerate(storages):
            archive.writestr(
                f"{prefix}/data/{key}",
                storage.array.astype(storage.array.dtype.newbyteorder("<")).tobytes(),
            )
        archive.writestr(f"{prefix}/version", "3\n")


def write_legacy(path, obj):
    data, storages = _pickle(obj, legacy=True)
    with open(path, "wb") as file:
        for header in (
            0x1950A86A20F9469CFC6C,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}},
        ):
            pickle.dump(header, file, protocol=2)
        file.write(data)
        pickle.dump([str(key) for key in range(len(storages))], file, protocol=2)
        for storage in storages:
            file.write(struct.pack("<q", storage.array.size))
            file.write(storage.array.tobytes())


WRITERS = {"zip": write_zip, "legacy": write_legacy}


@pytest.mark.parametrize("layout", WRITERS)
def test_reads_dtypes_views_and_nesting(layout, tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((3, 4)).astype(np.float32)
    shared = Storage(np.arange(10, dtype=np.int64))
    state = _state_dict(
        {
            "weight": tensor(matrix),
            # A transposed view (non-contiguous strides) of the same storage.
            "weight_t": Tensor(Storage(matrix), (4, 3), stride=(1, 4)),
            "half": tensor(np.array([1.5, -2.0], np.float16)),
            "double": tensor(np.array([[1.0, 2.0]])),
            "mask": tensor(np.array([True, False])),
            "scalar": Tensor(shared, ()),
            "slice": Tensor(shared, (3,), offset=5),
            "empty": tensor(np.zeros((0, 3), np.float32)),
            "nested": {"bias": tensor(np.array([7], np.uint8))},
            "epoch": 12,  # not a tensor: left out
        }
    )
    path = tmp_path / f"state_{layout}.pth"
    WRITERS[layout](path, state)
    arrays = read_torch_state_dict(path)
    assert list(arrays) == [
        "weight", "weight_t", "half", "double", "mask", "scalar", "slice", "empty", "nested.bias"
    ]  # fmt: skip
    np.testing.assert_array_equal(arrays["weight"], matrix)
    np.testing.assert_array_equal(arrays["weight_t"], matrix.T)
    assert arrays["half"].dtype == np.float16 and arrays["half"].tolist() == [1.5, -2.0]
    assert arrays["double"].dtype == np.float64
    assert arrays["mask"].tolist() == [True, False]
    assert arrays["scalar"].shape == () and arrays["scalar"] == 0
    assert arrays["slice"].tolist() == [5, 6, 7]
    assert arrays["empty"].shape == (0, 3)
    assert arrays["nested.bias"].tolist() == [7]


def test_bfloat16_becomes_float32(tmp_path):
    values = np.array([1.0, -0.5, 3.140625], np.float32)
    bfloat16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # exact for these values
    path = tmp_path / "bf16.pth"
    write_zip(path, {"x": Tensor(Storage(bfloat16, "BFloat16Storage"), (3,))})
    array = read_torch_state_dict(path)["x"]
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values)


def test_zip_prefix_is_the_file_stem(tmp_path):
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    write_zip(path, {"a": tensor(np.ones(2, np.float32))}, prefix="alexnet-owt-7be5be79")
    assert read_torch_state_dict(path)["a"].tolist() == [1.0, 1.0]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("layout", WRITERS)
def test_malicious_pickle_is_refused_without_running(layout, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil_{layout}.pth"
    evil = {"weight": tensor(np.ones(2, np.float32)), "payload": _RunsCode(marker)}
    WRITERS[layout](path, evil)
    with pytest.raises(UnsafePickleError, match=rf"global {os.system.__module__}\.system"):
        read_torch_state_dict(path)
    assert not marker.exists()


def test_refuses_other_globals_and_builtins(tmp_path):
    path = tmp_path / "eval.pth"
    # GLOBAL builtins.eval, then REDUCE with a string argument.
    data = b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        read_torch_state_dict(path)


def test_state_cannot_tamper_with_allowed_globals(tmp_path):
    # BUILD on the shared storage-type stand-in would change it for later loads.
    path = tmp_path / "tamper.pth"
    data = b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeK\x01sb."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
    with pytest.raises(TorchFormatError):
        read_torch_state_dict(path)
    write_zip(tmp_path / "ok.pth", {"a": tensor(np.ones(2, np.float32))})
    assert read_torch_state_dict(tmp_path / "ok.pth")["a"].dtype == np.float32


def test_tensor_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "overflow.pth"
    write_zip(path, {"a": Tensor(Storage(np.ones(4, np.float32)), (3,), offset=2)})
    with pytest.raises(TorchFormatError, match="past the end"):
        read_torch_state_dict(path)


@pytest.mark.parametrize("layout", WRITERS)
def test_truncated_files_are_errors(layout, tmp_path):
    path = tmp_path / f"state_{layout}.pth"
    WRITERS[layout](path, {"a": tensor(np.ones((64, 64), np.float32))})
    payload = path.read_bytes()
    for keep in (0.1, 0.5, 0.99):
        path.write_bytes(payload[: int(len(payload) * keep)])
        with pytest.raises(TorchFormatError):
            read_torch_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"hello, world")
    with pytest.raises(TorchFormatError):
        read_torch_state_dict(path)


@pytest.fixture(scope="module")
def torchvision_pth(tmp_path_factory, torchvision_parameters):
    state = {}
    for name, prefix in TORCHVISION_ALEXNET_KEYS.items():
        weight, bias = torchvision_parameters[name]
        state[f"{prefix}.weight"] = tensor(weight)
        state[f"{prefix}.bias"] = tensor(bias)
    path = tmp_path_factory.mktemp("torch") / "alexnet-owt-7be5be79.pth"
    write_zip(path, _state_dict(state))
    return path


def test_torchvision_import_matches_numpy_reference(
    torchvision_pth, test_image, torchvision_reference, numpy_alexnet
):
    model = alexnet("torchvision", weights=torchvision_pth)
    outputs = {k: np.asarray(v)[0] for k, v in model(test_image[None, :224, :224]).items()}
    errors = {
        name: numpy_alexnet.max_relative_error(outputs[name], torchvision_reference[name])
        for name in ALEXNET_LAYERS
    }
    print("max relative error per tap:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert all(error < 1e-4 for error in errors.values()), errors


def test_torchvision_shape_mismatch_names_layer_and_leaves_model(torchvision_pth):
    model = alexnet("caffe")  # the Caffe network cannot take torchvision's weights
    before = model.get_layer("conv1").kernel.numpy()
    with pytest.raises(ValueError, match=r"'conv1'.*\(64, 3, 11, 11\).*\(96, 3, 11, 11\)"):
        load_torchvision_weights(model, torchvision_pth)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_missing_tensor_names_key_and_layer(tmp_path):
    path = tmp_path / "other.pth"
    write_zip(path, {"_conv_stem.weight": tensor(np.ones((2, 3), np.float32))})
    with pytest.raises(ValueError, match=r"'conv1' needs 'features.0.weight'.*_conv_stem"):
        load_torchvision_weights(alexnet("torchvision", outputs=["conv1"]), path)


# EfficientNet-Lite0's stem and first block as `efficientnet_lite_pytorch` names and
# lays them out (OIHW kernels, depthwise [C, 1, h, w], BatchNorm vectors), written
# out here independently of the library's key table.
_LITE0_STEM_AND_BLOCK0 = {
    "_conv_stem.weight": (32, 3, 3, 3),
    "_bn0": 32,
    "_blocks.0._depthwise_conv.weight": (32, 1, 3, 3),
    "_blocks.0._bn1": 32,
    "_blocks.0._project_conv.weight": (16, 32, 1, 1),
    "_blocks.0._bn2": 16,
}


def _lite0_state(seed):
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in _LITE0_STEM_AND_BLOCK0.items():
        if isinstance(shape, tuple):
            fan_in = int(np.prod(shape[1:]))
            state[key] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
            continue
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        state[f"{key}.bias"] = rng.normal(0, 0.1, shape).astype(np.float32)
        state[f"{key}.running_mean"] = rng.normal(0, 0.1, shape).astype(np.float32)
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
        state[f"{key}.num_batches_tracked"] = np.array(7, np.int64)
    return state


def _numpy_lite0_stage1(image, state):
    """Stem (3x3 stride 2, TF "same": pad 0 before, 1 after) and block 0, in NumPy."""

    def batch_norm(x, key):
        scale = state[f"{key}.weight"] / np.sqrt(state[f"{key}.running_var"] + 1e-3)
        return (x - state[f"{key}.running_mean"]) * scale + state[f"{key}.bias"]

    x = np.pad(image, ((0, 1), (0, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2]
    x = np.einsum("hwcij,ocij->hwo", windows, state["_conv_stem.weight"])
    x = np.clip(batch_norm(x, "_bn0"), 0, 6)
    windows = np.lib.stride_tricks.sliding_window_view(
        np.pad(x, ((1, 1), (1, 1), (0, 0))), (3, 3), axis=(0, 1)
    )
    x = np.einsum("hwcij,cij->hwc", windows, state["_blocks.0._depthwise_conv.weight"][:, 0])
    x = np.clip(batch_norm(x, "_blocks.0._bn1"), 0, 6)
    x = x @ state["_blocks.0._project_conv.weight"][:, :, 0, 0].T
    return batch_norm(x, "_blocks.0._bn2")


def test_efficientnet_lite0_import_from_a_legacy_pth(tmp_path):
    from keras_invert.encoders import efficientnet_lite0

    state = _lite0_state(0)
    path = tmp_path / "lite0.pth"
    write_legacy(path, _state_dict({key: tensor(value) for key, value in state.items()}))
    model = efficientnet_lite0(weights=path, outputs=["stage1"], include_preprocessing=False)
    image = np.random.default_rng(1).uniform(-1, 1, (224, 224, 3)).astype(np.float32)
    actual = np.asarray(model(image[None])["stage1"])[0]
    expected = _numpy_lite0_stage1(image, state)
    assert actual.shape == (112, 112, 16)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_efficientnet_lite0_shape_mismatch_names_layer_and_leaves_model(tmp_path):
    from keras_invert.encoders import efficientnet_lite0

    state = _lite0_state(0)
    state["_blocks.0._depthwise_conv.weight"] = np.ones((32, 1, 5, 5), np.float32)
    path = tmp_path / "lite0_k5.pth"
    write_legacy(path, _state_dict({key: tensor(value) for key, value in state.items()}))
    model = efficientnet_lite0(weights=None, outputs=["stage1"])
    before = model.get_layer("stem_conv").kernel.numpy()
    with pytest.raises(
        ValueError, match=r"'block0_depthwise_conv'.*\(32, 1, 5, 5\).*\(32, 1, 3, 3\)"
    ):
        efficientnet_lite0(weights=path, outputs=["stage1"])
    from keras_invert.encoders import set_efficientnet_lite0_weights

    with pytest.raises(ValueError, match="block0_depthwise_conv"):
        set_efficientnet_lite0_weights(model, read_torch_state_dict(path))
    # Checked before anything is assigned: the stem kept its weights.
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), before)
    state = _lite0_state(0)
    del state["_blocks.0._bn2.running_var"]
    with pytest.raises(ValueError, match=r"'block0_project_bn' needs '_blocks.0._bn2.running_var'"):
        set_efficientnet_lite0_weights(model, state)
