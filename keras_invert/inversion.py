"""Optimisation-based inversion (Mahendran & Vedaldi, CVPR 2015): the paper's baseline.

Finds images whose representation matches given features by gradient
descent from noise, as in "Understanding Deep Image Representations by
Inverting Them" (reference [1] of Dosovitskiy & Brox; docs/reference.md, Optimisation baseline).
For each image independently (a batch is optimised at once) it minimises

    E(x) = ||phi(m + x) - phi0||^2 / ||phi0||^2
           + (alpha_weight / 2 * sum |x|^alpha + tv_weight / 2 * TV(x)) / sigma^2
    TV(x) = sum_ij ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2)^(beta / 2)

over the mean-subtracted image `x` (pixel units of 0..255 images, `m` the
ImageNet mean colour), where `phi` is any differentiable encoder taking
float32 `[N, H, W, 3]` images in 0..255 (HOG, an AlexNet layer, any Keras
model) and `sigma` is the average Euclidean norm of mean-subtracted natural
images of that size. Dividing the priors by `sigma^2` makes their weights
independent of the image size and range, the normalisation of the original
method: the numbers below are the authors' own.

Defaults follow the authors' released MatConvNet code (`deep-goggle`,
`core/invert_nn.m` and `experiments/experiment_cnn.m`,
`experiments/experiment_shallow.m`):

- optimiser: gradient descent with momentum 0.9 (their method; not Adam),
  step `learning_rate * sigma^2 * grad E`, the rate divided by 10 at
  `learning_rate_drops` (fractions of `steps`) and the momentum reset to zero
  at every drop, as their code does;
- AlexNet layers: 400 steps at 0.004 with drops after 100 and 300 steps;
  HOG: 800 steps at 0.004 with drops after 200, 400 and 600
  (`paper_settings` gives both);
- alpha-norm prior: alpha 6, weight 8e-10;
- total-variation prior: beta 2, weight 1 for HOG and the first AlexNet
  layers (conv1), 10 for conv2..conv4, 100 for conv5..fc8 (their per-layer
  choice, `paper_settings`);
- start: Gaussian noise scaled to norm `sigma` per image.

Choices where the original is not available here:
- The lowest-energy iterate of each image is returned (their code returns
  the last); with their schedule on their networks the two agree, and a
  rate too large for another encoder cannot make the result worse than the
  start.
- `sigma` (their `x0_sigma.mat`, measured on ImageNet) is
  `sqrt(H * W * C) * NATURAL_IMAGE_RMS`; `NATURAL_IMAGE_RMS` = 62 is the root
  mean square of the 29 bundled photos (docs/reference.md, Bundled data) minus the
  ImageNet mean colour, at 227x227 centre crops.
- The mean `m` is the ImageNet mean colour (RGB 123.68, 116.78, 103.94),
  for every encoder; their HOG runs subtracted 128 from a grey image.
- Colour images for every encoder; their HOG inversion used grey images.
- The result is clipped to 0..255 (their figures rescaled each image to
  its own range for display; the paper's error needs pixels: docs/reference.md, Evaluation).

TensorFlow is used directly (GradientTape, tf.function): the feature ops it
differentiates through (HOG) are TensorFlow ops.

Example:
    >>> from keras_invert import inversion, registry
    >>> encode = registry.get("hog").make_encoder()
    >>> result = inversion.optimize(encode, encode(images), image_shape=(64, 64, 3),
    ...                             **inversion.paper_settings("hog"))
    >>> result.images.shape, result.feature_loss  # [N, 64, 64, 3] in 0..255; per image
"""

from __future__ import annotations

import dataclasses
import math
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_invert import registry

IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)
"""The mean colour subtracted before optimisation (Caffe's ImageNet means, RGB order)."""

NATURAL_IMAGE_RMS = 62.0
"""Root mean square of mean-subtracted natural photos, per pixel and channel (0..255 units)."""

# Mahendran & Vedaldi's total-variation weight per AlexNet layer (their CNN
# experiments: layers 1-6 of MatConvNet's caffe-ref, i.e. up to norm1, used 1;
# layers 7-12, up to relu4, used 10; layers 13-20, pool5 to fc8, used 100).
_ALEXNET_TV_WEIGHTS = {
    "conv1": 1.0,
    "conv2": 10.0,
    "conv3": 10.0,
    "conv4": 10.0,
    "conv5": 100.0,
    "fc6": 100.0,
    "fc7": 100.0,
    "fc8": 100.0,
}


