"""Runs a reproduction: train every planned decoder, evaluate, run the experiments, report.

Each stage writes its result under `out_dir` and a rerun reuses what is
finished: a run whose final model has its planned steps is not trained
again (an unfinished one resumes from its last checkpoint), and an
evaluation or experiment whose JSON is newer than every model it used is
read back instead of measured again. Progress is logged stage by stage.

The library reads no photo files: the caller passes the data access as a
`Data` (`launch.reproduce` builds it from `pipelines`).

Layout of `out_dir`:
    runs/NAME/          one training work dir per job (`plan.jobs`)
    measurements/*.json evaluations and experiment numbers, one file per stage
    figures/*.png       the figures `results.md` shows
    results.md, results.json

Example:
    >>> data = Data(training_dataset=..., check_source=..., crops=...,
    ...             image_names=[...], training_mean=..., training_crops=...)
    >>> reproduce(ReproduceConfig(out_dir="results"), data)
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
from absl import logging

from keras_invert import (
    callbacks,
    checkpoints,
    figures,
    files,
    loading,
    runs,
)
from keras_invert import config as config_lib
from keras_invert.experiments import runners
from keras_invert.reproduction import findings, measurements, report
from keras_invert.reproduction.plan import Job, ReproduceConfig, jobs, tap_name


@dataclasses.dataclass(frozen=True)
class Data:
    """How a reproduction reads photos (the caller's pipelines).

    Attributes:
        training_dataset: `(run, shard, cache_dir) -> tf.data.Dataset`, a run's
            training stream (`pipelines.training_dataset`).
        check_source: `(run) -> None`, raises `ValueError` when the run's
            source cannot be trained on.
        crops: `image_size -> float32 [N, S, S, 3]` 0..255, the test photos'
            centre crops.
        image_names: one short name per test photo.
        training_mean: `(work_dir, image_size, size) -> (mean image, description)`
            or None, the mean of a run's training targets.
        fill_feature_caches: `[(run, cache_dir)] -> folders`, fills the
            network feature caches of runs on taps of one network in one
            pass (`pipelines.training_data.fill_feature_caches`); None: each
            run builds its own.
        training_crops: as `crops`, for photos of the training split (the
            decoders saw other crops of them); None: not measured.
    """

    training_dataset: Callable
    check_source: Callable
    crops: Callable[[int], np.ndarray]
    image_names: Sequence[str]
    training_mean: Callable
    fill_feature_caches: Callable | None = None
    training_crops: Callable[[int], np.ndarray] | None = None


class _Progress:
    """Numbered stage lines with the elapsed time."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.time()

    def __call__(self, message: str, *args) -> None:
        self.done += 1
        minutes = (time.time() - self.start) / 60
        logging.info("[%d/%d, %.1f min] " + message, self.done, self.total, minutes, *args)


def reproduce(config: ReproduceConfig, data: Data) -> dict:
    """Trains, evaluates and reports (module docstring); returns the written paths.

    Returns:
        `{"results": results.md, "json": results.json, "figures": [PNG paths]}`.
    """
    planned = jobs(config)
    optimised = sum(_optimised(config, job) for job in planned)
    progress = _Progress(2 * len(planned) + optimised + 4 + 1)
    start = time.time()
    out = os.path.abspath(os.path.expanduser(config.out_dir))
    training_minutes = {}
    for job in planned:  # A run of another plan is refused before any work, not after an hour.
        _stored_run(_run_dir(out, job), job)
    _fill_tap_caches(planned, data, out)
    for job in planned:
        progress("training %s", job.name)
        training_minutes[job.name] = _train(job, _run_dir(out, job), data, out)
        keras.backend.clear_session()  # Each job builds its own graphs: free the last one's.
    models = {}
    for job in planned:
        models[job.name] = loading.load(_run_dir(out, job))
    evaluations = {}
    for job in planned:
        progress("evaluating %s", job.name)
        evaluations[job.name] = measurements.cached(
            out, f"evaluation-{job.name}", [models[job.name]],
            lambda job=job: measurements.evaluate_decoder(job, models[job.name], data),
            keys=[findings.SEEN] if data.training_crops else [],
        )  # fmt: skip
    optimizations = {}
    for job in planned:
        if _optimised(config, job):
            progress("optimisation on %s", job.representation)
            optimizations[job.name] = measurements.cached(
                out, f"optimization-{job.name}", [],
                lambda job=job: measurements.evaluate_optimization(
                    config, job, models[job.name], data
                ),
            )  # fmt: skip
    figure_paths, experiments = _experiments(config, planned, models, data, out, progress)
    depth = _depth_figure(planned, evaluations, optimizations, out)
    if depth is not None:
        figure_paths.insert(1 if figure_paths else 0, depth)
    if "binarised_and_dropped" in experiments:
        # The constant prediction at the same size: the bar binarised features must clear.
        name = next(
            job.name for job in planned if job.representation == tap_name(config.binarise_tap)
        )
        experiments["binarised_and_dropped"]["oracle_error"] = findings.oracle_error(
            evaluations[name]
        )
    numbers = {
        # Without `out_dir`: the file lives there, and a path would tie a copy to one machine.
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "out_dir"},
        "jobs": [dataclasses.asdict(job) for job in planned],
        "test_photos": list(data.image_names),
        "evaluations": evaluations,
        "optimizations": optimizations,
        "experiments": experiments,
        "training_minutes": training_minutes,
        "minutes": (time.time() - start) / 60,
    }
    assessed = findings.assess(config, planned, numbers)
    numbers["findings"] = [dataclasses.asdict(finding) for finding in assessed]
    progress("writing results.md")
    json_path = files.write_json(os.path.join(out, "results.json"), numbers)
    results = report.write(out, config, planned, numbers, assessed, figure_paths)
    logging.info("Results: %s", results)
    return {"results": results, "json": json_path, "figures": figure_paths}


