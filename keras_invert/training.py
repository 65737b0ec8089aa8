"""Training a decoder with Keras `fit`: checkpoints, resumption, divergence guard.

Implements SPEC.md section 3: Adam on the squared Euclidean pixel loss (mean
squared error: the same minimiser, a constant scale), the learning rate lowered
towards the end. The work dir holds everything a run needs to resume:

    WORK_DIR/config.json          resolved configuration (written by the caller)
    WORK_DIR/checkpoints/ckpt-<step>.keras   model + optimiser state, newest two kept
    WORK_DIR/tensorboard/         scalars and reconstruction images
    WORK_DIR/model.keras          the final model (decoder, or encoder + decoder)

Checkpoints are written to a temporary name and renamed into place, so a
killed run never leaves a checkpoint that looks complete; an unreadable one is
skipped with a warning and the previous one is used. Running `train` again on
the same work dir continues at the saved step (losing at most one checkpoint
interval, `steps_per_epoch` steps).

A loss that turns NaN/Inf or explodes raises `DivergenceError` (SPEC.md
section 3 records Adam 1e-3 diverging on small data) instead of training on.

Example:
    >>> from keras_invert import config, training
    >>> run = config.preset("demo")
    >>> model = training.train(run, dataset, "/tmp/work")
"""

from __future__ import annotations

import glob
import math
import os
import re
import time

import keras
import numpy as np
from absl import logging

from keras_invert import config as config_lib
from keras_invert import registry
from keras_invert.config import TrainConfig
from keras_invert.reconstructor import Encoder, Reconstructor

FINAL_MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d+)\.keras$")


class DivergenceError(RuntimeError):
    """Raised when the training loss is not finite or explodes."""


