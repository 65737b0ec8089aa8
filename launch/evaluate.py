"""Evaluates trained decoders and the optimisation baseline on fixed test photos.

    python -m launch.evaluate --model=runs/hog,exports/lbp --data=samples --split=test
    python -m launch.evaluate --model=runs/hog --method=decoder,optimization --out_dir=runs/eval
    python -m launch.evaluate --method=optimization --representation=hog --image_size=64

One row per model (work dir or SavedModel export) and per optimisation run,
then the constant predictions (each work dir's mean training photo, from its
`config.json`, and the mean of the test photos), on the centre crops of the
split's photos at each model's image size: the protocol and its columns are
`keras_invert.evaluation`'s. `--classifier=NAME` (a registry tap of class
scores: `efficientnet-lite0/logits`, or `keras:PATH#LAYER` of a saved
classifier) adds the top-1/top-5 agreement columns. `--method=optimization`
runs Mahendran & Vedaldi's inversion with the paper's settings for the
representation unless flags override them, for `--representation` at
`--image_size`, or else for each model's. One Markdown table on stdout, and
`evaluation.json` + `evaluation.csv` in `--out_dir`.
"""

from __future__ import annotations

import math

from absl import app, flags

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_list("model", None, "Work dirs or SavedModel export dirs, one table row each.")
common.validate("model", bool, "one or more work dirs or export dirs")
flags.DEFINE_list("method", None, "decoder and/or optimization (default: decoder with --model).")
flags.DEFINE_string(
    "data", None, "Source of the test photos: samples (the default), folder:PATH, tfds:NAME."
)
flags.DEFINE_string("split", "test", "Split of --data.")
flags.DEFINE_list("images", None, "Image files instead of --data.")
# Given empty (`--images=`), it would silently fall back to --data.
common.validate("images", bool, "one or more image files")
flags.DEFINE_integer(
    "num_images", None, "The first N photos (default: all; TFDS: 100).", lower_bound=2
)
flags.DEFINE_string("out_dir", "runs/evaluate", "Where evaluation.json and evaluation.csv go.")
flags.DEFINE_string("representation", None, "Optimisation: the representation to invert.")
flags.DEFINE_integer("image_size", None, "Optimisation: input image size.", lower_bound=1)
flags.DEFINE_string("encoder_weights", None, "Optimisation: AlexNet weights file.")
flags.DEFINE_integer(
    "optimization_steps", None, "Optimisation steps (default: the paper's).", lower_bound=1
)
flags.DEFINE_float("optimization_learning_rate", None, "Optimisation rate (default: paper's).")
flags.DEFINE_float("tv_weight", None, "Total-variation weight (default: paper's).", lower_bound=0)
flags.DEFINE_float("alpha_weight", None, "Alpha-norm prior weight (default: 8e-10).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the optimisation's starting noise.")
flags.DEFINE_string(
    "classifier",
    None,
    "Registry name of a classifier tap (efficientnet-lite0/logits, keras:PATH#LAYER): adds "
    "top-1/top-5 agreement between its predictions on originals and on reconstructions.",
)
common.validate("optimization_learning_rate", lambda rate: 0 < rate < math.inf, "> 0 and finite")
for _name in ("tv_weight", "alpha_weight"):
    common.validate(_name, math.isfinite, "finite")
common.validate_path("out_dir")
common.validate_path("encoder_weights")
flags.DEFINE_bool("mirror_average", False, "Average with the decoded mirror (HOG, LBP).")


def main(argv):
    del argv
    import pipelines
    from keras_invert import evaluation, files, load
    from pipelines import baselines

    files.check_folder(FLAGS.out_dir, "out_dir")  # Before the work, not when it is saved.

    methods = FLAGS.method or (["decoder"] if FLAGS.model else ["optimization"])
    unknown = set(methods) - {"decoder", "optimization"}
    if unknown:
        raise app.UsageError(f"Unknown --method {sorted(unknown)}: decoder, optimization.")
    if "decoder" in methods and not FLAGS.model:
        raise app.UsageError("--method=decoder needs --model.")
    if "optimization" in methods and not (FLAGS.representation or FLAGS.model):
        raise app.UsageError("--method=optimization needs --representation or --model.")
    if FLAGS.images and FLAGS["data"].present:
        raise app.UsageError("Give either --images or --data, not both.")
    photos = pipelines.chosen_photos(FLAGS.images, FLAGS.data, FLAGS.split, FLAGS.num_images)
    if len(photos) < 2:
        raise app.UsageError("The normalised error needs at least two images.")
    try:
        classify = evaluation.make_classifier(FLAGS.classifier) if FLAGS.classifier else None
    except ValueError as error:
        raise app.UsageError(f"--classifier: {error}") from error

    models = {path: load(path, mirror_average=FLAGS.mirror_average) for path in FLAGS.model or []}
    decoders = "decoder" in methods
    training_means = {
        path: baselines.training_mean_image(path, model.image_size, model.output_size)
        for path, model in models.items()
        if decoders
    }
    optimization = []
    if "optimization" in methods and FLAGS.representation:
        options = {"weights": FLAGS.encoder_weights} if FLAGS.encoder_weights else {}
        optimization = [(FLAGS.representation, FLAGS.image_size, options)]
    elif "optimization" in methods:
        optimization = evaluation.optimization_targets(models.values())
    rows = evaluation.evaluate(
        photos.crops,
        models,
        decoders=decoders,
        optimization=optimization,
        overrides={
            "steps": FLAGS.optimization_steps,
            "learning_rate": FLAGS.optimization_learning_rate,
            "tv_weight": FLAGS.tv_weight,
            "alpha_weight": FLAGS.alpha_weight,
        },
        seed=FLAGS.seed,
        training_means=training_means,
        classify=classify,
    )
    json_path, csv_path = evaluation.save(FLAGS.out_dir, rows, list(photos.labels))
    origin = "files" if FLAGS.images else f"{FLAGS.data or 'samples'}/{FLAGS.split}"
    print(f"\n{len(photos)} images from {origin}\n")
    print(evaluation.format_table(rows))
    print(f"\n{json_path}\n{csv_path}")


if __name__ == "__main__":
    common.run(main)
