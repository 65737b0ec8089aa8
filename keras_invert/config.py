"""One configuration object per training run, with presets.

`TrainConfig` holds every choice of a run; `preset(name)` gives the starting
point (the paper's settings per representation, or the CPU demo), the launch
scripts override fields from flags, and the resolved config is written into
the work dir as `config.json`. That file is the single source of truth: a run
started again with the same work dir reads it back and resumes.

Example:
    >>> from keras_invert import config
    >>> run = config.preset("demo")
    >>> run = config.replace(run, steps=200)
    >>> config.save(run, "/tmp/work")  # writes /tmp/work/config.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (SPEC.md section 3).

    Args:
        representation: registry name ("hog", ...).
        data: pipeline source ("samples", "folder:PATH", "tfds:NAME[/CONFIG]").
        train_split, test_split: source splits.
        image_size: input image side (None: the representation's default).
        width: decoder channel multiplier (1.0 = the paper's network).
        negative_slope: leaky ReLU slope.
        batch_size: global batch size.
        steps: total optimiser steps.
        steps_per_epoch: steps between checkpoints (and epoch-level logs).
        learning_rate: Adam step size (paper: about 1e-3 on ImageNet with a GPU).
        learning_rate_drops: fractions of `steps` after which the rate is divided
            by 10 ("lowered towards the end", paper).
        beta_1, beta_2: Adam moments (paper: 0.9, 0.999).
        min_crop_scale: smallest random crop side as a fraction of the short side.
        color_jitter: strength in [0, 1] of the random photometric change of
            training crops (features and targets both see it).
        seed: makes data order, crops and initialisation reproducible (None: random).
        cache_dir: on-disk feature cache (None: features computed on the fly);
            a relative path is taken inside the work dir.
        crops_per_image: crops materialised per photo when caching.
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
    """

    representation: str = "hog"
    data: str = "samples"
    train_split: str = "train"
    test_split: str = "test"
    image_size: int | None = None
    width: float = 1.0
    negative_slope: float = 0.2
    batch_size: int = 64
    steps: int = 100_000
    steps_per_epoch: int = 500
    learning_rate: float = 1e-3
    learning_rate_drops: tuple[float, ...] = (0.7, 0.9)
    beta_1: float = 0.9
    beta_2: float = 0.999
    min_crop_scale: float = 0.35
    color_jitter: float = 0.0
    seed: int | None = 0
    cache_dir: str | None = None
    crops_per_image: int = 8
    divergence_factor: float = 10.0
    summary_images: int = 4
    max_minutes: float | None = None
    encoder_options: dict = dataclasses.field(default_factory=dict)
    encoder_weights: str | None = None
    autoencoder: bool = False

    def __post_init__(self):
        checks = {
            "batch_size": self.batch_size > 0,
            "steps": self.steps > 0,
            "steps_per_epoch": self.steps_per_epoch > 0,
            "learning_rate": self.learning_rate > 0,
            "width": self.width > 0,
            "min_crop_scale": 0 < self.min_crop_scale <= 1,
            "divergence_factor": self.divergence_factor > 1,
        }
        for name, valid in checks.items():
            if not valid:
                raise ValueError(
                    f"Invalid training config field. Received: {name}={getattr(self, name)!r}"
                )
        if any(not 0 < f < 1 for f in self.learning_rate_drops):
            raise ValueError(
                "Expected learning_rate_drops as fractions in (0, 1). "
                f"Received: learning_rate_drops={self.learning_rate_drops!r}"
            )
        in_options = self.encoder_options.get("weights")
        if self.encoder_weights is not None and in_options not in (None, self.encoder_weights):
            raise ValueError(
                "Give the encoder weights once, as encoder_weights or as encoder_options"
                f"['weights']. Received: encoder_weights={self.encoder_weights!r}, "
                f"encoder_options={self.encoder_options!r}"
            )


# Presets. "paper": the published settings (GPU, ImageNet); "demo": the README's
# run on the bundled photos with 2 CPU cores (SPEC.md section 3 explains the lower rate).
_PRESETS = {
    "hog": dict(representation="hog", image_size=256, batch_size=64),
    "lbp": dict(representation="lbp", image_size=256, batch_size=64),
    # SIFT is a C call per image: its maps are computed once and cached.
    "sift": dict(representation="sift", image_size=256, batch_size=64, cache_dir="cache"),
    "demo": dict(
        representation="hog",
        data="samples",
        image_size=128,
        width=0.25,
        batch_size=16,
        steps=1500,
        steps_per_epoch=50,
        max_minutes=8.0,
        learning_rate=6e-4,
        learning_rate_drops=(0.7,),
        min_crop_scale=0.25,
        color_jitter=0.4,
        # Features of 128 crops per photo computed once: on 2 cores, computing
        # them alongside training would take cores from the training step.
        cache_dir="cache",
        crops_per_image=128,
    ),
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def preset(name: str) -> TrainConfig:
    """The preset `name` (a representation name or "demo")."""
    if name not in _PRESETS:
        raise ValueError(
            f"Unknown preset; expected one of {preset_names()}. Received: name={name!r}"
        )
    return TrainConfig(**_PRESETS[name])


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
    if "learning_rate_drops" in values:
        values["learning_rate_drops"] = tuple(values["learning_rate_drops"])
    return replace(TrainConfig(), **values)


def save(config: TrainConfig, work_dir: str) -> str:
    """Writes `work_dir/config.json` atomically and returns its path."""
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, CONFIG_FILE)
    handle, temporary = tempfile.mkstemp(dir=work_dir, prefix=".config-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(to_dict(config), file, indent=2, sort_keys=True)
        file.write("\n")
    os.replace(temporary, path)
    return path


def encoder_options(config: TrainConfig) -> dict:
    """The encoder's keyword arguments: `encoder_options` plus `encoder_weights` as `weights`."""
    options = dict(config.encoder_options)
    if config.encoder_weights is not None:
        options["weights"] = config.encoder_weights
    return options


def resolve_cache_dir(config: TrainConfig, work_dir: str) -> str | None:
    """The feature cache directory of a run (relative paths live in the work dir)."""
    if config.cache_dir is None:
        return None
    return os.path.join(work_dir, config.cache_dir)


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
    return from_dict(values)
