"""The README's Python API snippet: plain Keras compile/fit on our pieces."""

import keras
import numpy as np

import keras_invert


def test_readme_snippet_trains_with_plain_keras():
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    assert keras_invert.hog(images).shape == (2, 8, 8, 31)
    decoder = keras_invert.build_decoder("hog", image_size=64, width=0.125)
    dataset = keras_invert.build_dataset(
        "samples", split="train", representation="hog", image_size=64, batch_size=4, seed=0
    )
    # (features, image) pairs: the features are HOG of the image (0..1 here).
    features, targets = next(iter(dataset))
    np.testing.assert_allclose(features, keras_invert.hog(targets * 255.0), atol=1e-4)
    decoder.compile(optimizer=keras.optimizers.Adam(3e-4), loss="mse")
    history = decoder.fit(dataset, steps_per_epoch=3, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert np.isfinite(history.history["loss"]).all()
    assert "hog" in keras_invert.registry.names()
