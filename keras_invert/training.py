"""Training a decoder with Keras `fit`: checkpoints, resumption, divergence guard.

Implements docs/reference.md, Training: Adam on the squared Euclidean pixel loss (mean
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
    if config.cache_features:
        if not representation.encode_in_model:
            raise ValueError(
                "cache_features applies to network encoders (alexnet/..., efficientnet-lite0/..., "
                "keras:...); the caches of other representations always hold features. "
                f"Received: representation={config.representation!r}"
            )
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

    def restore_latest(self, remove_partial: bool = True) -> keras.Model | None:
        """The newest readable checkpoint as a compiled model, or None.

        Args:
            remove_partial: delete the partial files a killed run left (only
                the process that writes checkpoints, the chief, may).
        """
        leftovers = glob.glob(os.path.join(self.directory, ".partial-*"))
        for leftover in leftovers if remove_partial else []:
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
        self.checkpoints.save(self.model, optimizer_step(self.model))


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
                f"Training diverged at step {step}: the loss is {loss}. Lower --learning_rate "
                "(docs/reference.md, Training: 1e-4 where 1e-3 diverged) and start a new "
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
    `steps_per_epoch`, so a later run resumes exactly there. Under several
    workers they stop together when any worker's budget is spent.
    """

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.start = None

    def on_train_begin(self, logs=None):
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
            its batch `shard.start_step` (a resumed run continues its seeded
            stream where it stopped). Or a `tf.data.Dataset` of global
            batches, on one worker only (it starts from its beginning on
            resume). For a network encoder inside the model (AlexNet) the
            "features" are the images.
        work_dir: checkpoints, TensorBoard logs and the final model go here
            (shared storage for several workers: each restores from it).
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
        ValueError: a `tf.data.Dataset` given to several workers, or the
            checkpoints disagree with `config`.
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
    if chief:
        os.makedirs(work_dir, exist_ok=True)
    with strategy.scope(), precision_scope(config.precision):
        model = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR)).restore_latest(
            remove_partial=chief
        )
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
        final = os.path.join(output_dir, FINAL_MODEL)
        temporary = os.path.join(output_dir, f".partial-{os.getpid()}-{FINAL_MODEL}")
        model.save(temporary)
        os.replace(temporary, final)
    finally:
        if not chief:
            shutil.rmtree(output_dir, ignore_errors=True)
    return model


def _fit(config, model, step, strategy, dataset, output_dir, sample_batch, callbacks, verbose):
    """`model.fit` from `step` to `config.steps`, writing checkpoints and logs to `output_dir`."""
    epochs = math.ceil(config.steps / config.steps_per_epoch)
    initial_epoch = step // config.steps_per_epoch
    if initial_epoch >= epochs:
        logging.info("Nothing to do: the run already reached step %d of %d.", step, config.steps)
        return
    if callable(dataset):
        dataset = distribute.distribute_input(strategy, dataset, config.batch_size, step)
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
    model.fit(
        dataset,
        steps_per_epoch=config.steps_per_epoch,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,  # The pipeline shuffles; Keras cannot shuffle a tf.data stream.
    )
