"""Builds a run's compiled training model, in the run's precision.

Implements docs/reference.md, Training: the squared Euclidean pixel loss
(mean squared error: the same minimiser, a constant scale), minimised by the
run's optimiser (`keras_invert.optimizers`: Adam, the learning rate lowered
towards the end or warmed up and decayed on a cosine, optional EMA). The
training model is the decoder, the encoder and decoder (`Reconstructor`) for
a network encoder computed in the train step (or for HOG and LBP with
`features_in_model`), and either inside a `losses.PerceptualModel` for the
"perceptual" and "deepsim" losses.
`check_restored` refuses a restored model that another config trained;
`check_shapes` refuses a work dir's model whose shapes its config does not
give (`keras_invert.load`), `check_layers` one whose decoder it would build
with another width or slope.

Example:
    >>> from keras_invert import building, config
    >>> model = building.build_model(presets.preset("demo_hog"))
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import keras
import numpy as np

from keras_invert import config as config_lib
from keras_invert import feature_placement, losses, registry
from keras_invert.config import TrainConfig
from keras_invert.discriminator import build_discriminator
from keras_invert.optimizers import build_optimizer
from keras_invert.reconstructor import Encoder, FeatureEncoder, Reconstructor


def use_averaged_weights(model: keras.Model) -> keras.Model:
    """Copies the optimiser's moving averages into the trained weights (without EMA: nothing).

    The trained weights are the generator's for a `losses.PerceptualModel`,
    whose optimiser averages those alone. Returns `model`.
    """
    model.optimizer.finalize_variable_values(losses.unwrap(model).trainable_variables)
    return model


def check_config(config: TrainConfig) -> registry.Representation:
    """Checks the fields that depend on the representation; returns the representation."""
    representation = registry.get(config.representation)
    if not representation.encode_in_model and (
        config.autoencoder or config.encoder_weights is not None
    ):
        raise ValueError(
            "autoencoder and encoder_weights need a network encoder (alexnet/..., "
            "efficientnet-lite0/..., keras:...). "
            f"Received: representation={config.representation!r}"
        )
    feature_placement.check_cache_features(
        config.cache_features, cache_dir=config.cache_dir, representation=representation
    )
    feature_placement.check_features_in_model(config.features_in_model, representation)
    if config.cache_features:
        weights = config_lib.encoder_options(config).get("weights")
        if representation.random_without_weights and weights is None:
            raise ValueError(
                f"cache_features needs encoder_weights for {config.representation}: without "
                "them the encoder is random, drawn anew whenever it is built, so the cached "
                "features would not be those of the encoder rebuilt for export and evaluation. "
                "Received: encoder_weights=None"
            )
    return representation


def uses_reconstructor(config: TrainConfig, representation: registry.Representation) -> bool:
    """Whether the training model holds the encoder: a network not fed from a feature cache,
    or a feature op with `features_in_model`."""
    if config.features_in_model:
        return True
    return representation.encode_in_model and not config.cache_features


@contextlib.contextmanager
def precision_scope(precision: str):
    """Layers created (and models compiled) inside compute in `precision`.

    Sets Keras's global dtype policy for the duration only, so models built
    elsewhere keep theirs. Under "mixed_float16" `compile` wraps the
    optimiser in a `LossScaleOptimizer`; the decoders' output layer stays
    float32 (`decoders.build_from_table`).

    Example:
        >>> with precision_scope("mixed_bfloat16"):
        ...     model = build_model(run)
    """
    if precision not in config_lib.PRECISIONS:
        raise ValueError(
            f"Expected precision in {config_lib.PRECISIONS}. Received: precision={precision!r}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _in_precision(build):
    """Runs `build(config, ...)` inside `precision_scope(config.precision)`."""

    @functools.wraps(build)
    def wrapper(config, *args, **kwargs):
        with precision_scope(config.precision):
            return build(config, *args, **kwargs)

    return wrapper


@_in_precision
def build_model(config: TrainConfig) -> keras.Model:
    """The compiled training model of `config`, freshly initialised.

    For feature representations (HOG, LBP, SIFT) this is the decoder, fed
    with features. For a network encoder (`encode_in_model`: AlexNet) it is a
    `Reconstructor`, `images -> encoder -> decoder`, so that the network runs
    on the accelerator inside the train step: the encoder starts from
    `config.encoder_weights` (random without) and stays frozen, or with
    `config.autoencoder` is trained jointly with the decoder (docs/reference.md,
    Training, the paper's two modes). With `config.cache_features` the
    fixed network's features come from the pipeline's cache, and the
    training model is the decoder alone. With `config.features_in_model`
    HOG or LBP is that fixed encoder (`FeatureEncoder`, no weights).
    """
    representation = check_config(config)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    image_size = representation.image_size(config.image_size)
    model = representation.build_decoder(
        image_size,
        width=config.width,
        negative_slope=config.negative_slope,
        mean_colour=config.mean_colour,
    )
    if uses_reconstructor(config, representation):
        options = config_lib.encoder_options(config)
        if config.features_in_model:
            # float32 like the op inside: the wrapper would round the pixels first.
            features = FeatureEncoder(config.representation, options, name="features")
            encoder = Encoder(features, trainable=False, name="encoder", dtype="float32")
        else:
            network = representation.make_encoder(**options)
            encoder = Encoder(network, trainable=config.autoencoder, name="encoder")
        model = Reconstructor(encoder, model, image_size, name="reconstructor")
    if config.loss == "pixel":
        model.compile(
            optimizer=build_optimizer(config),
            loss="mean_squared_error",
            jit_compile=config.jit_compile,
        )
        return model
    return _perceptual_model(config, model)


def _perceptual_model(config: TrainConfig, generator: keras.Model) -> keras.Model:
    """`generator` inside a compiled `losses.PerceptualModel` ("perceptual", "deepsim")."""
    comparator = comparator_representation(config.comparator or config_lib.DEFAULT_COMPARATOR)
    options = {} if config.comparator_weights is None else {"weights": config.comparator_weights}
    model = build_perceptual_model(
        generator,
        comparator.make_encoder(**options),
        config_lib.loss_weights(config),
        width=config.width,
        negative_slope=config.negative_slope,
        pause_ratio=config.discriminator_pause_ratio,
    )
    discriminator_optimizer = None
    if model.discriminator is not None:
        rate = config.discriminator_learning_rate or config.learning_rate
        discriminator_optimizer = build_optimizer(
            config_lib.replace(config, learning_rate=rate), average=False
        )
    model.compile(
        optimizer=build_optimizer(config),
        discriminator_optimizer=discriminator_optimizer,
        jit_compile=config.jit_compile,
    )
    return model


def decoder_of(model: keras.Model) -> keras.Model:
    """The decoder inside a training model: a decoder, a `Reconstructor` or a `PerceptualModel`."""
    generator = losses.unwrap(model)
    return generator.decoder if isinstance(generator, Reconstructor) else generator


def check_restored(model: keras.Model, config: TrainConfig, work_dir: str) -> None:
    """Refuses a model restored from `work_dir` that `config` would not have built.

    Raises:
        ValueError: the model holds its encoder and `config` caches features
            or computes them in the pipeline (or the reverse), it was
            trained with another `autoencoder` or `precision`, its shapes
            are not those `config` gives (`check_shapes`), or its decoder
            is of another width or leaky ReLU slope (`check_layers`).
    """
    representation = registry.get(config.representation)
    # Unwrapped: a perceptual/deepsim run's generator holds the encoder.
    network = losses.unwrap(model)
    if isinstance(network, Reconstructor) != uses_reconstructor(config, representation):
        held = "holds" if isinstance(network, Reconstructor) else "lacks"
        raise ValueError(
            f"The checkpoints in {work_dir} are of a model that {held} its encoder. "
            f"Received: cache_features={config.cache_features!r}, "
            f"features_in_model={config.features_in_model!r}"
        )
    if isinstance(network, Reconstructor) and network.encoder.trainable != config.autoencoder:
        raise ValueError(
            f"The checkpoints in {work_dir} were trained with autoencoder="
            f"{network.encoder.trainable}. Received: autoencoder={config.autoencoder!r}"
        )
    if _precision(model) != config.precision:
        # Restored in another policy, the optimiser state would be silently dropped.
        raise ValueError(
            f"The checkpoints in {work_dir} were trained with precision="
            f"{_precision(model)!r}. Received: precision={config.precision!r}"
        )
    check_shapes(model, config, work_dir)
    check_layers(model, config, work_dir)


def check_layers(model: keras.Model, config: TrainConfig, work_dir: str) -> None:
    """Refuses a model whose decoder `config` would build with other layers.

    A `config.json` edited to another `width` or `negative_slope` would
    otherwise resume the checkpoints' own network while the config misstates
    it. Builds the config's decoder (a throw-away; call it outside a
    distribution strategy's scope) and compares each layer that has weights
    or a slope, by name: the weights' shapes and the slope.

    Raises:
        ValueError: naming the first layer that differs, the config file, and
            what each gives.
    """
    representation = registry.get(config.representation)
    expected = representation.build_decoder(
        config.image_size,
        width=config.width,
        negative_slope=config.negative_slope,
        mean_colour=config.mean_colour,
    )
    given, held = _layer_layout(expected), _layer_layout(decoder_of(model))
    path = os.path.join(work_dir, config_lib.CONFIG_FILE)
    if list(given) != list(held):
        raise ValueError(
            f"Expected the decoder in {work_dir} to have the layers its config gives "
            f"(config.json edited, or the model replaced?). Received: {path} gives layers "
            f"{list(given)}; the model has {list(held)}"
        )
    for name, (shapes, slope) in given.items():
        if held[name] != (shapes, slope):
            raise ValueError(
                f"Expected the decoder in {work_dir} to be the network its config gives "
                f"(config.json edited, or the model replaced?). Received: {path} gives "
                f"width={config.width}, negative_slope={config.negative_slope}: its layer "
                f"{name!r} would have {_describe_layer(shapes, slope)}, the model's has "
                f"{_describe_layer(*held[name])}"
            )


def _layer_layout(decoder: keras.Model) -> dict:
    """`{name: (weight shapes, leaky ReLU slope or None)}` of the layers width and slope set."""
    return {
        layer.name: (
            [tuple(weight.shape) for weight in layer.weights],
            getattr(layer, "negative_slope", None),
        )
        for layer in decoder.layers
        if layer.weights or isinstance(layer, keras.layers.LeakyReLU)
    }


def _describe_layer(shapes, slope) -> str:
    return f"negative_slope {slope}" if slope is not None else f"weights of shapes {shapes}"


def check_shapes(model: keras.Model, config: TrainConfig, work_dir: str) -> None:
    """Refuses a model from `work_dir` whose shapes are not those `config` builds.

    A `config.json` edited by hand or a `model.keras` replaced by another
    run's would otherwise fail later, in an error about the caller's photos
    or features rather than the work dir.

    Raises:
        ValueError: the decoder takes other features than the representation
            gives at the config's image size, or the model holding its encoder
            takes another image size; the error names the config file and both.
    """
    representation = registry.get(config.representation)
    image_size = representation.image_size(config.image_size)
    path = os.path.join(work_dir, config_lib.CONFIG_FILE)
    network = losses.unwrap(model)
    if isinstance(network, Reconstructor) and network.image_size != image_size:
        raise ValueError(
            f"Expected the model in {work_dir} to take the image size its config gives. "
            f"Received: image_size={image_size} in {path}, {network.image_size} in the model"
        )
    given = tuple(int(side) for side in representation.feature_shape(image_size))
    taken = tuple(decoder_of(model).input_shape[1:])
    if given != taken:
        raise ValueError(
            f"Expected the model in {work_dir} to take the features its config gives "
            f"(config.json edited, or the model replaced?). Received: {path} gives "
            f"{config.representation} features of shape {given} at image_size={image_size}; "
            f"the model takes {taken}"
        )


def activation_bytes(model: keras.Model) -> int:
    """Bytes of the decoder's layer outputs for one example.

    A training step keeps them all for its backward pass, so `batch_size`
    times this is a lower bound of a step's memory (gradients, the optimiser
    and an encoder in the model come on top).
    """
    total = 0
    for layer in decoder_of(model).layers:
        for output in keras.tree.flatten(layer.output):
            size = keras.backend.standardize_dtype(output.dtype)
            total += math.prod(output.shape[1:]) * (2 if size.endswith("16") else 4)
    return total


def _precision(model: keras.Model) -> str:
    """The dtype policy the model's layers were built in (its output layer is float32)."""
    mixed = {layer.dtype_policy.name for layer in model.layers} - {"float32"}
    return mixed.pop() if len(mixed) == 1 else "float32"


