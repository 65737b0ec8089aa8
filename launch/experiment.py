"""The paper's experiments on trained decoders: a labelled PNG and a JSON of its numbers.

    python -m launch.experiment --name=layers --model=runs/hog,runs/lbp,runs/conv5 --out=figs
    python -m launch.experiment --name=interpolation --model=runs/fc8 --steps=8 --out=figs
    python -m launch.experiment --name=perturbation --model=runs/fc6 --out=figs
    python -m launch.experiment --name=random_samples --model=runs/fc7 \\
        --distribution=truncated_gaussian --fit_split=train --out=figs
    python -m launch.experiment --name=dark_knowledge --model=runs/fc8 --out=figs
    python -m launch.experiment --name=single_neuron --model=runs/fc8 --units=0,1,2 --out=figs

Writes `OUT/NAME.png` and `OUT/NAME.json` (SPEC.md section 5; supplementary
Figures 1-10). `--model` takes work dirs or exports; `layers` puts every
model in one figure (a column each), the others stack one block of rows per
model. Test photos are the centre crops of `--data`/`--split` (or
`--images`); `random_samples` and `single_neuron` fit on features of
`--fit_examples` random crops of `--fit_split`. The library side is
`keras_invert.experiments`, which documents each perturbation.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from launch import common

EXPERIMENTS = (
    "layers",
    "interpolation",
    "perturbation",
    "random_samples",
    "dark_knowledge",
    "single_neuron",
)

FLAGS = flags.FLAGS
flags.DEFINE_enum("name", None, EXPERIMENTS, "Which experiment.", required=True)
flags.DEFINE_list("model", None, "Work dirs or SavedModel export dirs.", required=True)
flags.DEFINE_string("out", "runs/experiments", "Output folder for NAME.png and NAME.json.")
flags.DEFINE_string("data", "samples", "Pipeline source of the photos.")
flags.DEFINE_string("split", "test", "Split of --data for the photos shown.")
flags.DEFINE_list("images", [], "Image files instead of --data/--split.")
flags.DEFINE_integer("num_images", 4, "Photos shown (the first N of the split).")
flags.DEFINE_integer("steps", 8, "interpolation: blends, both ends included.")
flags.DEFINE_list("pair", ["0", "1"], "interpolation: indices of the two photos.")
flags.DEFINE_float("dropout_rate", 0.5, "perturbation: fraction of feature entries dropped.")
flags.DEFINE_bool("dropout_keep_norm", True, "perturbation: rescale to keep each norm.")
flags.DEFINE_enum(
    "distribution", "histogram", ["histogram", "truncated_gaussian"], "random_samples."
)
flags.DEFINE_enum("covariance", "full", ["full", "diagonal"], "truncated_gaussian covariance.")
flags.DEFINE_integer("bins", 32, "histogram: bins per dimension.")
flags.DEFINE_integer("num_samples", 8, "random_samples: samples decoded.")
flags.DEFINE_string("fit_split", "train", "Split whose features fit distributions.")
flags.DEFINE_integer("fit_examples", 256, "Random crops of --fit_split to fit on.")
flags.DEFINE_integer("top_k", 5, "dark_knowledge: the k largest activations.")
flags.DEFINE_list("units", ["0", "1", "2", "3", "4", "5", "6", "7"], "single_neuron: units.")
flags.DEFINE_float("activation", None, "single_neuron: value (default: --percentile).")
flags.DEFINE_float("percentile", 99.0, "single_neuron: percentile of the unit on fit data.")
flags.DEFINE_integer("seed", 0, "Seed of every random draw.")


def fit_features(parts, source, split, count, seed):
    """Features of `count` random training crops (as training sees them) of a split."""
    import numpy as np

    import pipelines
    from keras_invert import registry

    representation = registry.get(parts.representation)
    dataset = pipelines.build_dataset(
        source,
        split,
        representation=representation,
        image_size=parts.image_size,
        batch_size=16,
        training=True,
        repeat=True,
        seed=seed,
        encoder_options=parts.encoder_options,
    )
    collected, total = [], 0
    for features, _ in dataset:
        features = features.numpy()
        if representation.encode_in_model:
            features = parts.encode(features)  # The pipeline gave crops.
        collected.append(features)
        total += len(features)
        if total >= count:
            break
    return np.concatenate(collected)[:count]


def _labels(paths, models):
    labels = {}
    for path, parts in zip(paths, models, strict=True):
        label = f"{parts.representation} ({os.path.basename(os.path.normpath(path))})"
        while label in labels:
            label += "'"
        labels[label] = parts
    return labels


def _stack(figures):
    """One figure from per-model figures with the same columns: their rows, labelled."""
    from keras_invert import experiments

    rows, row_labels = [], []
    for label, figure in figures.items():
        rows += figure.rows
        row_labels += [f"{label} {name}".strip() for name in figure.row_labels]
    first = next(iter(figures.values()))
    numbers = {label: figure.numbers for label, figure in figures.items()}
    return experiments.Figure(rows, first.column_labels, row_labels, numbers)


def main(argv):
    del argv
    import numpy as np

    import pipelines
    from keras_invert import experiments

    paths = FLAGS.images or pipelines.list_source_files(FLAGS.data, FLAGS.split)
    paths = paths[: FLAGS.num_images]
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    models = _labels(FLAGS.model, [common.load_model_parts(p) for p in FLAGS.model])
    if FLAGS.name == "interpolation":
        pair = [int(i) for i in FLAGS.pair]
        if len(pair) != 2 or not all(0 <= i < len(paths) for i in pair):
            raise app.UsageError(f"--pair needs two indices below {len(paths)}.")
        paths = [paths[i] for i in pair]
    elif len(paths) < 2:
        raise app.UsageError("The experiments need at least two photos.")

    def crops(size):
        return pipelines.load_images(paths, size)

    name = FLAGS.name
    if name == "layers":
        figure = experiments.run_layers(models, crops, names)
    else:
        figures = {}
        for label, parts in models.items():
            images = crops(parts.image_size)
            if name == "interpolation":
                figure = experiments.run_interpolation(parts, images, FLAGS.steps)
            elif name == "perturbation":
                figure = experiments.run_perturbation(
                    parts,
                    images,
                    names,
                    dropout_rate=FLAGS.dropout_rate,
                    keep_norm=FLAGS.dropout_keep_norm,
                    seed=FLAGS.seed,
                )
            elif name == "dark_knowledge":
                figure = experiments.run_dark_knowledge(parts, images, names, k=FLAGS.top_k)
            else:
                fitted = fit_features(
                    parts, FLAGS.data, FLAGS.fit_split, FLAGS.fit_examples, FLAGS.seed
                )
                logging.info("%s: fitted on %d %s features", label, len(fitted), FLAGS.fit_split)
                if name == "random_samples":
                    figure = experiments.run_random_samples(
                        parts,
                        fitted,
                        distribution=FLAGS.distribution,
                        count=FLAGS.num_samples,
                        seed=FLAGS.seed,
                        bins=FLAGS.bins,
                        covariance=FLAGS.covariance,
                    )
                else:
                    units = [int(u) for u in FLAGS.units]
                    if FLAGS.activation is None:
                        values = experiments.unit_values(fitted, units, FLAGS.percentile)
                    else:
                        values = np.full(len(units), FLAGS.activation)
                    figure = experiments.run_single_neuron(parts, fitted.shape[1:], units, values)
                    figure.numbers["value_source"] = (
                        f"--activation={FLAGS.activation}"
                        if FLAGS.activation is not None
                        else f"percentile {FLAGS.percentile:g} of {len(fitted)} fit examples"
                    )
            figures[label] = figure
        figure = _stack(figures)

    png = experiments.save_png(os.path.join(FLAGS.out, f"{name}.png"), figure.render())
    record = {
        "experiment": name,
        "models": {
            label: {"path": path, "representation": parts.representation}
            for (label, parts), path in zip(models.items(), FLAGS.model, strict=True)
        },
        "photos": paths,
        "flags": {
            flag: getattr(FLAGS, flag)
            for flag in (
                "data",
                "split",
                "steps",
                "pair",
                "dropout_rate",
                "dropout_keep_norm",
                "distribution",
                "covariance",
                "bins",
                "num_samples",
                "fit_split",
                "fit_examples",
                "top_k",
                "units",
                "activation",
                "percentile",
                "seed",
            )
        },  # fmt: skip
        "results": figure.numbers,
    }
    json_path = experiments.save_json(os.path.join(FLAGS.out, f"{name}.json"), record)
    print(f"{png}\n{json_path}")


if __name__ == "__main__":
    app.run(main)
