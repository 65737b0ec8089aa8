"""Feature distributions: random feature vectors fitted to real ones, and their statistics.

The paper decodes random feature vectors (supplementary Figures 8-10,
section 5.5) drawn from each dimension's empirical histogram independently
(`HistogramDistribution`) or from a Gaussian fitted to the features with
negative values set to zero (`GaussianDistribution`). `unit_values` picks a
unit's typical high activation (Figure 4); `feature_statistics` summarises a
batch (non-zeros, norms, range).

Example:
    >>> histogram = HistogramDistribution.fit(train_features)
    >>> samples = histogram.sample(8, seed=0)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_invert.experiments.perturbations import flatten_batch


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
        flat, shape = flatten_batch(features)
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
        flat, shape = flatten_batch(features)
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


def unit_values(fit_features, units, percentile: float = 99.0) -> np.ndarray:
    """The `percentile` of each unit's activations over fitted examples (flattened index)."""
    flat = np.asarray(fit_features, np.float32).reshape(len(fit_features), -1)
    outside = [unit for unit in units if not 0 <= unit < flat.shape[1]]
    if outside:
        raise ValueError(f"Expected units in [0, {flat.shape[1]}). Received: units={outside!r}")
    return np.percentile(flat[:, list(units)], percentile, axis=0)


def feature_statistics(features) -> dict:
    """Summary of a batch of features: how many entries are non-zero, norms and range."""
    flat, _ = flatten_batch(features)
    return {
        "shape": list(np.asarray(features).shape[1:]),
        "fraction_nonzero": float(np.count_nonzero(flat) / flat.size),
        "mean_norm": float(np.linalg.norm(flat, axis=1).mean()),
        "min": float(flat.min()),
        "max": float(flat.max()),
    }
