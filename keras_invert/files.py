"""Atomic writes: a file or folder appears complete under its name, or not at all.

Everything the project writes for another process to read (a run's config,
checkpoints, the final model, converted weights, an export, a feature cache,
experiment results) goes through `atomic_path`: the content is written under
a hidden temporary name beside the final one and renamed into place when
complete. A reader (a resumed run, TF Serving watching an export base, a
second worker) therefore never sees a half-written file, and a killed writer
leaves at most a hidden `.partial-*` entry that nothing lists.

Example:
    >>> with atomic_path("work/model.keras") as temporary:
    ...     model.save(temporary)
    >>> write_json("results/figures.json", {"error": 0.24})
    >>> write_csv("results/figures.csv", [{"error": 0.24}], ["error"])
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator

from absl import logging

PARTIAL_PREFIX = ".partial-"
"""Name prefix of the temporary entries `atomic_path` writes (hidden, never listed)."""


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path` that becomes `path` when the block completes.

    The caller writes a file or a folder at the yielded path. On leaving the
    block normally it is renamed to `path` (replacing a file of that name;
    a folder must not exist yet). On an exception it is removed and `path`
    is left as it was. The temporary name ends with `path`'s name, so it
    keeps the suffix Keras chooses the format by (`.keras`, `.weights.h5`).
    Parent folders are created. The rename is atomic on a local file system.

    Args:
        path: the final file or folder path.

    Raises:
        OSError: from the rename, e.g. when `path` is a folder that already
            exists (the temporary one is removed first).
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(path)))
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    # Ending with `name` keeps its suffix, which Keras chooses the format by.
    temporary = os.path.join(
        directory, f"{PARTIAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{name}"
    )
    try:
        yield temporary
        try:
            os.replace(temporary, path)
        except OSError as error:  # Named by the caller's path, not the hidden temporary one.
            raise type(error)(error.errno, error.strerror, path) from error
    finally:
        _remove(temporary)


def check_folder(path: str, name: str) -> None:
    """Refuses a `path` that the project could not write a folder at; writes nothing.

    `name` is the argument or flag that gave `path`; the error names it
    (`Received: work_dir='/tmp/afile', a file`).

    `path` may exist (a folder) or not; its nearest existing ancestor must be
    a folder that this process can create entries in, which is tried with a
    hidden temporary folder, removed at once (permission bits do not say it
    for root, a read-only mount or `/proc`).

    Raises:
        ValueError: `path`, or a folder above it, is a file, or the folder
            that would hold it cannot be written.
    """
    _check_writable(path, name, folder=True)


def check_file(path: str, name: str) -> None:
    """Refuses a `path` that the project could not write a file at; writes nothing.

    As `check_folder`, but `path` may be an existing file (to be replaced),
    not a folder.
    """
    _check_writable(path, name, folder=False)


def check_existing_file(path: str, name: str) -> None:
    """Refuses a `path` that is not an existing file (a file to read: weights, a model).

    Raises:
        ValueError: `path` is a folder, a device or pipe, or does not exist; the
            error names it as `name`.
    """
    if not os.path.isfile(path):
        if os.path.isdir(path):
            kind = "a folder"
        elif os.path.exists(path):
            kind = "not a regular file (a device, pipe or socket)"
        else:
            kind = "not found"
        raise ValueError(
            f"Expected {name} to be an existing file. Received: {name}={path!r}, {kind}"
        )


def _check_writable(path: str, name: str, folder: bool) -> None:
    expected = "a folder or a new path" if folder else "a file's path"
    absolute = os.path.abspath(os.path.expanduser(os.fspath(path)))
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing == absolute and os.path.isdir(absolute) != folder:
        kind = "a file" if folder else "a folder"
        raise ValueError(f"Expected {name} to be {expected}. Received: {name}={path!r}, {kind}")
    if existing == absolute and not folder:
        existing = os.path.dirname(absolute)
    elif not os.path.isdir(existing):
        raise ValueError(
            f"Expected {name} to be {expected}. Received: {name}={path!r}, under the file "
            f"{existing!r}"
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=existing))
    except OSError as error:
        holder = absolute if folder else os.path.dirname(absolute)
        problem = (
            f"the folder {existing!r} is not writable"
            if holder == existing
            else f"the folder {holder!r} cannot be created in {existing!r}"
        )
        raise ValueError(
            f"Expected {name} in a folder this process can write into. Received: {name}={path!r} "
            f"({problem}: {_unwritable_reason(error)})"
        ) from None


def _unwritable_reason(error: OSError) -> str:
    """Why creating an entry in an existing folder failed, in words that fit the case.

    A virtual file system (`/proc`) answers "No such file or directory" for
    a folder that plainly exists, which would send the user looking for a
    missing folder.
    """
    reasons = {
        errno.ENOENT: "it refuses new entries, as virtual file systems such as /proc do",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "a read-only file system",
    }
    return reasons.get(error.errno, error.strerror or type(error).__name__)


def write_json(path: str, data, *, indent: int = 2, sort_keys: bool = False) -> str:
    """Writes `data` as JSON atomically (NumPy arrays and scalars allowed); returns `path`.

    The file is standard JSON, which has no NaN or Infinity (Python's
    `json` would write them, and many readers refuse them): a NaN or Inf
    value is written as null, with a logged warning that names its key path
    (`rows[2].psnr`). Written as null rather than refused because a value
    that is undefined for a reason (a benchmark's throughput of a one-step
    run) must not cost a long run its whole results file.
    """
    data, undefined = _finite_or_null(plain(data), "")
    if undefined:
        logging.warning("Writing NaN or Inf as null in %s: %s", path, ", ".join(undefined[:10]))
    with atomic_path(path) as temporary:
        with open(temporary, "w") as file:
            json.dump(data, file, indent=indent, sort_keys=sort_keys, allow_nan=False)
            file.write("\n")
    return path


def write_csv(path: str, rows: list[dict], columns: list[str]) -> str:
    """Writes `rows` (dicts; NumPy scalars allowed) as CSV atomically; returns `path`.

    One row per dict, `columns` in order; a missing key, None, NaN and Inf
    are empty fields (CSV's null, as `write_json` writes null), and NaN or
    Inf draw the same logged warning naming their key path (`rows[2].psnr`).
    """
    rows, undefined = _finite_or_null(plain(list(rows)), "rows")
    if undefined:
        logging.warning("Writing NaN or Inf as empty in %s: %s", path, ", ".join(undefined[:10]))
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return path


def _finite_or_null(value, key_path: str):
    """`value` with every NaN or Inf float replaced by None, and the key paths replaced."""
    if isinstance(value, float) and not math.isfinite(value):
        return None, [key_path or "(the value)"]
    if isinstance(value, dict):
        items = [_finite_or_null(item, f"{key_path}.{key}" if key_path else key)
                 for key, item in value.items()]  # fmt: skip
        return dict(zip(value, (item for item, _ in items), strict=True)), _joined(items)
    if isinstance(value, list):
        items = [_finite_or_null(item, f"{key_path}[{index}]") for index, item in enumerate(value)]
        return [item for item, _ in items], _joined(items)
    return value, []


def _joined(items) -> list:
    return [path for _, paths in items for path in paths]


def plain(value):
    """`value` with NumPy arrays and scalars (at any depth) as Python lists and numbers."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if hasattr(value, "tolist"):  # NumPy arrays and scalars.
        return plain(value.tolist())
    return value


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
