"""The paper's experiments on trained decoders: a labelled PNG and a JSON of its numbers.

    python -m launch.experiment --name=layers --model=runs/hog,runs/lbp,runs/conv5 --out=figs
    python -m launch.experiment --name=interpolation --model=runs/fc8 --steps=8 --out=figs
    python -m launch.experiment --name=perturbation --model=runs/fc6 --out=figs
    python -m launch.experiment --name=random_samples --model=runs/fc7 \\
        --distribution=truncated_gaussian --fit_split=train --out=figs
    python -m launch.experiment --name=dark_knowledge --model=runs/fc8 --out=figs
    python -m launch.experiment --name=single_neuron --model=runs/fc8 --units=0,1,2 --out=figs
    python -m launch.experiment --name=perturbation --model=runs/fc6 --retrain_steps=2000 --out=figs
    python -m launch.experiment --name=autoencoder_vs_fixed --model=runs/fc8,runs/fc8_ae \
        --retrain_steps=2000 --out=figs

Writes `OUT/NAME.png` and `OUT/NAME.json` (docs/reference.md, Experiments; supplementary
Figures 1-10). `--model` takes work dirs or exports; `layers` puts every
model in one figure (a column each), the others stack one block of rows per
model. Test photos are the centre crops of `--data`/`--split` (or
`--images`); `random_samples` and `single_neuron` fit on features of
`--fit_examples` random crops of `--fit_split`. The library side is
`keras_invert.experiments`, which documents each perturbation.

`perturbation --retrain_steps=N` also fine-tunes a copy of each work dir's
decoder for N steps on binarised, and another on dropped-out, features of
random crops of `--data`/`--retrain_split` (crop settings from the work
dir's config; for AlexNet the features of the model's own encoder) and
decodes the perturbed test features with both decoders.

`autoencoder_vs_fixed --model=FIXED_DIR,AUTOENCODER_DIR` takes two work dirs
of one AlexNet layer, trained with the encoder fixed and as an autoencoder
(checked against config.json and the stored encoder). It writes
`autoencoder_vs_fixed.png` (original | fixed | autoencoder, each decoding its
own encoder's features) and, for each experiment in `--compare`,
`autoencoder_vs_fixed_<experiment>.png` with a block of rows per model; the
JSON holds all their numbers plus statistics of both encoders' features and
their distance.
"""

from __future__ import annotations

import functools
import os

from absl import app, flags, logging

from launch import common

COMPARED = ("interpolation", "perturbation", "random_samples", "dark_knowledge", "single_neuron")
"""The per-model experiments, which autoencoder_vs_fixed also runs on both models."""
EXPERIMENTS = ("layers", *COMPARED, "autoencoder_vs_fixed")

FLAGS = flags.FLAGS
flags.DEFINE_enum("name", None, EXPERIMENTS, "Which experiment.", required=True)
flags.DEFINE_list("model", None, "Work dirs or SavedModel export dirs.", required=True)
flags.DEFINE_string("out", "runs/experiments", "Output folder for NAME.png and NAME.json.")
flags.DEFINE_string("data", "samples", "Pipeline source of the photos.")
flags.DEFINE_string("split", "test", "Split of --data for the photos shown.")
flags.DEFINE_list("images", [], "Image files instead of --data/--split.")
flags.DEFINE_integer("num_images", 4, "Photos shown (the first N of the split).", lower_bound=2)
flags.DEFINE_integer("steps", 8, "interpolation: blends, both ends included.", lower_bound=2)
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
flags.DEFINE_list("units", ["0", "1", "2", "3", "4", "5", "6", "7"], "single_neuron: units.")
flags.DEFINE_float("activation", None, "single_neuron: value (default: --percentile).")
flags.DEFINE_float(
    "percentile",
    99.0,
    "single_neuron: percentile of the unit on fit data.",
    lower_bound=0,
    upper_bound=100,
)
flags.DEFINE_integer("seed", 0, "Seed of every random draw.")
flags.DEFINE_integer(
    "retrain_steps",
    0,
    "perturbation: also fine-tune a decoder N steps per perturbation.",
    lower_bound=0,
)
flags.DEFINE_float("retrain_learning_rate", 1e-4, "perturbation: Adam rate of the fine-tuning.")
flags.DEFINE_integer(
    "retrain_batch_size", 16, "perturbation: batch size of the fine-tuning.", lower_bound=1
)
flags.DEFINE_string("retrain_split", "train", "perturbation: split of --data to fine-tune on.")
flags.DEFINE_list(
    "compare", list(COMPARED), "autoencoder_vs_fixed: experiments also run on both models."
)
common.validate("dropout_rate", lambda rate: 0 <= rate < 1, "in [0, 1)")
common.validate("retrain_learning_rate", lambda rate: rate > 0, "> 0")
common.validate("pair", lambda pair: len(pair) == 2 and all(map(str.isdigit, pair)), "two indices")
common.validate("units", lambda units: all(map(str.isdigit, units)), "unit indices")


