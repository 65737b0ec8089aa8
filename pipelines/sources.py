"""Where images come from: bundled sample photos, a local folder, or TFDS.

A source string names one of three kinds (docs/reference.md, Bundled data):

- `samples`: real colour photographs that pip wheels ship (no download).
  scikit-image: astronaut, chelsea, coffee, rocket, motorcycle_left,
  motorcycle_right; scikit-learn: china, flower; matplotlib: grace_hopper;
  foolbox: its 20 ImageNet validation photos. 29 photos in all. Left out
  (choice): skimage's retina, hubble_deep_field and ihc, which are microscopy
  or astronomy images, not natural photographs. The split is fixed and by
  whole photo: `SAMPLE_TEST_PHOTOS` (6 photos) are "test", the other 23
  "train". The stereo pair motorcycle_left/right is one scene, so both are train.
- `folder:PATH`: every file under PATH, recursively, whose extension is
  .jpg/.jpeg/.png/.bmp/.gif/.webp (any case) and whose first bytes are those
  of one of these formats. If PATH has both `train/` and `test/` subfolders,
  `split` names the subfolder to read (any subfolder name works then).
  Otherwise the split is by a hash of each file's path relative to PATH:
  `sha256(relative path) mod 100 < 10` is "test" (about 10%), the rest
  "train"; a file keeps its split when others are added or removed.
  Non-images (wrong first bytes), other extensions and empty files are
  skipped at listing time and counted in one warning; files that are images
  by their first bytes but fail to decode are dropped by the builder, each
  named in a warning. A split without a listed photo is a ValueError.
- `tfds:NAME[/CONFIG][?download=true][&data_dir=PATH]`: a TFDS dataset and
  `split` a TFDS split string such as "train" or "validation[:50%]". Offline
  by default (`download=False`): the data must already be prepared in
  `data_dir`. The image feature is "image" if the dataset has one, otherwise
  the first top-level `Image` feature; it is read encoded (not decoded by TFDS)
  so that TFDS images go through the same decode op as files.

Example:
    >>> list_source_files("samples", "test")[:1]
    ['.../foolbox/data/imagenet_00_243.jpg']
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import urllib.parse

import tensorflow as tf
from absl import logging

from keras_invert.images import IMAGE_EXTENSIONS
from pipelines import image_headers

# (import name, pip package, folder inside the installed package).
_SAMPLE_PACKAGES = {
    "skimage": ("scikit-image", "data"),
    "sklearn": ("scikit-learn", os.path.join("datasets", "images")),
    "matplotlib": ("matplotlib", os.path.join("mpl-data", "sample_data")),
    "foolbox": ("foolbox", "data"),
}

_FOOLBOX_IMAGENET = (
    "imagenet_00_243.jpg",
    "imagenet_01_559.jpg",
    "imagenet_02_438.jpg",
    "imagenet_03_990.jpg",
    "imagenet_04_949.jpg",
    "imagenet_05_853.jpg",
    "imagenet_06_609.jpg",
    "imagenet_07_609.jpg",
    "imagenet_08_915.jpg",
    "imagenet_09_455.jpg",
    "imagenet_10_541.jpg",
    "imagenet_11_630.jpg",
    "imagenet_12_741.jpg",
    "imagenet_13_471.jpg",
    "imagenet_14_129.jpg",
    "imagenet_15_99.jpg",
    "imagenet_16_251.jpg",
    "imagenet_17_22.jpg",
    "imagenet_18_317.jpg",
    "imagenet_19_305.jpg",
)

# Every bundled photo as "package/file name".
SAMPLE_PHOTOS = (
    "skimage/astronaut.png",
    "skimage/chelsea.png",
    "skimage/coffee.png",
    "skimage/rocket.jpg",
    "skimage/motorcycle_left.png",
    "skimage/motorcycle_right.png",
    "sklearn/china.jpg",
    "sklearn/flower.jpg",
    "matplotlib/grace_hopper.jpg",
    *(f"foolbox/{name}" for name in _FOOLBOX_IMAGENET),
)

# The fixed held-out photos: four ImageNet photos (bull mastiff, strawberry,
# yurt, spoonbill), a cat close-up and a building scene. Never in "train".
SAMPLE_TEST_PHOTOS = (
    "foolbox/imagenet_00_243.jpg",
    "foolbox/imagenet_04_949.jpg",
    "foolbox/imagenet_08_915.jpg",
    "foolbox/imagenet_14_129.jpg",
    "skimage/chelsea.png",
    "sklearn/china.jpg",
)

FOLDER_TEST_PERCENT = 10

_TFDS_SHUFFLE_BUFFER = 1024  # Encoded images, so about 100 MB for ImageNet-like data.


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved source: either a fixed file list or a TFDS dataset.

    Args:
        source: the source string as given.
        split: the split as given.
        files: sorted absolute file names, or None for TFDS.
        identity: a string that changes whenever the examples may change;
            hashed into cache keys. For "samples": the photos' names and
            contents, not where pip installed them (`_sample_identity`); for
            a folder: each photo's path, size and time (`_folder_identity`).
        tfds_options: for TFDS, the `tfds.builder` name, data_dir, download flag.
    """

    source: str
    split: str
    files: tuple[str, ...] | None
    identity: str
    tfds_options: dict | None = None

    def tfds_records(self, *, shuffle: bool, seed: int | None) -> tf.data.Dataset:
        """TFDS examples as {"bytes": encoded image}, shuffled when asked."""
        return _tfds_records(self, shuffle=shuffle, seed=seed)