def describe(model: keras.Model, cached_network: bool = False) -> str:
    """What a training model is, for the log: its parts and their parameter counts."""
    generator = losses.unwrap(model)
    if generator is not model:
        kind = "deepsim" if model.discriminator is not None else "perceptual"
        return f"{describe(generator, cached_network)}, {kind} loss"
    on_cached = ", fed cached features of the fixed encoder" if cached_network else ""
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if not isinstance(model, Reconstructor):
        return f"decoder ({trainable:,} parameters){on_cached}"
    if isinstance(model.encoder.layer, FeatureEncoder):
        return f"features + decoder, the features computed in the model ({trainable:,} parameters)"
    mode = "autoencoder, encoder trained" if model.encoder.trainable else "fixed encoder"
    return (
        f"encoder + decoder, {mode} ({model.encoder.count_params():,} encoder and "
        f"{model.decoder.count_params():,} decoder parameters, {trainable:,} trained)"
    )


def comparator_representation(name: str):
    """The registry entry of comparator `name`, which must be a network (`encode_in_model`).

    Example:
        >>> network = comparator_representation("alexnet/conv5").make_encoder(weights=...)
    """
    representation = registry.get(name)
    if not representation.encode_in_model:
        raise ValueError(
            "The comparator must be a network representation (e.g. alexnet/conv5). "
            f"Received: comparator={name!r}"
        )
    return representation


def build_perceptual_model(
    generator: keras.Model,
    comparator,
    loss_weights,
    *,
    width: float = 1.0,
    negative_slope: float = 0.2,
    pause_ratio: float = 0.1,
) -> losses.PerceptualModel:
    """A `PerceptualModel` around `generator`, with a discriminator when it is needed.

    Args:
        generator: a decoder or a `Reconstructor`.
        comparator: the frozen network (`Encoder` or `keras.Model`, RGB 0..255 in).
        loss_weights: `(pixel, feature, adversarial)`; a positive adversarial
            weight adds `build_discriminator(...)`, conditioned on the
            generator's input features.
        width, negative_slope: the discriminator's (the decoder's settings).
        pause_ratio: see `PerceptualModel`.
    """
    weights = config_lib.check_loss_weights(loss_weights)
    discriminator = None
    if weights[2] > 0:
        encoder = getattr(generator, "encoder", None)
        condition = generator.input_shape
        if encoder is not None:
            condition = encoder.compute_output_shape(generator.input_shape)
        discriminator = build_discriminator(
            generator.output_shape[1:], condition[1:], width=width, negative_slope=negative_slope
        )
    return losses.PerceptualModel(
        generator, comparator, discriminator, weights, pause_ratio, name="perceptual"
    )
