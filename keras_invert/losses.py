"""Perceptual and adversarial training losses: Dosovitskiy & Brox, NIPS 2016 ("DeepSiM").

The paper this package implements trains decoders on the squared Euclidean
pixel loss alone (`loss="pixel"`, a plain compiled model). Its follow-up,
"Generating Images with Perceptual Similarity Metrics based on Deep
Networks" (NIPS 2016), adds two terms, because the pixel loss averages over
the plausible images and so blurs them:

    loss = w_pixel * L_pixel + w_feature * L_feature + w_adversarial * L_adversarial

- `L_pixel`: mean squared error of the [0, 1] images (the paper's `L_img`).
- `L_feature`: the squared distance of the reconstruction and the target in
  the space of a frozen *comparator* network `C`, relative to the target
  features' squared norm (choice: the paper sums unnormalised Caffe
  activations; the ratio makes the weight independent of the comparator's
  scale). Both images go to `C` as RGB 0..255, the encoders' convention.
- `L_adversarial`: the non-saturating GAN loss, `-log D(G(y), y)`, of a
  discriminator `D` trained at the same time to tell real images from
  reconstructions (`-log D(x, y) - log(1 - D(G(y), y))`), with its own
  optimiser.

`loss="perceptual"` is pixel + feature (no GAN); `loss="deepsim"` all three.
As in DeepSiM, the discriminator's update is skipped on a step where it is
far ahead: its loss below `pause_ratio` (0.1) times the generator's
adversarial loss on the same batch. The rule reads only the step's batch and
weights, so a resumed run pauses where the uninterrupted one did; the logged
`paused` is the fraction of the epoch's steps skipped.
`PerceptualModel` wraps the generator (a decoder, or a `Reconstructor` for
AlexNet), the comparator and the discriminator, and overrides `train_step`,
so Keras `fit`, callbacks, checkpoints and resumption work unchanged. Calling
it (or `predict`) gives reconstructions; `.generator` is the trained model
alone, which evaluation and export unwrap.

The paper's weights, as recalled, were lambda_feat = 0.01, lambda_adv = 100,
lambda_img = 2e-6 (paper) on its unnormalised sums (Caffe pixel values,
AlexNet activations); they do not carry over to the normalised terms here.
The defaults of `config.DEFAULT_LOSS_WEIGHTS` are a choice.

The discriminator is `keras_invert.discriminator.build_discriminator`;
`keras_invert.building.build_perceptual_model` puts the three together.

TensorFlow is used for the gradient tapes of `train_step`, the TF backend's
documented way ("Customizing what happens in fit() with TensorFlow").

Example:
    >>> from keras_invert import losses, registry
    >>> decoder = registry.get("hog").build_decoder(128, width=0.25)
    >>> comparator = registry.get("alexnet/conv5").make_encoder(weights="caffenet.weights.h5")
    >>> model = losses.PerceptualModel(decoder, comparator, loss_weights=(1.0, 1.0, 0.0))
    >>> model.compile(optimizer="adam")
    >>> model.fit(dataset, steps_per_epoch=50, epochs=2)  # logs loss, pixel, feature
"""

from __future__ import annotations

import math

import keras
from keras import ops
from keras.saving import deserialize_keras_object, serialize_keras_object

from keras_invert import distribute
from keras_invert.config import check_loss_weights
from keras_invert.reconstructor import Encoder

# Keeps the relative feature loss finite for an all-zero target (e.g. a dark crop).
_EPSILON = 1e-8


def _mean_over_replicas(values):
    """The mean of `values` over the global batch, when each replica holds a part of it.

    The feature loss divides by the targets' mean squared feature. Under a
    `tf.distribute` strategy each replica sees only its share of the batch,
    and the mean of the replicas' ratios is not the ratio over the whole
    batch: the loss, and its gradient, would depend on how the batch is
    split (about 0.1% off on two replicas in tests/test_losses_distribute.py). The
    replicas therefore sum their squares and counts (`all_reduce`), which
    also stays exact for unequal shares; one replica, or the cross-replica
    context, already holds the whole batch.
    """
    import tensorflow as tf  # Distribution is TensorFlow's.

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return ops.mean(values)
    total, count = context.all_reduce(
        "SUM", [ops.sum(values), ops.cast(ops.size(values), values.dtype)]
    )
    return total / count


