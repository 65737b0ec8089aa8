"""A reproduction's measurements: decoders and optimisation evaluated, stored, and reused.

Each measurement is a JSON file under `out_dir/measurements`, read back by a
rerun while it is newer than every model it measured (`cached`), so a rerun
measures only what changed. `evaluate_decoder` measures a decoder on the
test photos (with the mean-image baselines and the colour and layout error
of finding 3) and, where the caller gives them, on photos it trained on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import numpy as np
from absl import logging

from keras_invert import checkpoints, evaluation, files, images, inversion, metrics
from keras_invert.reproduction import findings
from keras_invert.reproduction.plan import Job, ReproduceConfig

COARSE_SIZE = 8
"""Side of the block averages on which colour and rough layout are compared (finding 3)."""


def cached(out: str, name: str, models, measure: Callable[[], dict], outputs=(), keys=()) -> dict:
    """`measure()`, stored as `measurements/NAME.json`; reused while newer than `models`.

    `outputs` are files `measure` also writes (a figure): without them the
    stored numbers are not reused. Nor are they when they lack one of `keys`
    (measured by an earlier version, which did not measure that).
    """
    path = os.path.join(out, "measurements", f"{name}.json")
    newest = max((_model_time(model) for model in models), default=0.0)
    fresh = os.path.exists(path) and os.path.getmtime(path) >= newest
    if fresh and all(os.path.exists(output) for output in outputs):
        with open(path) as file:
            stored = json.load(file)
        if all(key in stored for key in keys):
            return stored
    result = files.plain(measure())
    files.write_json(path, result)
    return result


def _model_time(model) -> float:
    final = os.path.join(model.path, checkpoints.FINAL_MODEL)
    return os.path.getmtime(final) if os.path.exists(final) else time.time()


def evaluate_decoder(job: Job, model, data) -> dict:
    """The decoder's row, its coarse (colour and layout) errors and the mean-image rows."""
    row, originals, reconstructions = evaluation.evaluate_decoder(job.name, model, data.crops)
    training_mean = data.training_mean(model.path, model.image_size, model.output_size)
    means = evaluation.mean_image_rows(
        originals, model.image_size, [training_mean] if training_mean else []
    )
    coarse = {"decoder": coarse_error(originals, reconstructions)}
    oracle = np.broadcast_to(originals.mean(axis=0), originals.shape)
    coarse["mean image (of these photos)"] = coarse_error(originals, oracle)
    if training_mean is not None:
        constant = np.broadcast_to(training_mean[0], originals.shape)
        coarse["mean training image"] = coarse_error(originals, constant)
    measured = {"decoder": row, "means": means, "coarse_error": coarse}
    if data.training_crops is not None:
        # The same measures on photos it trained on: close to the test photos' when the
        # decoder is held back by its training (steps, width), far below when by its photos.
        seen, seen_originals, _ = evaluation.evaluate_decoder(job.name, model, data.training_crops)
        measured[findings.SEEN] = {name: seen[name] for name in findings.SEEN_MEASURES}
        measured[findings.SEEN]["photos"] = len(seen_originals)
    return measured


def coarse_error(originals, reconstructions) -> float | None:
    """The normalised error of `COARSE_SIZE` x `COARSE_SIZE` block averages: colour and layout.

    None where the block averages of the originals are all the same (`metrics`).
    """
    small = [
        images.target(np.asarray(x) * 255.0, COARSE_SIZE).numpy()
        for x in (originals, reconstructions)
    ]
    return metrics.normalized_reconstruction_error(*small)


def evaluate_optimization(config: ReproduceConfig, job: Job, model, data) -> dict:
    """Mahendran & Vedaldi's optimisation on the job's representation, at the model's size.

    An optimisation that diverges is recorded, not raised: `{"optimization":
    {findings.DIVERGED: reason}}`. The baseline is a comparison, and an hour
    of trained decoders should not be lost to it; the findings and tables
    say "diverged" where its numbers would be.
    """
    overrides = {"steps": config.optimization_steps}
    try:
        row = evaluation.evaluate_optimization(
            job.representation, model.image_size, data.crops, model.encoder_options,
            overrides=overrides, seed=config.seed,
        )  # fmt: skip
    except inversion.OptimizationDiverged as error:
        logging.warning("Optimisation on %s: %s", job.representation, error)
        return {"optimization": {findings.DIVERGED: str(error)}}
    return {"optimization": row}