def build_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with the rate divided by 10 after each fraction in `learning_rate_drops`."""
    boundaries = sorted({max(1, int(f * config.steps)) for f in config.learning_rate_drops})
    if boundaries:
        values = [config.learning_rate / 10**i for i in range(len(boundaries) + 1)]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        rate = config.learning_rate
    return keras.optimizers.Adam(rate, beta_1=config.beta_1, beta_2=config.beta_2)


def check_config(config: TrainConfig) -> registry.Representation:
    """Checks the fields that depend on the representation; returns the representation."""
    representation = registry.get(config.representation)
    if not representation.encode_in_model and (
        config.autoencoder or config.encoder_weights is not None
    ):
        raise ValueError(
            "autoencoder and encoder_weights need a network encoder (an alexnet/... "
            f"representation). Received: representation={config.representation!r}"
        )
    return representation


def build_model(config: TrainConfig) -> keras.Model:
    """The compiled training model of `config`, freshly initialised.

    For feature representations (HOG, LBP, SIFT) this is the decoder, fed
    with features. For a network encoder (`encode_in_model`: AlexNet) it is a
    `Reconstructor`, `images -> encoder -> decoder`, so that the network runs
    on the accelerator inside the train step: the encoder starts from
    `config.encoder_weights` (random without) and stays frozen, or with
    `config.autoencoder` is trained jointly with the decoder (SPEC.md
    section 3, the paper's two modes).
    """
    representation = check_config(config)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    image_size = config.image_size or representation.default_image_size
    model = representation.build_decoder(
        image_size, width=config.width, negative_slope=config.negative_slope
    )
    if representation.encode_in_model:
        network = representation.make_encoder(**config_lib.encoder_options(config))
        encoder = Encoder(network, trainable=config.autoencoder, name="encoder")
        model = Reconstructor(encoder, model, image_size, name="reconstructor")
    model.compile(optimizer=build_optimizer(config), loss="mean_squared_error", jit_compile=False)
    return model


def _describe(model: keras.Model) -> str:
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if not isinstance(model, Reconstructor):
        return f"decoder ({trainable:,} parameters)"
    mode = "autoencoder, encoder trained" if model.encoder.trainable else "fixed encoder"
    return (
        f"encoder + decoder, {mode} ({model.encoder.count_params():,} encoder and "
        f"{model.decoder.count_params():,} decoder parameters, {trainable:,} trained)"
    )


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
        os.makedirs(self.directory, exist_ok=True)
        final = self.path(step)
        # Keras insists on the .keras suffix; the leading dot keeps the partial
        # file out of `steps()` until the rename makes it complete.
        temporary = os.path.join(self.directory, f".partial-{os.getpid()}-{step}.keras")
        model.save(temporary)
        os.replace(temporary, final)
        for old in self.steps()[: -self.keep]:
            os.remove(self.path(old))
        return final

    def restore_latest(self) -> keras.Model | None:
        """The newest readable checkpoint as a compiled model, or None."""
        for leftover in glob.glob(os.path.join(self.directory, ".partial-*")):
            logging.warning("Removing a partial checkpoint left by a killed run: %s", leftover)
            os.remove(leftover)
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                model = keras.saving.load_model(path)
            except Exception as error:  # noqa: BLE001 - any unreadable file is skipped.
                logging.warning("Skipping unreadable checkpoint %s: %s", path, error)
                continue
            logging.info("Resuming from %s (step %d).", path, step)
            return model
        return None


class CheckpointCallback(keras.callbacks.Callback):
    """Saves a checkpoint at the end of every epoch (every `steps_per_epoch` steps)."""

    def __init__(self, checkpoints: Checkpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(self.model, int(self.model.optimizer.iterations))


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
        step = int(self.model.optimizer.iterations)
        if not math.isfinite(loss):
            raise DivergenceError(
                f"Training diverged at step {step}: the loss is {loss}. Lower --learning_rate "
                "(SPEC.md section 3: 1e-3 diverged on small data, 1e-4 did not) and start a new "
                "work dir, or resume this one from its last checkpoint with a lower rate."
            )
        if loss > self.factor * self.best:
            raise DivergenceError(
                f"Training diverged at step {step}: the running loss {loss:.4g} is more than "
                f"{self.factor:g} times the best epoch loss {self.best:.4g}. Lower --learning_rate."
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

    Stopping at an epoch boundary keeps every checkpoint at a multiple of
    `steps_per_epoch`, so a later run resumes exactly there.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if time.monotonic() - self.start > self.seconds:
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
        reconstructions = np.clip(self.model.predict(self.features, verbose=0), 0.0, 1.0)
        pairs = np.concatenate([self.targets, reconstructions], axis=2)
        with self._writer.as_default():
            tf.summary.image(
                "target|reconstruction",
                pairs,
                step=int(self.model.optimizer.iterations),
                max_outputs=len(pairs),
            )
        self._writer.flush()


def load_trained_model(work_dir: str) -> keras.Model:
    """The work dir's final model, else its newest readable checkpoint.

    Raises:
        ValueError: the work dir has neither yet.
    """
    final = os.path.join(work_dir, FINAL_MODEL)
    if os.path.exists(final):
        return keras.saving.load_model(final)
    model = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR)).restore_latest()
    if model is None:
        raise ValueError(f"The work dir has no trained model yet. Received: work_dir={work_dir!r}")
    logging.warning("No final model in %s: using its latest checkpoint.", work_dir)
    return model


def restore_or_build(config: TrainConfig, work_dir: str) -> keras.Model:
    """The latest checkpoint in `work_dir`, or a fresh compiled decoder."""
    model = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR)).restore_latest()
    return model if model is not None else build_model(config)


def train(
    config: TrainConfig,
    dataset,
    work_dir: str,
    *,
    sample_batch=None,
    callbacks: list | None = None,
    verbose="auto",
) -> keras.Model:
    """Trains (or resumes training of) the decoder of `config` in `work_dir`.

    Args:
        config: the run's configuration; `steps` is the total, so a resumed run
            trains only the remaining steps.
        dataset: a `tf.data.Dataset` of `(features, target)` batches, repeated,
            or a callable `initial_step -> dataset` so a resumed run can start
            its data stream where it stopped. For a network encoder inside
            the model (AlexNet) the "features" are the images.
        work_dir: checkpoints, TensorBoard logs and the final model go here.
        sample_batch: optional `(features, targets)` shown in TensorBoard.
        callbacks: extra Keras callbacks.
        verbose: passed to `fit` (progress bar by default).

    Returns:
        The trained model (also saved as `work_dir/model.keras`): the decoder,
        or for AlexNet a `Reconstructor` whose `.decoder` is the decoder.

    Raises:
        DivergenceError: the loss turned NaN/Inf or exploded.
    """
    os.makedirs(work_dir, exist_ok=True)
    checkpoints = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR))
    model = checkpoints.restore_latest()
    if model is None:
        model = build_model(config)
        logging.info("Training a new %s %s.", config.representation, _describe(model))
    elif isinstance(model, Reconstructor) and model.encoder.trainable != config.autoencoder:
        raise ValueError(
            f"The checkpoints in {work_dir} were trained with autoencoder="
            f"{model.encoder.trainable}. Received: autoencoder={config.autoencoder!r}"
        )
    else:
        logging.info("Resumed %s %s.", config.representation, _describe(model))
    step = int(model.optimizer.iterations)
    epochs = math.ceil(config.steps / config.steps_per_epoch)
    initial_epoch = step // config.steps_per_epoch
    if initial_epoch >= epochs:
        logging.info("Nothing to do: the run already reached step %d of %d.", step, config.steps)
    else:
        data = dataset(step) if callable(dataset) else dataset
        all_callbacks = [
            DivergenceGuard(config.divergence_factor),
            keras.callbacks.TensorBoard(
                os.path.join(work_dir, "tensorboard"), update_freq="epoch", write_graph=False
            ),
            CheckpointCallback(checkpoints),
        ]
        if config.max_minutes is not None:
            all_callbacks.append(TimeBudget(config.max_minutes))
        if sample_batch is not None:
            all_callbacks.append(
                ReconstructionImages(os.path.join(work_dir, "tensorboard"), *sample_batch)
            )
        all_callbacks.extend(callbacks or [])
        model.fit(
            data,
            steps_per_epoch=config.steps_per_epoch,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=all_callbacks,
            verbose=verbose,
            shuffle=False,  # The pipeline shuffles; Keras cannot shuffle a tf.data stream.
        )
    final = os.path.join(work_dir, FINAL_MODEL)
    temporary = os.path.join(work_dir, f".partial-{os.getpid()}-{FINAL_MODEL}")
    model.save(temporary)
    os.replace(temporary, final)
    return model
