"""SavedModel export for TF Serving: images or features in, reconstructions out.

`export_saved_model` writes `EXPORT_BASE/<version>/`, the layout TF Serving
watches, with these signatures:

- `serving_default`: uint8 images `[N, H, W, C]` (C = 1, 3 or 4; any size) ->
  `{"reconstruction": float32 [N, T, T, 3] in [0, 1]}`. The image is centre
  cropped to a square and resized to the training image size exactly as the
  evaluation pipeline crops photos (`keras_invert.images.prepare`), and
  encoded inside the graph (representations whose encoder is TensorFlow
  only). For a `Reconstructor` (AlexNet trained with its encoder in the
  model, or HOG and LBP trained with `features_in_model`) the image
  signatures run that model, encoder included.
- `serve_float`: the same for float32 images in 0..255.
- `from_features`: features `[N, *feature_shape]` -> the same output.

Inputs are checked in the graph (rank, shape, finite values); a bad request
fails with an InvalidArgumentError that names what was expected. An empty
batch gets an empty batch `[0, T, T, 3]`. A model whose weights hold NaN or
Inf is refused before anything is written: it would serve NaN.

The SavedModel is written into a hidden temporary directory beside the
version directories and renamed into place when complete: TF Serving (which
only loads numeric directories) never sees a half-written export.

Representations whose encoder is not a TensorFlow op (SIFT: a C library
call per image) cannot run inside a SavedModel: their export has
`from_features` only, also as `serving_default`, and clients send features.
`keras_invert.load` gives Python callers one interface for both kinds:
images in (any size), features computed on the client side where the export
has no image signature.

With `mirror_average=True` (HOG and LBP) every signature decodes the
features and their mirror and averages the two images
(`keras_invert.mirror_averaging`).

The metadata (`assets.extra/keras_invert.json`) records the representation,
image size, feature shape, whether the export averages with the mirror, and
the encoder options with machine-dependent defaults made explicit: a SIFT
export records the backend its decoder was trained on (`"vlfeat"` or
`"opencv"`, whose maps differ; docs/reference.md, SIFT), and client-side
features use that backend, never whichever one happens to load on the client.

Example:
    >>> from keras_invert import export
    >>> path = export.export_saved_model(decoder, "hog", "/tmp/exports", image_size=128)
    >>> # tensorflow_model_server --model_base_path=/tmp/exports ...
    >>> reconstructions = keras_invert.load("/tmp/exports").reconstruct(images)  # newest
"""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_invert import files, losses, registry, vlfeat
from keras_invert.config import CONFIG_FILE
from keras_invert.image_checks import check_finite
from keras_invert.images import IMAGE_EXTENSIONS, map_prepared
from keras_invert.mirror_averaging import check_option, mirror_averaged
from keras_invert.reconstructor import Reconstructor

METADATA_ASSET = "keras_invert.json"
SAVED_MODEL_FILE = "saved_model.pb"  # What makes a folder one export version.


