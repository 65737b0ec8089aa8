"""Helpers shared by the launch scripts (logging set-up, loading trained models)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def load_trained(model_path: str):
    """Loads a trained decoder (or encoder + decoder) from a work dir or a SavedModel export.

    Returns:
        `(reconstruct, representation_name, image_size, encoder_options)` where
        `reconstruct(images)` maps float32 `[N, S, S, 3]` 0..255 images to
        `[N, T, T, 3]` reconstructions in [0, 1].
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_invert import config as config_lib
    from keras_invert import export, registry, training
    from keras_invert.reconstructor import Reconstructor

    if not os.path.isdir(model_path):
        raise ValueError(f"Expected a work dir or an export dir. Received: model={model_path!r}")
    run = config_lib.load(model_path)
    if run is not None:
        representation = registry.get(run.representation)
        image_size = run.image_size or representation.default_image_size
        final = os.path.join(model_path, training.FINAL_MODEL)
        if os.path.exists(final):
            decoder = keras.saving.load_model(final)
        else:
            decoder = training.Checkpoints(
                os.path.join(model_path, training.CHECKPOINT_DIR)
            ).restore_latest()
            if decoder is None:
                raise ValueError(
                    f"The work dir has no trained model yet. Received: model={model_path!r}"
                )
        if isinstance(decoder, Reconstructor):
            # Encoder and decoder in one model (AlexNet): images in.
            def reconstruct(images):
                images = np.asarray(images, np.float32)
                return np.clip(decoder.predict(images, verbose=0, batch_size=16), 0.0, 1.0)

        else:
            encode = representation.make_encoder(**run.encoder_options)

            def reconstruct(images):
                features = encode(tf.constant(images, tf.float32))
                return np.clip(decoder.predict(features, verbose=0, batch_size=16), 0.0, 1.0)

        return reconstruct, run.representation, image_size, run.encoder_options

    # Exports without image signatures (SIFT) get their features computed here.
    model = export.load_export(model_path)
    return model, model.representation, model.image_size, model.encoder_options
