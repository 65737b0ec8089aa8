"""Training a decoder with Keras `fit`: checkpoints, resumption, divergence guard.

Implements docs/reference.md, Training: Adam on the squared Euclidean pixel loss (mean
squared error: the same minimiser, a constant scale), the learning rate lowered
towards the end. The work dir holds everything a run needs to resume:

    WORK_DIR/config.json          resolved configuration (written by the caller)
    WORK_DIR/checkpoints/ckpt-<step>.keras   model + optimiser state, newest two kept
    WORK_DIR/tensorboard/         scalars and reconstruction images
    WORK_DIR/model.keras          the final model (decoder, or encoder + decoder)

A run takes exactly `config.steps` optimiser steps in epochs of
`steps_per_epoch` steps; the last epoch is shorter when `steps` is not a
multiple of it. A checkpoint is written at the end of every epoch, so at
every multiple of `steps_per_epoch` and at the final step.

Checkpoints are written to a temporary name and renamed into place, so a
killed run never leaves a checkpoint that looks complete; an unreadable one is
skipped with a warning and the previous one is used. Running `train` again on
the same work dir continues at the saved step (losing at most one checkpoint
interval, `steps_per_epoch` steps). A work dir whose checkpoints are all
unreadable resumes from its final model, which holds the optimiser state and
step too; with nothing readable, `train` refuses rather than start again from
step 0 over the unreadable files.

A loss that turns NaN/Inf or explodes raises `DivergenceError` (docs/reference.md,
Training: Adam at 1e-3 diverged on small data) instead of training on.

Example:
    >>> from keras_invert import config, training
    >>> run = config.preset("demo")
    >>> model = training.train(run, dataset, "/tmp/work")
"""

from __future__ import annotations

import contextlib
import functools
import glob
import math
import os
import re
import shutil
import tempfile
import time

import keras
import numpy as np
from absl import logging

from keras_invert import config as config_lib
from keras_invert import distribute, registry
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
            "autoencoder and encoder_weights need a network encoder (alexnet/..., "
            "efficientnet-lite0/..., keras:...). "
            f"Received: representation={config.representation!r}"
        )
    config_lib.check_cache_features(
        config.cache_features, cache_dir=config.cache_dir, representation=representation
    )
    if config.cache_features:
        weights = config_lib.encoder_options(config).get("weights")
        if representation.random_without_weights and weights is None:
            raise ValueError(
                f"cache_features needs encoder_weights for {config.representation}: without "
                "them the encoder is random, drawn anew whenever it is built, so the cached "
                "features would not be those of the encoder rebuilt for export and evaluation. "
                "Received: encoder_weights=None"
            )
    return representation


def _uses_reconstructor(config: TrainConfig, representation: registry.Representation) -> bool:
    """Whether the training model holds the encoder (a network not fed from a feature cache)."""
    return representation.encode_in_model and not config.cache_features