def photo_count(source: Source) -> int | None:
    """The number of photos of a resolved source's split; None when TFDS cannot say."""
    if source.files is not None:
        return len(source.files)
    import tensorflow_datasets as tfds

    options = source.tfds_options
    try:
        builder = tfds.builder(options["name"], data_dir=options["data_dir"])
        return int(builder.info.splits[source.split].num_examples)
    except Exception:  # noqa: BLE001 - not prepared, or a split TFDS cannot count: unknown.
        return None


def resolve(source: str, split: str) -> Source:
    """Parses a source string and lists its examples for `split`."""
    if not isinstance(source, str) or not source:
        raise ValueError(
            "Expected a source 'samples', 'folder:PATH' or 'tfds:NAME'. "
            f"Received: source={source!r}"
        )
    if not isinstance(split, str) or not split:
        raise ValueError(f"Expected a non-empty split string. Received: split={split!r}")
    if source == "samples":
        names = _sample_names(split)
        files = tuple(sample_path(name) for name in names)
        return Source(source, split, files, identity=_sample_identity(names, files))
    if source.startswith("folder:"):
        files = tuple(_folder_files(source[len("folder:") :], split))
        return Source(source, split, files, identity=_folder_identity(files))
    if source.startswith("tfds:"):
        return _tfds_source(source, split)
    raise ValueError(
        "Expected a source 'samples', 'folder:PATH' or 'tfds:NAME[/CONFIG]'. "
        f"Received: source={source!r}"
    )


def list_source_files(source: str, split: str = "train") -> list[str]:
    """Sorted absolute file names of a `samples` or `folder:PATH` split.

    TFDS sources hold records, not files: use `build_dataset` for them.
    """
    if isinstance(source, str) and source.startswith("tfds:"):
        raise ValueError(
            "TFDS sources have no per-image files; list_source_files takes 'samples' or "
            f"'folder:PATH'. Received: source={source!r}"
        )
    return list(resolve(source, split).files)


# Samples.


def _package_folder(module: str) -> str:
    """The installed folder of `module`'s data, found without importing it.

    (Importing foolbox takes seconds; `find_spec` of a top-level package only
    locates it.)
    """
    pip_name, subfolder = _SAMPLE_PACKAGES[module]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The 'samples' source needs the photos shipped in the pip package {pip_name!r}; "
            f"install it with `pip install {pip_name}`. Missing module: {module!r}"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], subfolder)


