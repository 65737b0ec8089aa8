"""AlexNet layers through the house: registry, encoder-in-model training (fixed and
autoencoder), resume, export and loading of trained work dirs and exports."""

import logging
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_invert
from keras_invert import building, export, registry, training
from keras_invert import config as config_lib
from keras_invert.checkpoints import Checkpoints
from keras_invert.encoders import ALEXNET_IMAGE_SIZES, ALEXNET_LAYERS, ALEXNET_OUTPUT_SHAPES
from keras_invert.encoders import alexnet as build_alexnet
from keras_invert.reconstructor import Encoder, Reconstructor

TARGET_SIZES = {"conv1": 216, "conv2": 208, "conv3": 208, "conv4": 208, "conv5": 192}
NAMES = {"caffe": "alexnet", "torchvision": "alexnet-torchvision"}


@pytest.mark.parametrize("variant", ["caffe", "torchvision"])
def test_registry_pairs_every_layer_with_its_decoder(variant):
    for layer in ALEXNET_LAYERS:
        representation = registry.get(f"{NAMES[variant]}/{layer}")
        shape = ALEXNET_OUTPUT_SHAPES[variant][layer]
        target = TARGET_SIZES.get(layer, 128)
        assert representation.encode_in_model and representation.in_graph
        assert representation.default_image_size == ALEXNET_IMAGE_SIZES[variant]
        # The encoder resizes crops to its own size: shapes never depend on the crop size.
        for size in (64, representation.default_image_size):
            assert representation.feature_shape(size) == shape
            assert representation.target_size(size) == target
        decoder = representation.build_decoder(width=1 / 16)
        assert decoder.input_shape[1:] == shape
        assert decoder.output_shape[1:] == (target, target, 3)


def test_encoder_options_are_checked_and_random_weights_logged(caplog):
    with pytest.raises(ValueError, match="alexnet-torchvision/conv1"):
        registry.get("alexnet/conv1").make_encoder(variant="torchvision")
    with caplog.at_level(logging.WARNING, logger="absl"):
        encoder = registry.get("alexnet/conv1").make_encoder()
    assert encoder.output_shape == (None, 27, 27, 96)
    assert "RANDOM weights" in caplog.text and "--encoder_weights" in caplog.text
    with pytest.raises(ValueError, match="network encoder"):
        building.build_model(config_lib.TrainConfig(representation="hog", autoencoder=True))


def test_frozen_encoder_runs_in_inference_mode():
    inputs = keras.Input((4,))
    network = keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))
    x = np.ones((2, 4), np.float32)
    frozen = Encoder(network, trainable=False)
    np.testing.assert_array_equal(frozen(x, training=True), x)
    assert not network.trainable
    trained = Encoder(network, trainable=True)
    assert network.trainable
    assert not np.array_equal(trained(x, training=True), x)


def _photos(real_photos, size=227, count=4):
    rng = np.random.default_rng(0)
    crops = []
    for index in range(count):
        photo = real_photos[("astronaut", "coffee", "chelsea", "rocket")[index % 4]]
        y, x = rng.integers(0, min(photo.shape[:2]) - size, size=2)
        crops.append(photo[y : y + size, x : x + size].astype(np.float32))
    return np.stack(crops)


def _dataset(images, target_size):
    targets = tf.image.resize(images, [target_size, target_size], method="area") / 255.0
    return tf.data.Dataset.from_tensor_slices((images, targets)).repeat().batch(2)


def _config(**changes):
    values = dict(
        representation="alexnet/conv5", width=1 / 16, batch_size=2, steps=2,
        steps_per_epoch=1, learning_rate=1e-3, summary_images=0,
    )  # fmt: skip
    values.update(changes)
    return config_lib.TrainConfig(**values)


def _weights(model):
    return [v.numpy().copy() for v in model.weights]