def _run_dir(out: str, job: Job) -> str:
    return os.path.join(out, "runs", job.name)


def _stored_run(work_dir: str, job: Job) -> config_lib.TrainConfig | None:
    """The config of the run in `work_dir` (None: no run yet).

    Raises:
        ValueError: `work_dir` holds a run that another plan trained (another
            seed, rate, crops...): reusing it would report numbers of a run
            the plan does not describe.
    """
    run = config_lib.load(work_dir)
    conflicts = run and runs.config_conflicts(run, job.changes)
    if conflicts:
        raise ValueError(
            f"Expected {work_dir} to hold the run this reproduction plans for {job.name}. "
            f"Received: a run with another config ({conflicts}, stored vs planned). "
            "Use a new --out_dir, or remove that folder to train it again."
        )
    return run


def _finished(work_dir: str, job: Job) -> bool:
    """Whether `work_dir` holds `job`'s finished run, which a rerun reuses (see `_stored_run`)."""
    run = _stored_run(work_dir, job)
    final = os.path.join(work_dir, checkpoints.FINAL_MODEL)
    return run is not None and run.steps == job.changes["steps"] and os.path.exists(final)


def _fill_tap_caches(planned: list[Job], data: Data, out: str) -> None:
    """The feature caches of the unfinished fixed-encoder taps, filled in one pass.

    Each tap's run would decode and crop the same photos and run the network
    up to its tap; this does it once for all, into each run's own cache
    folder, where its training finds the cache and reuses it. (These minutes
    are not in any job's training minutes.)
    """
    pending = []
    for job in planned:
        work_dir = _run_dir(out, job)
        if job.group != "tap" or _finished(work_dir, job):
            continue
        run = runs.resolve_config(work_dir, dict(job.changes), job.preset)
        if run.cache_features:
            pending.append((run, runs.cache_dir(run, work_dir)))
    if data.fill_feature_caches is not None and len(pending) > 1:
        start = time.time()
        data.fill_feature_caches(pending)
        logging.info(
            "The %d taps' feature caches: %.1f min.", len(pending), (time.time() - start) / 60
        )


