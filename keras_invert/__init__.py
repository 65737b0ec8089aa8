"""keras_invert: decoder networks that reconstruct images from their representations.

Reproduces Dosovitskiy & Brox, "Inverting Visual Representations with
Convolutional Networks" (CVPR 2016). The library holds the representations
(`features`, `encoders`), the paper's decoders (`decoders`), the registry that
pairs them (`registry`), training, export, loading and metrics. Input
pipelines live in the sibling package `pipelines`, which builds on this one
(this package never imports it).

Example:
    >>> import keras, keras_invert, pipelines
    >>> decoder = keras_invert.build_decoder("hog", image_size=128, width=0.5)
    >>> dataset = pipelines.build_dataset("samples", split="train",
    ...                                   representation="hog", image_size=128, batch_size=8)
    >>> decoder.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    >>> decoder.fit(dataset, steps_per_epoch=10, epochs=1)
"""

import importlib

__version__ = "0.1.0"

__all__ = ["build_decoder", "decoders", "features", "hog", "load", "registry"]


def __getattr__(name):
    # Imported on first use: the decoders need Keras alone, so they build and
    # train on any Keras backend (JAX on an accelerator without TensorFlow),
    # while the features and the registry need TensorFlow; and a script that
    # reads only the config (`keras_invert.config`) checks its flags before
    # either loads.
    if name in ("decoders", "features", "registry"):
        return importlib.import_module(f"keras_invert.{name}")
    if name == "build_decoder":
        return importlib.import_module("keras_invert.registry").build_decoder
    if name == "load":
        return importlib.import_module("keras_invert.loading").load
    if name == "hog":
        return importlib.import_module("keras_invert.features").hog
    raise AttributeError(f"module 'keras_invert' has no attribute {name!r}")
