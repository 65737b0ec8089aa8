"""Reads PyTorch state dicts (`.pth`, `.pt`) without PyTorch and without running code.

`torch.save` writes a pickle whose tensors refer to raw storages kept beside
it, in one of two layouts:

* zip (PyTorch >= 1.6): `<prefix>/data.pkl` holds the pickle, whose
  persistent ids are `('storage', storage_type, key, location, numel)`, and
  `<prefix>/data/<key>` each storage's raw bytes (little-endian unless
  `<prefix>/byteorder` says otherwise). `<prefix>` is `archive` or the file's
  stem.
* legacy (`_use_new_zipfile_serialization=False`, and everything before 1.6):
  five pickles in a row (magic number, protocol version 1001, system info,
  the object, the sorted list of storage keys) followed, per key, by an
  int64 element count and the storage's raw bytes. Persistent ids are
  `('storage', storage_type, key, location, numel, view_metadata)`.

A pickle can name any importable callable and make the unpickler call it, so
a weights file from a stranger could run arbitrary code under
`pickle.load`. The unpickler here resolves only the globals a state dict
needs, each to a local, data-only stand-in: `collections.OrderedDict`,
`torch._utils._rebuild_tensor_v2` (and `_rebuild_tensor`,
`_rebuild_parameter`, `_rebuild_parameter_with_state`), and the typed
storage classes (`torch.FloatStorage`, ..., and `torch.cuda.FloatStorage`, ...
in old GPU checkpoints). Any other global raises
`UnsafePickleError` naming it, before anything is called. Tensors are
rebuilt from their storages only after the whole file has been read and
bounds-checked.

Example:
    >>> from keras_invert.weights import read_torch_state_dict
    >>> state = read_torch_state_dict("alexnet-owt-7be5be79.pth")
    >>> state["features.0.weight"].shape
    (64, 3, 11, 11)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from collections.abc import Mapping

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# numpy has no bfloat16: its storages are read as uint16 and widened to float32.
_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchFormatError(ValueError):
    """Raised when a file is not a readable PyTorch state dict."""


class UnsafePickleError(TorchFormatError):
    """Raised when a pickle names a global outside the state-dict allow-list."""


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads the tensors of a PyTorch checkpoint as NumPy arrays, safely.

    Args:
        path: a file written by `torch.save`, zip or legacy format.

    Returns:
        Tensor name to array, in file order. Nested dicts (e.g. a checkpoint
        `{"state_dict": {...}}`) are flattened with dots
        (`"state_dict.conv.weight"`); entries that are not tensors are left out.
        bfloat16 tensors become float32.

    Raises:
        UnsafePickleError: the pickle names a global that a state dict does
            not need (nothing in the file is executed).
        TorchFormatError: the file is truncated, corrupt or not a checkpoint.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            is_zip = file.read(4) == b"PK\x03\x04"
        state = _read_zip(path) if is_zip else _read_legacy(path)
        arrays = dict(_flatten(state, ""))
    except TorchFormatError as error:
        raise type(error)(
            f"Expected a PyTorch state dict (.pth/.pt, written by torch.save); {error}. "
            f"Received: path={path!r}"
        ) from None
    if not arrays:
        raise TorchFormatError(
            "Expected a PyTorch state dict with tensors; the file holds none. "
            f"Received: path={path!r}"
        )
    return arrays


class _Frozen:
    """Immutable after construction, so a pickle's BUILD opcode cannot alter it.

    The unpickler hands these objects to the pickle; without this, BUILD could
    rewrite a shared storage type or a tensor's already-validated size.
    """

    __slots__ = ()

    def __setattr__(self, name, value):
        raise TorchFormatError(f"refusing to set {name!r} on {type(self).__name__}")

    def __delattr__(self, name):
        raise TorchFormatError(f"refusing to delete {name!r} on {type(self).__name__}")

    def _init(self, **values):
        for name, value in values.items():
            object.__setattr__(self, name, value)


class _StorageType(_Frozen):
    """Stand-in for `torch.FloatStorage` etc.: a dtype tag, deliberately not callable."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self._init(name=name, dtype=np.dtype(_STORAGE_DTYPES[name]))

    def __repr__(self):
        return f"torch.{self.name}"


