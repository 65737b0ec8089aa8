"""The evaluation protocol: decoders, the optimisation baseline and constant predictions, as rows.

On the centre crops of fixed test photos at each model's image size
(docs/reference.md, Evaluation), every row reports the normalised
reconstruction error (image space), the same once each reconstruction has its
photo's mean colour (`metrics.error_given_mean_colour`), the feature-space error
||phi(x_hat) - phi(x)|| / ||phi(x)|| (the reconstruction re-encoded by the
model's encoder, `reencode`; a reconstruction smaller than the encoder's
input, e.g. 192x192 from conv5 for 227x227 crops, is resized up bilinearly
first and the row says so), PSNR, SSIM, luma correlation and the seconds per
image (encoding + decoding, or the whole optimisation; wall clock on this
machine, after the same calls once untimed, so that tracing and compiling for
their batch shapes are not counted).

- `evaluate_decoder`: a trained model (`keras_invert.load`).
- `evaluate_optimization`: Mahendran & Vedaldi's inversion
  (`keras_invert.inversion`) with the original method's settings for the
  representation (`inversion.paper_settings`) unless overridden.
- `mean_image_rows`: constant predictions, per output size: the mean
  training photo of each work dir's own training data (what that model could
  learn; the caller reads it, e.g. `pipelines.baselines.training_mean_image`)
  and the mean of the test photos themselves (it has seen them: a
  deliberately strong baseline).
- `agreement` (with `make_classifier`): top-1 agreement, the fraction of
  images whose reconstruction gets the same top class as the original crop,
  and top-5 agreement, the fraction whose original top class is among the
  reconstruction's five best. Reconstructions are resized (bilinear) to the
  crop size and both go through the classifier's own preprocessing. They
  measure how much semantic content survives; the mean-image rows give the
  chance level (one image for all, so at most the share of the commonest
  class).
- `evaluate`: all of them in one list of rows; `format_table` (Markdown) and
  `save` (`evaluation.json` + `evaluation.csv`) report them.

The originals are the crops made targets (`keras_invert.images.target`), as
in training. Photos come in as `crops`, a function of the crop side that
returns the test photos' centre crops `[N, S, S, 3]`, float 0..255; this
module reads no image files.

Example:
    >>> import functools, keras_invert, pipelines
    >>> from keras_invert import evaluation
    >>> crops = functools.partial(pipelines.load_images, paths)
    >>> rows = evaluation.evaluate(crops, {"runs/hog": keras_invert.load("runs/hog")})
    >>> print(evaluation.format_table(rows))
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from absl import logging

from keras_invert import files, images, inversion, metrics, mirror_averaging, registry

COLUMNS = [
    "method",
    "representation",
    "image_size",
    "output_size",
    "normalized_error",
    "error_given_mean_colour",
    "feature_error",
    "psnr",
    "ssim",
    "luma_correlation",
    "seconds_per_image",
    "note",
]
AGREEMENT_COLUMNS = ["top1_agreement", "top5_agreement"]
OPTIMIZATION = "optimization (Mahendran & Vedaldi)"
"""The method name of the optimisation rows."""


def make_classifier(name):
    """`classify(images 0..255) -> scores [N, classes]` of the registry tap `name`.

    Raises:
        ValueError: `name` is not a network representation or its tap is not a
            vector of class scores.
    """
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


def reencode(encode, reconstructions, image_size):
    """Features of [0, 1] reconstructions at the encoder's input size, and whether resized.

    A reconstruction smaller than the encoder's input (AlexNet decoders output
    128..216 px for 227 px crops) is resized up first (`keras_invert.images.resize`).
    """
    pixels = np.clip(np.asarray(reconstructions, np.float32), 0.0, 1.0) * 255.0
    resized = pixels.shape[1] != image_size
    if resized:
        pixels = images.resize(pixels, image_size).numpy()
    return np.asarray(encode(pixels)), resized


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
    original = np.argmax(classify(images), axis=-1)
    scores, _ = reencode(classify, reconstructions, images.shape[1])
    top5 = np.argsort(-scores, axis=-1)[:, :5]
    return {
        "top1_agreement": float(np.mean(top5[:, 0] == original)),
        "top5_agreement": float(np.mean(np.any(top5 == original[:, None], axis=1))),
    }


def evaluate_decoder(path, model, crops, classify=None):
    """One row for a trained model, with its originals and reconstructions.

    Args:
        path: where `model` was loaded from; the row's method is "decoder PATH".
        model: a `keras_invert.loading.TrainedModel`.
        crops: the test photos' crops as a function of their side (module docstring).
        classify: a classifier (`make_classifier`) for the agreement columns.

    Returns:
        `(row, originals [N, T, T, 3], reconstructions [N, T, T, 3])`, in [0, 1].
    """
    photos = crops(model.image_size)
    # Warm-up with the very calls that are timed: tracing and compiling for
    # each batch shape they use is not part of the time per image.
    model.decode(model.encode(photos))
    start = time.perf_counter()
    features = model.encode(photos)
    reconstructions = model.decode(features)
    seconds = (time.perf_counter() - start) / len(photos)
    originals = np.asarray(images.target(photos, model.output_size))
    again, resized = reencode(model.encode, reconstructions, model.image_size)
    notes = []
    if resized:
        notes.append(
            f"feature error: {model.output_size}px reconstruction resized to {model.image_size}px"
        )
    if model.encoder_source == "registry" and model.representation.startswith("alexnet"):
        notes.append("encoder rebuilt from the registry")
    if model.mirror_average:
        notes.append(mirror_averaging.LABEL)
    row = _row(f"decoder {path}", model.representation, model.image_size, model.output_size)
    row.update(metrics.summarize(originals, reconstructions))
    row["feature_error"] = metrics.feature_error(features, again)
    row["seconds_per_image"] = seconds
    row["note"] = "; ".join(notes)
    if classify is not None:
        row.update(agreement(classify, photos, reconstructions))
    return row, originals, np.asarray(reconstructions)


def evaluate_optimization(
    representation_name, image_size, crops, encoder_options, classify=None, *,
    overrides=None, seed=0,
):  # fmt: skip
    """One row for Mahendran & Vedaldi's optimisation on `representation_name`.

    Args:
        representation_name: a registry name, e.g. "hog".
        image_size: the crop side; None: the representation's default.
        crops: the test photos' crops as a function of their side (module docstring).
        encoder_options: options of the representation's encoder.
        classify: a classifier (`make_classifier`) for the agreement columns.
        overrides: `inversion.optimize` settings (steps, learning_rate,
            tv_weight, alpha_weight) over `inversion.paper_settings`; None
            values keep the paper's.
        seed: of the optimisation's starting noise.

    Raises:
        ValueError: among others, the representation has no gradient.
    """
    representation = registry.get(representation_name)
    image_size = representation.image_size(image_size)
    encode = representation.make_encoder(**encoder_options)
    photos = crops(image_size)
    settings = inversion.paper_settings(representation_name)
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    logging.info("Optimisation on %s at %dpx: %s", representation_name, image_size, settings)
    features = np.asarray(encode(photos))
    shape = (image_size, image_size, 3)
    # Warm-up: one step traces the encoder's graph, which is not part of the time per image.
    inversion.optimize(encode, features, image_shape=shape, **dict(settings, steps=1))
    start = time.perf_counter()
    features = np.asarray(encode(photos))
    result = inversion.optimize(encode, features, image_shape=shape, seed=seed, **settings)
    seconds = (time.perf_counter() - start) / len(photos)
    reconstructions = result.images / 255.0
    again = np.asarray(encode(result.images))
    row = _row(OPTIMIZATION, representation_name, image_size, image_size)
    originals = np.asarray(images.target(photos, image_size))
    row.update(metrics.summarize(originals, reconstructions))
    row["feature_error"] = metrics.feature_error(features, again)
    row["seconds_per_image"] = seconds
    row["note"] = (
        f"{settings['steps']} steps, momentum 0.9, tv_weight {settings['tv_weight']:g}, "
        f"alpha 6, beta 2"
    )
    if classify is not None:
        row.update(agreement(classify, photos, reconstructions))
    return row


def mean_image_rows(originals, image_size, training_means=(), classify=None, images=None):
    """The constant predictions: the models' mean training images and the test photos' mean.

    Args:
        originals: the test photos' targets `[N, T, T, 3]` in [0, 1].
        image_size: the crop size S they were made from.
        training_means: `(mean image [T, T, 3], description)` pairs
            (`pipelines.baselines.training_mean_image`), one row each.
        classify, images: with a classifier and the crops, each row also gets
            the classifier agreement of the constant image (the chance level
            of those columns).
    """
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


def optimization_targets(models) -> list[tuple]:
    """`(representation, image_size, encoder_options)` of each distinct model, in order."""
    targets = []
    for model in models:
        target = (model.representation, model.image_size, model.encoder_options)
        if target not in targets:
            targets.append(target)
    return targets


def evaluate(
    crops, models, *, decoders=True, optimization=(), overrides=None, seed=0,
    training_means=None, classify=None,
):  # fmt: skip
    """Every row of one evaluation: decoders, optimisation runs, then constant predictions.

    Args:
        crops: the test photos' crops as a function of their side (module docstring).
        models: `{path: TrainedModel}` (`keras_invert.load`), one row each.
        decoders: whether the models get their decoder rows (and their
            training means their rows).
        optimization: `(representation, image_size or None, encoder_options)`
            triples (`optimization_targets`), one optimisation row each; a
            representation without gradients gets a row that says so.
        overrides, seed: of the optimisation (`evaluate_optimization`).
        training_means: `{path: (mean image, description) or None}` of the
            models' own training data; one row per distinct description and size.
        classify: a classifier (`make_classifier`) for the agreement columns.

    Returns:
        The rows, dicts keyed by `COLUMNS` (and `AGREEMENT_COLUMNS` with a classifier).
    """
    rows, baselines, means = [], {}, {}
    for path, model in models.items() if decoders else ():
        row, originals, _ = evaluate_decoder(path, model, crops, classify)
        rows.append(row)
        sizes = (row["image_size"], row["output_size"])
        baselines.setdefault(sizes, originals)
        # Each model's own training data: models trained on other data get their own row.
        mean = (training_means or {}).get(path)
        known = means.setdefault(sizes, [])
        if mean is not None and mean[1] not in [description for _, description in known]:
            known.append(mean)
    for representation, image_size, options in optimization:
        try:
            row = evaluate_optimization(
                representation, image_size, crops, options, classify, overrides=overrides,
                seed=seed,
            )  # fmt: skip
        except ValueError as error:
            if "no gradient" not in str(error):
                raise
            logging.warning("No optimisation row for %s: %s", representation, error)
            row = _row(OPTIMIZATION, representation, image_size, None)
            row["note"] = "not differentiable: optimisation cannot invert it"
            rows.append(row)
            continue
        rows.append(row)
        size = row["image_size"]
        baselines.setdefault((size, size), np.asarray(images.target(crops(size), size)))
    for (image_size, output_size), originals in baselines.items():
        photos = crops(image_size) if classify is not None else None
        known = means.get((image_size, output_size), [])
        rows += mean_image_rows(originals, image_size, known, classify, photos)
    return rows


def reconstruction_rows(name, originals, reconstructions, training_mean=None) -> dict:
    """`{row name: metrics.summarize}` of reconstructions beside the mean-image baselines.

    Args:
        name: the reconstructions' row, e.g. "hog decoder".
        originals, reconstructions: `[N, T, T, 3]` in [0, 1].
        training_mean: `(mean image [T, T, 3], description)` of the model's
            training data, or None.

    Returns:
        The rows `name`, "mean training image" (with `training_mean`) and, for
        two photos or more, "mean image (of these photos)".
    """
    rows = {name: metrics.summarize(originals, reconstructions)}
    if training_mean is not None:
        # The constant prediction the model could have learnt: its mean training photo.
        prediction = np.broadcast_to(training_mean[0], originals.shape)
        rows["mean training image"] = metrics.summarize(originals, prediction)
    if len(originals) > 1:
        # It has seen the evaluated photos themselves: a deliberately strong baseline.
        rows["mean image (of these photos)"] = metrics.mean_image_baseline(originals)
    return rows


def _row(method, representation, image_size, output_size):
    row = dict.fromkeys(COLUMNS)
    row.update(
        method=method,
        representation=representation,
        image_size=image_size,
        output_size=output_size,
    )
    return row


def columns_of(rows) -> list[str]:
    """`COLUMNS`, plus the agreement columns when a classifier filled them."""
    return COLUMNS + [c for c in AGREEMENT_COLUMNS if any(c in row for row in rows)]


def format_table(rows, columns=None) -> str:
    """Rows (dicts) as a Markdown table: numbers to 3 decimals, missing values, NaN and Inf as -.

    Args:
        rows: the table's rows.
        columns: the keys shown, in order; default `columns_of(rows)`. An
            empty name heads a column without a title.
    """

    def cell(value):
        if value is None or value == "":
            return "-"
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}" if math.isfinite(value) else "-"
        return str(value)

    def line(cells):
        return "|" + "|".join(f" {text} " if text else " " for text in cells) + "|"

    columns = columns_of(rows) if columns is None else list(columns)
    lines = [line(columns), "|" + "---|" * len(columns)]
    lines += [line(cell(row.get(c)) for c in columns) for row in rows]
    return "\n".join(lines)


def save(out_dir, rows, paths) -> tuple[str, str]:
    """Writes `evaluation.json` (the photos' paths and the rows) and `evaluation.csv`.

    An undefined measure (None, NaN or Inf: a PSNR of identical images, the
    error of identical originals) is null in the JSON and an empty field in
    the CSV (`files.write_json`, `files.write_csv`), never "nan" or "inf".

    Returns:
        The two files' paths.
    """
    json_path = files.write_json(
        os.path.join(out_dir, "evaluation.json"), {"images": list(paths), "rows": rows}
    )
    csv_path = files.write_csv(os.path.join(out_dir, "evaluation.csv"), rows, columns_of(rows))
    return json_path, csv_path
