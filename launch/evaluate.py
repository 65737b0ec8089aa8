"""Evaluates trained decoders and the optimisation baseline on fixed test photos.

    python -m launch.evaluate --model=runs/hog,exports/lbp --data=samples --split=test
    python -m launch.evaluate --model=runs/hog --method=decoder,optimization --out_dir=runs/eval
    python -m launch.evaluate --method=optimization --representation=hog --image_size=64

For every model (work dir or SavedModel export) and every optimisation run,
on the centre crops of the split's photos at the model's image size
(docs/reference.md, Evaluation): the normalised reconstruction error (image space), the
feature-space error ||phi(x_hat) - phi(x)|| / ||phi(x)|| (the reconstruction
re-encoded by the model's encoder; a reconstruction smaller than the
encoder's input, e.g. 192x192 from conv5 for 227x227 crops, is resized up
bilinearly first and the row says so), PSNR, SSIM, luma correlation and the
seconds per image (encoding + decoding, or the whole optimisation; wall
clock on this machine, after one warm-up call so that graph tracing is not
counted). Constant predictions are rows too (per output size): the mean
training photo of each work dir's own training data (the source and split in
its `config.json`; what that model could learn; an export records no
training data, so it has none) and the mean of the test photos themselves
(it has seen them: a deliberately strong baseline, as in
`launch.reconstruct`). The originals are the crops made targets
(`keras_invert.images.target`), as in training. One Markdown table on
stdout, and `evaluation.json` + `evaluation.csv` in `--out_dir`.

`--classifier=NAME` (a registry name whose tap is a vector of class scores:
`efficientnet-lite0/logits`, or `keras:PATH#LAYER` of a saved classifier)
adds two columns: top-1 agreement, the fraction of images whose
reconstruction gets the same top class as the original crop, and top-5
agreement, the fraction whose original top class is among the
reconstruction's five best. Reconstructions are resized (bilinear) to the
crop size and both go through the classifier's own preprocessing. They
measure how much semantic content survives; the mean-image rows give the
chance level (one image for all, so at most the share of the commonest class).

`--method=optimization` runs Mahendran & Vedaldi's inversion
(`keras_invert.inversion`) with the original method's settings for the
representation (`inversion.paper_settings`) unless flags override them, for
`--representation` at `--image_size`, or else for each model's.
"""

from __future__ import annotations

import csv
import os
import time