def feature_batches(parts, source, split, *, batch_size, seed, **crop_options):
    """`(features, targets)` NumPy batches of random crops of a split, as training sees them.

    The features are those of the model's own encoder: for a network inside
    the model (AlexNet) the pipeline gives crops, which `parts.encode` turns
    into features here. `crop_options` go to `pipelines.build_dataset`.
    """
    import pipelines
    from keras_invert import registry

    representation = registry.get(parts.representation)
    dataset = pipelines.build_dataset(
        source,
        split,
        representation=representation,
        image_size=parts.image_size,
        batch_size=batch_size,
        training=True,
        repeat=True,
        seed=seed,
        encoder_options=parts.encoder_options,
        **crop_options,
    )
    for features, targets in dataset:
        features = features.numpy()
        if representation.encode_in_model:
            features = parts.encode(features)  # The pipeline gave crops.
        yield features, targets.numpy()


def fit_features(parts, source, split, count, seed):
    """Features of `count` random training crops (as training sees them) of a split."""
    import numpy as np

    collected, total = [], 0
    for features, _ in feature_batches(parts, source, split, batch_size=16, seed=seed):
        collected.append(features)
        total += len(features)
        if total >= count:
            break
    return np.concatenate(collected)[:count]


@functools.cache
def _keras_model(path):
    """The trained Keras model of a work dir (an export's decoder cannot be trained)."""
    import keras_invert
    from keras_invert import config as config_lib
    from keras_invert import losses

    if not os.path.isdir(path) or config_lib.load(path) is None:
        raise app.UsageError(
            f"{path} is not a work dir (with config.json): --retrain_steps and "
            "autoencoder_vs_fixed need the trained Keras model (a SavedModel export's decoder "
            "cannot be fine-tuned, and it keeps no autoencoder's encoder)."
        )
    # A perceptual run saves its training wrapper: the generator is the model.
    return losses.unwrap(keras_invert.load(path).model)


def _decoder_of(model):
    from keras_invert.reconstructor import Reconstructor

    return model.decoder if isinstance(model, Reconstructor) else model


