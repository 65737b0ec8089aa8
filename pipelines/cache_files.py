"""Where a feature cache lies on disk and whether it is complete: its folder, key and meta.json.

The dataset side (`pipelines.cache`) writes and reads the cached elements;
this module names their folder, places it and says whether it can be read.

- The folder name holds a key (`cache_key`) of everything the cached
  elements depend on, the machine-dependent encoder choices included (SIFT's
  backend, VLFeat or OpenCV), so changed arguments use another cache. A
  network feature cache's key includes a SHA-256 digest of the network's
  weights (`pipelines.network_features`), so other weights never read a
  stale cache.
- A cache is written into a hidden temporary folder that
  `keras_invert.files.atomic_path` renames into place only after a complete
  pass (`placed`), so a killed or failed build never leaves a cache that
  looks complete, and concurrent builders do not collide (the first to
  finish wins; the others keep its equivalent cache).
- `meta.json`, written last (`seal`), records the element count and the
  byte size of each data file: a cache whose `meta.json` does not parse, or
  whose files were cut short since, is rebuilt with a warning (`is_complete`).

Example:
    >>> final, key = cache_folder(config, source, crop_seed=crop_seed(config))
    >>> if not is_complete(final):
    ...     with placed(final) as temporary:
    ...         ...  # Write the data files into `temporary`.
    ...         seal(temporary, final, key, count)
    >>> count = element_count(final)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil

from absl import logging

from keras_invert import files
from pipelines import sources
from pipelines.dataset_config import DatasetConfig

_CACHE_FORMAT_VERSION = 1


def cache_folder(
    config: DatasetConfig,
    source: sources.Source,
    *,
    crop_seed: int,
    network_digest: str | None = None,
) -> tuple[str, str]:
    """The folder that holds the cache of `config` (under its `cache_dir`), and its key.

    `network_digest`: the SHA-256 of the network's weights, for a network
    feature cache (`network_features.NetworkFeatures.digest`).
    """
    key = cache_key(
        config.representation,
        config.encoder_options,
        config.image_size,
        source,
        config.training,
        config.crops_per_image,
        config.min_crop_scale,
        crop_seed,
        config.color_jitter,
        network_digest=network_digest,
        crops=config.yields_crops,
    )
    parts = (config.representation.name, source.split, str(config.image_size))
    parts += ("crops",) if config.yields_crops else ("features",) if network_digest else ()
    name = "-".join(_safe_name(part) for part in parts) + f"-{key[:16]}"
    return os.path.join(os.path.abspath(os.path.expanduser(config.cache_dir)), name), key


def cache_key(
    representation,
    encoder_options,
    image_size,
    source,
    training,
    crops_per_image,
    min_crop_scale,
    seed,
    color_jitter=0.0,
    network_digest=None,
    crops=False,
) -> str:
    """SHA-256 of everything the cached elements depend on (the folder name holds its start).

    `crops`: the cache holds crops for a model that computes the features
    (`DatasetConfig.yields_crops`); a crops cache and a features cache of
    one representation never share a key. (Only the crops cache of a feature
    op carries the entry; a network's crops and features caches differed
    already, so the keys of existing caches stay as they were.)
    """
    description = {
        "version": _CACHE_FORMAT_VERSION,
        "representation": representation.name,
        # Crops cached for an encoder inside the model do not depend on its options.
        # The options are the resolved ones (`registry.resolved_encoder_options`): a SIFT
        # cache built with VLFeat is never read on a machine that runs OpenCV.
        "encoder_options": None if crops or representation.encode_in_model else encoder_options,
        "image_size": image_size,
        "target_size": representation.target_size(image_size),
        "source": source.source,
        "split": source.split,
        "examples": source.identity,
        "training": training,
        # Evaluation caches one centre crop per photo: these do not matter then.
        "crops_per_image": crops_per_image if training else None,
        "min_crop_scale": float(min_crop_scale) if training else None,
        "seed": seed if training else None,
        "color_jitter": float(color_jitter) if training else None,
    }
    if crops and not representation.encode_in_model:
        description["holds"] = "crops"
    if network_digest is not None:
        # Network features: what the cache holds depends on the weights, not on a path.
        description["network_weights_sha256"] = network_digest
    text = json.dumps(description, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def crop_seed(config: DatasetConfig) -> int:
    """The seed of a cache's fixed crops: an unseeded cache has seed 0's, so later unseeded
    builds reuse it."""
    return 0 if config.seed is None else int(config.seed)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_") or "x"


@contextlib.contextmanager
def placed(final: str):
    """Yields a new temporary folder that becomes the cache folder `final` (`files.atomic_path`).

    When another builder placed an equivalent cache at `final` first, the
    rename fails and its cache is kept: no error then.
    """
    try:
        with files.atomic_path(final) as temporary:
            os.makedirs(temporary)
            yield temporary
    except OSError:
        if not is_complete(final):
            raise


def seal(temporary: str, final: str, key: str, count: int) -> None:
    """Marks the written cache in `temporary` complete (`meta.json`), to be renamed to `final`.

    `meta.json` records the byte size of every data file, so that a file cut
    short later (a full disk, a half-finished copy) is seen (`is_complete`).
    """
    if count == 0:
        raise ValueError(f"No decodable images for the cache {final}.")
    sizes = {
        name: os.path.getsize(os.path.join(temporary, name))
        for name in sorted(os.listdir(temporary))
        if name != "meta.json" and os.path.isfile(os.path.join(temporary, name))
    }
    with open(os.path.join(temporary, "meta.json"), "w") as file:
        json.dump({"key": key, "count": count, "sizes": sizes}, file)
    if os.path.exists(final) and _incomplete(final) is not None:
        logging.warning("Removing an incomplete cache folder %s.", final)
        shutil.rmtree(final, ignore_errors=True)


def is_complete(folder: str) -> bool:
    """Whether `folder` holds a complete cache (its `meta.json` is written last).

    A cache whose `meta.json` does not parse, or whose data files do not
    have the byte sizes it records, is not (a warning says why): it is
    rebuilt, as the cache is only a cache. A cache written before the sizes
    were recorded is taken on its `meta.json` alone.
    """
    problem = _incomplete(folder)
    if problem is not None and os.path.isfile(os.path.join(folder, "meta.json")):
        logging.warning("The feature cache at %s is damaged (%s): it is rebuilt.", folder, problem)
    return problem is None


def _incomplete(folder: str) -> str | None:
    """Why `folder` holds no complete cache, or None when it holds one."""
    for name in ("meta.json", "data.index"):
        if not os.path.isfile(os.path.join(folder, name)):
            return f"no {name}"
    meta = _meta(folder)
    if meta is None:
        return "its meta.json does not parse: damaged or half-written"
    for name, size in meta.get("sizes", {}).items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name}, recorded in its meta.json, is missing"
        if os.path.getsize(path) != size:
            return f"{name} holds {os.path.getsize(path)} bytes, not the {size} recorded"
    return None


def _meta(folder: str) -> dict | None:
    """The `meta.json` that `seal` wrote in `folder`, or None where it does not parse as one."""
    try:
        with open(os.path.join(folder, "meta.json"), "rb") as file:
            meta = json.loads(file.read())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError.
        return None
    valid = (
        isinstance(meta, dict)
        and isinstance(meta.get("count"), int)
        and isinstance(meta.get("sizes", {}), dict)
        and all(isinstance(size, int) for size in meta.get("sizes", {}).values())
    )
    return meta if valid else None


def holds_a_complete_cache(root: str) -> bool:
    """Whether the cache root `root` (a run's `cache_dir`) holds a complete cache of any key."""
    return os.path.isdir(root) and any(
        is_complete(os.path.join(root, name)) for name in os.listdir(root)
    )


def element_count(folder: str) -> int:
    """The number of cached elements that `seal` recorded in the complete cache `folder`."""
    meta = _meta(folder)
    if meta is None:  # Damaged since `is_complete` read it.
        raise ValueError(
            "Expected a JSON file written by keras_invert; this one does not parse (damaged or "
            f"half-written). Received: path={os.path.join(folder, 'meta.json')!r}"
        )
    return meta["count"]
