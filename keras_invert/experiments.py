"""The paper's feature experiments (docs/reference.md, Experiments), as functions on arrays.

Supplementary Figures 2-10 of Dosovitskiy & Brox decode features that were
changed on purpose. This module makes the changed features; a decoder turns
them into images (`launch.experiment` runs them on trained models and writes
the figures). Features are batches `[N, ...]` of any shape: a map (HOG,
conv5) or a vector (fc6..fc8); operations that act "per example" see each
example flattened.

- `interpolate`: linear blends of two feature arrays (Figures 6, 7).
- `binarize`, `dropout`: the robustness perturbations (section 5.4 of the
  paper): binarised features keep the pattern of non-zeros (and signs) and
  each example's Euclidean norm; dropout zeroes a random half of the entries
  and (choice, as recalled from the paper) rescales the rest so that each
  example keeps its norm (`keep_norm=False`: no rescaling).
- `perturb`, `finetune_decoders`: a perturbation by name, and copies of a
  decoder fine-tuned on features perturbed that way (the paper's decoder
  "retrained on perturbed features").
- `top_k_only`, `all_but_top_k`: "dark knowledge" (Figure 3): only the k
  largest activations, or all but them, the rest set to zero.
- `single_unit`: one unit at a value, all others zero (Figure 4).
- `HistogramDistribution`, `GaussianDistribution`: random feature vectors
  (Figures 8-10) from each dimension's empirical histogram independently, or
  from a Gaussian fitted to the features with negative values set to zero.
- `check_autoencoder_pair`, `feature_statistics`: for comparing a model
  with a fixed encoder against an autoencoder of the same network (docs/reference.md,
  Experiments, item 7; `run_autoencoder_vs_fixed`).
- `figure`, `save_png`, `save_json`: a labelled image grid and its numbers.

Runners (`run_layers`, `run_interpolation`, `run_perturbation`,
`run_random_samples`, `run_dark_knowledge`, `run_single_neuron`,
`run_autoencoder_vs_fixed`) take
trained models and images and return `(rows, labels, numbers)`: the figure's
rows of images in [0, 1], its row and column labels, and a JSON-ready dict
of the numbers behind it. A model is any object with `encode(images)`
(float32 `[N, S, S, 3]` 0..255 -> NumPy features), `decode(features)`
(-> `[N, T, T, 3]` in [0, 1]), `image_size` (S) and `output_size` (T), such
as `keras_invert.load`'s. Errors are the paper's normalised
reconstruction error (`metrics`), against the crops made targets of side T
(`keras_invert.images.target`, as in training).

Example:
    >>> from keras_invert import experiments
    >>> blends = experiments.interpolate(features[0], features[1], steps=8)  # [8, ...]
    >>> images = decoder.predict(blends)
    >>> histogram = experiments.HistogramDistribution.fit(train_features)
    >>> samples = histogram.sample(8, seed=0)
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_invert import metrics
from keras_invert.images import target


def _flat(features):
    features = np.asarray(features, np.float32)
    if features.ndim < 2 or len(features) == 0:
        raise ValueError(f"Expected a batch of features [N, ...]. Received: shape={features.shape}")
    return features.reshape(len(features), -1), features.shape


def interpolate(features_a, features_b, steps: int) -> np.ndarray:
    """`steps` blends `(1 - t) * a + t * b`, t from 0 to 1 inclusive: `[steps, *a.shape]`."""
    a = np.asarray(features_a, np.float32)
    b = np.asarray(features_b, np.float32)
    if a.shape != b.shape:
        raise ValueError(f"Expected features of equal shape. Received: {a.shape} and {b.shape}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"Expected at least 2 steps (the two ends). Received: steps={steps!r}")
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32).reshape(-1, *([1] * a.ndim))
    blends = (1 - t) * a + t * b
    blends[0], blends[-1] = a, b  # The ends exactly, whatever the rounding.
    return blends


def binarize(features) -> np.ndarray:
    """Each entry becomes sign(f) * c, with c chosen per example to keep its Euclidean norm.

    The pattern of non-zeros (and the signs, all positive after a ReLU) is
    all that remains of the values.
    """
    flat, shape = _flat(features)
    nonzero = np.count_nonzero(flat, axis=1).astype(np.float64)
    norms = np.linalg.norm(flat.astype(np.float64), axis=1)
    scale = np.where(nonzero > 0, norms / np.sqrt(np.maximum(nonzero, 1)), 0.0)
    return (np.sign(flat) * scale[:, None]).astype(np.float32).reshape(shape)


def dropout(features, rate: float = 0.5, *, keep_norm: bool = True, seed: int | None = 0):
    """Zeroes each entry with probability `rate`.

    Args:
        features: `[N, ...]`.
        rate: probability of dropping an entry.
        keep_norm: rescale the kept entries so that each example keeps its
            Euclidean norm (default); False leaves them unscaled.
        seed: seed of the random mask.

    Returns:
        `(dropped, kept)`: the perturbed features and the boolean mask of kept entries.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"Expected a rate in [0, 1). Received: rate={rate!r}")
    flat, shape = _flat(features)
    kept = np.random.default_rng(seed).random(flat.shape) >= rate
    dropped = np.where(kept, flat, 0.0).astype(np.float64)
    if keep_norm:
        before = np.linalg.norm(flat.astype(np.float64), axis=1)
        after = np.linalg.norm(dropped, axis=1)
        dropped *= np.where(after > 0, before / np.maximum(after, 1e-30), 0.0)[:, None]
    return dropped.astype(np.float32).reshape(shape), kept.reshape(shape)