@keras.saving.register_keras_serializable(package="keras_invert")
class PerceptualModel(keras.Model):
    """A generator trained on pixel + feature (+ adversarial) losses by `fit`.

    Args:
        generator: the model being trained: a decoder (features in) or a
            `Reconstructor` (images in); it outputs `[N, T, T, 3]` images in
            [0, 1], the targets' range.
        comparator: a frozen `Encoder` (or a network, wrapped frozen) mapping
            RGB 0..255 images `[N, T, T, 3]` to features.
        discriminator: from `build_discriminator`, taking `[images,
            generator input features]`; needed when the adversarial weight
            is positive, refused otherwise.
        loss_weights: `(pixel, feature, adversarial)`, non-negative.
        pause_ratio: the discriminator skips its update while its loss is
            below this multiple of the generator's adversarial loss (0: never).
        **kwargs: standard model arguments (`name`).

    Attributes:
        generator, comparator, discriminator: the three networks.
        discriminator_optimizer: set by `compile`.

    Example:
        >>> model = PerceptualModel(decoder, comparator, discriminator, (1.0, 1.0, 0.01))
        >>> model.compile(optimizer=keras.optimizers.Adam(6e-4),
        ...               discriminator_optimizer=keras.optimizers.Adam(6e-4))
        >>> history = model.fit(dataset, steps_per_epoch=50, epochs=4)
        >>> sorted(history.history)
        ['adversarial', 'discriminator', 'feature', 'loss', 'paused', 'pixel']
    """

    def __init__(
        self,
        generator,
        comparator,
        discriminator=None,
        loss_weights=(1.0, 1.0, 0.0),
        pause_ratio=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not (isinstance(pause_ratio, float | int) and 0 <= pause_ratio < math.inf):
            raise ValueError(
                "Expected pause_ratio as a finite number >= 0. "
                f"Received: pause_ratio={pause_ratio!r}"
            )
        if not isinstance(comparator, Encoder):
            comparator = Encoder(comparator, trainable=False, name="comparator")
        if comparator.trainable:
            raise ValueError(
                "The comparator must be frozen (trainable=False). "
                f"Received: comparator={comparator.name!r}"
            )
        weights = check_loss_weights(loss_weights)
        if (weights[2] > 0) != (discriminator is not None):
            raise ValueError(
                "A discriminator goes with a positive adversarial weight, and only then. "
                f"Received: loss_weights={loss_weights!r}, discriminator="
                f"{None if discriminator is None else discriminator.name!r}"
            )
        if not comparator.built:
            # Built now so that its frozen weights are saved with the model.
            comparator.build(generator.output_shape)
        self.generator = generator
        self.comparator = comparator
        self.discriminator = discriminator
        self.pixel_weight, self.feature_weight, self.adversarial_weight = weights
        self.pause_ratio = float(pause_ratio)
        self.discriminator_optimizer = None
        names = ["loss", "pixel", "feature"]
        if discriminator is not None:
            names += ["adversarial", "discriminator", "paused"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # The parts are functional models, built at construction.
        self.built = True

    @property
    def loss_weights(self) -> tuple[float, float, float]:
        """`(pixel, feature, adversarial)`."""
        return (self.pixel_weight, self.feature_weight, self.adversarial_weight)

    @property
    def metrics(self):
        # Only the per-component means: there is no compiled loss.
        return list(self._trackers.values())

    def call(self, inputs, training=None):
        return self.generator(inputs, training=training)

    def compile(self, optimizer="adam", discriminator_optimizer=None, **kwargs):
        """`optimizer` trains the generator (its `iterations` count steps), the other `D`.

        Args:
            optimizer: the generator's optimiser.
            discriminator_optimizer: the discriminator's (default: Adam);
                refused without a discriminator.
            **kwargs: other `keras.Model.compile` arguments (`jit_compile`);
                no `loss`: the losses are this model's.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                f"PerceptualModel computes its own losses. Received: loss={kwargs['loss']!r}"
            )
        if self.discriminator is None and discriminator_optimizer is not None:
            raise ValueError(
                "There is no discriminator to optimise (adversarial weight 0). "
                f"Received: discriminator_optimizer={discriminator_optimizer!r}"
            )
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.generator.trainable_variables)
        if self.discriminator is not None:
            discriminator_optimizer = keras.optimizers.get(discriminator_optimizer or "adam")
            if self.dtype_policy.name == "mixed_float16" and not isinstance(
                discriminator_optimizer, keras.optimizers.LossScaleOptimizer
            ):
                # As `compile` does for the generator's optimiser.
                discriminator_optimizer = keras.optimizers.LossScaleOptimizer(
                    discriminator_optimizer
                )
            self.discriminator_optimizer = discriminator_optimizer
            self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if self.discriminator_optimizer is not None:
            config["discriminator_optimizer"] = serialize_keras_object(self.discriminator_optimizer)
        return config

    def compile_from_config(self, config):
        # Both optimisers are built in `compile`, so a loaded checkpoint
        # restores their slots and step counters.
        self.compile(**deserialize_keras_object(config))

    def _condition(self, inputs):
        """What the discriminator is conditioned on: the generator's input features."""
        encoder = getattr(self.generator, "encoder", None)
        features = inputs if encoder is None else encoder(inputs, training=False)
        return ops.stop_gradient(features)

    def _features(self, images):
        return self.comparator(ops.cast(images, "float32") * 255.0, training=False)

    def component_losses(self, inputs, targets, reconstructions, target_features, condition=None):
        """`{"pixel", "feature"[, "adversarial"]}` scalar losses of one batch.

        Args:
            inputs: the generator's inputs (features, or images for a `Reconstructor`).
            targets: `[N, T, T, 3]` images in [0, 1].
            reconstructions: the generator's output for `inputs`.
            target_features: `comparator(targets * 255)`.
            condition: the discriminator's conditioning features (deepsim only).
        """
        del inputs
        reconstructions = ops.cast(reconstructions, "float32")
        targets = ops.cast(targets, "float32")
        target_features = ops.cast(target_features, "float32")
        difference = ops.cast(self._features(reconstructions), "float32") - target_features
        losses = {
            "pixel": ops.mean(ops.square(reconstructions - targets)),
            "feature": ops.mean(ops.square(difference))
            / (_mean_over_replicas(ops.square(target_features)) + _EPSILON),
        }
        if self.discriminator is not None:
            condition = ops.convert_to_tensor(condition, "float32")
            logits = self.discriminator([reconstructions, condition], training=False)
            losses["adversarial"] = ops.mean(
                keras.losses.binary_crossentropy(ops.ones_like(logits), logits, from_logits=True)
            )
        return losses

    def _total(self, losses):
        total = self.pixel_weight * losses["pixel"] + self.feature_weight * losses["feature"]
        if "adversarial" in losses:
            total = total + self.adversarial_weight * losses["adversarial"]
        return total

    def discriminator_loss(self, targets, reconstructions, condition):
        """`-log D(x, y) - log(1 - D(G(y), y))`, averaged over the batch."""
        condition = ops.convert_to_tensor(condition, "float32")
        real = self.discriminator([ops.cast(targets, "float32"), condition], training=True)
        fake = self.discriminator(
            [ops.stop_gradient(ops.cast(reconstructions, "float32")), condition], training=True
        )
        bce = keras.losses.binary_crossentropy
        return ops.mean(bce(ops.ones_like(real), real, from_logits=True)) + ops.mean(
            bce(ops.zeros_like(fake), fake, from_logits=True)
        )

    def generator_step(self, inputs, targets, condition=None):
        """One optimiser step of the generator only; returns (reconstructions, losses)."""
        import tensorflow as tf

        target_features = ops.stop_gradient(self._features(targets))
        variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            reconstructions = self.generator(inputs, training=True)
            losses = self.component_losses(
                inputs, targets, reconstructions, target_features, condition
            )
            losses["loss"] = self._total(losses)
            # Gradients are summed over replicas: each replica's share of the mean.
            scaled = losses["loss"] / tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(scaled)  # mixed_float16: loss scaling.
        self.optimizer.apply_gradients(
            zip(tape.gradient(scaled, variables), variables, strict=True)
        )
        return reconstructions, losses

    def discriminator_step(self, targets, reconstructions, condition, adversarial=None):
        """One optimiser step of the discriminator, skipped while it is far ahead.

        Args:
            targets, reconstructions, condition: the batch, the generator's
                output for it and the discriminator's conditioning features.
            adversarial: the generator's adversarial loss on this batch; the
                step is skipped when the discriminator's loss is below
                `pause_ratio` times it (averaged over replicas, so that all
                replicas decide alike). None: never skipped.

        Returns:
            `(loss, paused)`: the discriminator's loss before the step, and
            1.0 where the step was skipped, else 0.0.
        """
        import tensorflow as tf

        variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.discriminator_loss(targets, reconstructions, condition)
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.discriminator_optimizer.scale_loss(scaled)
        gradients = tape.gradient(scaled, variables)
        if adversarial is None or self.pause_ratio == 0:
            paused = ops.zeros((), "bool")
        else:
            paused = _mean_over_replicas(loss) < self.pause_ratio * _mean_over_replicas(
                ops.cast(adversarial, "float32")
            )
        optimizer = self.discriminator_optimizer
        distribute.apply_gradients_unless(paused, optimizer, gradients, variables)
        return loss, ops.cast(paused, "float32")

    def _report(self, losses):
        for name, value in losses.items():
            self._trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        condition = None if self.discriminator is None else self._condition(inputs)
        # The generator step scores its output with the discriminator as it
        # stands; the discriminator then learns from that same output.
        reconstructions, losses = self.generator_step(inputs, targets, condition)
        if self.discriminator is not None:
            losses["discriminator"], losses["paused"] = self.discriminator_step(
                targets, reconstructions, condition, losses["adversarial"]
            )
        return self._report(losses)

    def test_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        condition = None if self.discriminator is None else self._condition(inputs)
        reconstructions = self.generator(inputs, training=False)
        losses = self.component_losses(
            inputs, targets, reconstructions, self._features(targets), condition
        )
        losses["loss"] = self._total(losses)
        if self.discriminator is not None:
            losses["discriminator"] = self.discriminator_loss(targets, reconstructions, condition)
        return self._report(losses)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "generator": serialize_keras_object(self.generator),
            "comparator": serialize_keras_object(self.comparator),
            "discriminator": None
            if self.discriminator is None
            else serialize_keras_object(self.discriminator),
            "loss_weights": list(self.loss_weights),
            "pause_ratio": self.pause_ratio,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for part in ("generator", "comparator", "discriminator"):
            if config.get(part) is not None:
                config[part] = deserialize_keras_object(config[part], custom_objects=custom_objects)
        return cls(**config)


def unwrap(model: keras.Model) -> keras.Model:
    """The trained generator of a `PerceptualModel`; any other model as it is."""
    return model.generator if isinstance(model, PerceptualModel) else model