def _check_export_base(export_base: str) -> None:
    """Refuses an export base that is plainly something else.

    TF Serving watches the base for numbered version folders. A training
    work dir, an export's own version folder (the export would nest inside
    it, where no server looks) or a folder of photos (a `folder:` source
    would then list the SavedModel's files) is refused before anything is
    written. Other entries are left to the user.
    """
    if not os.path.isdir(export_base):
        return
    names = os.listdir(export_base)
    photos = sorted(name for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if CONFIG_FILE in names:
        what = f"a training work dir (it holds {CONFIG_FILE})"
    elif SAVED_MODEL_FILE in names:
        what = f"an export's version folder (it holds {SAVED_MODEL_FILE}): give the folder above it"
    elif photos:
        what = f"a folder of photos ({len(photos)}, e.g. {photos[0]!r})"
    else:
        return
    raise ValueError(
        "Expected the export base to be a new or empty folder, or one of numbered export "
        f"versions. Received: export_base={export_base!r}, {what}"
    )


def next_version(export_base: str) -> int:
    """One more than the largest numeric version directory (1 for none)."""
    if not os.path.isdir(export_base):
        return 1
    versions = [int(n) for n in os.listdir(export_base) if n.isdigit()]
    return max(versions, default=0) + 1


def client_encoder_options(metadata: dict, encoder_options: dict | None = None) -> dict:
    """The encoder options a client computes an export's features with.

    The options recorded at export, with `encoder_options` (if given) merged
    over them. For SIFT the recorded backend is used; when it is `"vlfeat"`
    and `libvl` does not load here this raises instead of falling back to
    OpenCV, whose maps differ from the ones the decoder was trained on. An
    export written before backends were recorded resolves the backend on this
    machine, with a warning.

    Args:
        metadata: an export's metadata (`read_metadata`).
        encoder_options: overrides, e.g. `{"backend": "opencv"}` to feed a
            VLFeat-trained SIFT decoder OpenCV maps knowingly.

    Returns:
        The keyword arguments for `registry.get(representation).make_encoder`.

    Example:
        >>> options = client_encoder_options(read_metadata(path), {"backend": "opencv"})
    """
    representation = metadata["representation"]
    spec = registry.get(representation)
    recorded = dict(metadata.get("encoder_options") or {})
    overrides = dict(encoder_options or {})
    accepted = set(inspect.signature(spec.make_encoder).parameters)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(
            f"Expected encoder options among {sorted(accepted)} for {representation}. "
            f"Received: encoder_options={encoder_options!r}"
        )
    options = {**recorded, **overrides}
    if not registry.takes_sift_backend(spec):
        return options
    if options.get("backend") is None:
        options = registry.resolved_encoder_options(spec, options)
        logging.warning(
            "This %s export records no SIFT backend (written before backends were recorded): "
            "using this machine's, %r. If the decoder was trained on the other backend's "
            "maps it reconstructs worse; pass encoder_options={'backend': ...} to choose.",
            representation,
            options["backend"],
        )
        return options
    options = registry.resolved_encoder_options(spec, options)  # Validates the name.
    if options["backend"] == "vlfeat" and not vlfeat.is_available():
        raise ValueError(
            f"Expected libvl for the SIFT backend 'vlfeat' (recorded at export: "
            f"{recorded.get('backend')!r}; the decoder was trained on those maps), but it does "
            "not load on this machine: install VLFeat's shared library (Debian/Ubuntu package "
            "libvlfeat1, libvl.so.1) or point KERAS_INVERT_LIBVL at it. OpenCV's SIFT maps "
            "differ from VLFeat's (docs/reference.md, SIFT); to run this decoder on them "
            "anyway, pass encoder_options={'backend': 'opencv'} to keras_invert.load. "
            f"Received: backend={options['backend']!r}"
        )
    if recorded.get("backend") not in (None, options["backend"]):
        logging.warning(
            "Computing %s features with backend=%r for a decoder trained on backend=%r maps.",
            representation,
            options["backend"],
            recorded.get("backend"),
        )
    return options


def _check_features(features, feature_shape):
    expected = tf.constant(feature_shape, tf.int32)
    message = f"Expected features of shape [N, {', '.join(map(str, feature_shape))}]"
    checks = [
        tf.debugging.assert_rank(features, len(feature_shape) + 1, message=message),
        tf.debugging.assert_equal(tf.shape(features)[1:], expected, message=message),
    ]
    with tf.control_dependencies(checks):
        features = tf.identity(features)
    return tf.ensure_shape(check_finite(features, "feature values"), [None, *feature_shape])


NON_FINITE_OUTPUT = (
    "The output of the decoder holds NaN or Inf: the features are far larger than those it "
    "was trained on, or its weights are damaged."
)
"""A signature's assertion on NaN or Inf reconstructions (`keras_invert.load` looks for it).

No apostrophe: TensorFlow escapes one in the error message it raises."""


def _check_finite_weights(model: keras.Model) -> None:
    """Refuses a model with a NaN or Inf weight, which would serve NaN for every request."""
    for variable in model.weights:
        if not np.all(np.isfinite(keras.ops.convert_to_numpy(variable))):
            raise ValueError(
                "Expected finite weights to export; the model's weights hold NaN or Inf (damaged, "
                f"or its training diverged). Received: variable={variable.path!r}"
            )


def _unless_empty(batch, compute, output_size: int):
    """`compute()`, or an empty `[0, T, T, 3]` batch for an empty `batch`.

    Convolutions on an empty batch fail inside TensorFlow (oneDNN's fused
    kernels report a filter depth mismatch), so an empty request never reaches them.
    """
    return tf.cond(
        tf.shape(batch)[0] > 0,
        compute,
        lambda: tf.zeros([0, output_size, output_size, 3], tf.float32),
    )


def export_saved_model(
    decoder: keras.Model,
    representation: str,
    export_base: str,
    *,
    image_size: int | None = None,
    encoder_options: dict | None = None,
    version: int | None = None,
    mirror_average: bool = False,
) -> str:
    """Exports `decoder` as `export_base/<version>` and returns that path.

    Args:
        decoder: the trained decoder, or a trained `Reconstructor` (encoder +
            decoder, AlexNet): then the image signatures run the whole model,
            with its own (possibly jointly trained) encoder, and
            `from_features` its decoder. A `losses.PerceptualModel` is
            exported as its generator.
        representation: its registry name; gives the encoder for image signatures.
        export_base: the directory TF Serving watches.
        image_size: the training image size (default: the representation's,
            or a `Reconstructor`'s input size).
        encoder_options: keyword arguments for the representation's encoder,
            the training run's (`config.encoder_options(run)`). Recorded in the
            metadata with machine-dependent defaults resolved: SIFT's
            `backend=None` is recorded as the backend that loads on this
            machine. That is the training backend under the assumption that
            the export runs where the training maps were computed (the normal
            flow: `launch.export` on the training machine); otherwise pass
            the training backend explicitly. (For a `Reconstructor`, which
            carries its encoder, the options are only recorded.)
        version: the version number, a non-negative integer (default: the next free one).
        mirror_average: every signature decodes the features and their mirror
            and averages the two images (`mirror_averaging`; HOG and LBP at
            image sizes that are a multiple of their cell size). Recorded in
            the metadata.

    Returns:
        The version directory written.

    Raises:
        ValueError: arguments that do not fit the decoder, an existing
            version, or a weight that holds NaN or Inf (named by its path).

    Example:
        >>> path = export_saved_model(decoder, "sift", "/tmp/exports", image_size=64)
        >>> read_metadata(path)["encoder_options"]
        {'backend': 'vlfeat'}
    """
    spec = registry.get(representation)
    model = None
    decoder = losses.unwrap(decoder)  # A perceptual/deepsim training model: its generator.
    if isinstance(decoder, Reconstructor):
        model, decoder = decoder, decoder.decoder
        if image_size not in (None, model.image_size):
            raise ValueError(
                f"The model takes {model.image_size}x{model.image_size} images. "
                f"Received: image_size={image_size!r}"
            )
        image_size = model.image_size
    image_size = spec.image_size(image_size)
    feature_shape = tuple(int(d) for d in spec.feature_shape(image_size))
    if tuple(decoder.input_shape[1:]) != feature_shape:
        raise ValueError(
            f"The decoder takes features {tuple(decoder.input_shape[1:])} but {representation} at "
            f"image_size={image_size} gives {feature_shape}. Received: image_size={image_size!r}"
        )
    encoder_options = registry.resolved_encoder_options(spec, encoder_options)
    check_option(mirror_average)

    def decode(features):
        return decoder(features, training=False)

    if mirror_average:
        decode = mirror_averaged(decode, spec.mirror(image_size, **encoder_options))
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**63
    ):
        # TF Serving and `latest_version_dir` only see folders named by a number,
        # and TF Serving reads it as a signed 64-bit integer.
        raise ValueError(
            "Expected a non-negative integer version below 2**63 (TF Serving reads it as an "
            f"int64). Received: version={version!r}"
        )
    _check_export_base(export_base)
    version = next_version(export_base) if version is None else version
    final = os.path.join(export_base, str(version))
    if os.path.exists(final):
        raise ValueError(f"Export version already exists. Received: path={final!r}")
    _check_finite_weights(decoder if model is None else model)

    archive = keras.export.ExportArchive()
    archive.track(decoder if model is None else model)

    output_size = int(decoder.output_shape[1])

    def reconstruct(batch, compute):
        def clipped():
            # Clipping keeps NaN: finite features far larger than the training ones
            # (~3e38) overflow inside the decoder, and the client gets an error instead.
            output = check_finite(compute(), "reconstructions", NON_FINITE_OUTPUT)
            return tf.clip_by_value(output, 0.0, 1.0)

        return {"reconstruction": _unless_empty(batch, clipped, output_size)}

    def from_features(features):
        features = _check_features(features, feature_shape)
        return reconstruct(features, lambda: decode(features))

    archive.add_endpoint(
        "from_features",
        from_features,
        input_signature=[tf.TensorSpec([None] * (len(feature_shape) + 1), tf.float32, "features")],
    )
    if spec.in_graph:
        if model is None:
            # HOG compiled with XLA, as in the pipelines: ~10x faster on a CPU, and
            # exact; TF Serving runs it with --xla_cpu_compilation_enabled=true.
            encode = spec.batch_encoder(**encoder_options)
            if isinstance(encode, keras.layers.Layer):
                archive.track(encode)

            def decode_crops(crops):
                return decode(encode(crops))

        elif mirror_average:

            def decode_crops(crops):
                return decode(model.encoder(crops, training=False))

        else:

            def decode_crops(crops):
                return model(crops, training=False)

        # Photos already at the image size reach the encoder as they came, uint8 or
        # float, where it prepares them itself in its compiled first step (the same values).
        prepares_crops = spec.prepares_crops and model is None

        def from_images(images):
            return reconstruct(
                images,
                lambda: map_prepared(
                    images, image_size, decode_crops, prepares_crops=prepares_crops
                ),
            )

        archive.add_endpoint(
            "serving_default",
            from_images,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, "images")],
        )
        archive.add_endpoint(
            "serve_float",
            from_images,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, "images")],
        )
    else:
        # Without an in-graph encoder the features are the only input a server can take.
        archive.add_endpoint(
            "serving_default",
            from_features,
            input_signature=[
                tf.TensorSpec([None] * (len(feature_shape) + 1), tf.float32, "features")
            ],
        )

    with files.atomic_path(final) as temporary:
        archive.write_out(temporary, verbose=False)
        _write_metadata(
            temporary, representation, image_size, feature_shape, encoder_options, mirror_average
        )
    return final