@contextlib.contextmanager
def precision_scope(precision: str):
    """Layers created (and models compiled) inside compute in `precision`.

    Sets Keras's global dtype policy for the duration only, so models built
    elsewhere keep theirs. Under "mixed_float16" `compile` wraps the
    optimiser in a `LossScaleOptimizer`; the decoders' output layer stays
    float32 (`decoders.build_from_table`).

    Example:
        >>> with precision_scope("mixed_bfloat16"):
        ...     model = build_model(run)
    """
    if precision not in config_lib.PRECISIONS:
        raise ValueError(
            f"Expected precision in {config_lib.PRECISIONS}. Received: precision={precision!r}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _in_precision(build):
    """Runs `build(config, ...)` inside `precision_scope(config.precision)`."""

    @functools.wraps(build)
    def wrapper(config, *args, **kwargs):
        with precision_scope(config.precision):
            return build(config, *args, **kwargs)

    return wrapper


@_in_precision
def build_model(config: TrainConfig) -> keras.Model:
    """The compiled training model of `config`, freshly initialised.

    For feature representations (HOG, LBP, SIFT) this is the decoder, fed
    with features. For a network encoder (`encode_in_model`: AlexNet) it is a
    `Reconstructor`, `images -> encoder -> decoder`, so that the network runs
    on the accelerator inside the train step: the encoder starts from
    `config.encoder_weights` (random without) and stays frozen, or with
    `config.autoencoder` is trained jointly with the decoder (docs/reference.md,
    Training, the paper's two modes). With `config.cache_features` the
    fixed network's features come from the pipeline's cache, and the
    training model is the decoder alone.
    """
    representation = check_config(config)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    image_size = config.image_size or representation.default_image_size
    model = representation.build_decoder(
        image_size, width=config.width, negative_slope=config.negative_slope
    )
    if _uses_reconstructor(config, representation):
        network = representation.make_encoder(**config_lib.encoder_options(config))
        encoder = Encoder(network, trainable=config.autoencoder, name="encoder")
        model = Reconstructor(encoder, model, image_size, name="reconstructor")
    if config.loss == "pixel":
        model.compile(
            optimizer=build_optimizer(config),
            loss="mean_squared_error",
            jit_compile=config.jit_compile,
        )
        return model
    return _perceptual_model(config, model)


def _perceptual_model(config: TrainConfig, generator: keras.Model) -> keras.Model:
    """`generator` inside a compiled `losses.PerceptualModel` ("perceptual", "deepsim")."""
    from keras_invert import losses

    comparator = losses.comparator_representation(
        config.comparator or config_lib.DEFAULT_COMPARATOR
    )
    options = {} if config.comparator_weights is None else {"weights": config.comparator_weights}
    model = losses.build_perceptual_model(
        generator,
        comparator.make_encoder(**options),
        config_lib.loss_weights(config),
        width=config.width,
        negative_slope=config.negative_slope,
    )
    discriminator_optimizer = None
    if model.discriminator is not None:
        rate = config.discriminator_learning_rate or config.learning_rate
        discriminator_optimizer = build_optimizer(config_lib.replace(config, learning_rate=rate))
    model.compile(
        optimizer=build_optimizer(config),
        discriminator_optimizer=discriminator_optimizer,
        jit_compile=config.jit_compile,
    )
    return model


def optimizer_step(model: keras.Model) -> int:
    """The optimiser's step counter (`int()` of a distributed variable fails)."""
    return int(model.optimizer.iterations.numpy())


def _precision(model: keras.Model) -> str:
    """The dtype policy the model's layers were built in (its output layer is float32)."""
    mixed = {layer.dtype_policy.name for layer in model.layers} - {"float32"}
    return mixed.pop() if len(mixed) == 1 else "float32"


def _describe(model: keras.Model, cached_network: bool = False) -> str:
    from keras_invert import losses

    generator = losses.unwrap(model)
    if generator is not model:
        kind = "deepsim" if model.discriminator is not None else "perceptual"
        return f"{_describe(generator, cached_network)}, {kind} loss"
    on_cached = ", fed cached features of the fixed encoder" if cached_network else ""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if not isinstance(model, Reconstructor):
        return f"decoder ({trainable:,} parameters){on_cached}"
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

    def remove_partial(self) -> None:
        """Deletes the partial files a killed run left (only the writing process may)."""
        for leftover in glob.glob(os.path.join(self.directory, ".partial-*")):
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
                f"Training diverged at step {step}: the loss is {loss}. {_LOWER_THE_RATE}"
            )
        if loss > self.factor * self.best:
            raise DivergenceError(
                f"Training diverged at step {step}: the running loss {loss:.4g} is more than "
                f"{self.factor:g} times the best epoch loss {self.best:.4g}. {_LOWER_THE_RATE}"
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


def train(
    config: TrainConfig,
    dataset,
    work_dir: str,
    *,
    strategy=None,
    sample_batch=None,
    callbacks: list | None = None,
    verbose="auto",
) -> keras.Model:
    """Trains (or resumes training of) the decoder of `config` in `work_dir`.

    The model and optimiser are built, or restored from the latest
    checkpoint, inside `strategy.scope()`, in `config.precision`. Only the
    chief (`distribute.is_chief`) writes checkpoints, TensorBoard logs and
    the final model into `work_dir`; the other workers of a multi-worker run
    write the same into a private temporary folder that is deleted at the
    end (saving reads synchronised variables: all workers must take part).

    Args:
        config: the run's configuration; `steps` is the total, so a resumed
            run trains only the remaining steps; `batch_size` is the global batch.
        dataset: a dataset function `distribute.InputShard -> tf.data.Dataset`
            giving the `(features, target)` batches of one input pipeline:
            batches of `shard.batch_size`, repeated, the `shard.shard_index`-th
            of `shard.num_shards` disjoint shares of the stream, starting at
            its batch `shard.start_step` (a resumed run, and the partial last
            epoch, continue the seeded stream where it stopped). Or a
            `tf.data.Dataset` of global batches, on one worker only: every
            `fit` call reads it from its beginning (on resume, and for a
            partial last epoch). For a network encoder inside the model
            (AlexNet) the "features" are the images.
        work_dir: checkpoints, TensorBoard logs and the final model go here
            (shared storage for several workers: each restores from it);
            nothing is written into it before `fit` starts.
        strategy: a `tf.distribute.Strategy`; None: `make_strategy(config.strategy)`
            (a multi-worker strategy must be made at program start instead).
        sample_batch: optional `(features, targets)` shown in TensorBoard.
        callbacks: extra Keras callbacks.
        verbose: passed to `fit` (progress bar by default).

    Returns:
        The trained model (also saved as `work_dir/model.keras` by the
        chief): the decoder, or for AlexNet a `Reconstructor` whose
        `.decoder` is the decoder (the decoder alone with `cache_features`).

    Raises:
        DivergenceError: the loss turned NaN/Inf or exploded.
        ValueError: a `tf.data.Dataset` given to several workers, the
            checkpoints disagree with `config`, or none of the work dir's
            checkpoints and final model loads (`restore`).
    """
    from keras_invert import losses

    if strategy is None:
        strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    workers = distribute.num_workers(strategy)
    if workers > 1 and not callable(dataset):
        raise ValueError(
            "Several workers need a dataset function (InputShard -> dataset), so that each "
            f"reads its own share of the stream. Received: dataset={dataset!r}"
        )
    with strategy.scope(), precision_scope(config.precision):
        model = restore(work_dir, remove_partial=chief)
        representation = registry.get(config.representation)
        cached_network = representation.encode_in_model and config.cache_features
        if model is None:
            model = build_model(config)
            logging.info(
                "Training a new %s %s.", config.representation, _describe(model, cached_network)
            )
        elif isinstance(losses.unwrap(model), Reconstructor) != _uses_reconstructor(
            config, representation
        ):
            held = "holds" if isinstance(losses.unwrap(model), Reconstructor) else "lacks"
            raise ValueError(
                f"The checkpoints in {work_dir} are of a model that {held} its encoder. "
                f"Received: cache_features={config.cache_features!r}"
            )
        elif (
            isinstance(losses.unwrap(model), Reconstructor)
            and losses.unwrap(model).encoder.trainable != config.autoencoder
        ):
            # Unwrapped: a perceptual/deepsim run's generator holds the encoder.
            raise ValueError(
                f"The checkpoints in {work_dir} were trained with autoencoder="
                f"{losses.unwrap(model).encoder.trainable}. "
                f"Received: autoencoder={config.autoencoder!r}"
            )
        elif _precision(model) != config.precision:
            # Restored in another policy, the optimiser state would be silently dropped.
            raise ValueError(
                f"The checkpoints in {work_dir} were trained with precision="
                f"{_precision(model)!r}. Received: precision={config.precision!r}"
            )
        else:
            # XLA is how the step runs, not what it computes: a resumed run may switch it.
            model.jit_compile = config.jit_compile
            logging.info("Resumed %s %s.", config.representation, _describe(model, cached_network))
    step = optimizer_step(model)
    if not distribute.same_on_all_workers(strategy, step):
        raise ValueError(
            f"The workers restored different checkpoints (this one: step {step}): the work dir "
            f"must be shared storage that every worker reads. Received: work_dir={work_dir!r}"
        )
    # The other workers save and log too, into a private folder deleted at the
    # end: saving and logging read synchronised variables (the loss metric),
    # collectives that every worker has to join in the same order.
    output_dir = work_dir if chief else tempfile.mkdtemp(prefix="keras_invert-worker-")
    try:
        _fit(config, model, step, strategy, dataset, output_dir, sample_batch, callbacks, verbose)
        os.makedirs(output_dir, exist_ok=True)
        final = os.path.join(output_dir, FINAL_MODEL)
        temporary = os.path.join(output_dir, f".partial-{os.getpid()}-{FINAL_MODEL}")
        model.save(temporary)
        os.replace(temporary, final)
    finally:
        if not chief:
            shutil.rmtree(output_dir, ignore_errors=True)
    return model


def fit_calls(step: int, steps: int, steps_per_epoch: int) -> list[tuple[int, int, int]]:
    """The `fit` calls that take a run from `step` to exactly `steps`.

    Epochs end at the multiples of `steps_per_epoch` and at `steps`, wherever
    the run was interrupted, so a resumed run checkpoints where the
    uninterrupted one does. A `fit` call takes epochs of one length, so a
    partial epoch gets a call of its own: the last one when `steps` is not a
    multiple of `steps_per_epoch`, and the first one of a run resumed with a
    larger `steps` from a final step that was not a multiple.

    Returns:
        `(initial_epoch, epochs, steps_per_epoch)` arguments of each call.

    Example:
        >>> fit_calls(0, 23, 5)
        [(0, 4, 5), (4, 5, 3)]
    """
    calls = []
    while step < steps:
        epoch, offset = divmod(step, steps_per_epoch)
        whole_epochs = 0 if offset else (steps - step) // steps_per_epoch
        if whole_epochs:
            calls.append((epoch, epoch + whole_epochs, steps_per_epoch))
            step += whole_epochs * steps_per_epoch
        else:
            length = min(steps, (epoch + 1) * steps_per_epoch) - step
            calls.append((epoch, epoch + 1, length))
            step += length
    return calls


def _fit(config, model, step, strategy, dataset, output_dir, sample_batch, callbacks, verbose):
    """`model.fit` from `step` to `config.steps`, writing checkpoints and logs to `output_dir`."""
    calls = fit_calls(step, config.steps, config.steps_per_epoch)
    if not calls:
        logging.info("Nothing to do: the run already reached step %d of %d.", step, config.steps)
        return
    log_dir = os.path.join(output_dir, "tensorboard")
    all_callbacks = [
        DivergenceGuard(config.divergence_factor),
        keras.callbacks.TensorBoard(log_dir, update_freq="epoch", write_graph=False),
        CheckpointCallback(Checkpoints(os.path.join(output_dir, CHECKPOINT_DIR))),
    ]
    if config.max_minutes is not None:
        all_callbacks.append(TimeBudget(config.max_minutes))
    if sample_batch is not None:
        all_callbacks.append(ReconstructionImages(log_dir, *sample_batch))
    all_callbacks.extend(callbacks or [])
    for initial_epoch, epochs, steps_per_epoch in calls:
        data = dataset
        if callable(dataset):
            data = distribute.distribute_input(strategy, dataset, config.batch_size, step)
        model.fit(
            data,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=all_callbacks,
            verbose=verbose,
            shuffle=False,  # The pipeline shuffles; Keras cannot shuffle a tf.data stream.
        )
        if model.stop_training:  # A time budget or a callback ended the run early.
            return
        step += (epochs - initial_epoch) * steps_per_epoch
