"""What one experiment runs: `ExperimentConfig`, its names, settings and their checks.

`launch.experiment` maps its flags onto these fields (one each, same name);
`driver.run_experiment` runs the config and records `settings()` in NAME.json.

Example:
    >>> config = ExperimentConfig("interpolation", models=["runs/fc8"], photos=paths, steps=8)
"""

from __future__ import annotations

import dataclasses

COMPARED = ("interpolation", "perturbation", "random_samples", "dark_knowledge", "single_neuron")
"""The per-model experiments, which autoencoder_vs_fixed also runs on both models."""
EXPERIMENTS = ("layers", *COMPARED, "autoencoder_vs_fixed")

_NOT_SETTINGS = ("name", "models", "photos", "out")
"""Fields that say what ran on what; the others are the settings recorded in NAME.json."""


@dataclasses.dataclass
class ExperimentConfig:
    """One experiment: which, on which models and photos, and its settings.

    Attributes:
        name: one of `EXPERIMENTS`.
        models: work dirs or exports (`keras_invert.load`); for
            autoencoder_vs_fixed, the fixed work dir then the autoencoder's.
        photos: image files shown (two or more).
        out: folder of NAME.png and NAME.json.
        data: the data source `build_dataset` reads (recorded).
        split: the split the photos come from (recorded).
        steps, pair: interpolation: blends (both ends included) and the
            indices of the two photos.
        dropout_rate, dropout_keep_norm: perturbation's dropout.
        distribution, covariance, bins, num_samples: random_samples.
        fit_split, fit_examples: training crops whose features fit
            random_samples' distribution and single_neuron's values.
        top_k: dark_knowledge's k.
        units, activation, percentile: single_neuron: the units, and their
            value (None: the `percentile` of each unit over the fit features).
        seed: seed of every random draw.
        retrain_steps, retrain_learning_rate, retrain_batch_size,
            retrain_split: perturbation's fine-tuned decoders (0 steps: none).
        compare: autoencoder_vs_fixed: the experiments also run on both models.
    """

    name: str
    models: tuple
    photos: tuple
    out: str = "runs/experiments"
    data: str = "samples"
    split: str = "test"
    steps: int = 8
    pair: tuple = (0, 1)
    dropout_rate: float = 0.5
    dropout_keep_norm: bool = True
    distribution: str = "histogram"
    covariance: str = "full"
    bins: int = 32
    num_samples: int = 8
    fit_split: str = "train"
    fit_examples: int = 256
    top_k: int = 5
    units: tuple = tuple(range(8))
    activation: float | None = None
    percentile: float = 99.0
    seed: int = 0
    retrain_steps: int = 0
    retrain_learning_rate: float = 1e-4
    retrain_batch_size: int = 16
    retrain_split: str = "train"
    compare: tuple = COMPARED

    def __post_init__(self):
        for name in ("models", "photos", "pair", "units", "compare"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.name not in EXPERIMENTS:
            raise ValueError(
                f"Expected an experiment in {EXPERIMENTS}. Received: name={self.name!r}"
            )
        unknown = sorted(set(self.compare) - set(COMPARED))
        if unknown:
            raise ValueError(f"Expected experiments from {COMPARED}. Received: compare={unknown!r}")
        if self.retrain_steps and "perturbation" not in self.experiments:
            raise ValueError(
                "Expected retrain_steps=0 without the perturbation experiment, whose decoders "
                f"it fine-tunes. Received: retrain_steps={self.retrain_steps!r}"
            )
        if len(self.photos) < 2:
            raise ValueError(f"Expected at least two photos. Received: photos={self.photos!r}")
        count = len(self.photos)
        if "interpolation" in self.experiments and (
            len(self.pair) != 2
            or not all(0 <= index < count for index in self.pair)
            or self.pair[0] == self.pair[1]  # A photo interpolated with itself shows nothing.
        ):
            raise ValueError(
                f"Expected two different photo indices below {count}. Received: pair={self.pair!r}"
            )

    @property
    def compared(self) -> list:
        """The experiments run on both models of autoencoder_vs_fixed (none for the others)."""
        return list(self.compare) if self.name == "autoencoder_vs_fixed" else []

    @property
    def experiments(self) -> list:
        return [self.name, *self.compared]

    def settings(self) -> dict:
        values = dataclasses.asdict(self)
        return {key: value for key, value in values.items() if key not in _NOT_SETTINGS}