def _write_metadata(
    path, representation, image_size, feature_shape, encoder_options, mirror_average
):
    import json

    os.makedirs(os.path.join(path, "assets.extra"), exist_ok=True)
    with open(os.path.join(path, "assets.extra", METADATA_ASSET), "w") as file:
        json.dump(
            {
                "representation": representation,
                "image_size": image_size,
                "feature_shape": list(feature_shape),
                "encoder_options": encoder_options,
                "mirror_average": mirror_average,
            },
            file,
            indent=2,
        )


def read_metadata(path: str) -> dict:
    """The representation, image size and feature shape recorded in an export.

    Raises:
        OSError: the metadata file is missing or unreadable.
        ValueError: it does not parse as the JSON object `_write_metadata`
            writes (damaged or half-written); the error names the file.
    """
    import json

    metadata_path = os.path.join(path, "assets.extra", METADATA_ASSET)
    with open(metadata_path, "rb") as file:
        text = file.read()
    try:
        metadata = json.loads(text)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError, which name no file.
        metadata = None
    if not isinstance(metadata, dict):
        raise ValueError(
            "Expected a JSON file written by keras_invert; this one does not parse (damaged or "
            f"half-written). Received: path={metadata_path!r}"
        )
    return metadata


def latest_version_dir(path: str) -> str:
    """`path` itself if it is a SavedModel, else its newest numeric version directory."""
    if os.path.exists(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    versions = sorted((int(n) for n in os.listdir(path) if n.isdigit()), reverse=True)
    for version in versions:
        candidate = os.path.join(path, str(version))
        if os.path.exists(os.path.join(candidate, SAVED_MODEL_FILE)):
            return candidate
    raise ValueError(f"No SavedModel version directory found. Received: path={path!r}")
