"""The paper's feature experiments (docs/reference.md, Experiments): features changed, decoded.

Supplementary Figures 1-10 of Dosovitskiy & Brox decode features that were
changed on purpose. The package, one job per module:

- `perturbations`: the changed features (blends, binarised, dropout, top-k,
  single units), functions on arrays.
- `distributions`: random feature vectors fitted to real ones
  (`HistogramDistribution`, `GaussianDistribution`), feature statistics.
- `finetuning`: decoders fine-tuned on perturbed features.
- `runners`: trained models and photos in, a `Figure` (rows of images,
  labels, numbers) out, one runner per experiment.
- `config`: what one experiment runs (`ExperimentConfig`).
- `driver`: one named experiment end to end, PNGs and JSON written
  (`run_experiment`: what `launch.experiment` calls).

Their public names are all importable from here.

Example:
    >>> from keras_invert import experiments
    >>> blends = experiments.interpolate(features[0], features[1], steps=8)  # [8, ...]
    >>> images = decoder.predict(blends)
    >>> histogram = experiments.HistogramDistribution.fit(train_features)
    >>> samples = histogram.sample(8, seed=0)
"""

from keras_invert.experiments.config import COMPARED, EXPERIMENTS, ExperimentConfig
from keras_invert.experiments.distributions import (
    GaussianDistribution,
    HistogramDistribution,
    feature_statistics,
    unit_values,
)
from keras_invert.experiments.driver import run_experiment
from keras_invert.experiments.finetuning import finetune_decoders, image_decoder
from keras_invert.experiments.perturbations import (
    PERTURBATIONS,
    all_but_top_k,
    binarize,
    dropout,
    interpolate,
    perturb,
    single_unit,
    top_k_only,
)
from keras_invert.experiments.runners import (
    Figure,
    check_autoencoder_pair,
    run_autoencoder_vs_fixed,
    run_dark_knowledge,
    run_interpolation,
    run_layers,
    run_perturbation,
    run_random_samples,
    run_single_neuron,
)

__all__ = [
    "COMPARED",
    "EXPERIMENTS",
    "PERTURBATIONS",
    "ExperimentConfig",
    "Figure",
    "GaussianDistribution",
    "HistogramDistribution",
    "all_but_top_k",
    "binarize",
    "check_autoencoder_pair",
    "dropout",
    "feature_statistics",
    "finetune_decoders",
    "image_decoder",
    "interpolate",
    "perturb",
    "run_autoencoder_vs_fixed",
    "run_dark_knowledge",
    "run_experiment",
    "run_interpolation",
    "run_layers",
    "run_perturbation",
    "run_random_samples",
    "run_single_neuron",
    "single_unit",
    "top_k_only",
    "unit_values",
]
