"""What a reproduction trains and measures: its config and the list of training jobs.

`ReproduceConfig` holds the few choices of a reproduction (data, scale,
which taps, AlexNet weights); `jobs` turns it into one `Job` per decoder to
train, each a set of `TrainConfig` fields over a preset. Two scales:

- "cpu" (the default): the bundled photos on 2 CPU cores in about an hour.
  Decoders at width 0.25, batch 16; the shallow features at 128 px with the
  HOG demo's schedule (`demo_hog`); the network taps on cached features (the
  encoder's weights stay fixed, so its features of 32 crops per photo are
  computed once), with fewer steps for the early taps, whose decoders are
  the most expensive (224 px maps all the way up).
- "full": the paper's decoders (width 1.0, batch 64, 256 px shallow
  features) and many more steps, for a GPU and a large photo set; no
  feature caches (fresh crops every step, the networks in the model).

`step_scale` multiplies every job's steps (quick looks, tests).

Example:
    >>> config = ReproduceConfig(out_dir="results")
    >>> [job.name for job in jobs(config)][:3]
    ['hog', 'sift', 'lbp']
"""

from __future__ import annotations

import dataclasses
import math

from keras_invert import decoders
from keras_invert.encoders import EFFICIENTNET_LITE0_TAPS
from keras_invert.encoders.alexnet import ALEXNET_LAYERS

SCALES = ("cpu", "full")
# A reproduction also evaluates, runs experiments and writes its report in one
# process, so it trains on one machine's devices; multi-worker training is
# `launch.train`'s.
STRATEGIES = ("default", "mirrored")
SHALLOW = ("hog", "sift", "lbp")
EFFICIENTNET = "efficientnet-lite0"

