"""The experiment runners: trained models and photos in, a `Figure` (image rows and numbers) out.

Each runner makes one of the paper's figures (supplementary Figures 1-10;
docs/reference.md, Experiments) from trained models: `run_layers`,
`run_interpolation`, `run_perturbation`, `run_random_samples`,
`run_dark_knowledge`, `run_single_neuron`, `run_autoencoder_vs_fixed`. A
model is any object with `encode(images)` (float32 `[N, S, S, 3]` 0..255 ->
NumPy features), `decode(features)` (-> `[N, T, T, 3]` in [0, 1]),
`image_size` (S) and `output_size` (T), such as `keras_invert.load`'s.
Errors are the paper's normalised reconstruction error (`metrics`), against
the crops made targets of side T (`keras_invert.images.target`, as in
training).

Example:
    >>> figure = run_dark_knowledge(keras_invert.load("runs/fc8"), crops, names, k=5)
    >>> figures.save_png("figs/dark_knowledge.png", figure.render())
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_invert import figures, metrics
from keras_invert.experiments.distributions import (
    GaussianDistribution,
    HistogramDistribution,
    feature_statistics,
)
from keras_invert.experiments.perturbations import (
    PERTURBATIONS,
    all_but_top_k,
    binarize,
    dropout,
    interpolate,
    single_unit,
    top_k_only,
)
from keras_invert.images import target


@dataclasses.dataclass
class Figure:
    """What a runner returns: image rows, labels and the numbers behind them."""

    rows: list
    column_labels: list
    row_labels: list
    numbers: dict

    def render(self) -> np.ndarray:
        """The labelled grid as a uint8 `[H, W, 3]` array (`figures.figure`)."""
        return figures.figure(
            self.rows, column_labels=self.column_labels, row_labels=self.row_labels
        )


def _errors(originals, reconstructions):
    values = metrics.normalized_reconstruction_errors(originals, reconstructions)
    if values is None:  # The photos are all the same image: the error is undefined.
        return {"normalized_error": None, "per_image": None}
    return {"normalized_error": float(values.mean()), "per_image": values}


def run_layers(models: dict, load_crops, image_names) -> Figure:
    """Reconstructions of the same photos by every model, side by side (Figures 1, 2).

    Args:
        models: label -> model, one column each, in order.
        load_crops: image_size -> float32 crops `[N, S, S, 3]` 0..255 of the photos.
        image_names: one label per photo (rows).
    """
    crops_by_size, columns, numbers = {}, [], {}
    for label, model in models.items():
        if model.image_size not in crops_by_size:
            crops_by_size[model.image_size] = np.asarray(load_crops(model.image_size))
        crops = crops_by_size[model.image_size]
        reconstructions = model.decode(model.encode(crops))
        columns.append(reconstructions)
        numbers[label] = {
            "representation": getattr(model, "representation", None),
            "image_size": model.image_size,
            "output_size": model.output_size,
            **_errors(np.asarray(target(crops, model.output_size)), reconstructions),
        }
    largest = max(crops_by_size)
    shown = np.asarray(target(crops_by_size[largest], max(m.output_size for m in models.values())))
    rows = [[shown[i]] + [c[i] for c in columns] for i in range(len(shown))]
    return Figure(
        rows,
        ["original", *models],
        list(image_names),
        {"images": list(image_names), "models": numbers},
    )


def run_interpolation(model, crops, steps: int = 8, label: str = "") -> Figure:
    """Decodes blends of the features of two photos (Figures 6, 7).

    Args:
        model: the trained model.
        crops: `[2, S, S, 3]` 0..255, the two photos.
        steps: number of blends, both ends included.
    """
    crops = np.asarray(crops, np.float32)
    if len(crops) != 2:
        raise ValueError(f"Expected two photos. Received: {len(crops)}")
    features = model.encode(crops)
    ends = model.decode(features)
    blends = interpolate(features[0], features[1], steps)
    decoded = model.decode(blends)
    distance = np.linalg.norm((ends[0] - ends[1]).ravel())
    t = np.linspace(0.0, 1.0, steps)
    shown = np.asarray(target(crops, model.output_size))
    numbers = {
        "t": t,
        "endpoint_difference": [
            float(np.abs(decoded[0] - ends[0]).max()),
            float(np.abs(decoded[-1] - ends[1]).max()),
        ],
        # Distance of each decoded blend to the decodes of the two ends,
        # relative to the distance between those two.
        "distance_to_first": [
            float(np.linalg.norm((d - ends[0]).ravel()) / max(distance, 1e-12)) for d in decoded
        ],
        "distance_to_second": [
            float(np.linalg.norm((d - ends[1]).ravel()) / max(distance, 1e-12)) for d in decoded
        ],
        "feature_norms": np.linalg.norm(blends.reshape(steps, -1), axis=1),
    }
    row = [shown[0], *decoded, shown[1]]
    columns = ["photo A", *[f"t={value:.2f}" for value in t], "photo B"]
    return Figure([row], columns, [label], numbers)


def run_perturbation(
    model,
    crops,
    image_names,
    *,
    dropout_rate: float = 0.5,
    keep_norm: bool = True,
    seed: int | None = 0,
    retrained: dict | None = None,
) -> Figure:
    """Decodes binarised and dropped-out features (paper section 5.4, robustness).

    Args:
        model: the trained model.
        crops: `[N, S, S, 3]` 0..255.
        image_names: one label per photo (rows).
        dropout_rate, keep_norm, seed: the dropout of the test features.
        retrained: optional perturbation name ("binarised", "dropout") ->
            `decode` of a decoder fine-tuned on features perturbed that way
            (`finetune_decoders`, `image_decoder`); it decodes the same
            perturbed test features, in extra columns, and its errors are
            under "<name>_retrained".
    """
    retrained = dict(retrained or {})
    unknown = set(retrained) - set(PERTURBATIONS)
    if unknown:
        raise ValueError(
            f"Expected retrained decoders for {PERTURBATIONS}. Received: {sorted(unknown)!r}"
        )
    crops = np.asarray(crops, np.float32)
    features = model.encode(crops)
    dropped, kept = dropout(features, dropout_rate, keep_norm=keep_norm, seed=seed)
    perturbed = {"binarised": binarize(features), "dropout": dropped}
    originals = np.asarray(target(crops, model.output_size))
    decoded = {"features": model.decode(features)}
    decoded.update({name: model.decode(value) for name, value in perturbed.items()})
    for name, decode in retrained.items():
        decoded[f"{name}_retrained"] = decode(perturbed[name])
    flat = features.reshape(len(features), -1)
    numbers = {
        "images": list(image_names),
        "dropout_rate": dropout_rate,
        "dropout_keeps_norm": keep_norm,
        "fraction_dropped": float(1 - kept.mean()),
        "fraction_nonzero": float(np.count_nonzero(flat) / flat.size),
        "errors": {name: _errors(originals, value) for name, value in decoded.items()},
    }
    rows = [[originals[i], *(value[i] for value in decoded.values())] for i in range(len(crops))]
    labels = {"binarised": "binarised", "dropout": f"dropout {dropout_rate:g}"}
    columns = ["original", "decoded", *labels.values()]
    columns += [f"{labels[name]}, retrained" for name in retrained]
    return Figure(rows, columns, list(image_names), numbers)


def run_random_samples(
    model,
    fit_features,
    *,
    distribution: str = "histogram",
    count: int = 8,
    seed: int | None = 0,
    bins: int = 32,
    covariance: str = "full",
    label: str = "",
) -> Figure:
    """Decodes random feature vectors drawn from a fitted distribution (Figures 8-10)."""
    fit_features = np.asarray(fit_features, np.float32)
    if distribution == "histogram":
        fitted = HistogramDistribution.fit(fit_features, bins=bins)
        samples = fitted.sample(count, seed=seed)
        details = {"bins": bins}
    elif distribution == "truncated_gaussian":
        fitted = GaussianDistribution.fit(fit_features, covariance=covariance)
        samples = fitted.sample(count, seed=seed)
        details = {"covariance": covariance, "truncated_at": 0.0}
    else:
        raise ValueError(
            "Expected distribution 'histogram' or 'truncated_gaussian'. "
            f"Received: distribution={distribution!r}"
        )
    decoded = model.decode(samples)
    flat, data = samples.reshape(count, -1), fit_features.reshape(len(fit_features), -1)
    low, high = data.min(axis=0), data.max(axis=0)
    numbers = {
        "distribution": distribution,
        **details,
        "fit_examples": len(fit_features),
        "dimensions": int(flat.shape[1]),
        "fraction_inside_observed_range": float(np.mean((flat >= low) & (flat <= high))),
        "mean_norm_of_samples": float(np.linalg.norm(flat, axis=1).mean()),
        "mean_norm_of_data": float(np.linalg.norm(data, axis=1).mean()),
        "fraction_nonzero_samples": float(np.count_nonzero(flat) / flat.size),
        "fraction_nonzero_data": float(np.count_nonzero(data) / data.size),
    }
    columns = [f"sample {i + 1}" for i in range(count)]
    return Figure([list(decoded)], columns, [label], numbers)


def run_dark_knowledge(model, crops, image_names, *, k: int = 5) -> Figure:
    """Decodes all activations, only the k largest, and all but the k largest (Figure 3)."""
    crops = np.asarray(crops, np.float32)
    features = model.encode(crops)
    variants = {
        "all": features,
        f"top {k} only": top_k_only(features, k),
        f"all but top {k}": all_but_top_k(features, k),
    }
    originals = np.asarray(target(crops, model.output_size))
    decoded = {name: model.decode(value) for name, value in variants.items()}
    flat = features.reshape(len(features), -1)
    numbers = {
        "images": list(image_names),
        "k": k,
        "top_units": np.argsort(-flat, axis=1, kind="stable")[:, :k],
        "top_values": -np.sort(-flat, axis=1)[:, :k],
        "errors": {name: _errors(originals, value) for name, value in decoded.items()},
    }
    rows = [[originals[i], *(decoded[name][i] for name in variants)] for i in range(len(originals))]
    return Figure(rows, ["original", *variants], list(image_names), numbers)


def run_single_neuron(model, feature_shape, units, values, label: str = "") -> Figure:
    """Decodes feature vectors with one unit at a value and all others zero (Figure 4)."""
    features = np.concatenate(
        [single_unit(feature_shape, int(u), float(v)) for u, v in zip(units, values, strict=True)]
    )
    decoded = model.decode(features)
    numbers = {"units": list(units), "values": list(values), "feature_shape": feature_shape}
    columns = [f"unit {u} = {v:.3g}" for u, v in zip(units, values, strict=True)]
    return Figure([list(decoded)], columns, [label], numbers)


def check_autoencoder_pair(fixed, autoencoder):
    """Checks two trained models for `run_autoencoder_vs_fixed` (docs/reference.md, Experiments).

    Both must be of one network representation, the first trained with its
    encoder fixed and the second as an autoencoder, as both the stored
    config and the model's encoder (`trainable`) say.

    Args:
        fixed, autoencoder: `(config, model)` pairs: a `TrainConfig` and its
            trained Keras model (`keras_invert.load(path).model`).

    Raises:
        ValueError: naming what does not match.

    Example:
        >>> check_autoencoder_pair((fixed_run, fixed_model), (ae_run, ae_model))
    """
    from keras_invert import registry
    from keras_invert.reconstructor import Reconstructor

    (fixed_run, _), (autoencoder_run, _) = fixed, autoencoder
    names = (fixed_run.representation, autoencoder_run.representation)
    if names[0] != names[1]:
        raise ValueError(f"Expected two models of one representation. Received: {names}")
    if not registry.get(names[0]).encode_in_model:
        raise ValueError(
            "Expected a representation with a network encoder (alexnet/LAYER, "
            f"alexnet-torchvision/LAYER): others have no autoencoder. Received: {names[0]!r}"
        )
    for role, (run, model), wanted in (("fixed", fixed, False), ("autoencoder", autoencoder, True)):
        if isinstance(model, Reconstructor):
            trainable = model.encoder.trainable
        else:
            # A decoder trained on cached features had the registry's fixed encoder.
            trainable = False if getattr(run, "cache_features", False) else None
        if run.autoencoder != wanted or trainable != wanted:
            raise ValueError(
                f"Expected the {role} model (FIXED,AUTOENCODER order) to be trained with "
                f"autoencoder={wanted}. Received: autoencoder={run.autoencoder} in its config, "
                f"its stored encoder trainable={trainable}"
            )


def run_autoencoder_vs_fixed(fixed, autoencoder, load_crops, image_names) -> Figure:
    """Fixed encoder against autoencoder on the same photos (docs/reference.md, Experiments).

    Columns: original | fixed | autoencoder (as `run_layers`). The numbers
    add what each model's own encoder makes of the photos (for the
    autoencoder, the features it learnt) and, as both encoders have one
    architecture, how far apart the two are: the mean relative distance
    `||a - f|| / ||f||` and cosine similarity between the autoencoder's (a)
    and the fixed encoder's (f) features of each photo.

    Args:
        fixed, autoencoder: trained models (`encode`, `decode`, ...) of one
            representation.
        load_crops: image_size -> float32 crops `[N, S, S, 3]` 0..255.
        image_names: one label per photo (rows).
    """
    models = {"fixed": fixed, "autoencoder": autoencoder}
    crops_by_size = {}

    def crops(size):
        if size not in crops_by_size:
            crops_by_size[size] = np.asarray(load_crops(size))
        return crops_by_size[size]

    result = run_layers(models, crops, image_names)
    features = {label: model.encode(crops(model.image_size)) for label, model in models.items()}
    summary = {label: feature_statistics(value) for label, value in features.items()}
    a, f = features["autoencoder"], features["fixed"]
    if a.shape == f.shape:
        a, f = a.reshape(len(a), -1).astype(np.float64), f.reshape(len(f), -1).astype(np.float64)
        norms_a, norms_f = np.linalg.norm(a, axis=1), np.linalg.norm(f, axis=1)
        summary["relative_distance"] = float(
            np.mean(np.linalg.norm(a - f, axis=1) / np.maximum(norms_f, 1e-12))
        )
        summary["cosine_similarity"] = float(
            np.mean((a * f).sum(axis=1) / np.maximum(norms_a * norms_f, 1e-12))
        )
    result.numbers["features"] = summary
    return result