PERTURBATIONS = ("binarised", "dropout")
"""The robustness perturbations by name (paper section 5.4)."""


def perturb(
    features,
    perturbation: str,
    *,
    dropout_rate: float = 0.5,
    keep_norm: bool = True,
    seed=0,
) -> np.ndarray:
    """`binarize(features)` ("binarised") or `dropout(features, ...)`'s features ("dropout").

    Args:
        features: `[N, ...]`.
        perturbation: one of `PERTURBATIONS`.
        dropout_rate, keep_norm, seed: `dropout`'s arguments (seed: anything
            `numpy.random.default_rng` takes).

    Example:
        >>> noisy = perturb(features, "dropout", dropout_rate=0.5, seed=3)
    """
    if perturbation == "binarised":
        return binarize(features)
    if perturbation == "dropout":
        return dropout(features, dropout_rate, keep_norm=keep_norm, seed=seed)[0]
    raise ValueError(
        f"Expected a perturbation in {PERTURBATIONS}. Received: perturbation={perturbation!r}"
    )


def finetune_decoders(
    decoder,
    batches,
    perturbations=PERTURBATIONS,
    *,
    steps: int,
    learning_rate: float = 1e-4,
    dropout_rate: float = 0.5,
    keep_norm: bool = True,
    seed: int | None = 0,
) -> dict:
    """Copies of `decoder` trained further on perturbed features, one per perturbation.

    The paper decodes perturbed features with the original decoder and with
    one "retrained on perturbed features" (section 5.4). Here each such
    decoder starts from the original's weights (fine-tuning, choice) and
    takes `steps` Adam steps on the training loss (mean squared pixel error),
    all of them on the same batches, each batch's features perturbed afresh:
    batch `i`'s dropout mask comes from the seed `[seed, 1, i]`, never the
    test mask's `seed`. `decoder` itself is left untouched.

    Args:
        decoder: a Keras model, features -> images (targets in [0, 1]).
        batches: an iterable of `(features, targets)` batches (NumPy or
            tensors) of unperturbed features, as the encoder gives them, and
            their target images; at least `steps` of them.
        perturbations: names from `PERTURBATIONS`.
        steps: optimiser steps of each copy.
        learning_rate: Adam's step size (the paper's is not known; 1e-4 is
            the rate found safe on small data: docs/reference.md, Training).
        dropout_rate, keep_norm: the "dropout" perturbation's arguments.
        seed: seeds the dropout masks; None: random.

    Returns:
        perturbation -> `(finetuned, losses)`: the compiled copy and its
        loss at every step.

    Example:
        >>> tuned = finetune_decoders(decoder, iter(dataset), ["binarised"], steps=500)
        >>> model, losses = tuned["binarised"]
        >>> images = image_decoder(model)(binarize(test_features))
    """
    import keras

    perturbations = list(perturbations)
    unknown = [name for name in perturbations if name not in PERTURBATIONS]
    if unknown or not perturbations:
        raise ValueError(
            f"Expected perturbations from {PERTURBATIONS}. "
            f"Received: perturbations={perturbations!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Expected a positive number of steps. Received: steps={steps!r}")
    tuned = {}
    for name in perturbations:
        copy = keras.models.clone_model(decoder)
        copy.set_weights(decoder.get_weights())
        copy.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="mean_squared_error",
            jit_compile=False,
        )
        tuned[name] = (copy, [])
    iterator = iter(batches)
    for step in range(steps):
        try:
            features, images = next(iterator)
        except StopIteration:
            raise ValueError(
                f"The batches ran out after {step} steps. Received: steps={steps!r}"
            ) from None
        features, images = np.asarray(features), np.asarray(images, np.float32)
        for name, (copy, losses) in tuned.items():
            changed = perturb(
                features,
                name,
                dropout_rate=dropout_rate,
                keep_norm=keep_norm,
                seed=None if seed is None else [seed, 1, step],
            )
            loss = copy.train_on_batch(changed, images)
            losses.append(float(np.asarray(loss).reshape(-1)[0]))
    return tuned


