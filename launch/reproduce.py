"""Reproduces the paper's findings: `python -m launch.reproduce --out_dir=results`.

Trains the decoders it needs (HOG, SIFT, LBP; EfficientNet-Lite0 from `stem`
to `logits`, its ImageNet weights standing in for AlexNet's; a fixed and an
autoencoder run of one tap; AlexNet's eight layers with `--alexnet_weights`),
evaluates them on held-out photos beside optimisation and the mean images,
runs the experiments, and writes `results.md` into `--out_dir` (the paper's tables,
the six findings with verdicts, the figures) and `results.json`.

Running it again with the same `--out_dir` reuses every finished part; an
interrupted run resumes. The defaults take about an hour on 2 CPU cores;
`--scale=full --data=tfds:imagenet2012` (or `folder:PATH`) on a GPU is the
paper's scale. What it trains and how the verdicts are reached:
docs/reference.md, Reproduction.
"""

from __future__ import annotations

import math
import os

from absl import app, flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Where runs, figures and results.md go.", required=True)
flags.DEFINE_string("data", "samples", "Photo source: 'samples', 'folder:PATH', 'tfds:NAME'.")
flags.DEFINE_string("train_split", "train", "Split the decoders train on.")
flags.DEFINE_string("test_split", "test", "Held-out split every figure is measured on.")
flags.DEFINE_enum("scale", "cpu", ["cpu", "full"], "cpu: ~1 hour on 2 cores; full: a GPU.")
flags.DEFINE_float("step_scale", 1.0, "Multiplies every job's training steps.")
flags.DEFINE_list("shallow", ["hog", "sift", "lbp"], "Shallow features to train.")
flags.DEFINE_integer(
    "shallow_image_size", None, "HOG/SIFT/LBP crop side (default: 128 at cpu, 256 at full).",
    lower_bound=32, upper_bound=4096,
)  # fmt: skip
flags.DEFINE_list("taps", None, "EfficientNet-Lite0 taps (default: stem to logits).")
flags.DEFINE_string("alexnet_weights", None, "AlexNet weights: also train its eight layers.")
flags.DEFINE_integer("optimization_steps", None, "Optimisation steps (default: the method's).")
flags.DEFINE_integer(
    "num_test_images", None, "The first N test photos (default: all, at most 100).", lower_bound=2
)
flags.DEFINE_integer("seed", 0, "Seed of the training streams and the optimisation.")
flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored"], "default: one device; mirrored: every GPU."
)
common.validate("step_scale", lambda scale: 0 < scale < math.inf, "> 0 and finite")
common.validate("seed", lambda seed: 0 <= seed < 2**32, "in [0, 2**32)")
common.validate_path("out_dir")
common.validate_path("alexnet_weights")


def check_alexnet_weights(path: str) -> None:
    """Refuses a weights file that AlexNet cannot load, naming --alexnet_weights."""
    from keras_invert import files, registry

    files.check_existing_file(path, "alexnet_weights")
    try:
        registry.get("alexnet/fc8").make_encoder(weights=path)
    except ValueError as error:
        raise app.UsageError(f"--alexnet_weights: {error}") from error


def main(argv):
    del argv
    from keras_invert import callbacks, files, reproduction
    from pipelines.reproduction_data import reproduction_data

    files.check_folder(FLAGS.out_dir, "out_dir")  # Before the hour of work.
    if FLAGS.alexnet_weights:  # Read now: a bad file would otherwise stop the run hours in.
        check_alexnet_weights(FLAGS.alexnet_weights)
    options = dict(
        out_dir=FLAGS.out_dir,
        data=FLAGS.data,
        train_split=FLAGS.train_split,
        test_split=FLAGS.test_split,
        scale=FLAGS.scale,
        step_scale=FLAGS.step_scale,
        shallow=tuple(FLAGS.shallow),
        shallow_image_size=FLAGS.shallow_image_size,
        alexnet_weights=FLAGS.alexnet_weights and os.path.abspath(FLAGS.alexnet_weights),
        optimization_steps=FLAGS.optimization_steps,
        num_test_images=FLAGS.num_test_images,
        seed=FLAGS.seed,
        strategy=FLAGS.strategy,
    )
    if FLAGS.taps is not None:
        options["taps"] = tuple(FLAGS.taps)
    config = reproduction.ReproduceConfig(**options)
    try:
        written = reproduction.reproduce(config, reproduction_data(config))
    except callbacks.DivergenceError as error:
        raise app.UsageError(str(error)) from error  # One line: what diverged, what to do.
    print(written["results"])


if __name__ == "__main__":
    common.run(main)
