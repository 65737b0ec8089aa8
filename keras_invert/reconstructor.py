"""One model from images to reconstructions: a representation network and its decoder.

For representations computed by a network (AlexNet), the training model is
`images -> encoder -> decoder` rather than a decoder fed with precomputed
features, so that `model.fit` runs the encoder on the accelerator inside the
train step (a CPU `tf.data` map would starve a GPU) and so that the encoder
can be trained jointly with the decoder. The paper's two modes (docs/reference.md,
Training):

- fixed encoder: the network is frozen (`trainable=False`); it also runs in
  inference mode during training, so dropout (Caffe's `drop6`/`drop7`) never
  perturbs the features the decoder learns to invert, just as the features of
  a deployed network are computed;
- autoencoder: the encoder of the same architecture is trained jointly with
  the decoder (`trainable=True`, from given weights or a random start); it
  then runs in the caller's mode, with dropout while training as in Caffe's
  training phase (choice).

A feature op in TensorFlow (HOG, LBP) can run in the training model too
(`TrainConfig.features_in_model`): `FeatureEncoder` wraps the
representation's op as a layer without weights, and the model is the same
`images -> encoder -> decoder`, with that layer as its fixed encoder.

The layers are registered serialisable: a `.keras` checkpoint of a
`Reconstructor` loads with `keras.saving.load_model` and keeps the encoder
frozen (the flag is part of the saved config).

Example:
    >>> from keras_invert.encoders import alexnet
    >>> from keras_invert.decoders import alexnet_decoder
    >>> network = alexnet("caffe", outputs=["conv5"])
    >>> encoder = Encoder(keras.Model(network.input, network.output["conv5"]), trainable=False)
    >>> model = Reconstructor(encoder, alexnet_decoder("conv5", (6, 6, 256)), image_size=227)
    >>> model.output_shape
    (None, 192, 192, 3)
"""

from __future__ import annotations

import keras
from keras import layers
from keras.saving import deserialize_keras_object, serialize_keras_object

from keras_invert import feature_placement, registry


@keras.saving.register_keras_serializable(package="keras_invert")
class Encoder(layers.Wrapper):
    """A representation network inside a training model, frozen or trained.

    When the layer is not trainable (fixed encoder), the network always runs
    in inference mode, whatever mode the enclosing model is called in; when
    it is trainable (autoencoder), it follows the caller. The `trainable`
    flag is applied to the wrapped network as well.

    Args:
        layer: the network, images `[N, S, S, 3]` in 0..255 -> one feature tensor.
        **kwargs: standard layer arguments; `trainable=False` freezes it.

    Example:
        >>> encoder = Encoder(network, trainable=False, name="encoder")
    """

    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        # Layer.__init__ set the flag before the wrapped network was tracked.
        self.layer.trainable = self.trainable

    def call(self, inputs, training=None):
        if not self.trainable:
            training = False
        return self.layer(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="keras_invert")
class FeatureEncoder(layers.Layer):
    """A representation's feature op (HOG, LBP) as a layer without weights, in float32.

    It runs `Representation.batch_encoder`, the op the input pipelines,
    the export and `keras_invert.load` run (compiled with XLA where the
    representation asks for it), so the features equal the pipeline's. It
    computes in float32 under any precision policy: a lower one would round
    the pixels before the op.

    Args:
        representation: a registered name whose encoder is a TensorFlow op
            and not a network ("hog", "lbp").
        encoder_options: keyword arguments of its encoder (e.g. `cell_size`).
        **kwargs: standard layer arguments (`name`).

    Example:
        >>> features = FeatureEncoder("hog", {"cell_size": 8})(images)  # [N, S/8, S/8, 31]
    """

    def __init__(self, representation, encoder_options=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        spec = registry.get(representation)
        feature_placement.check_features_in_model(True, spec)
        self.representation = representation
        self.encoder_options = dict(encoder_options or {})
        self._spec = spec
        self._encode = spec.batch_encoder(**self.encoder_options)

    def call(self, images):
        return self._encode(images)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._spec.feature_shape(input_shape[1]))

    def get_config(self):
        return {
            **super().get_config(),
            "representation": self.representation,
            "encoder_options": dict(self.encoder_options),
        }


@keras.saving.register_keras_serializable(package="keras_invert")
class Reconstructor(keras.Model):
    """`images -> encoder -> decoder`: a functional model trained end to end by `fit`.

    Args:
        encoder: an `Encoder` (or a network, wrapped frozen) mapping images
            `[N, image_size, image_size, 3]` in 0..255 to features.
        decoder: a decoder taking those features.
        image_size: side of the square images the model takes.
        **kwargs: standard model arguments (`name`).

    Attributes:
        encoder, decoder: the two parts; `decoder` alone maps features to
            reconstructions (the export's `from_features`).

    Example:
        >>> model = Reconstructor(Encoder(network, trainable=True), decoder, image_size=227)
    """

    def __init__(self, encoder, decoder, image_size, **kwargs):
        if not isinstance(encoder, Encoder):
            encoder = Encoder(encoder, trainable=False, name="encoder")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(
                f"`image_size` must be a positive integer. Received: image_size={image_size!r}"
            )
        images = keras.Input(shape=(image_size, image_size, 3), name="images")
        features = encoder(images)
        if tuple(features.shape[1:]) != tuple(decoder.input_shape[1:]):
            raise ValueError(
                f"The encoder gives features {tuple(features.shape[1:])} but the decoder takes "
                f"{tuple(decoder.input_shape[1:])}. Received: decoder={decoder.name!r}"
            )
        super().__init__(images, decoder(features), **kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.image_size = image_size

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": serialize_keras_object(self.encoder),
            "decoder": serialize_keras_object(self.decoder),
            "image_size": self.image_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for part in ("encoder", "decoder"):
            config[part] = deserialize_keras_object(config[part], custom_objects=custom_objects)
        return cls(**config)
