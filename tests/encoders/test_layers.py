"""LocalResponseNormalization and ImagePreprocessing: values, config and serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert.encoders import ImagePreprocessing, LocalResponseNormalization


def _caffe_lrn(x, size, alpha, beta, k):
    half = size // 2
    padded = np.pad(np.square(x.astype(np.float64)), [(0, 0)] * (x.ndim - 1) + [(half, half)])
    window_sum = sum(padded[..., i : i + x.shape[-1]] for i in range(size))
    return x / (k + alpha / size * window_sum) ** beta


def test_lrn_matches_caffe_formula():
    x = np.random.default_rng(0).normal(0, 100, (2, 5, 5, 11)).astype(np.float32)
    layer = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, k=1.0)
    expected = _caffe_lrn(x, 5, 1e-4, 0.75, 1.0)
    assert np.max(np.abs(expected - x)) > 1.0  # the normalisation is not negligible here
    np.testing.assert_allclose(layer(x), expected, rtol=1e-5)
    # TensorFlow's op takes the per-element alpha: Caffe's alpha / size.
    tf_lrn = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)
    np.testing.assert_allclose(layer(x), tf_lrn, rtol=1e-5)


@pytest.mark.parametrize("size", [0, 4, 2.0])
def test_lrn_validates_size(size):
    with pytest.raises(ValueError, match="Received: size="):
        LocalResponseNormalization(size=size)


def test_preprocessing_caffe_convention_is_exact_at_network_size():
    image = np.random.default_rng(0).integers(0, 256, (1, 227, 227, 3), dtype=np.uint8)
    mean = (104.0, 117.0, 123.0)
    layer = ImagePreprocessing(227, mean=mean, reverse_channels=True)
    expected = image[..., ::-1].astype(np.float32) - np.float32(mean)
    np.testing.assert_array_equal(layer(image), expected)


def test_preprocessing_centre_crops_then_resizes():
    image = np.random.default_rng(0).uniform(0, 255, (1, 50, 81, 3)).astype(np.float32)
    layer = ImagePreprocessing(50, mean=(0.0, 0.0, 0.0))
    # The centre 50x50 square, at its own size, comes back unchanged.
    np.testing.assert_allclose(layer(image), image[:, :, 15:65], atol=1e-3)
    assert tuple(ImagePreprocessing(20)(image).shape) == (1, 20, 20, 3)


@pytest.mark.parametrize("shape", [(2, 64, 64, 3), (2, 48, 81, 3), (2, 90, 57, 3)])
def test_preprocessing_in_a_graph_of_unknown_sizes_equals_eager(shape):
    # How a SavedModel signature calls it: batch (and image) sizes unknown.
    images = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    layer = ImagePreprocessing(227, mean=(0.0, 0.0, 0.0))
    side = min(shape[1:3])
    top, left = (shape[1] - side) // 2, (shape[2] - side) // 2
    square = images[:, top : top + side, left : left + side]
    expected = tf.image.resize(square, (227, 227), method="bilinear", antialias=True).numpy()
    np.testing.assert_allclose(layer(images), expected, atol=1e-3)
    for spec in ([None, *shape[1:]], [None, None, None, 3]):
        graph = tf.function(layer, input_signature=[tf.TensorSpec(spec, tf.float32)])
        np.testing.assert_allclose(graph(tf.constant(images)), expected, atol=1e-3)


def test_preprocessing_torchvision_convention():
    image = np.full((1, 8, 8, 3), 255, np.uint8)
    layer = ImagePreprocessing(8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0), scale=1 / 255)
    np.testing.assert_allclose(layer(image)[0, 0, 0], [2.0, 1.0, 0.5], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8, "mean": (1.0, 2.0)}, "mean"),
        ({"image_size": 8, "std": (1.0, 0.0, 1.0)}, "std"),
    ],
)
def test_preprocessing_validates_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"Received: {name}="):
        ImagePreprocessing(**kwargs)


@pytest.mark.parametrize(
    "layer",
    [
        LocalResponseNormalization(size=3, alpha=2e-3, beta=0.5, k=2.0, name="norm"),
        ImagePreprocessing(
            8, mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), scale=0.5, reverse_channels=True
        ),
    ],
    ids=["lrn", "preprocessing"],
)
def test_layers_round_trip_config_and_keras_file(layer, tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x), layer(x))

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layer(inputs))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.layers[1], type(layer))
    np.testing.assert_array_equal(restored(x), model(x))
