"""The fit loop: trains (or resumes) a run's model in its work dir, to exactly `config.steps`.

Implements docs/reference.md, Training. The work dir holds everything a run
needs to resume:

    WORK_DIR/config.json          resolved configuration (`runs.run` writes it)
    WORK_DIR/checkpoints/ckpt-<step>.keras   model + optimiser state (`checkpoints`)
    WORK_DIR/tensorboard/         scalars and reconstruction images
    WORK_DIR/model.keras          the final model (decoder, or encoder + decoder)

A run takes exactly `config.steps` optimiser steps in epochs of
`steps_per_epoch` steps; the last epoch is shorter when `steps` is not a
multiple of it. A checkpoint is written at the end of every epoch, so at
every multiple of `steps_per_epoch` and at the final step. Running `train`
again on the same work dir continues at the saved step (losing at most one
checkpoint interval, `steps_per_epoch` steps), from the newest readable
checkpoint or the final model (`checkpoints.restore`). A new run with
`init_from` starts its decoder as that finished run's (`initialize_from`,
docs/reference.md, Fine-tuning from a trained decoder); a resumed one never
reads it again.

With `ema_momentum` the optimiser keeps a moving average of the weights
(Keras's `use_ema`, in the optimiser state, so checkpoints resume it exactly).
Training goes on with the raw weights across all its `fit` calls and the
checkpoints hold them; the final model holds the averages
(`building.use_averaged_weights`), which export and evaluation then use.

A loss that turns NaN/Inf or explodes raises `callbacks.DivergenceError`
(docs/reference.md, Training: Adam at 1e-3 diverged on small data) instead of
training on.

Example:
    >>> from keras_invert import config, training
    >>> run = presets.preset("demo_hog")
    >>> model = training.train(run, dataset, "/tmp/work")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import keras
from absl import logging

from keras_invert import building, checkpoints, distribute, loading, registry
from keras_invert.callbacks import (
    CheckpointCallback,
    DivergenceGuard,
    ReconstructionImages,
    TimeBudget,
)
from keras_invert.config import TrainConfig


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
        chief), with the averaged weights when `config.ema_momentum` is
        set: the decoder, or for AlexNet a `Reconstructor` whose `.decoder`
        is the decoder (the decoder alone with `cache_features`).

    Raises:
        callbacks.DivergenceError: the loss turned NaN/Inf or exploded.
        ValueError: a `tf.data.Dataset` given to several workers, the
            checkpoints disagree with `config` (another mode or precision,
            or other shapes: `config.json` edited by hand), or none of the
            work dir's checkpoints and final model loads (`checkpoints.restore`).
    """
    if strategy is None:
        strategy = distribute.make_strategy(config.strategy)
    chief = distribute.is_chief(strategy)
    workers = distribute.num_workers(strategy)
    if workers > 1 and not callable(dataset):
        raise ValueError(
            "Several workers need a dataset function (InputShard -> dataset), so that each "
            f"reads its own share of the stream. Received: dataset={dataset!r}"
        )
    representation = registry.get(config.representation)
    cached_network = representation.encode_in_model and config.cache_features
    with strategy.scope(), building.precision_scope(config.precision):
        model = checkpoints.restore(work_dir, remove_partial=chief)
        resumed = model is not None
        if not resumed:
            model = building.build_model(config)
            started = "Training a new"
            if config.init_from is not None:
                initialize_from(model, config)
                started = f"Fine-tuning {config.init_from}'s"
        else:
            # XLA is how the step runs, not what it computes: a resumed run may switch it.
            model.jit_compile = config.jit_compile
            started = "Resumed"
    if resumed:
        # Outside the scope: the check builds the config's decoder to compare, a throw-away.
        building.check_restored(model, config, work_dir)
    logging.info(
        "%s %s %s.", started, config.representation, building.describe(model, cached_network)
    )
    step = checkpoints.optimizer_step(model)
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
        with _raw_weights_between_fits(model):
            _fit(
                config, model, step, strategy, dataset, output_dir, sample_batch, callbacks, verbose
            )
        checkpoints.save_final(building.use_averaged_weights(model), output_dir)
    finally:
        if not chief:
            shutil.rmtree(output_dir, ignore_errors=True)
    return model


def initialize_from(model: keras.Model, config: TrainConfig) -> None:
    """Sets the decoder of the new training `model` to that of the finished run `config.init_from`.

    The source is read with the one loader (`keras_invert.load`): its final
    model, else its newest checkpoint (with averaged weights when it kept
    them). Only its decoder is taken: the optimiser, the schedule's step and
    any discriminator start afresh.

    Raises:
        ValueError: `init_from` is not a work dir holding a trained model, or
            its decoder is not this run's (representation, image size, width,
            weight shapes), in one line.
    """
    source = loading.load(config.init_from, name="init_from")
    if source.decoder is None:
        raise ValueError(
            "Expected init_from as the work dir of a run (an export holds no Keras decoder). "
            f"Received: init_from={config.init_from!r}"
        )
    decoder = building.decoder_of(model)
    image_size = registry.get(config.representation).image_size(config.image_size)
    expected = {
        "representation": config.representation,
        "image_size": image_size,
        "width": config.width,
        "decoder weight shapes": [tuple(w.shape) for w in decoder.weights],
    }
    received = {
        "representation": source.representation,
        "image_size": source.image_size,
        "width": source.config.width,
        "decoder weight shapes": [tuple(w.shape) for w in source.decoder.weights],
    }
    differences = [name for name in expected if expected[name] != received[name]]
    if differences:
        shown = [name for name in differences if name != "decoder weight shapes"] or differences
        raise ValueError(
            "Expected init_from as a run of this decoder ("
            + ", ".join(f"{name}={expected[name]!r}" for name in shown)
            + f"). Received: init_from={config.init_from!r} ("
            + ", ".join(f"{name}={received[name]!r}" for name in shown)
            + ")"
        )
    decoder.set_weights(source.decoder.get_weights())


@contextlib.contextmanager
def _raw_weights_between_fits(model: keras.Model):
    """Keeps `fit` from ending on the averaged weights: the next `fit` trains the raw ones.

    `fit` ends by copying an EMA optimiser's averages into the model
    (`finalize_variable_values`, on all of the model's trainable weights,
    which for a `losses.PerceptualModel` include the discriminator's that the
    optimiser does not average). A run makes several `fit` calls (`fit_calls`),
    and a resumed run others than an uninterrupted one, so each call would go
    on from other weights. The averages go into the model once, at the end.
    """
    optimizer = model.optimizer
    optimizer.finalize_variable_values = lambda variables: None
    try:
        yield
    finally:
        del optimizer.finalize_variable_values


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
        CheckpointCallback(
            checkpoints.Checkpoints(os.path.join(output_dir, checkpoints.CHECKPOINT_DIR))
        ),
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
