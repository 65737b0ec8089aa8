"""keras_invert: decoder networks that reconstruct images from their representations.

Reproduces Dosovitskiy & Brox, "Inverting Visual Representations with
Convolutional Networks" (CVPR 2016). The library holds the representations
(`features`, `encoders`), the paper's decoders (`decoders`), the registry that
pairs them (`registry`), training, export and metrics. Input pipelines live in
the sibling package `pipelines`; `keras_invert.build_dataset` forwards to it
for user scripts (the library itself never calls it).

Example:
    >>> import keras, keras_invert
    >>> decoder = keras_invert.build_decoder("hog", image_size=128, width=0.5)
    >>> dataset = keras_invert.build_dataset("samples", split="train",
    ...                                      representation="hog", image_size=128, batch_size=8)
    >>> decoder.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    >>> decoder.fit(dataset, steps_per_epoch=10, epochs=1)
"""

from keras_invert import decoders, features, registry
from keras_invert.decoders import build_decoder
from keras_invert.features import hog

__version__ = "0.1.0"

__all__ = ["build_dataset", "build_decoder", "decoders", "features", "hog", "registry"]


def __getattr__(name):
    # A convenience for user code only: the library never imports `pipelines`.
    if name == "build_dataset":
        from pipelines import build_dataset

        return build_dataset
    raise AttributeError(f"module 'keras_invert' has no attribute {name!r}")
