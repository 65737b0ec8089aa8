"""Helpers shared by the launch scripts: the entry point `run`, loading trained models.

Every script ends with `common.run(main)`: a user's mistake (a bad flag value,
a missing or malformed file, an unknown data source) ends the process with
one line on stderr, `ERROR: ...`, and exit status 2, never a traceback.
`--verbosity=1` shows the traceback instead, for debugging.
"""

from __future__ import annotations

import functools
import os
import re
import sys

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

USER_ERROR_STATUS = 2
"""Exit status of a run stopped by a user's mistake."""


def run(main) -> None:
    """Runs a launch script's `main` as `app.run` does, with user mistakes as one line.

    A flag value that absl refuses, and an `app.UsageError`, a `ValueError` or
    an `OSError` (a file: missing, a folder, unreadable) raised by `main`, are printed as `ERROR:
    <message>` (the first line of a longer message) on stderr, and the process
    exits with `USER_ERROR_STATUS`. Other exceptions are internal errors and
    keep their traceback; with `--verbosity=1` (debug logging) every
    exception does.

    Example:
        >>> if __name__ == "__main__":
        ...     common.run(main)
    """
    app.run(guard(main), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
    """`FLAGS(argv)`; a value absl refuses ends the process with one line (status 2)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _stop(flag_error_message(error))


def guard(main):
    """`main(argv)`, with the user's mistakes it raises reported as one line (status 2)."""

    @functools.wraps(main)
    def guarded(argv):
        try:
            return main(argv)
        except Exception as error:
            message = user_error_message(error)
            if message is None or logging.level_debug():
                raise
            _stop(message)

    return guarded


def user_error_message(error: Exception) -> str | None:
    """The one line that reports `error` to the user, or None for an internal error."""
    if isinstance(error, flags.Error):
        return flag_error_message(error)
    if isinstance(error, (app.UsageError, ValueError)):
        return _first_line(str(error))
    if isinstance(error, OSError):
        # A file or folder the user named (missing, a folder, unreadable, disk full).
        if error.filename is not None:
            return f"{error.strerror or type(error).__name__}: {os.fspath(error.filename)!r}"
        return _first_line(str(error))
    return None


def flag_error_message(error: flags.Error) -> str:
    """absl's `flag --NAME=VALUE: REASON` lines as `--NAME must be ... Received: VALUE`."""
    messages = []
    for line in str(error).splitlines():
        match = re.fullmatch(r"flag --([\w-]+)=(.*?): (.*)", line.strip())
        if match is None:
            messages.append(line.strip())
            continue
        name, value, reason = match.groups()
        parser = flags.FLAGS[name].parser if name in flags.FLAGS else None
        expected = getattr(parser, "syntactic_help", "")
        if reason.startswith(f"Flag --{name} must have a value other than None"):
            messages.append(f"--{name} is required.")
            continue
        if reason.startswith("must be "):  # The validators' wording (`validate`).
            expected = reason[len("must be ") :]
        elif isinstance(parser, flags.BooleanParser):
            expected = "true or false"
        elif isinstance(parser, flags.EnumParser):
            expected = f"one of {', '.join(parser.enum_values)}"
        elif not expected:
            messages.append(f"--{name}={value}: {reason}")
            continue
        # absl's numeric help reads "a positive integer" but "integer >= 2".
        expected = re.sub(r"^integer\b", "an integer", re.sub(r"^number\b", "a number", expected))
        messages.append(f"--{name} must be {expected}. Received: {value}")
    return "; ".join(message for message in messages if message)


def validate(name: str, check, expected: str) -> None:
    """Refuses a value of flag `name` for which `check(value)` is false, when given.

    The error reads `--NAME must be EXPECTED. Received: VALUE`, at flag parsing.

    Example:
        >>> validate("width", lambda width: width > 0, "> 0")
    """
    flags.register_validator(
        name, lambda value: value is None or check(value), message=f"must be {expected}"
    )


def _first_line(message: str) -> str | None:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else None


def _stop(message: str):
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_STATUS)


