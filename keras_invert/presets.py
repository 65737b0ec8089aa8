"""The presets: named `TrainConfig` variants, each overriding the defaults it needs.

Example:
    >>> from keras_invert import presets
    >>> presets.preset("demo_hog").steps
    5000
"""

from __future__ import annotations

from keras_invert.config import TrainConfig

# Each preset overrides `TrainConfig`'s defaults: the paper's optimiser, rate
# schedule and batch (docs/reference.md, Training). "hog", "lbp" and "sift"
# train at 256 px, for a GPU and a large photo set such as ImageNet; "demo" and
# "demo_hog" are runs on the bundled photos with 2 CPU cores (docs/reference.md, Presets).
_FULL_SIZE = dict(image_size=256, batch_size=64)
# The CPU demos: the bundled photos, a quarter-width decoder, a cache in the work dir.
_CPU = dict(
    data="samples",
    width=0.25,
    batch_size=16,
    steps_per_epoch=250,
    max_minutes=8.0,
    learning_rate=6e-4,
    learning_rate_drops=(0.7,),
    cache_dir="cache",
)
_PRESETS = {
    "hog": dict(representation="hog", **_FULL_SIZE),
    "lbp": dict(representation="lbp", **_FULL_SIZE),
    # SIFT is a C call per image: its maps are computed once and cached.
    "sift": dict(representation="sift", **_FULL_SIZE, cache_dir="cache"),
    # The README's demo: what an early layer of a real ImageNet classifier
    # keeps, learnt in a few minutes on 2 CPU cores from 23 photos
    # (docs/reference.md, Presets). The network runs once over 32 crops per
    # photo; the decoder trains on the cached features. Its rate was chosen by
    # the held-out error after 1,000 steps: 6e-4 0.189, 1.2e-3 0.169,
    # 2.4e-3 0.159, 4.8e-3 0.225 (docs/reference.md, Presets).
    "demo": dict(
        _CPU,
        representation="efficientnet-lite0/stage2",
        learning_rate=2.4e-3,
        steps=1000,
        cache_features=True,
        crops_per_image=32,
    ),
    # HOG on a CPU budget: the reproduction's schedule for the shallow features.
    # Its features of 128 crops per photo are computed once: on 2 cores,
    # computing them alongside training would take cores from the training step.
    # No colour jitter: with the learnt mean colour it cost held-out error
    # (docs/reference.md, Training, colour jitter).
    "demo_hog": dict(
        _CPU,
        representation="hog",
        image_size=128,
        steps=5000,
        min_crop_scale=0.25,
        crops_per_image=128,
    ),
}


def preset_names() -> list[str]:
    """The preset names, sorted."""
    return sorted(_PRESETS)


def preset(name: str) -> TrainConfig:
    """The preset `name` (a representation name, "demo" or "demo_hog")."""
    if name not in _PRESETS:
        raise ValueError(
            f"Unknown preset; expected one of {preset_names()}. Received: name={name!r}"
        )
    return TrainConfig(**_PRESETS[name])
