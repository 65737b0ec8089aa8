"""The one loader for trained things: `load(path)` for a work dir or an export.

`load` returns a `TrainedModel`, one interface for both kinds of path:

- a training work dir (it has `config.json`): the final model, else the
  newest readable checkpoint, with the encoder it was trained with (the
  network's own encoder when it was trained end to end, e.g. an
  autoencoder; else the representation's encoder built from the recorded
  options);
- a SavedModel export (an export base, whose newest version is loaded, or
  one version directory): its `from_features` signature decodes, and its
  image signature reconstructs photos inside the SavedModel, exactly as TF
  Serving does. An export without image signatures (SIFT, whose encoder is
  a C library) gets its features computed here, with the encoder options
  recorded at export (`export.client_encoder_options`).

Images go in as they come: `[N, H, W, C]`, uint8, uint16 (scaled to
0..255) or another integer or float dtype in 0..255, C = 1, 3 or 4, any H
and W; values out of range are a `ValueError`, not clipped
(`keras_invert.image_checks.check_range`). They are centre cropped and resized to
the training image size as the evaluation pipeline and the export prepare
them (`keras_invert.images.prepare`). Outputs are NumPy arrays. Photos or
features the model cannot take (another dtype or shape, NaN or Inf) are a
`ValueError` that says what was expected; an empty batch gives an empty batch.
A decoder whose output holds NaN or Inf (damaged weights, a diverged run) is
a `ValueError` naming the model, never NaN images. A damaged export (a file
missing, truncated or half-copied) is a `ValueError` naming it.

`load(path, mirror_average=True)` decodes the features and their mirror and
averages the two images (`keras_invert.mirror_averaging`; HOG and LBP); an
export decodes as it was exported, so this asks for one exported with it.

Example:
    >>> import keras_invert
    >>> model = keras_invert.load("runs/hog")  # or "exports/hog"
    >>> reconstructions = model.reconstruct(photos)  # [N, T, T, 3] in [0, 1]
    >>> features = model.encode(photos)
    >>> blends = model.decode(0.5 * features[:1] + 0.5 * features[1:2])
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import building, checkpoints, export, losses, registry
from keras_invert import config as config_lib
from keras_invert.image_checks import check_finite, check_photos, check_range
from keras_invert.images import prepare
from keras_invert.mirror_averaging import check_option, mirror_averaged

BATCH_SIZE = 16
"""Images or feature vectors per call when encoding, decoding or reconstructing."""


class TrainedModel:
    """A trained decoder with its encoder and what they were trained for.

    Attributes:
        path: the work dir, or the export version directory, loaded.
        kind: "work_dir" or "export".
        representation: the representation's name, e.g. "hog" or "alexnet/conv5".
        image_size: the side S of the photos' crops the encoder takes.
        output_size: the side T of the reconstructions.
        feature_shape: the shape of one example's features, which `decode` takes.
        encoder_options: the options the encoder runs with.
        encoder_source: "model" when the encoder is the one saved with the
            model (trained end to end, or HOG and LBP trained with
            `features_in_model`: the registry's op), "registry" when it is the
            representation's encoder built anew, "export" when `reconstruct`
            runs the SavedModel's own image signature (its `encode` is then
            the representation's encoder built from the recorded options,
            which for an exported autoencoder is not the trained one:
            load its work dir for that).
        config: the run's `TrainConfig` (work dirs), else None.
        metadata: the export's recorded metadata (exports), else None.
        model: the Keras model as saved, with its optimiser (work dirs), else None.
        decoder: the Keras decoder (work dirs), else None.
        saved_model: the loaded SavedModel (exports), else None.
        mirror_average: whether `decode` and `reconstruct` average each
            decoding with that of the mirrored features (`mirror_averaging`).
    """

    def __init__(self, *, encode, decode, reconstruct=None, **attributes):
        self._encode, self._decode, self._reconstruct = encode, decode, reconstruct
        self.path = attributes["path"]
        self.kind = attributes["kind"]
        self.representation = attributes["representation"]
        self.image_size = int(attributes["image_size"])
        self.output_size = int(attributes["output_size"])
        self.feature_shape = tuple(int(side) for side in attributes["feature_shape"])
        self.encoder_options = dict(attributes.get("encoder_options") or {})
        self.encoder_source = attributes["encoder_source"]
        self.config = attributes.get("config")
        self.metadata = attributes.get("metadata")
        self.model = attributes.get("model")
        self.decoder = attributes.get("decoder")
        # An export's loaded SavedModel: it keeps the signatures' variables alive.
        self.saved_model = attributes.get("saved_model")
        self.mirror_average = bool(attributes.get("mirror_average", False))

    def encode(self, images) -> np.ndarray:
        """The features of `images` (`[N, H, W, C]`, any size: centre cropped to S)."""
        return batched(self._encode, self._crops(images))

    def decode(self, features) -> np.ndarray:
        """Reconstructions `[N, T, T, 3]` in [0, 1] of features `[N, *feature_shape]`."""
        return self._decoded(features, given=True)

    def _decoded(self, features, *, given: bool) -> np.ndarray:
        """`decode`; `given`: the caller's features (else `encode`'s), which errors name."""
        values = _array(features, "features")
        if values.dtype.kind == "f":
            # Before the float32 cast, which would turn a float64 1e39 into Inf.
            check_finite(values, "feature values")
        features = _array(values, "features", np.float32)
        if features.shape[1:] != self.feature_shape:
            raise ValueError(
                f"Expected features of shape [N, {', '.join(map(str, self.feature_shape))}]. "
                f"Received: shape={features.shape}"
            )
        if not np.all(np.isfinite(features)):
            raise ValueError(
                "Expected feature values within float32's range (|x| < 3.4e38): the decoder "
                f"computes in float32. Received: largest magnitude {np.abs(values).max():.3g}"
            )
        reconstructions = _finite(
            lambda: batched(self._decode, features), self.path, features if given else None
        )
        return np.clip(reconstructions, 0.0, 1.0)

    def reconstruct(self, images) -> np.ndarray:
        """Reconstructions `[N, T, T, 3]` in [0, 1] of `images` (`[N, H, W, C]`, any size)."""
        if self._reconstruct is not None:
            images = _checked(images)
            return _finite(lambda: batched(self._reconstruct, images), self.path)
        return self._decoded(self.encode(images), given=False)

    def _crops(self, images) -> np.ndarray:
        # Crops at the image size go through `prepare` too: it scales uint16
        # pixels, as a served photo's (`_checked` refused values out of range).
        return prepare(_checked(images), self.image_size).numpy()


def load(
    path: str,
    encoder_options: dict | None = None,
    *,
    name: str = "model",
    mirror_average: bool = False,
) -> TrainedModel:
    """Loads a training work dir or a SavedModel export (see the module docstring).

    Args:
        path: a work dir, an export base directory or one export version.
        encoder_options: client-side encoder options merged over the recorded
            ones; only for exports without image signatures. E.g.
            `{"backend": "opencv"}` runs a VLFeat-trained SIFT decoder on
            OpenCV maps on a client without `libvl` (they differ: expect
            worse reconstructions).
        name: the argument or flag that gave `path`, which the errors name.
        mirror_average: decode the features and their mirror and average the
            two images (`keras_invert.mirror_averaging`; HOG and LBP at image
            sizes that are a multiple of their cell size). An export decodes
            as it was exported: this asks for one exported with it.

    Raises:
        ValueError: `path` is neither, holds no trained model yet, or is an export
            that does not load (a file missing, truncated or half-copied).
    """
    path = os.fspath(path)
    check_option(mirror_average)
    if encoder_options is not None and not isinstance(encoder_options, Mapping):
        raise ValueError(
            "Expected encoder_options a dict of option names to values, e.g. "
            f"{{'backend': 'opencv'}}, or None. Received: encoder_options={encoder_options!r}"
        )
    if not os.path.isdir(path):
        kind = "a file" if os.path.exists(path) else "not found"
        raise ValueError(
            f"Expected {name} to be a work dir or an export dir. Received: {name}={path!r}, {kind}"
        )
    run = config_lib.load(path)
    if run is None:
        return _load_export(path, encoder_options, name, mirror_average)
    if encoder_options:
        raise ValueError(
            "A work dir's encoder runs with the options it was trained with: expected no "
            f"encoder_options. Received: encoder_options={encoder_options!r}"
        )
    return _load_work_dir(path, run, name, mirror_average)


def load_model(work_dir: str, *, name: str = "work_dir") -> keras.Model:
    """The Keras model a work dir saved: its final model, else its newest readable checkpoint.

    A final model that does not load (truncated, corrupt) is skipped for the
    checkpoints with a warning, as `checkpoints.restore` skips unreadable ones.
    The errors name `work_dir` as `name` (the argument or flag that gave it).

    Raises:
        ValueError: the work dir has neither yet, or none of them loads.
    """
    final = os.path.join(work_dir, checkpoints.FINAL_MODEL)
    damaged = None
    if os.path.exists(final):
        try:
            return keras.saving.load_model(final)
        except Exception as error:  # noqa: BLE001 - a damaged file; a checkpoint may still load.
            damaged = f"{type(error).__name__}: {str(error).strip()[:200]}"
            logging.warning("Skipping %s, which does not load: %s", final, damaged)
    # A run may still be writing its next checkpoint: its partial file stays.
    saved = checkpoints.Checkpoints(os.path.join(work_dir, checkpoints.CHECKPOINT_DIR))
    model = saved.restore_latest(remove_partial=False)
    if model is None and damaged:
        raise ValueError(
            f"Expected a readable {checkpoints.FINAL_MODEL} or checkpoint in the work dir; its "
            f"{checkpoints.FINAL_MODEL} does not load (truncated or corrupt? {damaged}) and no "
            f"checkpoint does. Received: {name}={work_dir!r}"
        )
    if model is None:
        raise ValueError(f"The work dir has no trained model yet. Received: {name}={work_dir!r}")
    logging.warning("No readable final model in %s: using its latest checkpoint.", work_dir)
    # A checkpoint holds the raw weights; the final model would hold their average.
    return building.use_averaged_weights(model)


def _load_work_dir(path: str, run, name: str, mirror_average: bool) -> TrainedModel:
    representation = registry.get(run.representation)
    model = load_model(path, name=name)
    building.check_shapes(model, run, path)
    # A perceptual/deepsim run saves its training wrapper; a Reconstructor holds its encoder.
    network, decoder = losses.unwrap(model), building.decoder_of(model)
    options = config_lib.encoder_options(run)
    if decoder is not network:
        encoder = _Lazy(lambda: network.encoder)
        source = "model"
    else:
        encoder = _Lazy(lambda: representation.batch_encoder(**options))
        source = "registry"
    image_size = representation.image_size(run.image_size)

    def decode(features):
        return decoder(features, training=False)

    if mirror_average:
        decode = mirror_averaged(decode, representation.mirror(image_size, **options))
    return TrainedModel(
        encode=lambda crops: _call_encoder(encoder(), crops),
        decode=decode,
        path=path,
        kind="work_dir",
        representation=run.representation,
        image_size=image_size,
        output_size=decoder.output_shape[1],
        feature_shape=decoder.input_shape[1:],
        encoder_options=options,
        encoder_source=source,
        config=run,
        model=model,
        decoder=decoder,
        mirror_average=mirror_average,
    )


def _load_export(
    path: str, encoder_options: dict | None, name: str, mirror_average: bool
) -> TrainedModel:
    try:
        version = export.latest_version_dir(path)
    except ValueError:
        raise ValueError(
            "Expected a work dir (with a config.json) or an export dir (a SavedModel or its "
            f"version folders); the folder holds neither. Received: {name}={path!r}"
        ) from None
    # A file deleted, cut short or half-copied: TensorFlow's own error (an OpError, or
    # IndexError "Read less bytes than requested" for truncated variables) names neither.
    # A metadata file that does not parse is a ValueError that names it (`read_metadata`).
    try:
        metadata = export.read_metadata(version)
    except OSError as error:
        raise _unloadable(version, error, name, path) from error
    try:
        loaded = tf.saved_model.load(version)
    except Exception as error:  # noqa: BLE001 - any damage reads as one error naming the export.
        raise _unloadable(version, error, name, path) from error
    representation_name = metadata["representation"]
    image_size = int(metadata["image_size"])
    # Exports from before the option decode without it.
    exported_averaged = bool(metadata.get("mirror_average", False))
    if mirror_average and not exported_averaged:
        raise ValueError(
            "Expected an export written with mirror averaging (`launch.export "
            "--mirror_average`): an export decodes as it was exported. Received: "
            f"{name}={path!r}, exported without it"
        )
    representation = registry.get(representation_name)
    from_features = loaded.signatures["from_features"]
    from_images = loaded.signatures.get("serve_float")

    def decode(features):
        return from_features(features=tf.constant(features, tf.float32))["reconstruction"]

    if from_images is not None:
        if encoder_options:
            raise ValueError(
                f"This {representation_name} export encodes images inside the SavedModel, with "
                "the options it was exported with: expected no encoder_options. "
                f"Received: encoder_options={encoder_options!r}"
            )

        def reconstruct(images):
            images = tf.cast(tf.constant(images), tf.float32)
            return from_images(images=images)["reconstruction"]

        source = "export"
    else:
        reconstruct, source = None, "registry"
    # The recorded options (SIFT: the backend its decoder was trained on).
    options = export.client_encoder_options(metadata, encoder_options)
    encoder = _Lazy(lambda: representation.batch_encoder(**options))
    return TrainedModel(
        encode=lambda crops: _call_encoder(encoder(), crops),
        decode=decode,
        reconstruct=reconstruct,
        path=version,
        kind="export",
        representation=representation_name,
        image_size=image_size,
        output_size=representation.target_size(image_size),
        feature_shape=metadata["feature_shape"],
        encoder_options=options,
        encoder_source=source,
        metadata=metadata,
        saved_model=loaded,
        mirror_average=exported_averaged,
    )


def _unloadable(version: str, error: Exception, name: str, path: str) -> ValueError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(
        f"Expected a complete export written by keras_invert; {version} does not load "
        f"(damaged or half-copied? {type(error).__name__}: {reason[:200]}). "
        f"Received: {name}={path!r}"
    )


def _finite(compute, path: str, features=None) -> np.ndarray:
    """The reconstructions `compute()` returns, after checking that none is NaN or Inf.

    Clipping to [0, 1] keeps NaN and turns Inf into 0 or 1: without this
    check a decoder whose weights are damaged or whose training diverged
    hands out NaN images as reconstructions. (`image_checks.check_finite` names
    neither the model nor the likely cause.) An export checks in its graph,
    before it clips, and its assertion is read here as the same finding.
    `features`: the caller's own (`decode`), whose size the error then gives.
    """
    try:
        reconstructions = compute()
    except tf.errors.InvalidArgumentError as error:
        if export.NON_FINITE_OUTPUT not in error.message:
            raise
        reconstructions = None  # An export's signature found them before its clip.
    if reconstructions is None or not np.all(np.isfinite(reconstructions)):
        # Given features (`decode`), finite ones far larger than the training ones
        # overflow inside the decoder too.
        larger = (
            ""
            if features is None or not np.size(features)
            else ", or the features are far larger than those it was trained on (largest "
            f"magnitude here {np.abs(features).max():.3g})"
        )
        raise ValueError(
            "Expected finite reconstructions; the decoder's output holds NaN or Inf (its "
            f"weights are damaged, or its training diverged{larger}). Received: model={path!r}"
        )
    return reconstructions


class _Lazy:
    """A value built on first use (an encoder may load weights no caller needs)."""

    def __init__(self, build):
        self._build, self._value = build, None

    def __call__(self):
        if self._value is None:
            self._value = self._build()
        return self._value


def _array(values, name: str, dtype=None) -> np.ndarray:
    """`values` as a NumPy array; a ragged or non-numeric sequence is a `ValueError` naming it."""
    try:
        return np.asarray(values, dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Expected {name} as one numeric array. Received: {name} that NumPy refuses ({error})"
        ) from None


def _checked(images) -> np.ndarray:
    """`images` as `images.prepare` takes them, in range; float photos in 0..1 draw a warning."""
    images = _array(images, "images")
    check_range(check_finite(check_photos(images)))
    if images.dtype.kind == "f" and images.size and 0 < np.nanmax(images) <= 1:
        logging.warning(
            "The images' values are all in 0..1: pixels are taken in 0..255, so they "
            "are nearly black. Multiply them by 255 if they were scaled to 0..1."
        )
    return images


def _call_encoder(encoder, crops):
    crops = tf.constant(crops, tf.float32)
    if isinstance(encoder, keras.layers.Layer):
        return encoder(crops, training=False)
    return encoder(crops)


def batched(function, values: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """`function` over `values` in batches of `batch_size`, outputs concatenated as NumPy.

    The one batching loop for encoding, decoding and reconstructing outside
    tf.data: calling a model on a few batches directly costs less than
    tracing `model.predict`'s function for them.
    """
    outputs = [
        np.asarray(function(values[start : start + batch_size]))
        for start in range(0, len(values), batch_size)
    ]
    if not outputs:
        # An empty batch gives an empty batch: the output's shape comes from one
        # zero row, as a convolution refuses an empty batch on a CPU (oneDNN).
        return np.asarray(function(np.zeros((1, *values.shape[1:]), values.dtype)))[:0]
    return np.concatenate(outputs, axis=0)