def retrained_decoders(path, parts):
    """Decoders fine-tuned on binarised and on dropped-out features (`--retrain_*`).

    Returns:
        `(decoders, numbers)`: perturbation name -> `decode`, and the
        training's settings and losses.
    """
    from keras_invert import config as config_lib
    from keras_invert import experiments

    run = config_lib.load(path)
    decoder = _decoder_of(_keras_model(path))
    # Crops as the decoder's own training drew them.
    crop_options = {"min_crop_scale": run.min_crop_scale, "color_jitter": run.color_jitter}
    batches = feature_batches(
        parts,
        FLAGS.data,
        FLAGS.retrain_split,
        batch_size=FLAGS.retrain_batch_size,
        seed=FLAGS.seed,
        **crop_options,
    )
    tuned = experiments.finetune_decoders(
        decoder,
        batches,
        experiments.PERTURBATIONS,
        steps=FLAGS.retrain_steps,
        learning_rate=FLAGS.retrain_learning_rate,
        dropout_rate=FLAGS.dropout_rate,
        keep_norm=FLAGS.dropout_keep_norm,
        seed=FLAGS.seed,
    )
    decoders = {name: experiments.image_decoder(model) for name, (model, _) in tuned.items()}
    losses = {name: values for name, (_, values) in tuned.items()}
    for name, values in losses.items():
        logging.info(
            "%s: fine-tuned on %s features, loss %.4g -> %.4g", path, name, values[0], values[-1]
        )
    ends = min(10, FLAGS.retrain_steps)
    numbers = {
        "steps": FLAGS.retrain_steps,
        "learning_rate": FLAGS.retrain_learning_rate,
        "batch_size": FLAGS.retrain_batch_size,
        "data": FLAGS.data,
        "split": FLAGS.retrain_split,
        **crop_options,
        "losses": losses,
        # Means over the first and the last `steps_averaged` steps.
        "steps_averaged": ends,
        "mean_loss_first": {k: sum(v[:ends]) / ends for k, v in losses.items()},
        "mean_loss_last": {k: sum(v[-ends:]) / ends for k, v in losses.items()},
    }
    return decoders, numbers


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


def run_one(name, path, parts, load_crops, paths, names):
    """One per-model experiment (all but `layers`) as a `Figure`."""
    import numpy as np

    from keras_invert import experiments

    if name == "interpolation":
        pair = [paths[i] for i in _pair(len(paths))]
        return experiments.run_interpolation(parts, load_crops(pair, parts.image_size), FLAGS.steps)
    images = load_crops(paths, parts.image_size)
    if name == "perturbation":
        retrained, training_numbers = {}, None
        if FLAGS.retrain_steps:
            retrained, training_numbers = retrained_decoders(path, parts)
        figure = experiments.run_perturbation(
            parts,
            images,
            names,
            dropout_rate=FLAGS.dropout_rate,
            keep_norm=FLAGS.dropout_keep_norm,
            seed=FLAGS.seed,
            retrained=retrained,
        )
        if training_numbers is not None:
            figure.numbers["retraining"] = training_numbers
        return figure
    if name == "dark_knowledge":
        return experiments.run_dark_knowledge(parts, images, names, k=FLAGS.top_k)
    fitted = fit_features(parts, FLAGS.data, FLAGS.fit_split, FLAGS.fit_examples, FLAGS.seed)
    logging.info("%s: fitted on %d %s features", path, len(fitted), FLAGS.fit_split)
    if name == "random_samples":
        return experiments.run_random_samples(
            parts,
            fitted,
            distribution=FLAGS.distribution,
            count=FLAGS.num_samples,
            seed=FLAGS.seed,
            bins=FLAGS.bins,
            covariance=FLAGS.covariance,
        )
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
    return figure


def _pair(count):
    pair = [int(i) for i in FLAGS.pair]
    if len(pair) != 2 or not all(0 <= i < count for i in pair):
        raise app.UsageError(f"--pair needs two indices below {count}.")
    return pair


def check_autoencoder_pair(paths):
    """Checks `--model=FIXED_DIR,AUTOENCODER_DIR` (`experiments.check_autoencoder_pair`)."""
    from keras_invert import config as config_lib
    from keras_invert import experiments

    if len(paths) != 2:
        raise app.UsageError(
            f"autoencoder_vs_fixed takes --model=FIXED_DIR,AUTOENCODER_DIR. Received: {paths}"
        )
    pair = [(config_lib.load(path), _keras_model(path)) for path in paths]
    try:
        experiments.check_autoencoder_pair(*pair)
    except ValueError as error:
        raise app.UsageError(f"--model={','.join(paths)}: {error}") from error


def _stack_and_save(name, figures):
    from keras_invert import experiments

    figure = _stack(figures)
    experiments.save_png(os.path.join(FLAGS.out, f"{name}.png"), figure.render())
    return figure


