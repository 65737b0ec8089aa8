"""One configuration object per training run: `TrainConfig`, its checks, its file.

`TrainConfig` holds every choice of a run; `presets.preset(name)` gives the
starting point (the paper's settings per representation, or the CPU demo), the launch
scripts override fields from flags, and the resolved config is written into
the work dir as `config.json`. That file is the single source of truth: a run
started again with the same work dir reads it back and resumes.

Example:
    >>> from keras_invert import config, presets
    >>> run = presets.preset("demo_hog")
    >>> run = config.replace(run, steps=200)
    >>> config.save(run, "/tmp/work")  # writes /tmp/work/config.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re

from keras_invert import files
from keras_invert.feature_placement import check_cache_features, check_features_in_model

CONFIG_FILE = "config.json"
DISPATCHER_ADDRESS = r"\S+:\d{1,5}"
"""HOST:PORT of a tf.data service dispatcher (a pattern; `data_service` adds "grpc://")."""
MAX_IMAGE_SIZE = 4096
"""The largest crop side a run trains on (the paper's networks take 224-256)."""

MIN_WIDTH = 1 / 32
"""The narrowest width multiplier: the tables' narrowest layers (32 channels) keep one."""


def check_width(width) -> None:
    """Refuses a decoder or discriminator width multiplier outside [1/32, inf).

    Narrower, layers would round to no channel and be floored to one: a
    decoder that trains, but as a different network from the one asked for.

    Raises:
        ValueError: `width` is not a real number in [MIN_WIDTH, inf).
    """
    if (
        isinstance(width, bool)
        or not isinstance(width, numbers.Real)
        or not (MIN_WIDTH <= width < math.inf)
    ):
        raise ValueError(
            "Expected a width multiplier in [1/32, inf): narrower, the 32-channel layers "
            f"would keep no channel. Received: width={width!r}"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (docs/reference.md, Training).

    Args:
        representation: registry name ("hog", ...).
        data: pipeline source ("samples", "folder:PATH", "tfds:NAME[/CONFIG]").
        train_split, test_split: source splits.
        image_size: input image side, at most `MAX_IMAGE_SIZE` (None: the
            representation's default).
        width: decoder channel multiplier (1.0 = the paper's network).
        negative_slope: leaky ReLU slope.
        mean_colour: end the decoder with one learnt mean colour for every
            image (`decoders.MeanColour`). Unset (None): on for features that cannot
            tell an image's mean colour (HOG, SIFT, LBP), off for the rest,
            where True is refused. A config.json written before this field
            existed reads False: its decoder has no such layer.
        batch_size: global batch size.
        steps: total optimiser steps.
        steps_per_epoch: steps between checkpoints (and epoch-level logs).
        learning_rate: Adam step size (paper: about 1e-3 on ImageNet with a GPU).
        learning_rate_drops: fractions of `steps` after which the rate is divided
            by 10 ("lowered towards the end", paper); the "step" schedule's.
        schedule: "step" (the rate divided by 10 at `learning_rate_drops`) or
            "cosine" (a linear warm-up from 0 over `warmup_steps`, then a
            cosine decay to 0 at `steps`; `learning_rate_drops` unused).
        warmup_steps: the "cosine" schedule's warm-up, in steps (< `steps`).
        ema_momentum: keep an exponential moving average of the trained
            weights with this momentum (e.g. 0.999, for runs of at least
            5 / (1 - momentum) = 5,000 steps); training goes on with the
            raw weights, the final model holds the averages. None: off.
        beta_1, beta_2: Adam moments (paper: 0.9, 0.999).
        min_crop_scale: smallest random crop side as a fraction of the short side.
        color_jitter: strength in [0, 1] of the random photometric change of
            training crops (features and targets both see it).
        seed: makes data order, crops and initialisation reproducible (None: random).
        cache_dir: on-disk feature cache (None: features computed on the fly);
            a relative path is taken inside the work dir.
        crops_per_image: crops materialised per photo when caching.
        cache_features: for a network encoder kept fixed (AlexNet, ...): the
            cache (`cache_dir`, required) holds the network's features,
            computed once, and the training model is the decoder alone
            (faster steps, smaller cache). The work dir then saves the
            decoder; export and evaluation rebuild the encoder from
            `encoder_weights` (required for AlexNet, whose default is random).
        features_in_model: for a feature op in TensorFlow that is not a network
            (HOG, LBP): the pipeline yields the crops and the training model
            computes the features, `images -> features -> decoder`, on the
            accelerator (docs/reference.md, Where the features are computed).
            The features are the pipeline's, by the same ops. Not for SIFT
            (not a TensorFlow op) nor networks (always in the model).
        divergence_factor: the run stops when the epoch's running loss exceeds
            this multiple of the best epoch loss so far (or is not finite).
        summary_images: test images shown in TensorBoard each epoch.
        max_minutes: wall-clock budget of one invocation; training stops
            cleanly (checkpoint and final model written) when it is spent, and
            a later invocation continues towards `steps`. None: no budget.
        encoder_options: keyword arguments of the representation's encoder.
        encoder_weights: weights file of a network encoder (AlexNet:
            `.weights.h5`, `.caffemodel` or `.pth`); passed to the encoder as
            its `weights` option. None: random weights (logged loudly).
        autoencoder: train a network encoder jointly with the decoder (the
            paper's autoencoder mode) instead of keeping it fixed.
        loss: "pixel" (the paper: mean squared error), "perceptual" (pixel +
            feature loss in a comparator network's space) or "deepsim" (pixel
            + feature + adversarial, Dosovitskiy & Brox, NIPS 2016); see
            `keras_invert.losses`.
        discriminator_pause_ratio: "deepsim" skips the discriminator's update
            on a step where its loss is below this multiple of the generator's
            adversarial loss (it is far ahead; DeepSiM: 0.1). 0: never paused.
        loss_weights: `(pixel, feature, adversarial)` weights of "perceptual"
            or "deepsim" (None: `DEFAULT_LOSS_WEIGHTS[loss]`).
        comparator: registry name of the frozen network whose features the
            feature loss compares (None: `DEFAULT_COMPARATOR`).
        comparator_weights: weights file of the comparator network, passed
            to its encoder as `weights` (AlexNet: `.weights.h5`,
            `.caffemodel` or `.pth`; EfficientNet-Lite0 and `keras:` models
            bring their own). None: the comparator's default weights (random
            for AlexNet, logged loudly).
        discriminator_learning_rate: Adam step size of the "deepsim"
            discriminator (None: `learning_rate`), lowered on the same schedule.
        init_from: work dir of a finished run whose decoder starts this run's
            (same representation, image size and width; e.g. a pixel-trained
            decoder fine-tuned with loss="perceptual" or "deepsim"). Read
            once, when the run starts; a resumed run continues from its own
            checkpoint. None: a freshly initialised decoder.
        strategy: how training is distributed (`keras_invert.distribute`):
            "default" (one device), "mirrored" (this machine's GPUs, else its
            logical CPU devices), "multi_worker" (several machines, cluster in
            `TF_CONFIG`) or "tpu". `batch_size` stays the global batch. May
            change when a run resumes.
        precision: "float32", "mixed_float16" (with loss scaling) or
            "mixed_bfloat16": layers compute in the lower precision and keep
            float32 weights; the decoder's output layer computes in float32.
        jit_compile: compile the train step with XLA. May change on resume.
        data_service: "grpc://HOST:PORT" of a tf.data service dispatcher that
            runs the input pipeline (None: in this process). May change on resume.
    """

    representation: str = "hog"
    data: str = "samples"
    train_split: str = "train"
    test_split: str = "test"
    image_size: int | None = None
    width: float = 1.0
    negative_slope: float = 0.2
    mean_colour: bool | None = None
    batch_size: int = 64
    steps: int = 100_000
    steps_per_epoch: int = 500
    learning_rate: float = 1e-3
    learning_rate_drops: tuple[float, ...] = (0.7, 0.9)
    schedule: str = "step"
    warmup_steps: int = 0
    ema_momentum: float | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    min_crop_scale: float = 0.35
    color_jitter: float = 0.0
    seed: int | None = 0
    cache_dir: str | None = None
    crops_per_image: int = 8
    cache_features: bool = False
    features_in_model: bool = False
    divergence_factor: float = 10.0
    summary_images: int = 4
    max_minutes: float | None = None
    encoder_options: dict = dataclasses.field(default_factory=dict)
    encoder_weights: str | None = None
    autoencoder: bool = False
    loss: str = "pixel"
    loss_weights: tuple[float, float, float] | None = None
    comparator: str | None = None
    comparator_weights: str | None = None
    discriminator_learning_rate: float | None = None
    discriminator_pause_ratio: float = 0.1
    init_from: str | None = None
    strategy: str = "default"
    precision: str = "float32"
    jit_compile: bool = False
    data_service: str | None = None

    def __post_init__(self):
        checks = {
            # A crop far beyond any photo's side would only upsample it, and a network
            # with no fixed input size would build (slowly) whatever it is given.
            "image_size": (
                self.image_size is None
                or (isinstance(self.image_size, int) and 1 <= self.image_size <= MAX_IMAGE_SIZE),
                f"None or a whole number in [1, {MAX_IMAGE_SIZE}]",
            ),
            "batch_size": (self.batch_size > 0, "> 0"),
            "steps": (self.steps > 0, "> 0"),
            "steps_per_epoch": (self.steps_per_epoch > 0, "> 0"),
            # Adam moves each weight by about the rate a step: above 1 a run can only
            # diverge (or overflow).
            "learning_rate": (0 < self.learning_rate <= 1, "in (0, 1]"),
            # Adam's moment decays: outside [0, 1) its averages grow without bound.
            "beta_1": (0 <= self.beta_1 < 1, "in [0, 1)"),
            "beta_2": (0 <= self.beta_2 < 1, "in [0, 1)"),
            # A leaky ReLU: a slope of 1 or more (or below 0) is another non-linearity.
            "negative_slope": (0 <= self.negative_slope < 1, "in [0, 1)"),
            "mean_colour": (
                self.mean_colour is None or isinstance(self.mean_colour, bool),
                "True, False or None",
            ),
            "min_crop_scale": (0 < self.min_crop_scale <= 1, "in (0, 1]"),
            "divergence_factor": (self.divergence_factor > 1, "> 1"),
            "schedule": (self.schedule in SCHEDULES, f"in {SCHEDULES}"),
            "warmup_steps": (
                isinstance(self.warmup_steps, int) and 0 <= self.warmup_steps < self.steps,
                "a whole number in [0, steps)",
            ),
            "ema_momentum": (self.ema_momentum is None or 0 < self.ema_momentum < 1, "in (0, 1)"),
            "discriminator_pause_ratio": (0 <= self.discriminator_pause_ratio < math.inf, ">= 0"),
            "seed": (
                self.seed is None
                or (
                    isinstance(self.seed, int)
                    and not isinstance(self.seed, bool)
                    and 0 <= self.seed < 2**32
                ),
                "None or a whole number in [0, 2**32)",
            ),  # fmt: skip
            "init_from": (
                self.init_from is None or (isinstance(self.init_from, str) and self.init_from),
                "a work dir or None",
            ),
        }
        for name, (valid, expected) in checks.items():
            if not valid:
                raise ValueError(
                    f"Expected {name} {expected}. Received: {name}={getattr(self, name)!r}"
                )
        check_width(self.width)
        if any(not 0 < f < 1 for f in self.learning_rate_drops):
            raise ValueError(
                "Expected learning_rate_drops as fractions in (0, 1). "
                f"Received: learning_rate_drops={self.learning_rate_drops!r}"
            )
        if self.warmup_steps and self.schedule != "cosine":
            raise ValueError(
                "warmup_steps belongs to schedule='cosine'. "
                f"Received: schedule={self.schedule!r}, warmup_steps={self.warmup_steps!r}"
            )
        _check_loss(self)
        _check_execution(self)
        check_cache_features(
            self.cache_features,
            cache_dir=self.cache_dir,
            autoencoder=self.autoencoder,
            data_service=self.data_service,
        )
        check_features_in_model(self.features_in_model)
        in_options = self.encoder_options.get("weights")
        if self.encoder_weights is not None and in_options not in (None, self.encoder_weights):
            raise ValueError(
                "Give the encoder weights once, as encoder_weights or as encoder_options"
                f"['weights']. Received: encoder_weights={self.encoder_weights!r}, "
                f"encoder_options={self.encoder_options!r}"
            )


SCHEDULES = ("step", "cosine")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
RESUMABLE_CHANGES = ("steps", "max_minutes", "strategy", "jit_compile", "data_service")
"""Fields a resumed run may change: how it runs, not what it trains."""


def _check_execution(config: TrainConfig) -> None:
    """Validates the distribution, precision and compilation fields."""
    if config.strategy not in STRATEGIES:
        raise ValueError(
            f"Expected strategy in {STRATEGIES}. Received: strategy={config.strategy!r}"
        )
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"Expected precision in {PRECISIONS}. Received: precision={config.precision!r}"
        )
    if config.strategy == "multi_worker" and config.seed is None:
        # Each worker's pipeline would draw its own seed: the workers' shards
        # would then be cut from different streams, overlapping and missing examples.
        raise ValueError(
            "strategy='multi_worker' needs a seed shared by all workers, so that their "
            "input shards are disjoint parts of one stream. Received: seed=None"
        )
    if not isinstance(config.jit_compile, bool):
        raise ValueError(f"Expected a bool. Received: jit_compile={config.jit_compile!r}")
    service = config.data_service
    if service is not None and not (
        isinstance(service, str) and re.fullmatch("grpc://" + DISPATCHER_ADDRESS, service)
    ):
        raise ValueError(
            "Expected data_service as 'grpc://HOST:PORT' (a tf.data service dispatcher) or "
            f"None. Received: data_service={service!r}"
        )


LOSSES = ("pixel", "perceptual", "deepsim")
DEFAULT_LOSS_WEIGHTS = {"perceptual": (1.0, 1.0, 0.0), "deepsim": (1.0, 1.0, 0.01)}
"""Weights (pixel, feature, adversarial) per loss: a choice, see `keras_invert.losses`."""
DEFAULT_COMPARATOR = "efficientnet-lite0/stage4"
"""The comparator network of the feature loss when `comparator` is None."""


def check_loss_weights(loss_weights) -> tuple[float, float, float]:
    """`(pixel, feature, adversarial)` as floats; refuses anything but three finite values >= 0."""
    try:
        weights = tuple(float(w) for w in loss_weights)
    except (TypeError, ValueError):
        weights = ()
    if len(weights) != 3 or not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(
            "Expected loss_weights as three finite non-negative numbers (pixel, feature, "
            f"adversarial). Received: loss_weights={loss_weights!r}"
        )
    return weights


def _check_loss(config: TrainConfig) -> None:
    """Validates the loss fields; stores `loss_weights` as a tuple of floats."""
    if config.loss not in LOSSES:
        raise ValueError(f"Expected loss in {LOSSES}. Received: loss={config.loss!r}")
    if config.loss == "pixel":
        extra = {
            name: getattr(config, name)
            for name in (
                "loss_weights",
                "comparator",
                "comparator_weights",
                "discriminator_learning_rate",
            )
            if getattr(config, name) is not None
        }
        if extra:
            raise ValueError(
                f"{sorted(extra)} apply to loss='perceptual' or 'deepsim'. Received: "
                f"loss='pixel', {', '.join(f'{k}={v!r}' for k, v in extra.items())}"
            )
        return
    if config.loss_weights is not None:
        weights = check_loss_weights(config.loss_weights)
        if (weights[2] > 0) != (config.loss == "deepsim") or weights[1] + weights[2] == 0:
            raise ValueError(
                "loss='perceptual' takes an adversarial weight of 0 and a positive feature "
                "weight; loss='deepsim' a positive adversarial weight. Received: "
                f"loss={config.loss!r}, loss_weights={config.loss_weights!r}"
            )
        object.__setattr__(config, "loss_weights", weights)
    rate = config.discriminator_learning_rate
    if rate is not None and (config.loss != "deepsim" or not 0 < rate <= 1):
        raise ValueError(
            "discriminator_learning_rate is a rate in (0, 1] for loss='deepsim'. Received: "
            f"loss={config.loss!r}, discriminator_learning_rate={rate!r}"
        )


def loss_weights(config: TrainConfig) -> tuple[float, float, float]:
    """`(pixel, feature, adversarial)` of the run: its `loss_weights` or the loss's defaults."""
    if config.loss == "pixel":
        return (1.0, 0.0, 0.0)
    return config.loss_weights or DEFAULT_LOSS_WEIGHTS[config.loss]


def replace(config: TrainConfig, **changes) -> TrainConfig:
    """A copy of `config` with fields changed (validated)."""
    unknown = set(changes) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise ValueError(f"Unknown config fields. Received: {sorted(unknown)!r}")
    return dataclasses.replace(config, **changes)


def to_dict(config: TrainConfig) -> dict:
    values = dataclasses.asdict(config)
    values["learning_rate_drops"] = list(config.learning_rate_drops)
    return values


def from_dict(values: dict) -> TrainConfig:
    values = dict(values)
    # Written before decoders could have a learnt mean colour: theirs has none.
    values.setdefault("mean_colour", False)
    if "learning_rate_drops" in values:
        values["learning_rate_drops"] = tuple(values["learning_rate_drops"])
    return replace(TrainConfig(), **values)


def save(config: TrainConfig, work_dir: str) -> str:
    """Writes `work_dir/config.json` atomically and returns its path."""
    return files.write_json(os.path.join(work_dir, CONFIG_FILE), to_dict(config), sort_keys=True)


def encoder_options(config: TrainConfig) -> dict:
    """The encoder's keyword arguments: `encoder_options` plus `encoder_weights` as `weights`."""
    options = dict(config.encoder_options)
    if config.encoder_weights is not None:
        options["weights"] = config.encoder_weights
    return options


def load(work_dir: str) -> TrainConfig | None:
    """Reads `work_dir/config.json`; None when the work dir has none."""
    path = os.path.join(work_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as file:
        try:
            values = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"The run config is not valid JSON. Received: path={path!r} ({error})"
            ) from error
    try:
        return from_dict(values)
    except (TypeError, ValueError) as error:  # Edited by hand: a field's type, not an object.
        raise ValueError(
            f"Expected the run config as an object of TrainConfig fields ({error}). "
            f"Received: path={path!r}"
        ) from error
