"""The launch scripts with an AlexNet layer: train with given weights (fixed encoder or
autoencoder, Caffe or torchvision), export, reconstruct."""

import json
import os
import pickle
import struct
import zipfile

import cv2
import numpy as np

import keras_invert


def _export_as_the_script_does(work_dir, export_dir):
    """launch.export's `main` in this process (the script runs in tests/launch/test_scripts.py)."""
    from keras_invert import config as config_lib
    from keras_invert import export

    run = config_lib.load(work_dir)
    export.export_saved_model(
        keras_invert.load(work_dir).model, run.representation, export_dir,
        image_size=run.image_size, encoder_options=config_lib.encoder_options(run),
    )  # fmt: skip


def test_train_export_reconstruct_conv5(tmp_path, launch_script):
    from keras_invert.encoders import alexnet

    weights = str(tmp_path / "random_caffenet.weights.h5")
    alexnet("caffe").save_weights(weights)
    work_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "exports")
    trained = launch_script(
        "train", f"--work_dir={work_dir}", "--representation=alexnet/conv5",
        "--data=samples", "--image_size=64", "--width=0.0625", "--batch_size=2", "--steps=2",
        "--steps_per_epoch=2", "--seed=0",
        f"--encoder_weights={weights}",
    )  # fmt: skip
    assert "fixed encoder" in trained.stderr and "RANDOM" not in trained.stderr
    with open(os.path.join(work_dir, "config.json")) as file:
        stored = json.load(file)
    assert stored["encoder_weights"] == weights and stored["autoencoder"] is False

    _export_as_the_script_does(work_dir, export_dir)
    # The served graph (unknown batch size, AlexNet resizing 64 -> 227 inside) is the work dir's.
    from pipelines import load_images, sources

    images = load_images(sources.resolve("samples", "test").files[:2], 64)
    served = keras_invert.load(export_dir).reconstruct(images)
    np.testing.assert_allclose(served, keras_invert.load(work_dir).reconstruct(images), atol=1e-4)
    grid = str(tmp_path / "grid.png")
    metrics_file = str(tmp_path / "metrics.json")
    result = launch_script(
        "reconstruct", f"--model={export_dir}", "--data=samples", "--split=test",
        f"--out={grid}", f"--metrics_out={metrics_file}",
    )  # fmt: skip
    assert "alexnet/conv5 decoder" in result.stdout
    with open(metrics_file) as file:
        count = len(json.load(file)["images"])
    # Rows of original | reconstruction at the conv5 decoder's 192 x 192.
    assert cv2.imread(grid).shape == (24 + 192 * count, 2 * 192, 3)


def test_train_on_cached_features_then_export_and_evaluate(tmp_path, launch_script):
    import keras

    from keras_invert.encoders import alexnet
    from keras_invert.reconstructor import Reconstructor
    from pipelines import load_images, sources

    keras.utils.set_random_seed(5)
    weights = str(tmp_path / "conv1.weights.h5")
    alexnet("caffe", outputs=["conv1"]).save_weights(weights)
    work_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "exports")
    trained = launch_script(
        "train", f"--work_dir={work_dir}", "--representation=alexnet/conv1",
        f"--encoder_weights={weights}", "--cache_dir=cache", "--cache_features",
        "--crops_per_image=1", "--data=samples", "--image_size=64", "--width=0.0625",
        "--batch_size=2", "--steps=2", "--steps_per_epoch=2", "--seed=0",
    )  # fmt: skip
    assert "fed cached features of the fixed encoder" in trained.stderr
    caches = os.listdir(os.path.join(work_dir, "cache"))
    # The training and the TensorBoard (test) caches, both of conv1 features.
    assert len(caches) == 2 and all("features" in name for name in caches), caches
    model = keras.saving.load_model(os.path.join(work_dir, "model.keras"))
    assert not isinstance(model, Reconstructor) and model.input_shape[1:] == (27, 27, 96)

    # The export puts the encoder with the file's weights in front of the decoder.
    _export_as_the_script_does(work_dir, export_dir)
    images = load_images(sources.resolve("samples", "test").files[:2], 64)
    expected = keras_invert.load(work_dir).reconstruct(images)
    assert expected.shape == (2, 216, 216, 3)
    np.testing.assert_allclose(
        keras_invert.load(export_dir).reconstruct(images), expected, atol=1e-4
    )
    network = alexnet("caffe", weights=weights, outputs=["conv1"])
    direct = np.clip(model.predict(network.predict(images, verbose=0)["conv1"], verbose=0), 0, 1)
    np.testing.assert_allclose(expected, direct, atol=1e-4)


