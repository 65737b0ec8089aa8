"""Starts or resumes a training run in a work dir: its config, the checks first, then `train`.

The work dir's `config.json` is the run's single source of truth. A new run
starts from a preset with the caller's changes; a work dir that holds a run
resumes it, and a change to what it trains is refused as a different run
(`config.RESUMABLE_CHANGES` may change: how it runs). Everything a start can
fail on (the config, the strategy, the global batch, the data, the model's
image size and weights files, the run `init_from` names) is checked before
anything is written, and `config.json` is written at the first training
step, so a start that fails leaves the work dir as it was and the corrected
start is a new run.

Example:
    >>> from keras_invert import runs
    >>> config = runs.resolve_config("/tmp/work", {"steps": 200}, preset="demo")
    >>> strategy = runs.check_start(config, "/tmp/work")
    >>> model = runs.run(config, dataset, "/tmp/work", strategy=strategy)
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from keras_invert import building, checkpoints, distribute, files, presets, registry, training
from keras_invert import config as config_lib
from keras_invert.callbacks import ConfigWriter
from keras_invert.config import TrainConfig

# What a collective op raises when a peer died or hung.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


class WorkerLostError(RuntimeError):
    """Raised when another worker of a multi-worker run stopped or became unreachable."""


def resolve_config(work_dir: str, changes: dict, preset: str | None = None) -> TrainConfig:
    """The config a run in `work_dir` trains with: the stored one, or a preset, with `changes`.

    Args:
        work_dir: the run's directory.
        changes: config fields to set.
        preset: the starting point of a new run, one of
            `presets.preset_names()` (None: the preset named like
            `changes["representation"]` if there is one, else `TrainConfig`'s
            defaults).

    Raises:
        ValueError: `preset` is not a preset's name, or `work_dir` holds a
            run and `changes` differ from its config in a field outside
            `config.RESUMABLE_CHANGES`.
    """
    if preset is not None:
        presets.preset(preset)  # An unknown name is refused, not silently ignored.
    stored = config_lib.load(work_dir)
    if stored is not None:
        conflicts = config_conflicts(stored, changes)
        if conflicts:
            raise ValueError(
                f"{work_dir} holds a run with a different config ({conflicts}, stored vs flag). "
                "Use a new --work_dir, or drop the flags to resume."
            )
        # A preset only starts a run, but one of another representation (not overridden
        # by a flag, which the check above compares) is a mistake, not a resume.
        wanted = None
        if preset is not None and "representation" not in changes:
            wanted = presets.preset(preset).representation
        if wanted is not None and wanted != stored.representation:
            raise ValueError(
                f"{work_dir} holds a run of {stored.representation}; preset {preset!r} trains "
                f"{wanted}. Use a new --work_dir, or drop --preset to resume. "
                f"Received: preset={preset!r}"
            )
        return config_lib.replace(stored, **changes)
    name = preset or changes.get("representation", "hog")
    base = presets.preset(name) if name in presets.preset_names() else config_lib.TrainConfig()
    return config_lib.replace(base, **changes)


def config_conflicts(stored: TrainConfig, changes: dict) -> dict:
    """The fields of `changes` that a run with config `stored` cannot take on a resume.

    Returns `{name: (stored value, changed value)}` for each field outside
    `config.RESUMABLE_CHANGES` whose value differs; empty when the run may go on.
    """
    return {
        name: (getattr(stored, name), value)
        for name, value in changes.items()
        if name not in config_lib.RESUMABLE_CHANGES and getattr(stored, name) != value
    }


def check_start(
    config: TrainConfig, work_dir: str, check_data: Callable[[TrainConfig], object] | None = None
):
    """Checks everything a start of `config` can fail on; returns the run's strategy.

    Writes nothing. The strategy is made before any TensorFlow op runs, as a
    multi-worker strategy must be (it configures the collective ops and
    starts this process's server).

    Args:
        config: the resolved config.
        work_dir: the run's directory; a new run there (no `config.json`)
            builds its model once, to check the image size and weights files
            (and the decoder of `config.init_from` against it).
        check_data: called with `config` after the strategy is made; raises
            `ValueError` for data the run cannot train on.

    Raises:
        ValueError: what would fail, in one message (also a work dir or cache
            folder that is a file or cannot be written).
    """
    building.check_config(config)
    if config.train_split == config.test_split:
        logging.warning(
            "Training on split %r, which is also the test split: reconstruct and evaluate "
            "measure held-out photos on --split=%s by default, and these are not held out.",
            config.train_split, config.test_split,
        )  # fmt: skip
    _warn_of_short_averaging(config)
    files.check_folder(work_dir, "work_dir")
    if config.cache_dir is not None:
        files.check_folder(os.path.join(work_dir, config.cache_dir), "cache_dir")
    if config.loss != "pixel":
        building.comparator_representation(config.comparator or config_lib.DEFAULT_COMPARATOR)
    strategy = distribute.make_strategy(config.strategy)
    distribute.check_global_batch(strategy, config.batch_size)
    if check_data is not None:
        check_data(config)
    if config_lib.load(work_dir) is None:
        _check_new_work_dir(config, work_dir)
        model = building.build_model(config)
        _check_step_memory(model, config, distribute.num_workers(strategy))
        if config.init_from is not None:
            training.initialize_from(model, config)
    return strategy


def _check_step_memory(model, config: TrainConfig, workers: int) -> None:
    """Refuses, on a CPU, a batch whose decoder activations alone exceed the free memory.

    A `--batch_size` typo (100000) would otherwise take all the memory in its
    first step and look like a hang. Only the lower bound is compared
    (`building.activation_bytes`), so no batch that fits is refused; above
    half the free memory it is a warning. On an accelerator the memory is
    the device's, which TensorFlow reports itself.
    """
    if any(tf.config.list_physical_devices(kind) for kind in ("GPU", "TPU")):
        return
    available = _available_memory()
    batch = -(-config.batch_size // workers)  # This machine's share of the global batch.
    needed = building.activation_bytes(model) * batch
    if available is None or needed <= available / 2:
        return
    if needed > available:
        raise ValueError(
            "Expected a batch whose training step fits in this machine's memory: at "
            f"{batch} examples the decoder's activations alone take {needed / 2**30:.1f} GiB, "
            f"and {available / 2**30:.1f} GiB is free. Received: batch_size={config.batch_size}"
        )
    logging.warning(
        "batch_size=%d: the decoder's activations alone take %.1f of the %.1f GiB free, and a "
        "step needs more (gradients, the optimiser): expect swapping or a stop for memory.",
        config.batch_size, needed / 2**30, available / 2**30,
    )  # fmt: skip


def _available_memory() -> int | None:
    """Bytes of memory free for a new process (Linux's MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# Weight averaging forgets its start at a rate of 1 - momentum a step: after
# this many times 1 / (1 - momentum) steps, e**-5 (under 1%) of it is left.
_AVERAGING_SPANS = 5


def _warn_of_short_averaging(config: TrainConfig) -> None:
    """Warns when `ema_momentum` is too high for `steps`: the average would still hold the start.

    The average starts at the first step's weights; after `steps` steps their
    share is `ema_momentum ** steps` (0.999 over 1,500 steps: 22%, and a
    held-out error of 0.38 where the raw weights give 0.13).
    """
    momentum = config.ema_momentum
    if momentum is None or config.steps * (1 - momentum) >= _AVERAGING_SPANS:
        return
    logging.warning(
        "ema_momentum=%g over %d steps: the final model's averaged weights would still hold "
        "%.0f%% of the first steps' (barely trained) weights. Train at least %d steps, or "
        "average with ema_momentum <= %.4g.",
        momentum, config.steps, 100 * momentum**config.steps,
        math.ceil(round(_AVERAGING_SPANS / (1 - momentum), 6)), 1 - _AVERAGING_SPANS / config.steps,
    )  # fmt: skip


def _check_new_work_dir(config: TrainConfig, work_dir: str) -> None:
    """Refuses to start a run in a folder that holds something else (photos, an export).

    A new run's folder may be missing, empty, or hold what a run writes
    (a feature cache filled beforehand, as a reproduction does; a start killed
    before its config was saved).
    """
    if not os.path.isdir(work_dir):
        return
    own = {
        config_lib.CONFIG_FILE, checkpoints.FINAL_MODEL, checkpoints.CHECKPOINT_DIR,
        "tensorboard",
    }  # fmt: skip
    if config.cache_dir is not None and not os.path.isabs(config.cache_dir):
        own.add(os.path.normpath(config.cache_dir).split(os.sep)[0])
    others = sorted(
        name for name in os.listdir(work_dir) if name not in own and not name.startswith(".")
    )
    if others:
        raise ValueError(
            "Expected work_dir to be a new or empty folder, or the work dir of a run (with "
            f"{config_lib.CONFIG_FILE}). Received: work_dir={work_dir!r}, which holds "
            f"{len(others)} other entries ({', '.join(map(repr, others[:3]))}"
            f"{', ...' if len(others) > 3 else ''})"
        )


def cache_dir(config: TrainConfig, work_dir: str, chief: bool = True) -> str | None:
    """The feature cache folder this process's pipeline uses (None: no cache).

    A relative `config.cache_dir` lives in the work dir. A tf.data service
    computes the features on its workers, so a local cache of them would be
    bypassed: none then. Only the chief writes into the work dir; the other
    workers cache their (identical, seeded) crops in a private folder removed
    when the process exits.
    """
    if config.cache_dir is None:
        return None
    folder = os.path.join(work_dir, config.cache_dir)
    if config.data_service and not config.cache_features:
        logging.warning("--data_service is set: the feature cache %s is not used.", folder)
        return None
    if (
        not (config.cache_features or config.autoencoder)
        and registry.get(config.representation).encode_in_model
    ):
        logging.info(
            "The cache holds crops and the fixed encoder runs in every step; "
            "--cache_features would cache its features and train the decoder alone."
        )
    if not chief and not os.path.isabs(config.cache_dir):
        folder = tempfile.mkdtemp(prefix="keras_invert-cache-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def run(config: TrainConfig, dataset, work_dir: str, *, strategy, sample_batch=None) -> keras.Model:
    """`training.train` of a checked start (`check_start`), writing `config.json` at its first step.

    Args:
        config, dataset, work_dir, strategy, sample_batch: as `training.train`.

    Raises:
        callbacks.DivergenceError: the loss turned NaN/Inf or exploded.
        WorkerLostError: a collective op failed or timed out because another
            worker of a multi-worker run stopped; the checkpoints are kept.
    """
    chief = distribute.is_chief(strategy)
    try:
        return training.train(
            config,
            dataset,
            work_dir,
            strategy=strategy,
            sample_batch=sample_batch,
            callbacks=[ConfigWriter(config, work_dir)] if chief else [],
        )
    except _PEER_ERRORS as error:
        if distribute.num_workers(strategy) < 2:
            raise
        logging.debug("The failed collective:", exc_info=True)
        reason = re.sub(r"\{\{[^}]*\}\}\s*", "", str(error).strip().splitlines()[0])[:300]
        raise WorkerLostError(
            f"another worker of this multi-worker run stopped or became unreachable "
            f"({type(error).__name__}: {reason}). The checkpoints in {work_dir} are kept: "
            "start every worker again with the same command to resume from the last one."
        ) from error