VECTOR_TAP_LEARNING_RATE = 4e-4
"""Initial rate for vector taps of networks other than AlexNet (`paper_settings`)."""


def paper_settings(representation: str) -> dict:
    """The original method's steps, schedule and prior weights for a representation name.

    Args:
        representation: a registry name: "hog" (their HOG experiments; also
            used for the other shallow features, lbp and sift, for which they
            published none), "alexnet/LAYER" / "alexnet-torchvision/LAYER", or
            any other network tap ("efficientnet-lite0/stage4", "keras:..."):
            for those (choice) the AlexNet schedule with the TV weight of
            AlexNet's deep layers of the same kind, 10 for feature maps (as
            conv2..conv4) and 100 for vectors (as fc6..fc8), and for vectors a
            tenth of the rate, 4e-4: at 4e-3 EfficientNet-Lite0's `head` and
            `logits` diverge within 3 steps (measured on the bundled photos).

    Returns:
        Keyword arguments for `optimize`: steps, learning_rate,
        learning_rate_drops, tv_weight.
    """
    network = dict(steps=400, learning_rate=0.004, learning_rate_drops=(0.25, 0.75))
    family, _, layer = representation.rpartition("/")
    if family in ("alexnet", "alexnet-torchvision"):
        if layer not in _ALEXNET_TV_WEIGHTS:
            raise ValueError(
                f"Expected an AlexNet layer in {sorted(_ALEXNET_TV_WEIGHTS)}. "
                f"Received: representation={representation!r}"
            )
        return dict(network, tv_weight=_ALEXNET_TV_WEIGHTS[layer])
    found = registry.get(representation)
    if found.encode_in_model:
        rank = len(found.feature_shape(found.default_image_size))
        if rank == 1:
            return dict(network, learning_rate=VECTOR_TAP_LEARNING_RATE, tv_weight=100.0)
        return dict(network, tv_weight=10.0)
    return dict(
        steps=800, learning_rate=0.004, learning_rate_drops=(0.25, 0.5, 0.75), tv_weight=1.0
    )


@dataclasses.dataclass(frozen=True)
class InversionResult:
    """What `optimize` returns.

    Attributes:
        images: float32 `[N, H, W, C]` in 0..255, the reconstructions.
        feature_loss: float64 `[N]`, the final ||phi(x) - phi0||^2 / ||phi0||^2 per image.
        initial_feature_loss: float64 `[N]`, the same for the starting noise.
        history: per step, the batch means of "feature", "alpha" and "tv"
            (the prior terms as they enter E) and "total"; arrays `[steps]`.
    """

    images: np.ndarray
    feature_loss: np.ndarray
    initial_feature_loss: np.ndarray
    history: dict[str, np.ndarray]


def alpha_norm(images, alpha: float = 6.0):
    """Per-image sum of |x|^alpha over `[N, H, W, C]` (mean-subtracted) images."""
    return tf.reduce_sum(tf.pow(tf.abs(images), alpha), axis=[1, 2, 3])


def total_variation(images, beta: float = 2.0):
    """Per-image TV^beta: sum over pixels of (dx^2 + dy^2)^(beta / 2), forward differences.

    The last row and column have zero forward difference (their
    `x(:, [2:end end])` replication).
    """
    images = tf.convert_to_tensor(images, tf.float32)
    dx = tf.concat([images[:, :, 1:] - images[:, :, :-1], tf.zeros_like(images[:, :, :1])], 2)
    dy = tf.concat([images[:, 1:] - images[:, :-1], tf.zeros_like(images[:, :1])], 1)
    squared = dx * dx + dy * dy
    if beta == 2:
        return tf.reduce_sum(squared, axis=[1, 2, 3])
    # A tiny floor keeps the gradient finite where the image is flat (beta < 2).
    return tf.reduce_sum(tf.pow(squared + 1e-8, beta / 2), axis=[1, 2, 3])


def _call(encoder, images):
    if isinstance(encoder, keras.layers.Layer):
        return encoder(images, training=False)
    return encoder(images)


