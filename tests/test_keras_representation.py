"""Any Keras model as a representation: `from_keras` taps and `keras:PATH#LAYER` through
the house (registry, training, export, evaluation)."""

import functools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_invert
from keras_invert import config as config_lib
from keras_invert import export, metrics, registry, training
from keras_invert.encoders import from_keras
from keras_invert.reconstructor import Reconstructor


def test_from_keras_taps_input_range_and_resizing(saved_network):
    network, path = saved_network
    encoder = from_keras(path, ["conv2", "scores"], input_range=(0, 1))
    assert list(encoder.output) == ["conv2", "scores"]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = keras.Model(network.input, network.get_layer("conv2").output)(images / 255.0)
    np.testing.assert_allclose(encoder(images)["conv2"], expected, atol=1e-5)
    # Other sizes are resized to the model's 32 x 32 inside the encoder.
    assert encoder(rng.uniform(0, 255, (1, 48, 40, 3)))["conv2"].shape == (1, 8, 8, 16)
    # -1..1 models: 0 -> -1, 255 -> 1.
    symmetric = from_keras(network, "conv1", input_range=(-1, 1))
    first = keras.Model(network.input, network.get_layer("conv1").output)
    np.testing.assert_allclose(symmetric(images)["conv1"], first(images / 127.5 - 1.0), atol=1e-5)
    # The layers are shared with the model, not copied.
    assert encoder.get_layer("tiny_layers").get_layer("conv2") is not None


def test_from_keras_models_of_any_input_size():
    inputs = keras.Input((None, None, 3))
    network = keras.Model(inputs, keras.layers.Conv2D(4, 3, 2, name="conv")(inputs))
    encoder = from_keras(network, ["conv"])
    assert encoder(np.zeros((1, 20, 20, 3)))["conv"].shape == (1, 9, 9, 4)
    assert encoder(np.zeros((1, 40, 40, 3)))["conv"].shape == (1, 19, 19, 4)


def test_from_keras_errors(saved_network, tmp_path):
    network, _ = saved_network
    with pytest.raises(ValueError, match=r"no layer 'conv9'.*conv1, conv2"):
        from_keras(network, ["conv9"])
    with pytest.raises(ValueError, match="input_range"):
        from_keras(network, ["conv1"], input_range=(1, 0))
    with pytest.raises(ValueError, match="No such Keras model file"):
        from_keras(str(tmp_path / "missing.keras"), ["conv1"])
    truncated = tmp_path / "truncated.keras"
    with open(saved_network[1], "rb") as file:
        truncated.write_bytes(file.read(500))
    with pytest.raises(ValueError, match=r"is not one: corrupt, truncated.*truncated\.keras'"):
        from_keras(str(truncated), ["conv1"])
    gray = keras.Input((8, 8, 1))
    with pytest.raises(ValueError, match="RGB"):
        from_keras(keras.Model(gray, keras.layers.Conv2D(2, 3, name="c")(gray)), ["c"])
    # Saved before it was built: no input, so no layer has a shape.
    unbuilt = tmp_path / "unbuilt.keras"
    keras.Sequential([keras.layers.Conv2D(4, 3, name="c1")]).save(unbuilt)
    with pytest.raises(ValueError, match=r"with a defined input.*unbuilt\.keras'$"):
        from_keras(str(unbuilt), ["c1"])