def sample_path(name: str) -> str:
    """Absolute file name of a bundled photo named "package/file name"."""
    module, file_name = name.split("/", 1)
    path = os.path.join(_package_folder(module), file_name)
    if not os.path.isfile(path):
        pip_name = _SAMPLE_PACKAGES[module][0]
        raise ImportError(
            f"The installed {pip_name!r} does not ship the sample photo {file_name!r} "
            f"(expected at {path}); install the version in requirements.txt."
        )
    return path


def _sample_names(split: str) -> tuple[str, ...]:
    """The bundled photos of `split` as "package/file name", sorted.

    Sorted by name, so the order does not depend on where pip installed them.
    """
    if split == "test":
        names = SAMPLE_TEST_PHOTOS
    elif split == "train":
        names = tuple(name for name in SAMPLE_PHOTOS if name not in SAMPLE_TEST_PHOTOS)
    else:
        raise ValueError(
            f"Expected split 'train' or 'test' for source 'samples'. Received: split={split!r}"
        )
    return tuple(sorted(names))


def _sample_identity(names: tuple[str, ...], files: tuple[str, ...]) -> str:
    """The bundled photos' identity (cache keys): each one's name and the SHA-256 of its bytes.

    Not their absolute paths: those depend on where the environment lies
    (each git worktree with its own `.venv` link, another machine), and the
    same photos then got another feature cache key, so identical runs
    rebuilt identical caches beside each other. The bytes still change the
    key when a package ships another photo under the same name. (About 4 MB
    for the 23 training photos: a few ms.)
    """
    lines = []
    for name, path in zip(names, files, strict=True):
        with open(path, "rb") as file:
            lines.append(f"{name} {hashlib.sha256(file.read()).hexdigest()}")
    return "\n".join(lines)


# Local folders.


def _folder_files(path: str, split: str) -> list[str]:
    root = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(root):
        raise ValueError(f"Expected an existing folder after 'folder:'. Received: path={path!r}")
    has_split_folders = all(os.path.isdir(os.path.join(root, name)) for name in ("train", "test"))
    if has_split_folders:
        if not os.path.isdir(os.path.join(root, split)):
            raise ValueError(
                f"Expected split to name a subfolder of {root} (it has train/ and test/). "
                f"Received: split={split!r}"
            )
        base = os.path.join(root, split)
    elif split in ("train", "test"):
        base = root
    else:
        raise ValueError(
            f"Expected split 'train' or 'test' for {root} (no train/ and test/ subfolders). "
            f"Received: split={split!r}"
        )

    files, skipped = [], {"not images by content": [], "unsupported types": [], "empty": []}
    other_split = 0  # Photos (by extension) that the path hash puts in the other split.
    for directory, subdirectories, names in os.walk(base):
        subdirectories.sort()
        for name in sorted(names):
            file_path = os.path.join(directory, name)
            if not has_split_folders and _folder_split(root, file_path) != split:
                other_split += name.lower().endswith(IMAGE_EXTENSIONS)
                continue
            reason = _skip_reason(file_path)
            if reason:
                skipped[reason].append(file_path)
            else:
                files.append(file_path)
    num_skipped = sum(len(paths) for paths in skipped.values())
    if num_skipped:
        examples = [path for paths in skipped.values() for path in paths][:3]
        logging.warning(
            "folder:%s split %r: skipped %d files at listing (%s), e.g. %s",
            root,
            split,
            num_skipped,
            ", ".join(f"{len(paths)} {reason}" for reason, paths in skipped.items()),
            ", ".join(examples),
        )
    if files:
        return files
    if other_split:
        raise ValueError(
            f"Expected photos in split {split!r} of {root}: its {other_split} photos are all in "
            f"the other split (without train/ and test/ subfolders, about "
            f"{FOLDER_TEST_PERCENT}% of a folder's photos are 'test', by a hash of their "
            f"paths). Add photos, or make train/ and test/ subfolders. Received: split={split!r}"
        )
    raise ValueError(
        f"Expected photos ({', '.join(IMAGE_EXTENSIONS)}) in {base}; it has none"
        + (f" ({num_skipped} files skipped, see the warning)" if num_skipped else "")
        + f". Received: source='folder:{path}', split={split!r}"
    )


