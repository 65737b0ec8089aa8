"""The record of one invertible representation: its encoder, decoder and shapes.

A `Representation` is plain data: the registry (`keras_invert.registry`) holds
one per name, and the modules that define representations
(`keras_invert.network_representations`, `keras_invert.keras_representation`)
build them without knowing the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras


@dataclasses.dataclass(frozen=True)
class Representation:
    """An image representation the package can invert.

    Args:
        name: registry key, e.g. "hog" or "alexnet/conv5".
        description: one line for `--help` texts and logs.
        make_encoder: `(**options) -> encode`, where `encode(images)` maps a float32
            batch `[N, S, S, 3]` in 0..255 to features `[N, *feature_shape(S)]`.
        decoder_builder: `(image_size, width=, negative_slope=) -> keras.Model`.
        feature_shape: image size -> feature shape (no batch axis).
        target_size: image size -> side of the decoder's output image.
        default_image_size: the paper's input size.
        in_graph: True when `encode` is pure TensorFlow (runs inside the
            SavedModel and in tf.data without `numpy_function`).
        encode_in_model: True when the encoder is a network (a `keras.Model`
            from `make_encoder`) that runs inside the training model,
            `images -> encoder -> decoder` (`keras_invert.reconstructor`), on
            the accelerator and optionally trained jointly (autoencoder).
            The pipeline then yields the crops themselves as "features".
        jit_compile: `batch_encoder` compiles `encode` with XLA (much faster
            on CPUs for fused elementwise feature ops such as HOG); only for
            encoders without variables (plain functions, not Keras layers).
        prepares_crops: True when `encode` also takes a photo's raw centre
            square, uint8 or float32 `[N, S, S, 3]` (float maybe outside
            0..255, NaN or Inf), and prepares it exactly as the crops are
            prepared (`images.prepared_pixels`: converted; clipped, and
            refused if not finite) in its own first step (LBP: its compiled
            gray conversion, one pass over the pixels). The export's image
            signatures then hand it the centre square of a photo that needs
            no resampling as it came (`images.map_prepared`).
        random_without_weights: True when `make_encoder()` without a
            `weights` option draws random weights (AlexNet): such an encoder
            cannot be built again identically, so its features are not cached.
        mean_colour_invariant: True when the features stay the same if a
            constant is added to a colour channel of the image (HOG, SIFT,
            LBP; but for pixels it pushes beyond 0..255), so that no decoder
            can read an image's mean colour from them: its decoder then
            takes `mean_colour` and has it on by default (`decoders.MeanColour`).
        make_mirror: `(image_size, **options) -> mirror` for features that
            give those of the left-right mirrored image exactly (HOG, LBP:
            `keras_invert.features.mirror`), where `mirror(features)` maps a
            batch to the mirrored images' features; it raises ValueError for
            an image size or options where the mirror would not be exact.
            None: no such mirror (SIFT's keypoints, the networks).
    """

    name: str
    description: str
    make_encoder: Callable[..., Callable]
    decoder_builder: Callable[..., keras.Model]
    feature_shape: Callable[[int], tuple[int, ...]]
    target_size: Callable[[int], int]
    default_image_size: int
    in_graph: bool = True
    encode_in_model: bool = False
    jit_compile: bool = False
    prepares_crops: bool = False
    random_without_weights: bool = False
    mean_colour_invariant: bool = False
    make_mirror: Callable[..., Callable] | None = None

    def batch_encoder(self, **encoder_options) -> Callable:
        """`make_encoder(**encoder_options)` as batches are encoded: with XLA where `jit_compile`.

        The input pipelines, the export's image signatures and
        `keras_invert.load` all encode through this, so training, serving and
        evaluation run the same compiled ops (exact to the plain ones:
        docs/reference.md, HOG).
        """
        encode = self.make_encoder(**encoder_options)
        if not self.jit_compile:
            return encode
        import tensorflow as tf

        return tf.function(encode, jit_compile=True)

    def mirror(self, image_size: int | None = None, **encoder_options) -> Callable:
        """`mirror(features)`: the features of the left-right mirrored images (`make_mirror`).

        Raises:
            ValueError: a representation without an exact mirror, or an image
                size where it is not exact.
        """
        if self.make_mirror is None:
            raise ValueError(
                "Expected a representation whose features give those of the mirrored image "
                f"exactly (hog, lbp). Received: representation={self.name!r}"
            )
        return self.make_mirror(self.image_size(image_size), **encoder_options)

    def image_size(self, image_size: int | None = None) -> int:
        """The side of the crops a run works on: `image_size`, or when None the default.

        Example:
            >>> from keras_invert import registry
            >>> registry.get("hog").image_size(None), registry.get("hog").image_size(128)
            (256, 128)
        """
        return self.default_image_size if image_size is None else image_size

    def build_decoder(
        self,
        image_size: int | None = None,
        *,
        width: float = 1.0,
        negative_slope: float = 0.2,
        mean_colour: bool | None = None,
    ) -> keras.Model:
        """Builds this representation's decoder for `image_size` input images.

        `mean_colour` (None: `mean_colour_invariant`) ends the decoder with one
        learnt mean colour for every image (`decoders.MeanColour`); only for
        representations whose features cannot tell an image's mean colour.

        Raises:
            ValueError: `mean_colour` for features that carry the mean colour.
        """
        options = {"width": width, "negative_slope": negative_slope}
        if mean_colour is None:
            mean_colour = self.mean_colour_invariant
        if mean_colour and not self.mean_colour_invariant:
            raise ValueError(
                f"Expected mean_colour only for features that cannot tell an image's mean "
                f"colour (HOG, SIFT, LBP); {self.name}'s features carry it. "
                f"Received: mean_colour={mean_colour!r}"
            )
        if mean_colour:
            options["mean_colour"] = True
        return self.decoder_builder(self.image_size(image_size), **options)