# Steps and Adam rate per job at scale "cpu" (2 cores, about an hour in all).
# The early taps' decoders upsample 112x112 or 56x56 maps to 224 px: a step
# costs 3-12 times a late tap's, so they get fewer. The rates were chosen by
# the held-out error (docs/reference.md, Reproduction): their short runs gain
# most from 2.4e-3 (stage3: 0.225 against 0.229 at 1.2e-3 and 0.246 at 6e-4),
# the later taps from 1.2e-3 (stage5: 0.418 against 0.430 at 2.4e-3 and 0.436 at 6e-4).
_CPU_SHALLOW_STEPS = 5000
_CPU_TAPS = {
    "stem": (600, 2.4e-3),
    "stage1": (600, 2.4e-3),
    "stage2": (1500, 2.4e-3),
    "stage3": (1500, 2.4e-3),
    "stage4": (2000, 1.2e-3),
    "stage5": (2000, 1.2e-3),
    "stage6": (2500, 1.2e-3),
    "stage7": (2500, 1.2e-3),
    "head": (2500, 1.2e-3),
    "logits": (2500, 1.2e-3),
}
_CPU_AUTOENCODER_STEPS = 1000
# The taps each experiment uses by default, when they are trained.
_DEFAULT_TAPS = {
    "autoencoder_tap": "stage4",
    "binarise_tap": "head",
    "dark_knowledge_tap": "logits",
}
_DEFAULT_OPTIMIZATION_TAPS = ("stage2", "stage5", "logits")
_CPU_ALEXNET_STEPS = 2000
_FULL_STEPS = 60_000
DEFAULT_TEST_IMAGES = 100
"""Test photos a reproduction measures on when `num_test_images` is None (at most)."""


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """The choices of one reproduction (docs/reference.md, Reproduction).

    Args:
        out_dir: where runs, evaluations, figures and `results.md` go; a
            rerun with the same `out_dir` reuses what is finished.
        data: the photo source ("samples", "folder:PATH", "tfds:NAME").
        train_split, test_split: its splits; the test photos are never trained on.
        scale: "cpu" or "full" (module docstring).
        step_scale: multiplies every job's steps (> 0).
        shallow: the shallow features to train ("hog", "sift", "lbp").
        taps: the EfficientNet-Lite0 taps to train, in depth order.
        alexnet_weights: an AlexNet weights file (Caffe, torchvision or
            Keras): its eight layers are trained too. None: skipped (random
            AlexNet weights would say nothing about the paper's network).
        autoencoder_tap: the tap trained a second time with its encoder
            (finding 6); None: not trained.
        optimization_taps: the taps also inverted by optimisation (finding 1;
            HOG always is); each costs minutes on a CPU.
        The experiments' default taps that `taps` leaves out are not run.
        binarise_tap: the tap of the binarised/dropped-features experiment.
        dark_knowledge_tap: the tap of the top-5 experiment (the classifier's logits).
        crops_per_image: crops per training photo in the network taps' feature
            caches (scale "cpu"; scale "full" caches nothing).
        shallow_crops_per_image: the same for the shallow features (the HOG demo's, `demo_hog`).
        shallow_image_size: the shallow features' crop side; None: their
            preset's (128 px at scale "cpu", 256 at "full"). 256 px, the
            paper's, brings more of the image back from HOG on the bundled
            photos, for about three times the training time (docs/reference.md,
            Reproduction).
        optimization_steps: optimisation steps (None: the original method's).
        num_test_images: test photos used, the first of the split (None: all,
            at most `DEFAULT_TEST_IMAGES`: a split such as ImageNet's 50,000
            validation photos is more than the optimisation baseline can
            invert).
        seed: of the training streams and the optimisation's noise.
        strategy: how each job trains: "default" (one device) or "mirrored"
            (every GPU of this machine, the batch split among them). A run
            may resume under another strategy.
    """

    out_dir: str
    data: str = "samples"
    train_split: str = "train"
    test_split: str = "test"
    scale: str = "cpu"
    step_scale: float = 1.0
    shallow: tuple[str, ...] = SHALLOW
    taps: tuple[str, ...] = EFFICIENTNET_LITE0_TAPS
    alexnet_weights: str | None = None
    autoencoder_tap: str | None = _DEFAULT_TAPS["autoencoder_tap"]
    optimization_taps: tuple[str, ...] = _DEFAULT_OPTIMIZATION_TAPS
    binarise_tap: str | None = _DEFAULT_TAPS["binarise_tap"]
    dark_knowledge_tap: str | None = _DEFAULT_TAPS["dark_knowledge_tap"]
    crops_per_image: int = 32
    shallow_crops_per_image: int = 128
    shallow_image_size: int | None = None
    optimization_steps: int | None = None
    num_test_images: int | None = None
    seed: int = 0
    strategy: str = "default"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"Expected scale in {SCALES}. Received: scale={self.scale!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"Expected strategy in {STRATEGIES}. Received: strategy={self.strategy!r}"
            )
        if not (math.isfinite(self.step_scale) and self.step_scale > 0):
            raise ValueError(f"Expected step_scale > 0. Received: step_scale={self.step_scale!r}")
        for name in ("shallow", "taps", "optimization_taps"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = sorted(set(self.shallow) - set(SHALLOW))
        if unknown:
            raise ValueError(f"Expected shallow features among {SHALLOW}. Received: {unknown!r}")
        # A default tap that is not trained drops out (the experiment is "not measured").
        if self.optimization_taps == _DEFAULT_OPTIMIZATION_TAPS:
            kept = tuple(tap for tap in self.optimization_taps if tap in self.taps)
            object.__setattr__(self, "optimization_taps", kept)
        for name, tap in _DEFAULT_TAPS.items():
            if getattr(self, name) == tap and tap not in self.taps:
                object.__setattr__(self, name, None)
        for name in ("taps", "optimization_taps"):
            unknown = sorted(set(getattr(self, name)) - set(EFFICIENTNET_LITE0_TAPS))
            if unknown:
                raise ValueError(
                    f"Expected {name} among {EFFICIENTNET_LITE0_TAPS}. Received: {unknown!r}"
                )
        for name in ("autoencoder_tap", "binarise_tap", "dark_knowledge_tap"):
            tap = getattr(self, name)
            if tap is not None and tap not in self.taps:
                raise ValueError(
                    f"Expected {name} among the trained taps {self.taps}. Received: {tap!r}"
                )
        for name in (
            "crops_per_image",
            "shallow_crops_per_image",
            "shallow_image_size",
            "optimization_steps",
            "num_test_images",
        ):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ValueError(f"Expected {name} a positive integer. Received: {value!r}")
        if self.shallow_image_size is not None:
            for shallow in self.shallow:
                decoders.check_shallow_image_size(
                    shallow, self.shallow_image_size, "shallow_image_size"
                )

    @property
    def test_image_count(self) -> int:
        """How many test photos to use, at most: `num_test_images`, or `DEFAULT_TEST_IMAGES`."""
        return self.num_test_images or DEFAULT_TEST_IMAGES


@dataclasses.dataclass(frozen=True)
class Job:
    """One decoder to train: its name (a folder under `out_dir/runs`), preset and fields."""

    name: str
    group: str  # "shallow", "tap", "autoencoder" or "alexnet".
    preset: str | None
    changes: dict

    @property
    def representation(self) -> str:
        return self.changes["representation"]


def tap_name(tap: str) -> str:
    """The registry name of an EfficientNet-Lite0 tap, e.g. "efficientnet-lite0/stage2"."""
    return f"{EFFICIENTNET}/{tap}"


def jobs(config: ReproduceConfig) -> list[Job]:
    """The decoders `config` trains, in the order they train and are reported."""
    common = dict(
        data=config.data,
        train_split=config.train_split,
        test_split=config.test_split,
        seed=config.seed,
        strategy=config.strategy,
        max_minutes=None,  # A job ends at its steps: "finished" means the same on every rerun.
        summary_images=0,
    )
    cpu = config.scale == "cpu"

    def steps(count: int) -> int:
        return max(1, round((count if cpu else _FULL_STEPS) * config.step_scale))

    # At scale "cpu" every job caches the features of a few fixed crops per
    # photo (the shallow ones through the "demo_hog" preset). At scale "full"
    # nothing is cached: every step reads fresh random crops, the shallow
    # features are computed in the input pipeline and the networks inside the
    # training model, as the paper trained. A cache holds every crop's
    # features densely: 32 crops of each of ImageNet's 1.28 million photos
    # would take 66 TB at the `stem` tap alone.
    if cpu:
        shallow_caching = dict(crops_per_image=config.shallow_crops_per_image)
        network_caching = dict(
            cache_dir="cache", cache_features=True, crops_per_image=config.crops_per_image
        )
    else:
        shallow_caching = network_caching = dict(cache_dir=None, cache_features=False)
    planned = []
    for name in config.shallow:
        changes = dict(
            common, representation=name, steps=steps(_CPU_SHALLOW_STEPS), **shallow_caching
        )
        if config.shallow_image_size is not None:
            changes["image_size"] = config.shallow_image_size
        # "demo_hog" is the CPU schedule for HOG; the representation presets are the paper's.
        planned.append(Job(name, "shallow", "demo_hog" if cpu else name, changes))
    network = dict(
        common,
        **network_caching,
        width=0.25 if cpu else 1.0,
        batch_size=16 if cpu else 64,
        learning_rate=6e-4 if cpu else 1e-3,  # AlexNet's at "cpu": not measured on its layers.
        learning_rate_drops=(0.7,) if cpu else (0.7, 0.9),
    )

    def tap_changes(tap: str) -> dict:
        tap_steps, rate = _CPU_TAPS[tap]
        changes = dict(network, representation=tap_name(tap), steps=steps(tap_steps))
        return dict(changes, learning_rate=rate) if cpu else changes

    for tap in config.taps:
        planned.append(Job(f"{EFFICIENTNET}-{tap}", "tap", None, tap_changes(tap)))
    if config.autoencoder_tap is not None:
        tap = config.autoencoder_tap
        changes = dict(
            tap_changes(tap),
            cache_features=False,  # The encoder trains: a cache (scale "cpu") holds crops.
            autoencoder=True,
            steps=steps(_CPU_AUTOENCODER_STEPS),
        )
        planned.append(Job(f"{EFFICIENTNET}-{tap}-autoencoder", "autoencoder", None, changes))
    if config.alexnet_weights is not None:
        for layer in ALEXNET_LAYERS:
            changes = dict(
                network,
                representation=f"alexnet/{layer}",
                encoder_weights=config.alexnet_weights,
                steps=steps(_CPU_ALEXNET_STEPS),
            )
            planned.append(Job(f"alexnet-{layer}", "alexnet", None, changes))
    return planned
