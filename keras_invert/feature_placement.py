"""Where a run's features are computed: the rules for `cache_features` and `features_in_model`.

Features are made in the input pipeline by default. A network's can be
computed once into a cache (`cache_features`), and a TensorFlow feature op's
(HOG, LBP) can run inside the training model (`features_in_model`). A run's
config (`keras_invert.config.TrainConfig`), the model builder and
`pipelines.build_dataset` all check them here, so the three agree
(docs/reference.md, Where the features are computed).

Example:
    >>> from keras_invert import registry
    >>> features_can_move_into_model(registry.get("hog"))
    True
"""

from __future__ import annotations


def check_cache_features(
    cache_features,
    *,
    cache_dir,
    representation=None,
    autoencoder: bool = False,
    data_service: str | None = None,
) -> None:
    """The one rule for `cache_features`, of a run's config and of `pipelines.build_dataset`.

    Cached features need a cache and a fixed network encoder computed in this
    process. `representation`, a `registry.Representation`, is checked when
    given (a `TrainConfig` names its representation, resolved later by
    `building.check_config`).
    """
    if not isinstance(cache_features, bool):
        raise ValueError(f"Expected a bool. Received: cache_features={cache_features!r}")
    if not cache_features:
        return
    if representation is not None and not representation.encode_in_model:
        raise ValueError(
            "cache_features applies to network encoders (alexnet/..., efficientnet-lite0/..., "
            "keras:...), whose caches otherwise hold crops; other caches always hold "
            f"features. Received: representation={representation.name!r}"
        )
    values = {"cache_dir": cache_dir, "autoencoder": autoencoder, "data_service": data_service}
    conflicts = {
        "cache_dir": (cache_dir is None, "the features are computed once, into it"),
        "autoencoder": (autoencoder, "a trained encoder's features change every step"),
        "data_service": (
            data_service is not None,
            "the cached features are read here, not made by the service",
        ),
    }
    for name, (conflict, why) in conflicts.items():
        if conflict:
            raise ValueError(
                f"cache_features needs {'a' if name == 'cache_dir' else 'no'} {name}: {why}. "
                f"Received: {name}={values[name]!r}"
            )


def features_can_move_into_model(representation) -> bool:
    """Whether `representation`'s features can be computed in the training model.

    Only a feature op that runs in TensorFlow and is not a network (HOG, LBP)
    moves: SIFT is a C library call, and a network always runs there.
    """
    return representation.in_graph and not representation.encode_in_model


def check_features_in_model(features_in_model, representation=None) -> None:
    """The one rule for `features_in_model`, of a run's config and of `pipelines.build_dataset`.

    `representation`, a `registry.Representation`, is checked when given
    (`features_can_move_into_model`).
    """
    if not isinstance(features_in_model, bool):
        raise ValueError(f"Expected a bool. Received: features_in_model={features_in_model!r}")
    if not features_in_model or representation is None:
        return
    if not features_can_move_into_model(representation):
        raise ValueError(
            "Expected with features_in_model a TensorFlow feature op that is not a network "
            "(hog, lbp): SIFT runs in C, and networks always run in the model. "
            f"Received: representation={representation.name!r}"
        )