def image_decoder(model, batch_size: int = 16):
    """`features -> [N, T, T, 3]` in [0, 1] with a Keras decoder (what runners call `decode`).

    Calls the model on batches directly: an experiment decodes a few photos,
    for which tracing `predict`'s function would cost more than it saves.
    """
    from keras import ops

    def decode(features):
        features = np.asarray(features, np.float32)
        outputs = [
            ops.convert_to_numpy(model(features[i : i + batch_size], training=False))
            for i in range(0, len(features), batch_size)
        ]
        return np.clip(np.concatenate(outputs), 0.0, 1.0)

    return decode


def _top_k_mask(flat, k):
    if not isinstance(k, int) or not 0 < k <= flat.shape[1]:
        raise ValueError(f"Expected 0 < k <= {flat.shape[1]}. Received: k={k!r}")
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def top_k_only(features, k: int = 5) -> np.ndarray:
    """Keeps each example's k largest activations and sets all others to zero."""
    flat, shape = _flat(features)
    return np.where(_top_k_mask(flat, k), flat, 0.0).astype(np.float32).reshape(shape)


def all_but_top_k(features, k: int = 5) -> np.ndarray:
    """Sets each example's k largest activations to zero and keeps the others."""
    flat, shape = _flat(features)
    return np.where(_top_k_mask(flat, k), 0.0, flat).astype(np.float32).reshape(shape)


def single_unit(feature_shape, unit: int, value: float) -> np.ndarray:
    """A batch of one: unit `unit` (index into the flattened features) at `value`, others 0."""
    size = int(np.prod(feature_shape))
    if not 0 <= unit < size:
        raise ValueError(f"Expected a unit in [0, {size}). Received: unit={unit!r}")
    features = np.zeros(size, np.float32)
    features[unit] = value
    return features.reshape(1, *feature_shape)


