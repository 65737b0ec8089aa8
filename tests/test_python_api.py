"""The README's Python API snippet: plain Keras compile/fit on our pieces."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_invert
import pipelines


def test_readme_snippet_trains_with_plain_keras():
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    assert keras_invert.hog(images).shape == (2, 8, 8, 31)
    decoder = keras_invert.build_decoder("hog", image_size=64, width=0.125)
    dataset = pipelines.build_dataset(
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


def test_decoders_import_without_the_feature_ops():
    # The decoders need Keras alone, so they train on any Keras backend (JAX on
    # an accelerator machine without TensorFlow); the features import on use.
    script = (
        "import sys, keras_invert.decoders\n"
        "assert 'keras_invert.features' not in sys.modules, 'features imported'\n"
        "assert 'keras_invert.registry' not in sys.modules, 'registry imported'\n"
        "import keras_invert\n"
        "assert keras_invert.registry.get('hog').name == 'hog'\n"
        "assert 'keras_invert.features' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_decoder_step_benchmark_times_a_tiny_decoder():
    from benchmarks import bench_decoder_step

    model = bench_decoder_step.build("conv5", image_size=64, width=0.05)
    assert model.output_shape == (None, 192, 192, 3)
    assert bench_decoder_step.time_steps(model, batch_size=2, steps=1) > 0
    with pytest.raises(ValueError, match="Received: decoder='conv9'"):
        bench_decoder_step.build("conv9", image_size=64, width=1.0)
