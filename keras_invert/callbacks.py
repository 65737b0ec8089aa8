"""The Keras callbacks of a training run: checkpoints, divergence, time budget, images, config.

`training.train` adds the first four to every run; `runs.run` adds
`ConfigWriter`. Keras's own callbacks lack what these check:
`ModelCheckpoint` writes in place (a killed run leaves a file that looks
complete) and keeps every file; `TerminateOnNaN` stops `fit` quietly on a
NaN/Inf loss, so the run would save a diverged model as its final one, and it
misses a loss that explodes while staying finite.

Example:
    >>> model.fit(data, callbacks=[DivergenceGuard(factor=10.0), TimeBudget(minutes=5)])
"""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np
from absl import logging

from keras_invert import config as config_lib
from keras_invert import distribute
from keras_invert.checkpoints import Checkpoints, optimizer_step


class DivergenceError(RuntimeError):
    """Raised when the training loss is not finite or explodes.

    Args:
        reason: what happened ("Training diverged at step 12: the loss is nan.").
        advice: what to do about it; the message is `reason` then `advice`.
    """

    def __init__(self, reason: str, advice: str = ""):
        super().__init__(f"{reason} {advice}".strip())
        self.reason = reason


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (each `steps_per_epoch` steps, and the last)."""

    def __init__(self, checkpoints: Checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(self.model, optimizer_step(self.model))


# A work dir keeps the rate it was started with (a resume with another is
# refused as a different run), so the way out is a new one.
_LOWER_THE_RATE = (
    "Start again in a new --work_dir with a lower --learning_rate "
    "(docs/reference.md, Training: 1e-4 where 1e-3 diverged)."
)


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with `DivergenceError` when the loss is not finite or explodes.

    Args:
        factor: the epoch's running loss may not exceed `factor` times the best
            epoch loss seen so far.
    """

    def __init__(self, factor: float = 10.0):
        super().__init__()
        self.factor = factor
        self.best = math.inf

    def _check(self, loss):
        if loss is None:
            return
        loss = float(loss)
        step = optimizer_step(self.model)
        if not math.isfinite(loss):
            raise DivergenceError(
                f"Training diverged at step {step}: the loss is {loss}.", _LOWER_THE_RATE
            )
        if loss > self.factor * self.best:
            raise DivergenceError(
                f"Training diverged at step {step}: the running loss {loss:.4g} is more than "
                f"{self.factor:g} times the best epoch loss {self.best:.4g}.",
                _LOWER_THE_RATE,
            )

    def on_train_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"))

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        self._check(loss)
        if loss is not None:
            self.best = min(self.best, float(loss))


class TimeBudget(keras.callbacks.Callback):
    """Stops training after `minutes` of wall time, at the end of an epoch.

    An epoch ends with a checkpoint, so a later run resumes exactly there.
    The clock starts at the first of the run's `fit` calls. Under several
    workers they stop together when any worker's budget is spent.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.start = None

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        spent = time.monotonic() - self.start > self.seconds
        if distribute.any_worker(self.model.distribute_strategy, spent):
            logging.info("Time budget of %.1f minutes spent: stopping here.", self.seconds / 60)
            self.model.stop_training = True


class ReconstructionImages(keras.callbacks.Callback):
    """Writes `target | reconstruction` image pairs to TensorBoard every epoch.

    Args:
        log_dir: TensorBoard directory.
        features: a small batch of features.
        targets: the matching images in [0, 1].
    """

    def __init__(self, log_dir: str, features, targets):
        super().__init__()
        self.log_dir = log_dir
        self.features = np.asarray(features)
        self.targets = np.asarray(targets)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf  # TensorBoard's image summaries are TensorFlow's.

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "images"))
        # A direct call, not `predict`: under several workers `predict` is a
        # collective the other workers (which write no images) never join.
        reconstructions = keras.ops.convert_to_numpy(self.model(self.features, training=False))
        reconstructions = np.clip(reconstructions.astype(np.float32), 0.0, 1.0)
        pairs = np.concatenate([self.targets, reconstructions], axis=2)
        with self._writer.as_default():
            tf.summary.image(
                "target|reconstruction",
                pairs,
                step=optimizer_step(self.model),
                max_outputs=len(pairs),
            )
        self._writer.flush()


class ConfigWriter(keras.callbacks.Callback):
    """Writes the run's `config.json` into the work dir at the first step of each epoch.

    Not before: a start that fails before its first step (its first batch,
    memory) leaves no config that would refuse the corrected start as a
    different run.

    Args:
        config: the resolved config of the run.
        work_dir: the run's directory.
    """

    def __init__(self, config: config_lib.TrainConfig, work_dir: str):
        super().__init__()
        self.config = config
        self.work_dir = work_dir

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            config_lib.save(self.config, self.work_dir)