def _folder_identity(files: tuple[str, ...]) -> str:
    """A folder's identity (cache keys): each photo's path, byte size and modification time.

    A photo replaced under its own name (re-exported, re-cropped) changes its
    size or time, so a cache of the old photo is not read for the new one.
    Reading every photo's bytes, as the bundled photos' identity does, would
    cost a pass over a large folder at every start; a stat costs little.
    """
    entries = []
    for path in files:
        stat = os.stat(path)
        entries.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return "\n".join(entries)


def _folder_split(root: str, file_path: str) -> str:
    relative = os.path.relpath(file_path, root).replace(os.sep, "/")
    bucket = int(hashlib.sha256(relative.encode("utf-8")).hexdigest(), 16) % 100
    return "test" if bucket < FOLDER_TEST_PERCENT else "train"


def _skip_reason(file_path: str) -> str | None:
    if not file_path.lower().endswith(IMAGE_EXTENSIONS):
        return "unsupported types"
    if not os.path.isfile(file_path):  # A FIFO or device would block the read below.
        return "not images by content"
    try:
        with open(file_path, "rb") as file:
            head = file.read(16)
    except OSError:
        return "not images by content"
    if not head:
        return "empty"
    return None if image_headers.image_format(head) else "not images by content"


# TFDS.


def _tfds_source(source: str, split: str) -> Source:
    spec = urllib.parse.urlsplit(source[len("tfds:") :])
    name = spec.path
    if not name:
        raise ValueError(f"Expected 'tfds:NAME[/CONFIG]'. Received: source={source!r}")
    query = urllib.parse.parse_qs(spec.query)
    unknown = set(query) - {"download", "data_dir"}
    if unknown:
        raise ValueError(
            f"Expected only 'download' and 'data_dir' options in a tfds source. "
            f"Received: source={source!r}"
        )
    download = query.get("download", ["false"])[-1].lower() in ("1", "true", "yes")
    data_dir = query.get("data_dir", [None])[-1]

    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names.
        raise ValueError(
            "Expected the name of a TFDS dataset (tfds.list_builders()), e.g. "
            f"'tfds:imagenette/320px-v2'. Received: source={source!r}"
        ) from error
    image_key = _tfds_image_key(builder.info.features, source)
    options = {"name": name, "data_dir": data_dir, "download": download, "image_key": image_key}
    identity = f"tfds:{builder.info.full_name}:{split}:{builder.data_dir}:{image_key}"
    return Source(source, split, None, identity=identity, tfds_options=options)


def _tfds_image_key(features, source: str) -> str:
    import tensorflow_datasets as tfds

    image_features = [
        key for key, feature in features.items() if isinstance(feature, tfds.features.Image)
    ]
    if not image_features:
        raise ValueError(
            f"Expected a TFDS dataset with an Image feature. Received: source={source!r}"
        )
    return "image" if "image" in image_features else image_features[0]


def _tfds_records(source: Source, *, shuffle: bool, seed: int | None) -> tf.data.Dataset:
    import tensorflow_datasets as tfds

    options = source.tfds_options
    builder = tfds.builder(options["name"], data_dir=options["data_dir"])
    if options["download"]:
        builder.download_and_prepare()
    read_config = tfds.ReadConfig(shuffle_seed=seed) if shuffle else tfds.ReadConfig()
    try:
        dataset = builder.as_dataset(
            split=source.split,
            shuffle_files=shuffle,
            decoders={options["image_key"]: tfds.decode.SkipDecoding()},
            read_config=read_config,
        )
    except AssertionError as error:  # tfds's "could not find data" is an AssertionError.
        raise ValueError(
            f"TFDS dataset {options['name']!r} is not prepared in {builder.data_dir} and "
            "sources are offline by default. Prepare it (e.g. `tfds build NAME` on a machine "
            "with internet, or a manual download), or pass "
            f"'tfds:{options['name']}?download=true'. Received: source={source.source!r}"
        ) from error
    key = options["image_key"]
    dataset = dataset.map(lambda example: {"bytes": example[key]})
    if shuffle:
        dataset = dataset.shuffle(_TFDS_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return dataset