class _Function(_Frozen):
    """An allowed callable behind an immutable wrapper."""

    __slots__ = ("function",)

    def __init__(self, function):
        self._init(function=function)

    def __call__(self, *args):
        return self.function(*args)


class _Storage(_Frozen):
    """A storage's raw elements; `data` is filled once the bytes have been read."""

    __slots__ = ("storage_type", "key", "numel", "data")

    def __init__(self, storage_type: _StorageType, key: str, numel: int):
        self._init(storage_type=storage_type, key=key, numel=numel, data=None)

    def fill(self, data: np.ndarray):
        object.__setattr__(self, "data", data)


class _StorageView(_Frozen):
    """A legacy-format view of `numel` elements of `base`, from element `offset`."""

    __slots__ = ("base", "offset", "numel", "storage_type")

    def __init__(self, base: _Storage, offset: int, numel: int):
        self._init(base=base, offset=offset, numel=numel, storage_type=base.storage_type)


class _TensorRef(_Frozen):
    """A tensor described by the pickle, materialised after all storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise TorchFormatError(f"a tensor's storage is a {type(storage).__name__}")
        if not _is_int(offset) or offset < 0:
            raise TorchFormatError(f"a tensor's storage offset is {offset!r}")
        if not _int_tuple(size) or not _int_tuple(stride) or len(size) != len(stride):
            raise TorchFormatError(f"a tensor's size {size!r} or stride {stride!r} is malformed")
        self._init(storage=storage, offset=offset, size=size, stride=stride)

    def to_numpy(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            if offset + _extent(self.size, self.stride) > storage.numel:
                raise TorchFormatError("a tensor reaches past the end of its storage view")
            storage, offset = storage.base, offset + storage.offset
        if storage.data is None:
            raise TorchFormatError(f"storage {storage.key!r} has no data (truncated file)")
        # as_strided does not check bounds: the extent check keeps it inside the storage.
        if offset + _extent(self.size, self.stride) > storage.numel:
            raise TorchFormatError(f"a tensor reaches past the end of storage {storage.key!r}")
        data = storage.data
        itemsize = data.dtype.itemsize
        if 0 in self.size:
            array = np.zeros(self.size, data.dtype)
        else:
            array = np.lib.stride_tricks.as_strided(
                data[offset:],
                shape=self.size,
                strides=tuple(step * itemsize for step in self.stride),
                writeable=False,
            ).copy()
        if storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(array.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *extra):
    del requires_grad, hooks, extra  # autograd state and metadata mean nothing here
    return _TensorRef(storage, offset, size, stride)


def _rebuild_tensor(storage, offset, size, stride):
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    del requires_grad, hooks, extra
    if not isinstance(data, _TensorRef):
        raise TorchFormatError(f"a parameter wraps a {type(data).__name__}, not a tensor")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _Function(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _Function(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Function(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Function(_rebuild_parameter),
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}
# Legacy checkpoints saved from a GPU name `torch.cuda.FloatStorage` etc.; the
# bytes are the same, and everything is read to host memory.
_ALLOWED_GLOBALS.update(
    {("torch.cuda", name): _ALLOWED_GLOBALS[("torch", name)] for name in _STORAGE_DTYPES}
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED_GLOBALS`; storages come from `persistent_load`."""

    def __init__(self, file, persistent_load=None):
        # As torch.load: Python 2 era byte strings are decoded as UTF-8.
        super().__init__(file, encoding="utf-8")
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load the global {module}.{name}: a PyTorch state dict needs "
                "only tensors, storages and OrderedDict, and anything else could run code"
            ) from None

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise TorchFormatError(f"unexpected persistent id {pid!r}")
        return self._persistent_load(pid)


def _unpickle(file, persistent_load=None):
    try:
        return _RestrictedUnpickler(file, persistent_load).load()
    except TorchFormatError:
        raise
    except Exception as error:  # any malformed pickle: EOFError, UnpicklingError, ...
        raise TorchFormatError(f"the pickle is unreadable (truncated?): {error!r}") from None


def _storage_id(pid, length: int):
    if (
        not isinstance(pid, tuple)
        or len(pid) != length
        or _ascii(pid[0]) != "storage"
        or not isinstance(pid[1], _StorageType)
        or not _is_int(pid[4])
        or pid[4] < 0
    ):
        raise TorchFormatError(f"unexpected persistent id {pid!r}")
    return pid[1], _ascii(pid[2]), pid[4]