def main(argv):
    del argv
    name = FLAGS.name
    compared = list(FLAGS.compare) if name == "autoencoder_vs_fixed" else []
    unknown = set(compared) - set(COMPARED)
    if unknown:
        raise app.UsageError(f"--compare takes experiments from {COMPARED}. Received: {unknown}")
    if FLAGS["compare"].present and name != "autoencoder_vs_fixed":
        raise app.UsageError("--compare is for --name=autoencoder_vs_fixed.")
    retrain_flags = [f for f in _RECORDED_FLAGS if f.startswith("retrain_") and FLAGS[f].present]
    if retrain_flags and not FLAGS.retrain_steps:
        raise app.UsageError(f"{retrain_flags} need --retrain_steps > 0.")
    if FLAGS.retrain_steps and "perturbation" not in [name, *compared]:
        raise app.UsageError(
            "--retrain_steps fine-tunes decoders for the perturbation experiment "
            "(--name=perturbation, or autoencoder_vs_fixed with perturbation in --compare)."
        )
    import keras_invert
    import pipelines
    from keras_invert import experiments

    paths = FLAGS.images or pipelines.list_source_files(FLAGS.data, FLAGS.split)
    paths = paths[: FLAGS.num_images]
    names = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    if len(paths) < 2:
        raise app.UsageError("The experiments need at least two photos.")
    if name == "interpolation" or "interpolation" in compared:
        _pair(len(paths))
    if name == "autoencoder_vs_fixed":
        check_autoencoder_pair(FLAGS.model)
        loaded = [keras_invert.load(p) for p in FLAGS.model]
        models = dict(zip(("fixed", "autoencoder"), loaded, strict=True))
    else:
        models = _labels(FLAGS.model, [keras_invert.load(p) for p in FLAGS.model])

    def load_crops(chosen, size):
        return pipelines.load_images(chosen, size)

    def by_model(experiment):
        return {
            label: run_one(experiment, path, parts, load_crops, paths, names)
            for (label, parts), path in zip(models.items(), FLAGS.model, strict=True)
        }

    if name == "layers":
        figure = experiments.run_layers(models, lambda size: load_crops(paths, size), names)
        experiments.save_png(os.path.join(FLAGS.out, f"{name}.png"), figure.render())
        results = figure.numbers
    elif name == "autoencoder_vs_fixed":
        figure = experiments.run_autoencoder_vs_fixed(
            *models.values(), lambda size: load_crops(paths, size), names
        )
        experiments.save_png(os.path.join(FLAGS.out, f"{name}.png"), figure.render())
        results = {"reconstructions": figure.numbers}
        for experiment in compared:
            stacked = _stack_and_save(f"{name}_{experiment}", by_model(experiment))
            results[experiment] = stacked.numbers
    else:
        results = _stack_and_save(name, by_model(name)).numbers

    record = {
        "experiment": name,
        "models": {
            label: {
                "path": path,
                "representation": parts.representation,
                "encoder_source": parts.encoder_source,
            }
            for (label, parts), path in zip(models.items(), FLAGS.model, strict=True)
        },
        "photos": paths,
        "flags": {flag: getattr(FLAGS, flag) for flag in _RECORDED_FLAGS},
        "results": results,
    }
    json_path = experiments.save_json(os.path.join(FLAGS.out, f"{name}.json"), record)
    pngs = [f"{name}.png", *(f"{name}_{e}.png" for e in compared)]
    print("\n".join([*(os.path.join(FLAGS.out, p) for p in pngs), json_path]))


_RECORDED_FLAGS = (
    "data", "split", "steps", "pair", "dropout_rate", "dropout_keep_norm", "distribution",
    "covariance", "bins", "num_samples", "fit_split", "fit_examples", "top_k", "units",
    "activation", "percentile", "seed", "retrain_steps", "retrain_learning_rate",
    "retrain_batch_size", "retrain_split", "compare",
)  # fmt: skip


if __name__ == "__main__":
    common.run(main)