def _energy(encoder, x, problem, *, alpha, tv_beta):
    """The terms of E(x) per image; `problem` holds the tensors of one `optimize` call."""
    target = problem["target"]
    features = tf.cast(_call(encoder, x + problem["mean"]), tf.float32)
    if tuple(features.shape[1:]) != tuple(target.shape[1:]):
        raise ValueError(
            f"The encoder gives features {tuple(features.shape[1:])} for images "
            f"{tuple(x.shape[1:])}. Received: target_features.shape={tuple(target.shape)}"
        )
    axes = list(range(1, target.shape.rank))
    difference = tf.reduce_sum(tf.square(features - target), axis=axes)
    sigma_squared = problem["sigma_squared"]
    terms = {
        "feature": difference / problem["target_norm_squared"],
        "alpha": problem["alpha_weight"] / 2 * alpha_norm(x, alpha) / sigma_squared,
        "tv": problem["tv_weight"] / 2 * total_variation(x, tv_beta) / sigma_squared,
    }
    terms["total"] = terms["feature"] + terms["alpha"] + terms["tv"]
    return terms


# Traced steps per encoder, so that repeated calls (several batches, tests)
# trace the encoder's graph once; the per-call tensors are arguments.
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _step_function(encoder, *, alpha, tv_beta, momentum, jit_compile):
    key = (alpha, tv_beta, momentum, jit_compile)
    try:
        cached = _STEPS.setdefault(encoder, {})
    except TypeError:  # Not weakly referenceable: no cache.
        cached = {}
    if key not in cached:

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def step(x, velocity, rate, problem):
            with tf.GradientTape() as tape:
                tape.watch(x)
                terms = _energy(encoder, x, problem, alpha=alpha, tv_beta=tv_beta)
                # Images are independent: the sum gives each its own gradient.
                total = tf.reduce_sum(terms["total"])
            gradient = tape.gradient(total, x)
            velocity = momentum * velocity - rate * problem["sigma_squared"] * gradient
            return x + velocity, velocity, terms

        cached[key] = step
    return cached[key]


def _check_gradient(feature_loss, x, encoder):
    # Piecewise-constant encoders (LBP's comparisons, SIFT's NumPy code) give
    # no gradient: the optimisation would only follow the priors.
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(feature_loss(x))
    gradient = tape.gradient(loss, x)
    if gradient is None or not bool(tf.reduce_any(tf.not_equal(gradient, 0.0))):
        raise ValueError(
            "The encoder has no gradient with respect to its input images (piecewise "
            "constant, like LBP, or not TensorFlow, like SIFT); optimisation cannot invert "
            f"it. Received: encoder={encoder!r}"
        )


def _check(name, value, valid):
    if not valid:
        raise ValueError(f"Invalid argument of optimize. Received: {name}={value!r}")


class OptimizationDiverged(ValueError):
    """The optimisation's images or energy stopped being finite (its rate or priors too large)."""


def _diverged(step: int, learning_rate, tv_weight, alpha_weight) -> OptimizationDiverged:
    return OptimizationDiverged(
        f"The optimisation diverged at step {step}: its images or energy stopped being "
        "finite. Expected a smaller learning rate or prior weights. Received: "
        f"learning_rate={learning_rate!r}, tv_weight={tv_weight!r}, alpha_weight={alpha_weight!r}"
    )