@dataclasses.dataclass(frozen=True)
class HistogramDistribution:
    """Each dimension independently from its empirical histogram (paper section 5.5).

    A sample picks a bin with the bin's observed frequency, then a value
    uniformly inside the bin, so every sampled value lies within the
    dimension's observed range [min, max] (a constant dimension gives its
    constant).

    Attributes:
        edges: `[D, bins + 1]` bin edges per dimension.
        cumulative: `[D, bins]` cumulative bin frequencies (last column 1).
        feature_shape: shape of one example.
    """

    edges: np.ndarray
    cumulative: np.ndarray
    feature_shape: tuple

    @classmethod
    def fit(cls, features, bins: int = 32) -> HistogramDistribution:
        """Fits `bins` equal-width bins per dimension between its minimum and maximum."""
        if not isinstance(bins, int) or bins < 1:
            raise ValueError(f"Expected a positive number of bins. Received: bins={bins!r}")
        flat, shape = _flat(features)
        low, high = flat.min(axis=0), flat.max(axis=0)
        fractions = np.linspace(0.0, 1.0, bins + 1)
        edges = low[:, None] + (high - low)[:, None] * fractions[None, :]
        width = np.where(high > low, high - low, 1.0)
        index = np.clip(((flat - low) / width * bins).astype(np.int64), 0, bins - 1)
        counts = np.zeros((flat.shape[1], bins), np.float64)
        np.add.at(counts, (np.broadcast_to(np.arange(flat.shape[1]), index.shape), index), 1.0)
        cumulative = np.cumsum(counts, axis=1) / len(flat)
        cumulative[:, -1] = 1.0
        return cls(edges=edges, cumulative=cumulative, feature_shape=tuple(shape[1:]))

    @property
    def low(self) -> np.ndarray:
        return self.edges[:, 0].reshape(self.feature_shape)

    @property
    def high(self) -> np.ndarray:
        return self.edges[:, -1].reshape(self.feature_shape)

    def sample(self, count: int, seed: int | None = 0) -> np.ndarray:
        """`[count, *feature_shape]` samples."""
        generator = np.random.default_rng(seed)
        dimensions, bins = self.cumulative.shape
        samples = np.empty((count, dimensions), np.float32)
        for row in range(count):
            draw = generator.random(dimensions)
            chosen = np.minimum((self.cumulative < draw[:, None]).sum(axis=1), bins - 1)
            left = self.edges[np.arange(dimensions), chosen]
            right = self.edges[np.arange(dimensions), chosen + 1]
            value = left + (right - left) * generator.random(dimensions)
            # Rounding must not leave the observed range.
            samples[row] = np.clip(value, self.edges[:, 0], self.edges[:, -1])
        return samples.reshape(count, *self.feature_shape)


@dataclasses.dataclass(frozen=True)
class GaussianDistribution:
    """A Gaussian fitted to features; samples truncated at zero (paper section 5.5).

    `covariance="full"` is the fitted (sample) covariance, sampled exactly
    without forming the D x D matrix: `mean + z @ centred / sqrt(n - 1)` with
    `z ~ N(0, I_n)` has covariance `centred.T @ centred / (n - 1)`, so any
    feature size works (its rank is at most n - 1). `"diagonal"` keeps only
    the per-dimension variances.

    Attributes:
        mean: `[D]`; centred: `[n, D]` fitted examples minus the mean;
        std: `[D]`; covariance: "full" or "diagonal"; feature_shape.
    """

    mean: np.ndarray
    centred: np.ndarray
    std: np.ndarray
    covariance: str
    feature_shape: tuple

    @classmethod
    def fit(cls, features, covariance: str = "full") -> GaussianDistribution:
        if covariance not in ("full", "diagonal"):
            raise ValueError(
                f"Expected covariance 'full' or 'diagonal'. Received: covariance={covariance!r}"
            )
        flat, shape = _flat(features)
        if len(flat) < 2:
            raise ValueError(f"Need at least two examples to fit. Received: {len(flat)}")
        flat = flat.astype(np.float64)
        mean = flat.mean(axis=0)
        centred = flat - mean
        std = centred.std(axis=0, ddof=1)
        return cls(mean, centred, std, covariance, tuple(shape[1:]))

    def sample(self, count: int, seed: int | None = 0, *, truncate: bool = True) -> np.ndarray:
        """`[count, *feature_shape]` samples; `truncate` sets negative values to zero."""
        generator = np.random.default_rng(seed)
        if self.covariance == "full":
            z = generator.standard_normal((count, len(self.centred)))
            samples = self.mean + z @ self.centred / np.sqrt(len(self.centred) - 1)
        else:
            samples = self.mean + self.std * generator.standard_normal((count, len(self.mean)))
        if truncate:
            samples = np.maximum(samples, 0.0)
        return samples.astype(np.float32).reshape(count, *self.feature_shape)


