"""The paper's experiments on trained decoders: a labelled PNG and a JSON of its numbers.

    python -m launch.experiment --name=layers --model=runs/hog,runs/lbp,runs/conv5 --out=figs
    python -m launch.experiment --name=interpolation --model=runs/fc8 --steps=8 --out=figs
    python -m launch.experiment --name=perturbation --model=runs/fc6 --retrain_steps=2000
    python -m launch.experiment --name=random_samples --model=runs/fc7 \\
        --distribution=truncated_gaussian --fit_split=train --out=figs
    python -m launch.experiment --name=dark_knowledge --model=runs/fc8 --out=figs
    python -m launch.experiment --name=single_neuron --model=runs/fc8 --units=0,1,2 --out=figs
    python -m launch.experiment --name=autoencoder_vs_fixed --model=runs/fc8,runs/fc8_ae

Writes `OUT/NAME.png` and `OUT/NAME.json` (docs/reference.md, Experiments).
The photos shown are the centre crops of `--data`/`--split` (or `--images`).
What each experiment does: `keras_invert.experiments.driver`.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from absl import app, flags

from launch import common

# The experiments' names, literal here so that a flag error comes before TensorFlow
# loads; the library (`keras_invert.experiments.EXPERIMENTS`) checks the same names.
COMPARED = ["interpolation", "perturbation", "random_samples", "dark_knowledge", "single_neuron"]
EXPERIMENTS = ["layers", *COMPARED, "autoencoder_vs_fixed"]

FLAGS = flags.FLAGS
flags.DEFINE_enum("name", None, EXPERIMENTS, "Which experiment.", required=True)
flags.DEFINE_list("model", None, "Work dirs or SavedModel export dirs.", required=True)
flags.DEFINE_string("out", "runs/experiments", "Output folder for NAME.png and NAME.json.")
flags.DEFINE_string(
    "data", "samples", "Source of the photos and of fitting data: samples, folder:PATH, tfds:NAME."
)
flags.DEFINE_string("split", "test", "Split of --data for the photos shown.")
flags.DEFINE_list("images", None, "Image files instead of --data/--split.")
# Given empty (`--images=`), it would silently fall back to --data.
common.validate("images", bool, "one or more image files")
flags.DEFINE_integer("num_images", 4, "Photos shown (the first N of the split).", lower_bound=2)
flags.DEFINE_integer(
    "steps", 8, "interpolation: blends, both ends included.", lower_bound=2, upper_bound=64
)
flags.DEFINE_list("pair", ["0", "1"], "interpolation: indices of the two photos.")
flags.DEFINE_float("dropout_rate", 0.5, "perturbation: fraction of feature entries dropped.")
flags.DEFINE_bool("dropout_keep_norm", True, "perturbation: rescale to keep each norm.")
flags.DEFINE_enum(
    "distribution", "histogram", ["histogram", "truncated_gaussian"], "random_samples."
)
flags.DEFINE_enum("covariance", "full", ["full", "diagonal"], "truncated_gaussian covariance.")
flags.DEFINE_integer("bins", 32, "histogram: bins per dimension.", lower_bound=1)
flags.DEFINE_integer("num_samples", 8, "random_samples: samples decoded.", lower_bound=1)
flags.DEFINE_string("fit_split", "train", "Split whose features fit distributions.")
flags.DEFINE_integer("fit_examples", 256, "Random crops of --fit_split to fit on.", lower_bound=1)
flags.DEFINE_integer("top_k", 5, "dark_knowledge: the k largest activations.", lower_bound=1)
flags.DEFINE_list("units", [str(unit) for unit in range(8)], "single_neuron: units.")
flags.DEFINE_float("activation", None, "single_neuron: value (default: --percentile).")
flags.DEFINE_float("percentile", 99.0, "single_neuron: percentile of the unit on fit data.",
                   lower_bound=0, upper_bound=100)  # fmt: skip
flags.DEFINE_integer("seed", 0, "Seed of every random draw.")
flags.DEFINE_integer("retrain_steps", 0, "perturbation: also fine-tune a decoder N steps per "
                     "perturbation (work dirs only).", lower_bound=0)  # fmt: skip
flags.DEFINE_float("retrain_learning_rate", 1e-4, "perturbation: Adam rate of the fine-tuning.")
flags.DEFINE_integer("retrain_batch_size", 16, "perturbation: fine-tuning batch.", lower_bound=1)
flags.DEFINE_string("retrain_split", "train", "perturbation: split of --data to fine-tune on.")
flags.DEFINE_list("compare", COMPARED, "autoencoder_vs_fixed: experiments run on both models.")
common.validate("dropout_rate", lambda rate: 0 <= rate < 1, "in [0, 1)")
common.validate("retrain_learning_rate", lambda rate: rate > 0, "> 0")
common.validate("pair", lambda pair: len(pair) == 2 and all(map(str.isdigit, pair)), "two indices")
common.validate(
    "units", lambda units: units and all(map(str.isdigit, units)), "one or more unit indices"
)
common.validate("percentile", lambda value: 0 <= value <= 100, "in [0, 100]")  # Refuses NaN.
common.validate("activation", math.isfinite, "finite")
common.validate("retrain_learning_rate", lambda rate: rate <= 1, "at most 1")
common.validate_path("out")


def check_flags(compared) -> None:
    """Refuses flags that would do nothing with the chosen experiment."""
    unknown = set(compared) - set(COMPARED)
    if unknown:
        raise app.UsageError(f"--compare takes experiments from {COMPARED}. Received: {unknown}")
    if FLAGS["compare"].present and FLAGS.name != "autoencoder_vs_fixed":
        raise app.UsageError("--compare is for --name=autoencoder_vs_fixed.")
    retrain_flags = [f for f in FLAGS if f.startswith("retrain_") and FLAGS[f].present]
    if retrain_flags and not FLAGS.retrain_steps:
        raise app.UsageError(f"{retrain_flags} need --retrain_steps > 0.")
    if FLAGS.retrain_steps and "perturbation" not in [FLAGS.name, *compared]:
        raise app.UsageError(
            "--retrain_steps fine-tunes decoders for the perturbation experiment "
            "(--name=perturbation, or autoencoder_vs_fixed with perturbation in --compare)."
        )


def main(argv):
    del argv
    check_flags(FLAGS.compare if FLAGS.name == "autoencoder_vs_fixed" else [])
    import pipelines
    from keras_invert import experiments

    # Shown: --images, else --data's; --data still gives the fitting and fine-tuning data.
    photos = pipelines.chosen_photos(FLAGS.images, FLAGS.data, FLAGS.split, FLAGS.num_images)
    # Each field of the config has the flag of its name, but models, photos and the indices.
    fields = [field.name for field in dataclasses.fields(experiments.ExperimentConfig)]
    config = experiments.ExperimentConfig(**{
        **{name: FLAGS[name].value for name in fields if name in FLAGS},
        "models": FLAGS.model,
        "photos": photos.labels,
        "pair": [int(index) for index in FLAGS.pair],
        "units": [int(unit) for unit in FLAGS.units],
    })  # fmt: skip
    written = experiments.run_experiment(
        config,
        load_images=photos.load,
        build_dataset=functools.partial(pipelines.build_dataset, FLAGS.data),
    )
    print("\n".join(written))


if __name__ == "__main__":
    common.run(main)