def _train(job: Job, work_dir: str, data: Data, out: str) -> float:
    """Trains (or resumes) one job's run; returns its training minutes over all invocations.

    A finished run is left as it is. The minutes (a feature cache the run
    builds itself included) are added up in `measurements/training-NAME.json`
    across resumed invocations.
    """
    path = os.path.join(out, "measurements", f"training-{job.name}.json")
    spent = 0.0
    if os.path.exists(path):
        with open(path) as file:
            spent = json.load(file)["minutes"]
    if _finished(work_dir, job):
        logging.info("%s: finished earlier (%d steps), reused.", job.name, job.changes["steps"])
        return spent
    start = time.time()
    run = runs.resolve_config(work_dir, dict(job.changes), job.preset)
    strategy = runs.check_start(run, work_dir, check_data=data.check_source)
    cache_dir = runs.cache_dir(run, work_dir)

    def dataset_from(shard):
        return data.training_dataset(run, shard, cache_dir=cache_dir)

    try:
        runs.run(run, dataset_from, work_dir, strategy=strategy)
    except callbacks.DivergenceError as error:
        # The plan sets the rate (no flag lowers it): the way out is another seed.
        raise callbacks.DivergenceError(
            f"{job.name}: {error.reason}",
            f"The reproduction trains it at Adam {run.learning_rate:g}; start again with "
            "another --seed and a new --out_dir.",
        ) from error
    finally:
        spent += (time.time() - start) / 60
        files.write_json(path, {"minutes": spent, "steps": run.steps})
    return spent


def _optimised(config: ReproduceConfig, job: Job) -> bool:
    if job.group == "shallow":
        return job.representation == "hog"  # SIFT and LBP have no gradient.
    taps = {tap_name(tap) for tap in config.optimization_taps}
    return job.group == "tap" and job.representation in taps


def _depth_figure(planned, evaluations, optimizations, out) -> str | None:
    """The error over the network's taps as a chart (figures/depth.png), when 2 or more trained.

    Drawn from the stored numbers on every run (it costs nothing): the
    decoder's error, its 8x8 block-average ("colour and layout") error, the
    test photos' mean image, and optimisation where it ran.
    """
    taps = [job for job in planned if job.group == "tap"]
    if len(taps) < 2:
        return None
    found = [evaluations[job.name] for job in taps]
    series = {
        "decoder": [row["decoder"]["normalized_error"] for row in found],
        "decoder, 8x8 block averages (colour and layout)": [
            row["coarse_error"]["decoder"] for row in found
        ],
        findings.ORACLE: [findings.oracle_error(row) for row in found],
    }
    optimised = [optimizations.get(job.name) for job in taps]
    if any(optimised):
        series["optimisation"] = [
            None if row is None else row["optimization"].get("normalized_error")
            for row in optimised
        ]
    chart = figures.line_chart(
        series,
        x_labels=[job.representation.split("/")[-1] for job in taps],
        y_label="normalised error on the test photos (lower is better)",
    )
    return figures.save_png(os.path.join(out, "figures", "depth.png"), chart, keep_identical=True)


def _experiments(config, planned, models, data, out, progress):
    """The figures: every layer side by side, dark knowledge, robustness, fixed vs autoencoder."""
    by_representation = {
        job.representation: job.name for job in planned if job.group != "autoencoder"
    }
    names = list(data.image_names)
    paths, numbers = [], {}

    def run(stage, used, make):
        progress("experiment: %s", stage)
        png = os.path.join(out, "figures", f"{stage}.png")

        def measure():
            figure = make()
            figures.save_png(png, figures.figure(
                figure.rows, column_labels=figure.column_labels, row_labels=figure.row_labels,
                cell_size=112,
            ))  # fmt: skip
            return figure.numbers

        used_models = [models[name] for name in used]
        numbers[stage] = measurements.cached(
            out, f"experiment-{stage}", used_models, measure, [png]
        )
        paths.append(png)

    layered = [job.name for job in planned if job.group in ("shallow", "tap", "alexnet")]
    if layered:
        run("layers", layered, lambda: runners.run_layers(
            {name: models[name] for name in layered}, data.crops, names
        ))  # fmt: skip
    for stage, tap, make in (
        ("dark_knowledge", config.dark_knowledge_tap, runners.run_dark_knowledge),
        ("binarised_and_dropped", config.binarise_tap, runners.run_perturbation),
    ):
        if tap is None:
            progress("experiment: %s (not run)", stage)
            continue
        name = by_representation[tap_name(tap)]
        model = models[name]
        run(stage, [name], lambda model=model, make=make: make(
            model, data.crops(model.image_size), names
        ))  # fmt: skip
    if config.autoencoder_tap is not None:
        fixed = by_representation[tap_name(config.autoencoder_tap)]
        autoencoder = f"{fixed}-autoencoder"
        run("fixed_vs_autoencoder", [fixed, autoencoder], lambda: runners.run_autoencoder_vs_fixed(
            models[fixed], models[autoencoder], data.crops, names
        ))  # fmt: skip
    else:
        progress("experiment: fixed_vs_autoencoder (not run)")
    return paths, numbers