def load_trained(model_path: str):
    """Loads a trained decoder (or encoder + decoder) from a work dir or a SavedModel export.

    Returns:
        `(reconstruct, representation_name, image_size, encoder_options)` where
        `reconstruct(images)` maps float32 `[N, S, S, 3]` 0..255 images to
        `[N, T, T, 3]` reconstructions in [0, 1].
    """
    from keras_invert import config as config_lib
    from keras_invert import export

    if not os.path.isdir(model_path):
        raise ValueError(f"Expected a work dir or an export dir. Received: model={model_path!r}")
    if config_lib.load(model_path) is not None:
        parts = load_model_parts(model_path)
        return parts.reconstruct, parts.representation, parts.image_size, parts.encoder_options
    # An export takes images through its own signatures; exports without image
    # signatures (SIFT) get their features computed here.
    model = export.load_export(model_path)
    return model, model.representation, model.image_size, model.encoder_options


class TrainedModel:
    """A trained model taken apart: encoder, decoder and what they were trained for.

    Attributes:
        encode: float32 `[N, S, S, 3]` 0..255 images -> NumPy features.
        decode: features -> NumPy `[N, T, T, 3]` reconstructions in [0, 1].
        representation, image_size (S), output_size (T), encoder_options.
        encoder_source: "model" when `encode` is the encoder saved with the
            model (a network trained with its encoder, e.g. an autoencoder),
            "registry" when it is the representation's encoder built anew.
    """

    def __init__(self, encode, decode, representation, image_size, output_size, **options):
        self.encode = encode
        self.decode = decode
        self.representation = representation
        self.image_size = int(image_size)
        self.output_size = int(output_size)
        self.encoder_options = options.get("encoder_options") or {}
        self.encoder_source = options.get("encoder_source", "registry")

    def reconstruct(self, images):
        """`decode(encode(images))`."""
        return self.decode(self.encode(images))


def _batched(function, values, batch_size=16):
    import numpy as np

    outputs = [
        np.asarray(function(values[i : i + batch_size])) for i in range(0, len(values), batch_size)
    ]
    return np.concatenate(outputs, axis=0)


def _call_encoder(encoder, images):
    import keras
    import tensorflow as tf

    images = tf.constant(images, tf.float32)
    if isinstance(encoder, keras.layers.Layer):
        return encoder(images, training=False)
    return encoder(images)


def load_model_parts(model_path: str) -> TrainedModel:
    """Loads a work dir or a SavedModel export as separate encoder and decoder.

    Unlike `load_trained` (images -> reconstructions), the parts let callers
    decode features of their own (interpolations, perturbations, samples) and
    re-encode reconstructions (the feature-space error). A work dir whose
    model holds its encoder (an `encoder` and a `decoder` attribute: AlexNet
    trained end to end) gives that encoder. An export gives the
    `from_features` signature as decoder and the representation's encoder
    built from the recorded `encoder_options`: for an export of an
    autoencoder that is not the jointly trained encoder (evaluate its work
    dir instead).
    """
    import numpy as np
    import tensorflow as tf

    from keras_invert import config as config_lib
    from keras_invert import export, losses, registry, training

    if not os.path.isdir(model_path):
        raise ValueError(f"Expected a work dir or an export dir. Received: model={model_path!r}")
    run = config_lib.load(model_path)
    if run is not None:
        representation = registry.get(run.representation)
        image_size = run.image_size or representation.default_image_size
        # A perceptual/deepsim run saves its training wrapper: the generator is the model.
        model = losses.unwrap(training.load_trained_model(model_path))
        options = dict(run.encoder_options)
        if getattr(run, "encoder_weights", None) is not None:
            options["weights"] = run.encoder_weights
        if getattr(model, "encoder", None) is not None and getattr(model, "decoder", None):
            encoder, decoder, source = model.encoder, model.decoder, "model"
        else:
            encoder = representation.make_encoder(**options)
            decoder, source = model, "registry"

        def decode(features):
            features = np.asarray(features, np.float32)
            return np.clip(decoder.predict(features, verbose=0, batch_size=16), 0.0, 1.0)

        output_size = decoder.output_shape[1]
        name = run.representation
    else:
        metadata = export.read_metadata(export.latest_version_dir(model_path))
        name, image_size = metadata["representation"], metadata["image_size"]
        representation = registry.get(name)
        # The recorded options (SIFT: the training backend; refused if libvl is missing).
        options = export.client_encoder_options(metadata)
        encoder, source = representation.make_encoder(**options), "registry"
        signature = tf.saved_model.load(export.latest_version_dir(model_path)).signatures[
            "from_features"
        ]

        def decode_batch(features):
            features = tf.constant(features, tf.float32)
            return signature(features=features)["reconstruction"].numpy()

        def decode(features):
            return _batched(decode_batch, np.asarray(features, np.float32))

        output_size = representation.target_size(image_size)

    def encode(images):
        images = np.asarray(images, np.float32)
        return _batched(lambda batch: _call_encoder(encoder, batch), images)

    return TrainedModel(
        encode,
        decode,
        name,
        image_size,
        output_size,
        encoder_options=options,
        encoder_source=source,
    )