def figure(rows, *, column_labels=None, row_labels=None, cell_size: int | None = None):
    """A labelled grid of images as a uint8 `[H, W, 3]` array.

    Args:
        rows: a list of rows, each a list of images `[h, w, 3]` in [0, 1]
            (sizes may differ: each is resized to `cell_size`).
        column_labels: one short label per column (drawn above).
        row_labels: one label per row (drawn on the left).
        cell_size: side of each cell; default the largest image side.
    """
    import cv2

    columns = max(len(row) for row in rows)
    if cell_size is None:
        cell_size = max(max(image.shape[:2]) for row in rows for image in row)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4

    def text_width(text):
        return cv2.getTextSize(text, font, scale, 1)[0][0]

    left = 8 + max((text_width(label) for label in row_labels or []), default=-8)
    top = 18 if column_labels else 0
    canvas = np.full(
        (top + len(rows) * (cell_size + 2), left + columns * (cell_size + 2), 3), 255, np.uint8
    )
    for column, label in enumerate(column_labels or []):
        # Shrink a label that would run into the next column.
        fitted = min(scale, scale * (cell_size - 4) / max(text_width(label), 1))
        x = left + column * (cell_size + 2) + 2
        cv2.putText(canvas, label, (x, 13), font, fitted, (0, 0, 0), 1)
    for index, row in enumerate(rows):
        y = top + index * (cell_size + 2)
        if row_labels:
            middle = y + cell_size // 2 + 4
            cv2.putText(canvas, row_labels[index], (4, middle), font, scale, (0, 0, 0), 1)
        for column, image in enumerate(row):
            image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            if image.shape[:2] != (cell_size, cell_size):
                shrink = max(image.shape[:2]) > cell_size
                method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                image = cv2.resize(image, (cell_size, cell_size), interpolation=method)
            x = left + column * (cell_size + 2)
            canvas[y : y + cell_size, x : x + cell_size] = np.round(image * 255).astype(np.uint8)
    return canvas


def save_png(path: str, image) -> str:
    """Writes an RGB uint8 image as PNG (parent folders created)."""
    import cv2

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)):
        raise ValueError(f"Could not write the PNG. Received: path={path!r}")
    return path


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_json(path: str, data) -> str:
    """Writes `data` (NumPy values allowed) as indented JSON, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.partial-{os.getpid()}"
    with open(temporary, "w") as file:
        json.dump(_plain(data), file, indent=2)
    os.replace(temporary, path)
    return path


# Runners.


@dataclasses.dataclass
class Figure:
    """What a runner returns: image rows, labels and the numbers behind them."""

    rows: list
    column_labels: list
    row_labels: list
    numbers: dict

    def render(self) -> np.ndarray:
        return figure(self.rows, column_labels=self.column_labels, row_labels=self.row_labels)


def _errors(originals, reconstructions):
    values = metrics.normalized_reconstruction_errors(originals, reconstructions)
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


def unit_values(fit_features, units, percentile: float = 99.0) -> np.ndarray:
    """The `percentile` of each unit's activations over fitted examples (flattened index)."""
    flat = np.asarray(fit_features, np.float32).reshape(len(fit_features), -1)
    return np.percentile(flat[:, list(units)], percentile, axis=0)


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


def feature_statistics(features) -> dict:
    """Summary of a batch of features: how many entries are non-zero, norms and range."""
    flat, _ = _flat(features)
    return {
        "shape": list(np.asarray(features).shape[1:]),
        "fraction_nonzero": float(np.count_nonzero(flat) / flat.size),
        "mean_norm": float(np.linalg.norm(flat, axis=1).mean()),
        "min": float(flat.min()),
        "max": float(flat.max()),
    }


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
