"""One named experiment on trained models, end to end: its figures as PNG, its numbers as JSON.

`run_experiment(config, ...)` is the library call behind `launch.experiment`
(docs/reference.md, Experiments). It loads the models (`keras_invert.load`),
runs the experiment's runner, and writes `OUT/NAME.png` and `OUT/NAME.json`
(the models, the photos, the settings and the numbers). `layers` puts every
model in one figure, a column each; the other experiments stack one block of
rows per model.

- `perturbation` with `retrain_steps=N` also fine-tunes a copy of each work
  dir's decoder for N steps on binarised, and another on dropped-out,
  features of random training crops of `retrain_split` (crop settings from
  the work dir's config; for a network inside the model, its own encoder's
  features) and decodes the perturbed test features with both.
- `random_samples` and `single_neuron` fit on the features of `fit_examples`
  random training crops of `fit_split`, as training sees them.
- `autoencoder_vs_fixed` takes two work dirs of one network layer, trained
  with the encoder fixed and as an autoencoder (`runners.check_autoencoder_pair`),
  writes original | fixed | autoencoder, and runs every experiment of
  `compare` on both models into `autoencoder_vs_fixed_<experiment>.png`.

Reading photos is the caller's (the library never imports `pipelines`): it
passes `load_images(paths, image_size)` (centre crops, float32 0..255) and
`build_dataset(split, **options)`, a data source's training stream
(`pipelines.build_dataset` with the source bound).

Example:
    >>> config = ExperimentConfig("dark_knowledge", models=["runs/fc8"], photos=paths)
    >>> run_experiment(config, load_images=pipelines.load_images,
    ...                build_dataset=functools.partial(pipelines.build_dataset, "samples"))
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from keras_invert import figures, files, losses, registry
from keras_invert.experiments import runners
from keras_invert.experiments.config import ExperimentConfig
from keras_invert.experiments.distributions import unit_values
from keras_invert.experiments.finetuning import finetune_decoders, image_decoder
from keras_invert.experiments.perturbations import PERTURBATIONS
from keras_invert.loading import load


def run_experiment(config: ExperimentConfig, *, load_images, build_dataset) -> list[str]:
    """Runs `config`'s experiment and writes its PNGs and JSON (see the module docstring).

    Args:
        config: the experiment.
        load_images: `(paths, image_size)` -> float32 centre crops `[N, S, S, 3]` 0..255.
        build_dataset: `(split, **options)` -> `(inputs, targets)` batches of
            a data source, as `pipelines.build_dataset` with the source bound
            takes the options.

    Returns:
        The paths written: the PNGs, then the JSON.

    Raises:
        ValueError: a model that cannot be loaded, or is not what the
            experiment needs (see `check_autoencoder_pair`); `config.out`
            is a file or cannot be written.
    """
    files.check_folder(config.out, "out")  # Before the work, not when its results are written.
    name, photos = config.name, list(config.photos)
    names = [os.path.splitext(os.path.basename(path))[0] for path in photos]
    if name == "autoencoder_vs_fixed":
        models = dict(zip(("fixed", "autoencoder"), _autoencoder_pair(config.models), strict=True))
    else:
        models = _labels(config.models, [load(path) for path in config.models])
    experiment = _Experiment(config, load_images, build_dataset, names)

    def by_model(experiment_name):
        return {
            label: experiment.run_one(experiment_name, path, model)
            for (label, model), path in zip(models.items(), config.models, strict=True)
        }

    def shown(size):
        return load_images(photos, size)

    if name == "layers":
        figure = runners.run_layers(models, shown, names)
        results = figure.numbers
    elif name == "autoencoder_vs_fixed":
        figure = runners.run_autoencoder_vs_fixed(*models.values(), shown, names)
        results = {"reconstructions": figure.numbers}
    else:
        figure = _stack(by_model(name))
        results = figure.numbers
    pngs = [figures.save_png(os.path.join(config.out, f"{name}.png"), figure.render())]
    for compared in config.compared:
        stacked = _stack(by_model(compared))
        path = os.path.join(config.out, f"{name}_{compared}.png")
        pngs.append(figures.save_png(path, stacked.render()))
        results[compared] = stacked.numbers
    record = {
        "experiment": name,
        "models": {
            label: {
                "path": path,
                "representation": model.representation,
                "encoder_source": model.encoder_source,
            }
            for (label, model), path in zip(models.items(), config.models, strict=True)
        },
        "photos": photos,
        "flags": config.settings(),
        "results": results,
    }
    return [*pngs, files.write_json(os.path.join(config.out, f"{name}.json"), record)]


class _Experiment:
    """The per-model experiments of one config, with the caller's data access."""

    def __init__(self, config, load_images, build_dataset, names):
        self.config, self.load_images, self.build_dataset = config, load_images, build_dataset
        self.names = names

    def run_one(self, name, path, model) -> runners.Figure:
        """One per-model experiment (all but `layers`) on `model`, loaded from `path`."""
        config, photos = self.config, list(self.config.photos)
        if name == "interpolation":
            pair = [photos[i] for i in config.pair]
            crops = self.load_images(pair, model.image_size)
            return runners.run_interpolation(model, crops, config.steps)
        images = self.load_images(photos, model.image_size)
        if name == "perturbation":
            retrained, training_numbers = {}, None
            if config.retrain_steps:
                retrained, training_numbers = self.retrained_decoders(path, model)
            figure = runners.run_perturbation(
                model,
                images,
                self.names,
                dropout_rate=config.dropout_rate,
                keep_norm=config.dropout_keep_norm,
                seed=config.seed,
                retrained=retrained,
            )
            if training_numbers is not None:
                figure.numbers["retraining"] = training_numbers
            return figure
        if name == "dark_knowledge":
            return runners.run_dark_knowledge(model, images, self.names, k=config.top_k)
        fitted = self.fit_features(model)
        logging.info("%s: fitted on %d %s features", path, len(fitted), config.fit_split)
        if name == "random_samples":
            return runners.run_random_samples(
                model,
                fitted,
                distribution=config.distribution,
                count=config.num_samples,
                seed=config.seed,
                bins=config.bins,
                covariance=config.covariance,
            )
        units = [int(unit) for unit in config.units]
        if config.activation is None:
            values = unit_values(fitted, units, config.percentile)
            source = f"percentile {config.percentile:g} of {len(fitted)} fit examples"
        else:
            values = np.full(len(units), config.activation)
            source = f"activation={config.activation}"
        figure = runners.run_single_neuron(model, fitted.shape[1:], units, values)
        figure.numbers["value_source"] = source
        return figure

    def feature_batches(self, model, split, *, batch_size, **crop_options):
        """`(features, targets)` NumPy batches of random crops of a split, as training sees them.

        The features are those of the model's own encoder: for a network
        inside the model (AlexNet) the dataset gives crops, which
        `model.encode` turns into features here.
        """
        representation = registry.get(model.representation)
        dataset = self.build_dataset(
            split,
            representation=representation,
            image_size=model.image_size,
            batch_size=batch_size,
            training=True,
            repeat=True,
            seed=self.config.seed,
            encoder_options=model.encoder_options,
            **crop_options,
        )
        for features, targets in dataset:
            features = np.asarray(features)
            if representation.encode_in_model:
                features = model.encode(features)  # The dataset gave crops.
            yield features, np.asarray(targets)

    def fit_features(self, model) -> np.ndarray:
        """Features of `fit_examples` random crops of `fit_split`, as training sees them."""
        count, collected, total = self.config.fit_examples, [], 0
        for features, _ in self.feature_batches(model, self.config.fit_split, batch_size=16):
            collected.append(features)
            total += len(features)
            if total >= count:
                break
        return np.concatenate(collected)[:count]

    def retrained_decoders(self, path, model):
        """Decoders fine-tuned on binarised and on dropped-out features (`retrain_*`).

        Returns:
            `(decoders, numbers)`: perturbation name -> `decode`, and the
            training's settings and losses.
        """
        config = self.config
        run = _work_dir(path, model).config
        # Crops as the decoder's own training drew them.
        crop_options = {"min_crop_scale": run.min_crop_scale, "color_jitter": run.color_jitter}
        batches = self.feature_batches(
            model, config.retrain_split, batch_size=config.retrain_batch_size, **crop_options
        )
        tuned = finetune_decoders(
            model.decoder,
            batches,
            PERTURBATIONS,
            steps=config.retrain_steps,
            learning_rate=config.retrain_learning_rate,
            dropout_rate=config.dropout_rate,
            keep_norm=config.dropout_keep_norm,
            seed=config.seed,
        )
        decoders = {name: image_decoder(copy) for name, (copy, _) in tuned.items()}
        losses_by_name = {name: values for name, (_, values) in tuned.items()}
        for name, values in losses_by_name.items():
            logging.info(
                "%s: fine-tuned on %s features, loss %.4g -> %.4g",
                path,
                name,
                values[0],
                values[-1],
            )
        ends = min(10, config.retrain_steps)
        numbers = {
            "steps": config.retrain_steps,
            "learning_rate": config.retrain_learning_rate,
            "batch_size": config.retrain_batch_size,
            "data": config.data,
            "split": config.retrain_split,
            **crop_options,
            "losses": losses_by_name,
            # Means over the first and the last `steps_averaged` steps.
            "steps_averaged": ends,
            "mean_loss_first": {k: sum(v[:ends]) / ends for k, v in losses_by_name.items()},
            "mean_loss_last": {k: sum(v[-ends:]) / ends for k, v in losses_by_name.items()},
        }
        return decoders, numbers