from absl import app, flags, logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_list("model", [], "Work dirs or SavedModel export dirs, one table row each.")
flags.DEFINE_list("method", None, "decoder and/or optimization (default: decoder with --model).")
flags.DEFINE_string("data", "samples", "Pipeline source of the test photos.")
flags.DEFINE_string("split", "test", "Split of --data.")
flags.DEFINE_list("images", [], "Image files instead of --data.")
flags.DEFINE_integer(
    "num_images", None, "Use only the first N photos (default: all).", lower_bound=2
)
flags.DEFINE_string("out_dir", "runs/evaluate", "Where evaluation.json and evaluation.csv go.")
flags.DEFINE_string("representation", None, "Optimisation: the representation to invert.")
flags.DEFINE_integer("image_size", None, "Optimisation: input image size.", lower_bound=1)
flags.DEFINE_string("encoder_weights", None, "Optimisation: AlexNet weights file.")
flags.DEFINE_integer(
    "optimization_steps", None, "Optimisation steps (default: the paper's).", lower_bound=1
)
flags.DEFINE_float("optimization_learning_rate", None, "Optimisation rate (default: paper's).")
flags.DEFINE_float(
    "tv_weight", None, "Total-variation weight (default: the paper's).", lower_bound=0
)
flags.DEFINE_float("alpha_weight", None, "Alpha-norm prior weight (default: 8e-10).", lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of the optimisation's starting noise.")
flags.DEFINE_string(
    "classifier",
    None,
    "Registry name of a classifier tap (efficientnet-lite0/logits, keras:PATH#LAYER): adds "
    "top-1/top-5 agreement between its predictions on originals and on reconstructions.",
)
common.validate("optimization_learning_rate", lambda rate: rate > 0, "> 0")

COLUMNS = [
    "method",
    "representation",
    "image_size",
    "output_size",
    "normalized_error",
    "feature_error",
    "psnr",
    "ssim",
    "luma_correlation",
    "seconds_per_image",
    "note",
]
AGREEMENT_COLUMNS = ["top1_agreement", "top5_agreement"]


def make_classifier(name):
    """`classify(images 0..255) -> scores [N, classes]` of the registry tap `name`.

    Raises:
        ValueError: `name` is not a network representation or its tap is not a
            vector of class scores.
    """
    import numpy as np

    from keras_invert import registry

    representation = registry.get(name)
    shape = tuple(representation.feature_shape(representation.default_image_size))
    if not representation.encode_in_model or len(shape) != 1 or shape[0] < 5:
        raise ValueError(
            "Expected a network tap of class scores (a vector of at least 5), e.g. "
            f"efficientnet-lite0/logits. Received: classifier={name!r} with features {shape}"
        )
    model = representation.make_encoder()

    def classify(images):
        return np.asarray(model.predict(np.asarray(images, np.float32), batch_size=16, verbose=0))

    return classify


def agreement(classify, images, reconstructions):
    """Top-1 and top-5 agreement of `classify` on crops and on their reconstructions.

    Args:
        classify: images 0..255 -> class scores.
        images: the crops, float 0..255 `[N, S, S, 3]`.
        reconstructions: `[N, T, T, 3]` in [0, 1]; resized to S first.

    Returns:
        `{"top1_agreement": fraction with the same top class,
          "top5_agreement": fraction whose original top class is in the
          reconstruction's top 5}`.
    """
    import numpy as np

    original = np.argmax(classify(images), axis=-1)
    scores, _ = common.reencode(classify, reconstructions, images.shape[1])
    top5 = np.argsort(-scores, axis=-1)[:, :5]
    return {
        "top1_agreement": float(np.mean(top5[:, 0] == original)),
        "top5_agreement": float(np.mean(np.any(top5 == original[:, None], axis=1))),
    }


def evaluate_decoder(path, parts, paths, classify=None):
    """One row for a trained model (`parts` from `keras_invert.load(path)`)."""
    import numpy as np

    from keras_invert import metrics
    from keras_invert.images import target

    images = _load(paths, parts.image_size)
    parts.reconstruct(images[:1])  # Warm-up: tracing is not part of the time per image.
    start = time.perf_counter()
    features = parts.encode(images)
    reconstructions = parts.decode(features)
    seconds = (time.perf_counter() - start) / len(images)
    originals = np.asarray(target(images, parts.output_size))
    again, resized = common.reencode(parts.encode, reconstructions, parts.image_size)
    notes = []
    if resized:
        notes.append(
            f"feature error: {parts.output_size}px reconstruction resized to {parts.image_size}px"
        )
    if parts.encoder_source == "registry" and parts.representation.startswith("alexnet"):
        notes.append("encoder rebuilt from the registry")
    row = _row(f"decoder {path}", parts.representation, parts.image_size, parts.output_size)
    row.update(metrics.summarize(originals, reconstructions))
    row["feature_error"] = metrics.feature_error(features, again)
    row["seconds_per_image"] = seconds
    row["note"] = "; ".join(notes)
    if classify is not None:
        row.update(agreement(classify, images, reconstructions))
    return row, originals, np.asarray(reconstructions)


def evaluate_optimization(representation_name, image_size, paths, encoder_options, classify=None):
    """One row for Mahendran & Vedaldi's optimisation on `representation_name`."""
    import numpy as np

    from keras_invert import inversion, metrics, registry
    from keras_invert.images import target

    representation = registry.get(representation_name)
    image_size = image_size or representation.default_image_size
    encode = representation.make_encoder(**encoder_options)
    images = _load(paths, image_size)
    settings = inversion.paper_settings(representation_name)
    overrides = {
        "steps": FLAGS.optimization_steps,
        "learning_rate": FLAGS.optimization_learning_rate,
        "tv_weight": FLAGS.tv_weight,
        "alpha_weight": FLAGS.alpha_weight,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    logging.info("Optimisation on %s at %dpx: %s", representation_name, image_size, settings)
    features = np.asarray(encode(images))
    shape = (image_size, image_size, 3)
    # Warm-up: one step traces the encoder's graph, which is not part of the time per image.
    inversion.optimize(encode, features, image_shape=shape, **dict(settings, steps=1))
    start = time.perf_counter()
    features = np.asarray(encode(images))
    result = inversion.optimize(encode, features, image_shape=shape, seed=FLAGS.seed, **settings)
    seconds = (time.perf_counter() - start) / len(images)
    reconstructions = result.images / 255.0
    again = np.asarray(encode(result.images))
    row = _row("optimization (Mahendran & Vedaldi)", representation_name, image_size, image_size)
    originals = np.asarray(target(images, image_size))
    row.update(metrics.summarize(originals, reconstructions))
    row["feature_error"] = metrics.feature_error(features, again)
    row["seconds_per_image"] = seconds
    row["note"] = (
        f"{settings['steps']} steps, momentum 0.9, tv_weight {settings['tv_weight']:g}, "
        f"alpha 6, beta 2"
    )
    if classify is not None:
        row.update(agreement(classify, images, reconstructions))
    return row


def mean_image_rows(originals, image_size, training_means=(), classify=None, images=None):
    """The constant predictions: the models' mean training images and the test photos' mean.

    Args:
        originals: the test photos' targets `[N, T, T, 3]` in [0, 1].
        image_size: the crop size S they were made from.
        training_means: `(mean image [T, T, 3], description)` pairs
            (`common.training_mean_image`), one row each.
        classify, images: with a classifier and the crops, each row also gets
            the classifier agreement of the constant image (the chance level
            of those columns).
    """
    import numpy as np

    from keras_invert import metrics

    size = originals.shape[1]
    rows = []
    for mean, description in training_means:
        method = "mean training image"
        if len(training_means) > 1:
            method += f" ({description})"
        row = _row(method, "", image_size, size)
        row.update(metrics.mean_image_baseline(originals, mean))
        row["note"] = description
        rows.append((row, mean))
    row = _row("mean image (of these photos)", "", image_size, size)
    row.update(metrics.mean_image_baseline(originals))
    row["note"] = "has seen the test photos: a deliberately strong baseline"
    rows.append((row, originals.mean(axis=0)))
    if classify is not None and images is not None:
        for row, mean in rows:
            row.update(agreement(classify, images, np.broadcast_to(mean, originals.shape)))
    return [row for row, _ in rows]


def _row(method, representation, image_size, output_size):
    row = dict.fromkeys(COLUMNS)
    row.update(
        method=method,
        representation=representation,
        image_size=image_size,
        output_size=output_size,
    )
    return row


def _load(paths, image_size):
    import pipelines

    return pipelines.load_images(paths, image_size)


def columns_of(rows) -> list[str]:
    """`COLUMNS`, plus the agreement columns when a classifier filled them."""
    return COLUMNS + [c for c in AGREEMENT_COLUMNS if any(c in row for row in rows)]


def format_table(rows) -> str:
    """Rows as a Markdown table (numbers to 3 decimals; missing values as -)."""

    def cell(value):
        if value is None or value == "":
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    columns = columns_of(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(out_dir, rows, paths):
    from keras_invert import files

    os.makedirs(out_dir, exist_ok=True)
    json_path = files.write_json(
        os.path.join(out_dir, "evaluation.json"), {"images": paths, "rows": rows}
    )
    csv_path = os.path.join(out_dir, "evaluation.csv")
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns_of(rows))
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def main(argv):
    del argv
    import numpy as np

    import keras_invert
    import keras_invert.images
    import pipelines

    methods = FLAGS.method or (["decoder"] if FLAGS.model else ["optimization"])
    unknown = set(methods) - {"decoder", "optimization"}
    if unknown:
        raise app.UsageError(f"Unknown --method {sorted(unknown)}: decoder, optimization.")
    if "decoder" in methods and not FLAGS.model:
        raise app.UsageError("--method=decoder needs --model.")
    if "optimization" in methods and not (FLAGS.representation or FLAGS.model):
        raise app.UsageError("--method=optimization needs --representation or --model.")
    if FLAGS.images and FLAGS.data != "samples":
        raise app.UsageError("Give either --images or --data, not both.")
    paths = FLAGS.images or pipelines.list_source_files(FLAGS.data, FLAGS.split)
    paths = paths[: FLAGS.num_images] if FLAGS.num_images else paths
    if len(paths) < 2:
        raise app.UsageError("The normalised error needs at least two images.")

    try:
        classify = make_classifier(FLAGS.classifier) if FLAGS.classifier else None
    except ValueError as error:
        raise app.UsageError(f"--classifier: {error}") from error
    rows, baselines, training_means = [], {}, {}
    targets = []  # (representation, image_size, encoder_options) for the optimisation
    models = {path: keras_invert.load(path) for path in FLAGS.model}
    for path, parts in models.items() if "decoder" in methods else ():
        row, originals, _ = evaluate_decoder(path, parts, paths, classify)
        rows.append(row)
        sizes = (row["image_size"], row["output_size"])
        baselines.setdefault(sizes, originals)
        # Each model's own training data: models trained on other data get their own row.
        mean = common.training_mean_image(path, *sizes)
        known = training_means.setdefault(sizes, [])
        if mean is not None and mean[1] not in [description for _, description in known]:
            known.append(mean)
    if "optimization" in methods:
        if FLAGS.representation:
            options = {"weights": FLAGS.encoder_weights} if FLAGS.encoder_weights else {}
            targets.append((FLAGS.representation, FLAGS.image_size, options))
        else:
            for parts in models.values():
                target = (parts.representation, parts.image_size, parts.encoder_options)
                if target not in targets:
                    targets.append(target)
    for representation, image_size, options in targets:
        try:
            row = evaluate_optimization(representation, image_size, paths, options, classify)
        except ValueError as error:
            if "no gradient" not in str(error):
                raise
            logging.warning("No optimisation row for %s: %s", representation, error)
            row = _row("optimization (Mahendran & Vedaldi)", representation, image_size, None)
            row["note"] = "not differentiable: optimisation cannot invert it"
            rows.append(row)
            continue
        rows.append(row)
        size = row["image_size"]
        originals = np.asarray(keras_invert.images.target(_load(paths, size), size))
        baselines.setdefault((size, size), originals)
    for (image_size, output_size), originals in baselines.items():
        crops = _load(paths, image_size) if classify is not None else None
        means = training_means.get((image_size, output_size), [])
        rows += mean_image_rows(originals, image_size, means, classify, crops)

    json_path, csv_path = write_outputs(FLAGS.out_dir, rows, paths)
    print(f"\n{len(paths)} images from {FLAGS.images and 'files' or FLAGS.data}/{FLAGS.split}\n")
    print(format_table(rows))
    print(f"\n{json_path}\n{csv_path}")


if __name__ == "__main__":
    common.run(main)
