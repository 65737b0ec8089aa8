"""Where a run's model is saved and restored from: its checkpoints and its final model.

A work dir holds

    WORK_DIR/checkpoints/ckpt-<step>.keras   model + optimiser state, newest two kept
    WORK_DIR/model.keras                     the final model, with its optimiser state too

Both are whole `.keras` models written through `files.atomic_path`, so a
killed run never leaves a file that looks complete. `restore` loads the
newest readable one: an unreadable checkpoint is skipped with a warning and
the previous one is used, and a work dir whose checkpoints are all
unreadable resumes from its final model (its optimiser's iteration count is
the step). With nothing readable it refuses rather than start again from
step 0 over the unreadable files.

Keras's `BackupAndRestore` is not used: it keeps one backup (two with
`double_checkpoint`), writes it in place, deletes it when `fit` returns (a
run here makes several `fit` calls) and restores weights into a model built
beforehand, so a corrupt newest file, the final model as a resume point and
the checks of a restored model against the config would all be lost.

Example:
    >>> model = restore("/tmp/work")  # None for a new run.
    >>> Checkpoints("/tmp/work/checkpoints").steps()
    [500, 1000]
"""

from __future__ import annotations

import glob
import os
import re

import keras
from absl import logging

from keras_invert import files

FINAL_MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d+)\.keras$")


def optimizer_step(model: keras.Model) -> int:
    """The optimiser's step counter (`int()` of a distributed variable fails)."""
    return int(model.optimizer.iterations.numpy())


class Checkpoints:
    """Whole-model checkpoints (`.keras`, with optimiser state) written atomically.

    Args:
        directory: where `ckpt-<step>.keras` files live.
        keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, directory: str, keep: int = 2):
        self.directory = directory
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = (_CHECKPOINT_PATTERN.match(n) for n in os.listdir(self.directory))
        return sorted(int(m.group(1)) for m in found if m)

    def path(self, step: int) -> str:
        return os.path.join(self.directory, f"ckpt-{step:09d}.keras")

    def save(self, model: keras.Model, step: int) -> str:
        """Writes the checkpoint of `step` and deletes all but the newest `keep`."""
        final = self.path(step)
        with files.atomic_path(final) as temporary:
            model.save(temporary)
        for old in self.steps()[: -self.keep]:
            os.remove(self.path(old))
        return final

    def remove_partial(self) -> None:
        """Deletes the partial files a killed run left (only the writing process may)."""
        for leftover in glob.glob(os.path.join(self.directory, f"{files.PARTIAL_PREFIX}*")):
            logging.warning("Removing a partial file left by a killed run: %s", leftover)
            os.remove(leftover)

    def restore_latest(self, remove_partial: bool = True) -> keras.Model | None:
        """The newest readable checkpoint as a compiled model, or None.

        Args:
            remove_partial: delete the partial files a killed run left (only
                the process that writes checkpoints, the chief, may).
        """
        if remove_partial:
            self.remove_partial()
        _, model, _ = _load_first([self.path(step) for step in reversed(self.steps())])
        return model


def save_final(model: keras.Model, directory: str) -> str:
    """Writes `directory/model.keras` atomically; returns its path."""
    path = os.path.join(directory, FINAL_MODEL)
    with files.atomic_path(path) as temporary:
        model.save(temporary)
    return path


def restore(work_dir: str, remove_partial: bool = True) -> keras.Model | None:
    """The model a run in `work_dir` resumes from: its newest readable checkpoint or final model.

    A checkpoint that does not load is skipped with a warning. The final
    `model.keras` holds the optimiser state and step as a checkpoint does, so
    a work dir whose checkpoints are all unreadable resumes from it.

    Args:
        work_dir: the run's directory.
        remove_partial: delete the partial files a killed run left (only the
            process that writes into the work dir, the chief, may).

    Returns:
        The compiled model, or None for a work dir without checkpoints or a
        final model (a new run).

    Raises:
        ValueError: the work dir holds checkpoints or a final model and none
            of them loads (starting again from step 0 would overwrite them).
    """
    checkpoints = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR))
    if remove_partial:
        checkpoints.remove_partial()
    paths = [checkpoints.path(step) for step in reversed(checkpoints.steps())]
    final = os.path.join(work_dir, FINAL_MODEL)
    if os.path.exists(final):
        paths.append(final)
    path, model, failures = _load_first(paths)
    if model is not None:
        logging.info("Resuming from %s (step %d).", path, optimizer_step(model))
    elif failures:
        unreadable = "; ".join(
            f"{os.path.relpath(file, work_dir)} ({why})" for file, why in failures.items()
        )
        raise ValueError(
            f"Nothing in {work_dir} to resume from: {unreadable}. Move these files away to "
            f"train again from step 0, or use a new work dir. Received: work_dir={work_dir!r}"
        )
    return model


def _load_first(paths: list[str]) -> tuple[str | None, keras.Model | None, dict[str, str]]:
    """The first of `paths` that loads with its optimiser state: `(path, model, failures)`.

    `failures` says why each path before it did not load; `(None, None,
    failures)` when none did.
    """
    failures = {}
    for path in paths:
        try:
            model = keras.saving.load_model(path)
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped.
            failures[path] = f"{type(error).__name__}: {str(error).strip()[:200]}"
        else:
            if getattr(model, "optimizer", None) is not None:
                return path, model, failures
            failures[path] = "a model without optimiser state"
        logging.warning("Skipping %s: %s", path, failures[path])
    return None, None, failures
