"""The validated arguments of one dataset: `DatasetConfig`, checked when it is made.

`build_dataset(...)` turns its keyword arguments into a `DatasetConfig`
first, so every argument is checked, and every default resolved, before a
file is listed or read. The defaults that depend on other arguments
(`image_size` from the representation; `training` from the split;
`repeat`, `drop_remainder` and `deterministic` from `training` and `seed`)
are resolved here, once. `seed` stays as given: None means that
`build_dataset` draws one (see `pipelines.builder`).

Example:
    >>> config = DatasetConfig("samples", "train", representation="hog", batch_size=8)
    >>> config.image_size, config.training, config.repeat
    (256, True, True)
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from keras_invert import feature_placement, registry


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """The arguments of `build_dataset`, validated, with their defaults resolved.

    The fields are `build_dataset`'s arguments (see its docstring), except
    that `representation` is a `registry.Representation`, `encoder_options`
    are the resolved ones (`registry.resolved_encoder_options`), and the
    None defaults of `image_size`, `training`, `repeat`, `drop_remainder`
    and `deterministic` are replaced by their values.

    Raises:
        ValueError: an argument is invalid, or arguments conflict (a cache
            with a tf.data service, `cache_features` without a cache or
            a network encoder, `features_in_model` for SIFT or a network),
            naming the argument.
    """

    source: str
    split: str = "train"
    representation: registry.Representation | str = "hog"
    image_size: int | None = None
    batch_size: int = 32
    training: bool | None = None
    seed: int | None = None
    cache_dir: str | None = None
    crops_per_image: int = 8
    min_crop_scale: float = 0.35
    color_jitter: float = 0.0
    repeat: bool | None = None
    encoder_options: dict | None = None
    drop_remainder: bool | None = None
    deterministic: bool | None = None
    start_step: int = 0
    num_shards: int = 1
    shard_index: int = 0
    data_service: str | None = None
    cache_features: bool = False
    features_in_model: bool = False

    def __post_init__(self):
        representation = _resolve_representation(self.representation)
        image_size = representation.image_size(self.image_size)
        _check_arguments(
            image_size,
            self.batch_size,
            self.crops_per_image,
            self.min_crop_scale,
            self.seed,
            self.encoder_options,
            self.color_jitter,
        )
        _check_distribution(self.start_step, self.num_shards, self.shard_index, self.data_service)
        feature_placement.check_cache_features(
            self.cache_features, cache_dir=self.cache_dir, representation=representation
        )
        feature_placement.check_features_in_model(self.features_in_model, representation)
        encoder_options = registry.resolved_encoder_options(representation, self.encoder_options)
        if self.data_service is not None:
            _check_service_inputs(representation, self.source, self.cache_dir)
        training = self.training
        if training is None:
            training = self.split == "train" or self.split.startswith("train[")
        resolved = dict(
            representation=representation,
            image_size=image_size,
            encoder_options=encoder_options,
            training=training,
            repeat=training if self.repeat is None else self.repeat,
            drop_remainder=training if self.drop_remainder is None else self.drop_remainder,
            deterministic=(
                self.seed is not None or not training
                if self.deterministic is None
                else self.deterministic
            ),
        )
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @property
    def target_size(self) -> int:
        """Side T of the targets: the decoder's output side for `image_size`."""
        return self.representation.target_size(self.image_size)

    @property
    def feature_shape(self) -> tuple:
        """Shape of one element's "features" as the dataset yields them."""
        if self.yields_crops:
            return (self.image_size, self.image_size, 3)
        return tuple(self.representation.feature_shape(self.image_size))

    @property
    def yields_crops(self) -> bool:
        """Whether the "features" are the crops: the training model computes the features.

        Network encoders (AlexNet) run inside the training model, on the
        accelerator, unless their features are cached; HOG and LBP do with
        `features_in_model`.
        """
        if self.features_in_model:
            return True
        return self.representation.encode_in_model and not self.cache_features

    @property
    def first_position(self) -> int:
        """This pipeline's first element position in the whole, unsharded stream.

        The first element of batch `start_step`, offset by the shard; the
        pipeline then takes every `num_shards`-th position.
        """
        return self.start_step * self.batch_size * self.num_shards + self.shard_index


def check_positive_int(name: str, value) -> None:
    """Refuses anything but a positive integer (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")


def _resolve_representation(representation) -> registry.Representation:
    if isinstance(representation, str):
        return registry.get(representation)
    if not isinstance(representation, registry.Representation):
        raise ValueError(
            "Expected a registry name or a registry.Representation. "
            f"Received: representation={representation!r}"
        )
    return representation


def _check_arguments(
    image_size, batch_size, crops_per_image, min_crop_scale, seed, encoder_options, color_jitter
) -> None:
    check_positive_int("image_size", image_size)
    check_positive_int("batch_size", batch_size)
    check_positive_int("crops_per_image", crops_per_image)
    if not 0.0 <= float(color_jitter) <= 1.0:
        raise ValueError(
            f"Expected 0 <= color_jitter <= 1. Received: color_jitter={color_jitter!r}"
        )
    if not 0.0 < float(min_crop_scale) <= 1.0:
        raise ValueError(
            f"Expected 0 < min_crop_scale <= 1. Received: min_crop_scale={min_crop_scale!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"Expected an integer seed or None. Received: seed={seed!r}")
    if encoder_options is not None and not isinstance(encoder_options, dict):
        raise ValueError(f"Expected a dict or None. Received: encoder_options={encoder_options!r}")


def _check_distribution(start_step, num_shards, shard_index, data_service) -> None:
    if (
        isinstance(start_step, bool)
        or not isinstance(start_step, (int, np.integer))
        or start_step < 0
    ):
        raise ValueError(
            f"Expected an integer start_step >= 0. Received: start_step={start_step!r}"
        )
    check_positive_int("num_shards", num_shards)
    if (
        isinstance(shard_index, bool)
        or not isinstance(shard_index, (int, np.integer))
        or not 0 <= shard_index < num_shards
    ):
        raise ValueError(
            f"Expected 0 <= shard_index < num_shards={num_shards}. "
            f"Received: shard_index={shard_index!r}"
        )
    if data_service is not None and (
        not isinstance(data_service, str)
        or not re.fullmatch(r"(grpc://)?[^:/\s]+:\d+", data_service)
    ):
        raise ValueError(
            "Expected a tf.data service dispatcher address 'grpc://HOST:PORT' or None. "
            f"Received: data_service={data_service!r}"
        )


def _check_service_inputs(representation, source, cache_dir) -> None:
    """What a tf.data service needs: no cache, a file source, an in-graph encoder."""
    if cache_dir is not None:
        raise ValueError(
            "Expected cache_dir=None with a data_service: the cache path computes the "
            "features once on this machine, leaving nothing expensive for the service. "
            f"Received: cache_dir={cache_dir!r}"
        )
    if isinstance(source, str) and source.startswith("tfds:"):
        raise ValueError(
            "Expected a 'samples' or 'folder:PATH' source with a data_service (its "
            "positions are split among the workers; TFDS record streams are not). "
            f"Received: source={source!r}"
        )
    if not representation.in_graph:
        raise ValueError(
            "Expected an in-graph encoder with a data_service: the service's workers run "
            "the serialised dataset graph, which cannot hold a numpy_function. "
            f"Received: representation={representation.name!r}"
        )
