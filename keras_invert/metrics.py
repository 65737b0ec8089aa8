"""Reconstruction quality measures (docs/reference.md, Evaluation), on NumPy arrays.

All functions take batches `[N, H, W, 3]` of images in [0, 1].

- `normalized_reconstruction_error`: the paper's image-space error, mean
  ||x_i - x_hat_i|| divided by the mean distance between pairs of test images
  (predicting the mean image scores roughly 0.7). Undefined (None) for one
  image, or for images that are all the same.
- `feature_error`: ||phi(x_hat) - phi(x)|| / ||phi(x)||, averaged.
- `normalized_reconstruction_errors`, `feature_errors`: the same per image.
- `error_given_mean_colour`: the normalised error once each reconstruction's
  mean colour is its original's: the part of the error that is not the
  image's overall colour and brightness, which HOG, SIFT and LBP do not hold.
- `luma_correlation`, `ssim`, `psnr`: structure and fidelity beside the error;
  HOG discards absolute brightness and colour, so structure measures tell how
  much of the layout came back even when colours do not.
- `summarize`: all five image-space measures (`MEASURES`) at once.
- `mean_image_baseline`: the same measures for predicting one constant image.

Example:
    >>> from keras_invert import metrics
    >>> metrics.normalized_reconstruction_error(originals, reconstructions)
    0.42
"""

from __future__ import annotations

import itertools

import numpy as np

# ITU-R BT.601 luma, as tf.image.rgb_to_grayscale.
_LUMA = np.array([0.2989, 0.5870, 0.1140], np.float64)


def _as_batch(images, name):
    images = np.asarray(images, np.float64)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"Expected a batch [N, H, W, 3]. Received: {name}.shape={images.shape}")
    if not np.all(np.isfinite(images)):
        raise ValueError(f"Expected finite values. Received: {name} with NaN or Inf")
    return images


def _check_pair(originals, reconstructions):
    originals = _as_batch(originals, "originals")
    reconstructions = _as_batch(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(
            "Expected originals and reconstructions of the same shape. "
            f"Received: {originals.shape} and {reconstructions.shape}"
        )
    return originals, reconstructions


def mean_pairwise_distance(images) -> float:
    """Mean Euclidean distance between all pairs of distinct images."""
    images = _as_batch(images, "images").reshape(len(images), -1)
    if len(images) < 2:
        raise ValueError(
            f"Need at least two images for pairwise distances. Received: {len(images)}"
        )
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(images, 2)]
    return float(np.mean(distances))


def normalized_reconstruction_error(originals, reconstructions) -> float | None:
    """The paper's error: mean ||x - x_hat|| / mean pairwise ||x_i - x_j||.

    None when the originals are all the same image: there is no distance
    between them to measure the error against.
    """
    return _mean(normalized_reconstruction_errors(originals, reconstructions))


def normalized_reconstruction_errors(originals, reconstructions) -> np.ndarray | None:
    """Per image ||x_i - x_hat_i|| / mean pairwise ||x_i - x_j|| (their mean: the paper's error).

    None when the originals are all the same image (mean pairwise distance 0).
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    return _errors(originals, reconstructions, mean_pairwise_distance(originals))


def _errors(originals, reconstructions, scale) -> np.ndarray | None:
    """Per image ||x_i - x_hat_i|| / `scale` of checked batches; None for a scale of 0."""
    if scale == 0:
        return None
    errors = np.linalg.norm((originals - reconstructions).reshape(len(originals), -1), axis=1)
    return errors / scale


def _mean(errors) -> float | None:
    return None if errors is None else float(errors.mean())


def with_mean_colour_of(originals, reconstructions) -> np.ndarray:
    """`reconstructions` with each image's mean colour replaced by its original's.

    Per image and channel, the mean over height and width is moved to the
    original's; nothing is clipped, so values may leave [0, 1].
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    return (
        reconstructions
        - reconstructions.mean(axis=(1, 2), keepdims=True)
        + originals.mean(axis=(1, 2), keepdims=True)
    )