def test_train_autoencoder_trains_the_stored_encoder_from_the_given_weights(
    tmp_path, launch_script
):
    import keras

    from keras_invert.encoders import alexnet
    from keras_invert.reconstructor import Reconstructor

    keras.utils.set_random_seed(3)
    network = alexnet("caffe", outputs=["conv1"])
    weights = str(tmp_path / "conv1.weights.h5")
    network.save_weights(weights)
    initial = [v.numpy() for v in network.get_layer("conv1").weights]
    work_dir = str(tmp_path / "run")
    trained = launch_script(
        "train", f"--work_dir={work_dir}", "--representation=alexnet/conv1",
        "--autoencoder", f"--encoder_weights={weights}", "--data=samples", "--image_size=64",
        "--width=0.0625", "--batch_size=2", "--steps=2", "--steps_per_epoch=2", "--seed=0",
    )  # fmt: skip
    assert "autoencoder, encoder trained" in trained.stderr
    with open(os.path.join(work_dir, "config.json")) as file:
        assert json.load(file)["autoencoder"] is True
    model = keras.saving.load_model(os.path.join(work_dir, "model.keras"))
    assert isinstance(model, Reconstructor) and model.encoder.trainable
    for before, after in zip(initial, model.encoder.layer.get_layer("conv1").weights, strict=True):
        change = np.abs(after.numpy() - before)
        # Trained, from the file's weights: two Adam steps of 1e-3 move each weight
        # by at most about 2e-3, a fresh random start by about the weights' scale.
        assert change.max() > 0 and change.max() < 5e-3


def _write_pth(path, arrays):
    """`torch.save` of a dict of float32 arrays in its zip layout, written without torch."""

    def text(value):
        data = value.encode()
        return pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    def integer(value):
        return pickle.BININT + struct.pack("<i", value)

    def integers(values):
        return pickle.MARK + b"".join(integer(v) for v in values) + pickle.TUPLE

    stream = [pickle.PROTO + b"\x02", pickle.EMPTY_DICT, pickle.MARK]
    for key, (name, array) in enumerate(arrays.items()):
        strides = [int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim)]
        storage = [
            pickle.MARK, text("storage"), pickle.GLOBAL + b"torch\nFloatStorage\n",
            text(str(key)), text("cpu"), integer(array.size), pickle.TUPLE, pickle.BINPERSID,
        ]  # fmt: skip
        stream += [
            text(name), pickle.GLOBAL + b"torch._utils\n_rebuild_tensor_v2\n", pickle.MARK,
            *storage, integer(0), integers(array.shape), integers(strides), pickle.NEWFALSE,
            pickle.GLOBAL + b"collections\nOrderedDict\n", pickle.EMPTY_TUPLE, pickle.REDUCE,
            pickle.TUPLE, pickle.REDUCE,
        ]  # fmt: skip
    stream += [pickle.SETITEMS, pickle.STOP]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"".join(stream))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, array in enumerate(arrays.values()):
            archive.writestr(f"archive/data/{key}", np.ascontiguousarray(array, "<f4").tobytes())


def test_train_and_export_torchvision_conv5_from_a_pth(tmp_path, launch_script):
    import keras
    import tensorflow as tf

    from keras_invert import export
    from keras_invert.weights import TORCHVISION_ALEXNET_KEYS, read_torch_state_dict

    rng = np.random.default_rng(0)
    kernels, state = {}, {}
    for index, (height, channels, filters) in enumerate(
        [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)], start=1
    ):
        fan_in = height * height * channels
        kernel = rng.normal(0, np.sqrt(2 / fan_in), (height, height, channels, filters))
        kernels[f"conv{index}"] = kernel.astype(np.float32)
        prefix = TORCHVISION_ALEXNET_KEYS[f"conv{index}"]
        state[f"{prefix}.weight"] = kernel.transpose(3, 2, 0, 1).astype(np.float32)  # OIHW
        state[f"{prefix}.bias"] = rng.normal(0, 0.1, filters).astype(np.float32)
    pth = str(tmp_path / "alexnet-owt.pth")
    _write_pth(pth, state)
    np.testing.assert_array_equal(read_torch_state_dict(pth)["features.10.bias"], state[
        "features.10.bias"
    ])  # fmt: skip

    work_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "exports")
    trained = launch_script(
        "train", f"--work_dir={work_dir}", "--representation=alexnet-torchvision/conv5",
        f"--encoder_weights={pth}", "--data=samples", "--image_size=64", "--width=0.0625",
        "--batch_size=2", "--steps=2", "--steps_per_epoch=2", "--seed=0",
    )  # fmt: skip
    assert "fixed encoder" in trained.stderr and "RANDOM" not in trained.stderr
    model = keras.saving.load_model(os.path.join(work_dir, "model.keras"))
    network = model.encoder.layer
    for name, kernel in kernels.items():
        np.testing.assert_array_equal(network.get_layer(name).kernel.numpy(), kernel)
    _export_as_the_script_does(work_dir, export_dir)  # Torchvision's preprocessing inside.
    version = export.latest_version_dir(export_dir)
    metadata = export.read_metadata(version)
    assert metadata["representation"] == "alexnet-torchvision/conv5"
    assert metadata["feature_shape"] == [6, 6, 256]
    images = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    served = tf.saved_model.load(version).signatures["serve_float"](images=tf.constant(images))
    expected = np.clip(model.predict(images, verbose=0), 0.0, 1.0)
    np.testing.assert_allclose(served["reconstruction"].numpy(), expected, atol=1e-4)
