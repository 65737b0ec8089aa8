"""Trains a decoder: `python -m launch.train --representation=hog --work_dir=DIR`.

AlexNet layers train with the network inside the model:
`--representation=alexnet/conv5 --encoder_weights=caffenet.weights.h5` keeps
the encoder fixed (the default); `--autoencoder` trains it jointly. With a
fixed encoder, `--cache_dir=cache --cache_features` computes the network's
features once into the cache and trains the decoder alone on them.
`--loss=perceptual` or `--loss=deepsim` adds a feature loss in a comparator
network's space (and an adversarial loss): `keras_invert.losses`;
`--init_from=PIXEL_RUN` starts them from a pixel-trained decoder.

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
import sys

from absl import app, flags, logging

from keras_invert import config as config_lib
from keras_invert import presets
from launch import common, config_flags  # common also quiets TensorFlow's C++ logs.

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "work_dir", None, "Run directory: config, checkpoints, logs, model.", required=True
)
flags.DEFINE_enum(
    "preset", None, presets.preset_names(),
    "Starting config: the CPU demo ('demo': an EfficientNet-Lite0 layer; 'demo_hog') or the "
    "paper's settings for a representation.",
)  # fmt: skip
# Every other flag is a field of the run's config, described in its docstring.
config_flags.define_config_flags(
    config_lib.TrainConfig,
    choices={
        "schedule": config_lib.SCHEDULES,
        "loss": config_lib.LOSSES,
        "strategy": config_lib.STRATEGIES,
        "precision": config_lib.PRECISIONS,
    },
    bounds={
        **dict.fromkeys(
            ("image_size", "batch_size", "steps", "steps_per_epoch", "crops_per_image"),
            {"lower_bound": 1},
        ),
        **dict.fromkeys(
            ("negative_slope", "warmup_steps", "discriminator_pause_ratio", "summary_images"),
            {"lower_bound": 0},
        ),
        "color_jitter": {"lower_bound": 0, "upper_bound": 1},
    },
    skip=("encoder_options",),
)
common.validate_path("work_dir")
common.validate("width", lambda width: width >= config_lib.MIN_WIDTH, ">= 1/32")
for _name in ("learning_rate", "discriminator_learning_rate"):
    common.validate(_name, lambda value: value > 0, "> 0")
# 0 is a budget spent at once: the run stops after its first epoch (and checkpoint).
common.validate("max_minutes", lambda minutes: minutes >= 0, ">= 0")
common.validate("min_crop_scale", lambda scale: 0 < scale <= 1, "in (0, 1]")
common.validate("divergence_factor", lambda factor: factor > 1, "> 1")
common.validate("ema_momentum", lambda momentum: 0 < momentum < 1, "in (0, 1)")


def _changes() -> dict:
    """The config fields given as flags, with paths absolute and the lists as numbers."""
    changes = config_flags.given_fields(
        config_lib.TrainConfig,
        paths=("encoder_weights", "comparator_weights", "init_from"),
        files=("encoder_weights", "comparator_weights"),
    )
    if changes.get("representation"):
        from keras_invert import registry

        changes["representation"] = registry.absolute_keras_name(changes["representation"])
    return changes


def main(argv):
    del argv
    import pipelines
    from keras_invert import callbacks, distribute, runs
    from pipelines import training_data

    try:
        run = runs.resolve_config(FLAGS.work_dir, _changes(), FLAGS.preset)
        strategy = runs.check_start(run, FLAGS.work_dir, check_data=training_data.check_input)
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