def _changed(before, after):
    return [not np.array_equal(b, a) for b, a in zip(before, after, strict=True)]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A `.weights.h5` of a whole randomly initialised Caffe AlexNet, and its conv kernels."""
    path = str(tmp_path_factory.mktemp("weights") / "random_caffenet.weights.h5")
    keras.utils.set_random_seed(7)
    network = build_alexnet("caffe")
    network.save_weights(path)
    kernels = {f"conv{i}": network.get_layer(f"conv{i}").kernel.numpy() for i in range(1, 6)}
    return path, kernels


@pytest.fixture(scope="module")
def fixed_run(tmp_path_factory, weights_file, real_photos):
    """Two steps of a fixed-encoder conv5 run, encoder weights from the file."""
    work_dir = str(tmp_path_factory.mktemp("fixed"))
    run = _config(encoder_weights=weights_file[0])
    config_lib.save(run, work_dir)
    initial = building.build_model(run)
    before = {"encoder": _weights(initial.encoder), "decoder": _weights(initial.decoder)}
    model = training.train(run, _dataset(_photos(real_photos), 192), work_dir, verbose=0)
    return run, work_dir, model, before


def test_fixed_encoder_loads_weights_and_only_the_decoder_learns(fixed_run, weights_file):
    _, _, model, before = fixed_run
    assert isinstance(model, Reconstructor) and not model.encoder.trainable
    network = model.encoder.layer
    for name, kernel in weights_file[1].items():
        np.testing.assert_array_equal(network.get_layer(name).kernel.numpy(), kernel)
    assert not any(_changed(before["encoder"], _weights(model.encoder)))
    assert all(_changed(before["decoder"], _weights(model.decoder)))
    assert int(model.optimizer.iterations) == 2


def test_autoencoder_trains_the_encoder(tmp_path, real_photos):
    # 64 x 64 crops: the encoder resizes them to 227 inside the model.
    run = _config(steps=1, autoencoder=True, image_size=64)
    initial = building.build_model(run)
    before = _weights(initial.encoder)
    model = training.train(run, _dataset(_photos(real_photos, 64), 192), str(tmp_path), verbose=0)
    assert model.encoder.trainable
    names = [v.path for v in model.encoder.weights]
    changed = dict(zip(names, _changed(before, _weights(model.encoder)), strict=True))
    assert all(changed.values()), changed


def test_resume_keeps_the_encoder_frozen(fixed_run, tmp_path, real_photos):
    run, work_dir, model, _ = fixed_run
    resumed_dir = str(tmp_path / "run")
    shutil.copytree(work_dir, resumed_dir)
    restored = Checkpoints(os.path.join(resumed_dir, "checkpoints")).restore_latest()
    assert isinstance(restored, Reconstructor) and not restored.encoder.trainable
    assert len(restored.trainable_weights) == len(model.decoder.trainable_weights)
    with pytest.raises(ValueError, match="autoencoder"):
        training.train(config_lib.replace(run, autoencoder=True), None, resumed_dir)
    encoder_before = _weights(model.encoder)
    again = training.train(
        config_lib.replace(run, steps=4),
        _dataset(_photos(real_photos), 192),
        resumed_dir,
        verbose=0,
    )
    assert int(again.optimizer.iterations) == 4
    assert not again.encoder.trainable
    assert not any(_changed(encoder_before, _weights(again.encoder)))


def test_cache_features_config_is_checked(weights_file):
    with pytest.raises(ValueError, match="needs a cache_dir"):
        _config(cache_features=True)
    with pytest.raises(ValueError, match="needs no autoencoder"):
        _config(cache_features=True, cache_dir="cache", autoencoder=True)
    with pytest.raises(ValueError, match="needs no data_service"):
        _config(cache_features=True, cache_dir="cache", data_service="grpc://host:5050")
    with pytest.raises(ValueError, match="needs encoder_weights for alexnet/conv5"):
        building.check_config(_config(cache_features=True, cache_dir="cache"))
    with pytest.raises(ValueError, match="network encoders"):
        building.check_config(_config(representation="hog", cache_features=True, cache_dir="cache"))
    run = _config(cache_features=True, cache_dir="cache", encoder_weights=weights_file[0])
    model = building.build_model(run)
    assert not isinstance(model, Reconstructor) and model.input_shape[1:] == (6, 6, 256)


def test_a_work_dir_keeps_its_choice_of_crops_or_cached_features(fixed_run, tmp_path):
    run, work_dir, _, _ = fixed_run
    copy = str(tmp_path / "run")
    shutil.copytree(work_dir, copy)
    cached = config_lib.replace(run, cache_features=True, cache_dir="cache", steps=4)
    with pytest.raises(ValueError, match="holds its encoder.*cache_features=True"):
        training.train(cached, None, copy)
    decoder_dir = str(tmp_path / "decoder")
    features = tf.random.uniform((4, 6, 6, 256))
    data = tf.data.Dataset.from_tensor_slices((features, tf.zeros((4, 192, 192, 3))))
    decoder = training.train(cached, data.repeat().batch(2), decoder_dir, verbose=0)
    assert not isinstance(decoder, Reconstructor) and int(decoder.optimizer.iterations) == 4
    with pytest.raises(ValueError, match="lacks its encoder.*cache_features=False"):
        training.train(config_lib.replace(run, steps=6), None, decoder_dir)


def test_a_perceptual_run_keeps_its_encoder_mode_on_resume(tmp_path, real_photos):
    run = _config(
        representation="alexnet/conv1", image_size=64, steps=1, loss="perceptual",
        comparator="alexnet/conv1",
    )  # fmt: skip
    training.train(run, _dataset(_photos(real_photos, 64), 216), str(tmp_path), verbose=0)
    # The checkpoint is the perceptual wrapper; the encoder is in its generator.
    with pytest.raises(ValueError, match="trained with autoencoder=False"):
        training.train(config_lib.replace(run, autoencoder=True, steps=2), None, str(tmp_path))


def test_export_signatures_and_loading(fixed_run, tmp_path, real_photos):

    run, work_dir, model, _ = fixed_run
    path = export.export_saved_model(model, run.representation, str(tmp_path / "exports"))
    assert export.read_metadata(path)["feature_shape"] == [6, 6, 256]
    assert export.read_metadata(path)["image_size"] == 227
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default", "serve_float", "from_features"}
    images = _photos(real_photos, count=2)
    expected = np.clip(model.predict(images, verbose=0), 0.0, 1.0)
    served = loaded.signatures["serving_default"](images=tf.constant(images.astype(np.uint8)))
    assert served["reconstruction"].shape == (2, 192, 192, 3)
    from_float = loaded.signatures["serve_float"](images=tf.constant(images))["reconstruction"]
    np.testing.assert_allclose(from_float.numpy(), expected, atol=1e-4)
    features = model.encoder(images)
    from_features = loaded.signatures["from_features"](features=features)["reconstruction"]
    assert from_features.shape == (2, 192, 192, 3)
    np.testing.assert_allclose(from_features.numpy(), expected, atol=1e-4)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, 6, 6, 256\]"):
        loaded.signatures["from_features"](features=tf.zeros((1, 13, 13, 256)))
    # launch.reconstruct's loader: the work dir and its export agree.
    for source in (work_dir, str(tmp_path / "exports")):
        loaded = keras_invert.load(source)
        reconstruct, name, image_size = loaded.reconstruct, loaded.representation, loaded.image_size
        assert (name, image_size) == ("alexnet/conv5", 227)
        np.testing.assert_allclose(reconstruct(images), expected, atol=1e-4)