def _read_zip(path: str):
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise TorchFormatError(f"not a readable zip archive (truncated?): {error}") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1 or pickles[0].count("/") != 1:
            raise TorchFormatError(f"expected one <prefix>/data.pkl entry, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in archive.namelist():
            byteorder = _read_entry(archive, prefix + "byteorder").decode().strip()
        if byteorder not in ("little", "big"):
            raise TorchFormatError(f"unknown byte order {byteorder!r}")
        storages = {}

        def persistent_load(pid):
            storage_type, key, numel = _storage_id(pid, 5)
            if key not in storages:
                storage = _Storage(storage_type, key, numel)
                raw = _read_entry(archive, f"{prefix}data/{key}")
                storage.fill(_storage_array(raw, storage, byteorder))
                storages[key] = storage
            return storages[key]

        return _unpickle(io.BytesIO(_read_entry(archive, pickles[0])), persistent_load)


def _read_entry(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise TorchFormatError(f"the archive has no entry {name!r}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise TorchFormatError(f"entry {name!r} is corrupt or truncated: {error}") from None


def _read_legacy(path: str):
    with open(path, "rb") as file:
        if _unpickle(file) != _LEGACY_MAGIC:
            raise TorchFormatError("neither a zip archive nor a legacy torch.save file")
        if _unpickle(file) != _LEGACY_PROTOCOL:
            raise TorchFormatError("unsupported legacy protocol version")
        system_info = _unpickle(file)
        if not isinstance(system_info, dict):
            raise TorchFormatError("malformed system info")
        byteorder = "little" if system_info.get("little_endian", True) else "big"
        storages = {}

        def persistent_load(pid):
            storage_type, key, numel = _storage_id(pid, 6)
            if key not in storages:
                storages[key] = _Storage(storage_type, key, numel)
            storage = storages[key]
            if storage.storage_type is not storage_type:
                raise TorchFormatError(f"storage {key!r} is used with two types")
            view = pid[5]
            if view is None:
                return storage
            if (
                not isinstance(view, tuple)
                or len(view) != 3
                or not all(_is_int(number) and number >= 0 for number in view[1:])
                or view[1] + view[2] > storage.numel
            ):
                raise TorchFormatError(f"malformed storage view {view!r}")
            return _StorageView(storage, view[1], view[2])

        state = _unpickle(file, persistent_load)
        keys = _unpickle(file)
        if not isinstance(keys, list) or sorted(map(_ascii, keys)) != sorted(storages):
            raise TorchFormatError("the storage key list does not match the tensors")
        for key in map(_ascii, keys):
            storage = storages[key]
            header = file.read(8)
            if len(header) != 8:
                raise TorchFormatError(f"the file ends before storage {key!r} (truncated)")
            count = int.from_bytes(header, byteorder, signed=True)
            if count != storage.numel:
                raise TorchFormatError(
                    f"storage {key!r} has {count} elements, the pickle says {storage.numel}"
                )
            raw = file.read(storage.numel * storage.storage_type.dtype.itemsize)
            storage.fill(_storage_array(raw, storage, byteorder))
    return state


def _storage_array(raw: bytes, storage: _Storage, byteorder: str) -> np.ndarray:
    dtype = storage.storage_type.dtype
    if len(raw) != storage.numel * dtype.itemsize:
        raise TorchFormatError(
            f"storage {storage.key!r} holds {len(raw)} bytes, {storage.numel} "
            f"{storage.storage_type!r} elements need {storage.numel * dtype.itemsize} (truncated?)"
        )
    return np.frombuffer(raw, dtype.newbyteorder("<" if byteorder == "little" else ">"))


def _flatten(value, prefix: str):
    if isinstance(value, _TensorRef):
        yield prefix, value.to_numpy()
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))


def _extent(size, stride) -> int:
    """Elements spanned from the first to one past the last, for a non-empty tensor."""
    if 0 in size:
        return 0
    return 1 + sum((length - 1) * step for length, step in zip(size, stride, strict=True))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) and v >= 0 for v in value)


def _ascii(value) -> str:
    # Python 2 era files store these strings as bytes.
    return value.decode("ascii") if isinstance(value, bytes) else str(value)
