"""Features changed on purpose: blends, robustness perturbations, dark knowledge, single units.

The paper's supplementary Figures 3, 4, 6 and 7 and its robustness test
(section 5.4) decode features that were changed in one of these ways.
Features are batches `[N, ...]` of any shape: a map (HOG, conv5) or a vector
(fc6..fc8); operations that act "per example" see each example flattened.

- `interpolate`: linear blends of two feature arrays (Figures 6, 7).
- `binarize`, `dropout`, `perturb`: the robustness perturbations: binarised
  features keep the pattern of non-zeros (and signs) and each example's
  Euclidean norm; dropout zeroes a random half of the entries and (choice,
  as recalled from the paper) rescales the rest so that each example keeps
  its norm (`keep_norm=False`: no rescaling).
- `top_k_only`, `all_but_top_k`: "dark knowledge" (Figure 3): only the k
  largest activations, or all but them, the rest set to zero.
- `single_unit`: one unit at a value, all others zero (Figure 4).

Example:
    >>> blends = interpolate(features[0], features[1], steps=8)  # [8, ...]
    >>> noisy = perturb(features, "dropout", dropout_rate=0.5, seed=3)
"""

from __future__ import annotations

import numpy as np


def flatten_batch(features):
    """`(features as float32 [N, D], their original shape)`; refuses anything but a batch."""
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
    flat, shape = flatten_batch(features)
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
    flat, shape = flatten_batch(features)
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


def _top_k_mask(flat, k):
    if not isinstance(k, int) or not 0 < k <= flat.shape[1]:
        raise ValueError(f"Expected 0 < k <= {flat.shape[1]}. Received: k={k!r}")
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask


def top_k_only(features, k: int = 5) -> np.ndarray:
    """Keeps each example's k largest activations and sets all others to zero."""
    flat, shape = flatten_batch(features)
    return np.where(_top_k_mask(flat, k), flat, 0.0).astype(np.float32).reshape(shape)


def all_but_top_k(features, k: int = 5) -> np.ndarray:
    """Sets each example's k largest activations to zero and keeps the others."""
    flat, shape = flatten_batch(features)
    return np.where(_top_k_mask(flat, k), 0.0, flat).astype(np.float32).reshape(shape)


def single_unit(feature_shape, unit: int, value: float) -> np.ndarray:
    """A batch of one: unit `unit` (index into the flattened features) at `value`, others 0."""
    size = int(np.prod(feature_shape))
    if not 0 <= unit < size:
        raise ValueError(f"Expected a unit in [0, {size}). Received: unit={unit!r}")
    features = np.zeros(size, np.float32)
    features[unit] = value
    return features.reshape(1, *feature_shape)