def optimize(
    encoder,
    target_features,
    *,
    image_shape,
    steps: int = 400,
    learning_rate: float = 0.004,
    learning_rate_drops=(0.25, 0.75),
    momentum: float = 0.9,
    alpha: float = 6.0,
    alpha_weight: float = 8e-10,
    tv_beta: float = 2.0,
    tv_weight: float = 1.0,
    image_norm: float | None = None,
    mean=IMAGENET_MEAN_RGB,
    seed: int | None = 0,
    jit_compile: bool = False,
) -> InversionResult:
    """Reconstructs images from `target_features` by Mahendran & Vedaldi's optimisation.

    Args:
        encoder: a differentiable function or Keras model/layer, float32
            `[N, H, W, C]` images in 0..255 -> features.
        target_features: `[N, ...]`, the features phi0 to invert (one image each).
        image_shape: `(H, W, C)` of the images to find (the encoder's input).
        steps: gradient steps.
        learning_rate: initial rate (of the step `rate * sigma^2 * grad E`).
        learning_rate_drops: fractions of `steps` after which the rate is
            divided by 10 (and the momentum reset).
        momentum: momentum of the gradient descent.
        alpha, alpha_weight: exponent and weight of the alpha-norm prior.
        tv_beta, tv_weight: exponent and weight of the total-variation prior.
        image_norm: `sigma`, the typical norm of a mean-subtracted image; default
            `sqrt(H * W * C) * NATURAL_IMAGE_RMS`.
        mean: the colour (C values, 0..255) added to `x` before encoding.
        seed: seed of the starting noise (None: random).
        jit_compile: compile the step with XLA.

    Returns:
        An `InversionResult` (images in 0..255, feature losses, history).

    Raises:
        OptimizationDiverged: the images or the energy stopped being finite.
        ValueError: an invalid argument, or an encoder without a gradient.
    """
    image_shape = tuple(int(d) for d in image_shape)
    _check("image_shape", image_shape, len(image_shape) == 3 and min(image_shape) > 0)
    _check("steps", steps, isinstance(steps, int) and steps > 0)
    _check("learning_rate", learning_rate, 0 < learning_rate < math.inf)
    _check("momentum", momentum, 0 <= momentum < 1)
    _check("learning_rate_drops", learning_rate_drops, all(0 < f < 1 for f in learning_rate_drops))
    _check("alpha", alpha, alpha >= 1)
    _check("tv_beta", tv_beta, tv_beta >= 1)
    _check("alpha_weight", alpha_weight, 0 <= alpha_weight < math.inf)
    _check("tv_weight", tv_weight, 0 <= tv_weight < math.inf)
    target = tf.convert_to_tensor(np.asarray(target_features, np.float32))
    _check("target_features", tuple(target.shape), target.shape.rank >= 2 and target.shape[0] > 0)
    count = int(target.shape[0])
    mean = tf.reshape(tf.constant(np.asarray(mean, np.float32)), [1, 1, 1, -1])
    _check("mean", mean.shape, mean.shape[-1] in (1, image_shape[-1]))
    sigma = (
        math.sqrt(math.prod(image_shape)) * NATURAL_IMAGE_RMS if image_norm is None else image_norm
    )
    _check("image_norm", image_norm, sigma > 0)
    target_axes = list(range(1, target.shape.rank))
    problem = {
        "target": target,
        "target_norm_squared": tf.maximum(
            tf.reduce_sum(tf.square(target), axis=target_axes), 1e-12
        ),
        "mean": mean,
        "sigma_squared": tf.constant(sigma**2, tf.float32),
        "alpha_weight": tf.constant(alpha_weight, tf.float32),
        "tv_weight": tf.constant(tv_weight, tf.float32),
    }
    hyper = {"alpha": float(alpha), "tv_beta": float(tv_beta)}

    def energy(x):
        return _energy(encoder, x, problem, **hyper)

    step = _step_function(encoder, momentum=float(momentum), jit_compile=jit_compile, **hyper)

    generator = np.random.default_rng(seed)
    noise = generator.standard_normal((count, *image_shape)).astype(np.float32)
    noise *= sigma / np.linalg.norm(noise.reshape(count, -1), axis=1).reshape(-1, 1, 1, 1)
    x = tf.constant(noise)
    _check_gradient(lambda images: energy(images)["feature"], x, encoder)
    velocity = tf.zeros_like(x)
    boundaries = sorted({max(1, int(f * steps)) for f in learning_rate_drops})
    history = {name: [] for name in ("feature", "alpha", "tv", "total")}
    initial = None
    best, best_energy = x, np.full(count, np.inf, np.float32)
    for index in range(steps + 1):
        drops = sum(index >= b for b in boundaries)
        if index in boundaries:
            velocity = tf.zeros_like(x)  # Their code: a new rate restarts the momentum.
        rate = tf.constant(learning_rate / 10**drops, tf.float32)
        # The terms are those of x before this update: the last pass only evaluates.
        try:
            updated, velocity, terms = step(x, velocity, rate, problem)
        except tf.errors.InvalidArgumentError as error:  # An encoder's finiteness check.
            raise _diverged(index, learning_rate, tv_weight, alpha_weight) from error
        energy_now = terms["total"].numpy()
        if not np.all(np.isfinite(energy_now)):
            raise _diverged(index, learning_rate, tv_weight, alpha_weight)
        if initial is None:
            initial = terms["feature"].numpy().astype(np.float64)
        # Choice: each image's lowest-energy iterate is returned, so that a
        # rate too large for an encoder cannot make the result worse than
        # what was reached on the way.
        improved = energy_now < best_energy
        best = tf.where(improved.reshape(-1, 1, 1, 1), x, best)
        best_energy = np.where(improved, energy_now, best_energy)
        if index < steps:
            for name in history:
                history[name].append(float(tf.reduce_mean(terms[name])))
        x = updated
    images = tf.clip_by_value(best + mean, 0.0, 255.0)
    final = energy(images - mean)["feature"].numpy().astype(np.float64)
    return InversionResult(
        images=images.numpy(),
        feature_loss=final,
        initial_feature_loss=initial,
        history={name: np.asarray(values) for name, values in history.items()},
    )