def test_registry_resolves_keras_names(saved_network, monkeypatch):
    _, path = saved_network
    conv2 = registry.get(f"keras:{path}#conv2")
    assert conv2.encode_in_model and conv2.default_image_size == 32
    assert (conv2.image_size(None), conv2.image_size(64)) == (32, 64)
    # The model sees 32 x 32 whatever the crop size: 8 x 8 maps, decoded to 8 * 2**2.
    for size in (32, 64):
        assert conv2.feature_shape(size) == (8, 8, 16) and conv2.target_size(size) == 32
    decoder = conv2.build_decoder(64, width=0.125)
    assert decoder.input_shape == (None, 8, 8, 16) and decoder.output_shape == (None, 32, 32, 3)
    scores = registry.get(f"keras:{path}#scores?input_range=0,1")
    assert scores.feature_shape(32) == (10,) and scores.target_size(32) == 32
    assert scores.make_encoder().output_shape == (None, 10)
    # Relative paths are taken from the working directory.
    monkeypatch.chdir(os.path.dirname(path))
    assert registry.get("keras:tiny.keras#conv1").feature_shape(32) == (16, 16, 8)
    for name, message in (
        ("keras:tiny.keras", "keras:PATH.keras#LAYER"),
        ("keras:tiny.keras#pool9", "no layer 'pool9'"),
        ("keras:tiny.keras#conv1?scale=2", "input_range"),
        ("keras:other.keras#conv1", "No such Keras model file"),
    ):
        with pytest.raises(ValueError, match=message):
            registry.get(name)
    with pytest.raises(ValueError, match="its .keras file"):
        registry.get("keras:tiny.keras#conv1").make_encoder(weights="x.weights.h5")


def test_train_export_and_evaluate_a_keras_layer(saved_network, tmp_path, real_photos):
    import pipelines
    from keras_invert import evaluation

    _, path = saved_network
    run = config_lib.TrainConfig(
        representation=f"keras:{path}#conv2?input_range=0,1", image_size=32, width=0.125,
        batch_size=2, steps=2, steps_per_epoch=1, summary_images=0,
    )  # fmt: skip
    work_dir = str(tmp_path / "run")
    config_lib.save(run, work_dir)
    images = np.stack([real_photos[n][100:132, 100:132] for n in ("coffee", "rocket")])
    images = images.astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, images / 255.0)).repeat().batch(2)
    model = training.train(run, dataset, work_dir, verbose=0)
    assert isinstance(model, Reconstructor) and int(model.optimizer.iterations) == 2
    expected = np.clip(model.predict(images, verbose=0), 0.0, 1.0)
    export.export_saved_model(model, run.representation, str(tmp_path / "exports"))
    for source in (work_dir, str(tmp_path / "exports")):
        parts = keras_invert.load(source)
        assert (parts.representation, parts.image_size, parts.output_size) == (
            run.representation,
            32,
            32,
        )
        np.testing.assert_allclose(parts.decode(parts.encode(images)), expected, atol=1e-4)
    # launch.evaluate's row for the work dir, on photo files.
    files = []
    for index, image in enumerate(images):
        files.append(str(tmp_path / f"photo{index}.png"))
        keras.utils.save_img(files[-1], image)
    row, originals, reconstructions = evaluation.evaluate_decoder(
        work_dir, keras_invert.load(work_dir), functools.partial(pipelines.load_images, files)
    )
    assert row["representation"] == run.representation and np.isfinite(row["feature_error"])
    # The row scores the model's reconstructions of the evaluation crops of the files.
    crops = pipelines.load_images(files, 32)
    reconstructed = np.clip(model.predict(crops, verbose=0), 0.0, 1.0)
    np.testing.assert_allclose(originals, crops / 255.0, atol=1e-6)
    np.testing.assert_allclose(reconstructions, reconstructed, atol=1e-4)
    assert row["normalized_error"] == pytest.approx(
        metrics.normalized_reconstruction_error(crops / 255.0, reconstructed), rel=1e-4
    )


def test_keras_model_paths_are_made_absolute_for_the_stored_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = registry.absolute_keras_name("keras:models/net.keras#block4?input_range=0,1")
    assert name == f"keras:{os.path.join(tmp_path, 'models/net.keras')}#block4?input_range=0,1"
    assert registry.absolute_keras_name(name) == name
    assert registry.absolute_keras_name("alexnet/conv5") == "alexnet/conv5"
    with pytest.raises(ValueError, match="keras:PATH.keras#LAYER"):
        registry.absolute_keras_name("keras:net.keras")