def _work_dir(path, model):
    """`model`, loaded from `path`, if it is a work dir's: only those keep a trainable model."""
    if model.kind != "work_dir":
        raise ValueError(
            f"{path} is not a work dir (with config.json): retraining decoders and "
            "autoencoder_vs_fixed need the trained Keras model (a SavedModel export's decoder "
            "cannot be fine-tuned, and it keeps no autoencoder's encoder)."
        )
    return model


def _autoencoder_pair(paths):
    """The two loaded work dirs of autoencoder_vs_fixed, checked (`check_autoencoder_pair`)."""
    if len(paths) != 2:
        raise ValueError(
            "Expected two work dirs for autoencoder_vs_fixed: FIXED_DIR,AUTOENCODER_DIR. "
            f"Received: models={list(paths)!r}"
        )
    loaded = [_work_dir(path, load(path)) for path in paths]
    # A perceptual run saves its training wrapper: the generator is the model.
    pair = [(model.config, losses.unwrap(model.model)) for model in loaded]
    try:
        runners.check_autoencoder_pair(*pair)
    except ValueError as error:
        raise ValueError(f"models={','.join(paths)}: {error}") from error
    return loaded


def _labels(paths, models) -> dict:
    """Label -> model, as "representation (work dir name)", primed where two would clash."""
    labels = {}
    for path, model in zip(paths, models, strict=True):
        label = f"{model.representation} ({os.path.basename(os.path.normpath(path))})"
        while label in labels:
            label += "'"
        labels[label] = model
    return labels


def _stack(figures_by_label) -> runners.Figure:
    """One figure of per-model figures with the same columns: their rows, labelled."""
    rows, row_labels = [], []
    for label, figure in figures_by_label.items():
        rows += figure.rows
        row_labels += [f"{label} {name}".strip() for name in figure.row_labels]
    first = next(iter(figures_by_label.values()))
    numbers = {label: figure.numbers for label, figure in figures_by_label.items()}
    return runners.Figure(rows, first.column_labels, row_labels, numbers)