def error_given_mean_colour(originals, reconstructions) -> float | None:
    """The normalised error of `with_mean_colour_of`: the error once the mean colour is known.

    For features that do not hold an image's mean colour (HOG, SIFT, LBP) it
    separates what the decoder got wrong in the image's layout from the
    colour no decoder can read from them. The divisor is the originals' own
    mean pairwise distance, as in `normalized_reconstruction_error`; None
    where that is.
    """
    return normalized_reconstruction_error(
        originals, with_mean_colour_of(originals, reconstructions)
    )


def feature_errors(original_features, reconstruction_features) -> np.ndarray:
    """Per example ||phi(x_hat) - phi(x)|| / ||phi(x)||."""
    a = np.asarray(original_features, np.float64).reshape(len(original_features), -1)
    b = np.asarray(reconstruction_features, np.float64).reshape(len(reconstruction_features), -1)
    if a.shape != b.shape:
        raise ValueError(f"Expected features of equal shape. Received: {a.shape} and {b.shape}")
    norms = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    return np.linalg.norm(a - b, axis=1) / norms


def feature_error(original_features, reconstruction_features) -> float:
    """Mean relative feature-space error ||phi(x_hat) - phi(x)|| / ||phi(x)||."""
    return float(np.mean(feature_errors(original_features, reconstruction_features)))


def luma(images) -> np.ndarray:
    return _as_batch(images, "images") @ _LUMA


def luma_correlation(originals, reconstructions) -> float:
    """Mean per-image Pearson correlation of the luma channels (1 = same structure)."""
    originals, reconstructions = _check_pair(originals, reconstructions)
    values = []
    for a, b in zip(luma(originals), luma(reconstructions), strict=True):
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        denominator = np.linalg.norm(a) * np.linalg.norm(b)
        values.append(float(a @ b / denominator) if denominator > 0 else 0.0)
    return float(np.mean(values))


def ssim(originals, reconstructions) -> float:
    """Mean SSIM of the luma channels, as Wang et al. (2004) define it.

    An 11x11 Gaussian window of sigma 1.5, population (not sample)
    covariances, data range 1: scikit-image's settings for the paper's SSIM.
    """
    from skimage.metrics import structural_similarity

    originals, reconstructions = _check_pair(originals, reconstructions)
    return float(
        np.mean(
            [
                structural_similarity(
                    a,
                    b,
                    data_range=1.0,
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                )
                for a, b in zip(luma(originals), luma(reconstructions), strict=True)
            ]
        )
    )


def psnr(originals, reconstructions) -> float:
    """Mean per-image peak signal-to-noise ratio in dB (peak 1).

    An exact reconstruction counts as 120 dB (the squared error is floored at
    1e-12), so that one perfect image does not make the mean infinite.
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    mse = np.mean((originals - reconstructions) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


MEASURES = ("normalized_error", "error_given_mean_colour", "luma_correlation", "ssim", "psnr")
"""The keys of `summarize`, in its order."""


def summarize(originals, reconstructions) -> dict[str, float | None]:
    """All image-space measures (`MEASURES`) of `reconstructions` against `originals`.

    One image has no normalised error (it needs pairs of distinct images):
    its `normalized_error` and `error_given_mean_colour` are None, as they
    are for originals that are all the same image.
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    normalized_error = given_mean_colour = None
    if len(originals) > 1:
        # One pairwise distance for both errors: it is the costly part (N^2 pairs of images).
        scale = mean_pairwise_distance(originals)
        normalized_error = _mean(_errors(originals, reconstructions, scale))
        given = with_mean_colour_of(originals, reconstructions)
        given_mean_colour = _mean(_errors(originals, given, scale))
    return {
        "normalized_error": normalized_error,
        "error_given_mean_colour": given_mean_colour,
        "luma_correlation": luma_correlation(originals, reconstructions),
        "ssim": ssim(originals, reconstructions),
        "psnr": psnr(originals, reconstructions),
    }


def mean_image_baseline(originals, mean_image=None) -> dict[str, float | None]:
    """`summarize` for predicting one image for every input.

    Args:
        originals: the test images.
        mean_image: the constant prediction `[H, W, 3]`; by default the mean of
            `originals` themselves, a baseline that has seen the test set and is
            therefore hard to beat.
    """
    originals = _as_batch(originals, "originals")
    if mean_image is None:
        mean_image = originals.mean(axis=0)
    prediction = np.broadcast_to(np.asarray(mean_image, np.float64), originals.shape)
    return summarize(originals, prediction)