def training_mean_image(model_path: str, image_size: int, size: int):
    """The mean of a work dir's training targets: what a constant predictor could learn.

    The photos are the model's own training data, the source and split in
    its `config.json`, centre cropped at `image_size` and made targets of
    side `size` (`keras_invert.images.target`), as the evaluated photos are.

    Returns:
        `(mean image [size, size, 3] in [0, 1], description)`, or None when
        the training data is unknown (an export, which records none) or not
        readable here (a TFDS source has no files to list; a folder that is
        not on this machine), with a logged warning.
    """
    from keras_invert import config as config_lib

    run = config_lib.load(model_path)
    if run is None:
        return None
    try:
        return _mean_target(run.data, run.train_split, image_size, size)
    except (ValueError, OSError) as error:
        logging.warning("No mean training image for %s: %s", model_path, error)
        return None


@functools.lru_cache(maxsize=8)
def _mean_target(data: str, split: str, image_size: int, size: int):
    """`training_mean_image` of a source: computed once for models trained on the same data."""
    import numpy as np

    import pipelines
    from keras_invert import images

    total, count = np.zeros((size, size, 3), np.float64), 0
    for path in pipelines.list_source_files(data, split):
        try:
            image = pipelines.read_image(path)
        except ValueError:
            continue  # Training dropped it too (the pipelines skip undecodable photos).
        total += images.target(images.center_crop(image, image_size), size).numpy()
        count += 1
    if not count:
        raise ValueError(f"no photo of {data} (split {split}) decodes.")
    mean = (total / count).astype(np.float32)
    mean.flags.writeable = False  # Shared by every caller.
    description = f"mean of {count} training photos ({data}, split {split})"
    return mean, description


def reencode(encode, reconstructions, image_size):
    """Features of [0, 1] reconstructions at the encoder's input size, and whether resized.

    A reconstruction smaller than the encoder's input (AlexNet decoders output
    128..216 px for 227 px crops) is resized up first (`keras_invert.images.resize`).
    """
    import numpy as np

    from keras_invert import images

    pixels = np.clip(np.asarray(reconstructions, np.float32), 0.0, 1.0) * 255.0
    resized = pixels.shape[1] != image_size
    if resized:
        pixels = images.resize(pixels, image_size).numpy()
    return np.asarray(encode(pixels)), resized


def absolute_representation(name: str) -> str:
    """`name` with the model path of a `keras:PATH#LAYER` name made absolute.

    A relative path would resolve only from the directory the run started in,
    so the stored config could not be resumed or evaluated from elsewhere.
    """
    from keras_invert import registry

    if not name.startswith(registry.KERAS_PREFIX):
        return name
    path, _, _ = registry.parse_keras_name(name)
    rest = name[len(registry.KERAS_PREFIX) + len(path) :]
    return registry.KERAS_PREFIX + os.path.abspath(path) + rest
