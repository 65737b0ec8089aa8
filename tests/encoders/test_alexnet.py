"""AlexNet encoders: graph, shapes and names of Table 1, preprocessing, subsets, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert.encoders import (
    ALEXNET_IMAGE_SIZES,
    ALEXNET_LAYERS,
    ALEXNET_OUTPUT_SHAPES,
    CAFFE_BGR_MEAN,
    alexnet,
    select_outputs,
    set_alexnet_weights,
)

# Weight layers and parameter counts of the reference networks (CaffeNet and
# torchvision.models.alexnet report these totals).
PARAMETER_COUNTS = {"caffe": 60_965_224, "torchvision": 61_100_840}
CAFFE_LAYER_ORDER = [
    "image", "preprocessing",
    "conv1", "relu1", "pool1", "norm1",
    "conv2", "relu2", "pool2", "norm2",
    "conv3", "relu3",
    "conv4", "relu4",
    "conv5", "relu5", "pool5",
    "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8",
]  # fmt: skip


@pytest.fixture(scope="module")
def caffe_model():
    return alexnet("caffe")


@pytest.mark.parametrize("variant", ["caffe", "torchvision"])
def test_output_shapes_and_parameter_count(variant):
    model = alexnet(variant)
    shapes = {name: tuple(tensor.shape[1:]) for name, tensor in model.output.items()}
    assert shapes == ALEXNET_OUTPUT_SHAPES[variant]
    assert model.count_params() == PARAMETER_COUNTS[variant]


def test_caffe_layers_read_like_table_1(caffe_model):
    assert [layer.name for layer in caffe_model.layers] == CAFFE_LAYER_ORDER
    groups = {name: caffe_model.get_layer(name).groups for name in ("conv2", "conv4", "conv5")}
    assert groups == {"conv2": 2, "conv4": 2, "conv5": 2}
    assert caffe_model.get_layer("conv3").groups == 1


def test_any_image_size_and_dtype(caffe_model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)
    from_uint8 = caffe_model(image)
    from_float = caffe_model(image.astype(np.float32))
    for name in ALEXNET_LAYERS:
        np.testing.assert_array_equal(from_uint8[name], from_float[name])
    # Larger, non-square images are centre-cropped and resized inside the model.
    large = caffe_model(rng.integers(0, 256, (1, 300, 400, 3), dtype=np.uint8))
    assert tuple(large["conv5"].shape) == (1, 6, 6, 256)


def test_without_preprocessing_takes_network_input(caffe_model):
    raw = alexnet("caffe", include_preprocessing=False, outputs=["conv1"])
    raw.get_layer("conv1").set_weights(caffe_model.get_layer("conv1").get_weights())
    assert tuple(raw.input.shape) == (None, 227, 227, 3)
    image = np.random.default_rng(0).integers(0, 256, (1, 227, 227, 3)).astype(np.float32)
    preprocessed = image[..., ::-1] - np.float32(CAFFE_BGR_MEAN)
    np.testing.assert_allclose(
        raw(preprocessed)["conv1"], caffe_model(image)["conv1"], rtol=1e-5, atol=1e-5
    )


def test_dropout_only_in_training(caffe_model):
    image = np.random.default_rng(0).uniform(0, 255, (1, 227, 227, 3)).astype(np.float32)
    inference = caffe_model(image, training=False)
    training = caffe_model(image, training=True)
    # relu6 is the fc6 representation, taken before drop6; fc7 sees drop6's output.
    np.testing.assert_array_equal(training["fc6"], inference["fc6"])
    assert not np.allclose(training["fc7"], inference["fc7"])
    np.testing.assert_array_equal(caffe_model(image)["fc8"], inference["fc8"])


def test_select_outputs_prunes_and_shares_weights(caffe_model):
    subset = select_outputs(caffe_model, ["conv2", "conv1"])
    assert list(subset.output) == ["conv2", "conv1"]
    assert "conv3" not in [layer.name for layer in subset.layers]
    assert subset.get_layer("conv1") is caffe_model.get_layer("conv1")
    direct = alexnet("caffe", outputs=["conv5"])
    assert [layer.name for layer in direct.layers][-1] == "pool5"


@pytest.mark.parametrize(
    "outputs", [["conv6"], "conv5", [], ["conv1", "conv1"]], ids=["unknown", "str", "empty", "dup"]
)
def test_select_outputs_validates(caffe_model, outputs):
    with pytest.raises(ValueError, match="Received: outputs="):
        select_outputs(caffe_model, outputs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"variant": "vgg"}, "variant"),
        ({"input_size": 0}, "input_size"),
        ({"input_size": (227, 227, 3)}, "input_size"),
        ({"include_preprocessing": False, "input_size": 256}, "input_size"),
        ({"weights": "alexnet.npz"}, "weights"),
    ],
)
def test_alexnet_validates_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"Received: {name}="):
        alexnet(**kwargs)


def test_static_input_size_and_torchvision_size():
    model = alexnet("torchvision", input_size=(240, 320), outputs=["conv1"])
    assert tuple(model.input.shape) == (None, 240, 320, 3)
    assert model.get_layer("preprocessing").image_size == ALEXNET_IMAGE_SIZES["torchvision"]


def test_set_alexnet_weights_checks_everything_first():
    model = alexnet("caffe", outputs=["conv2"])
    before = model.get_layer("conv1").kernel.numpy()
    conv1 = (np.ones((96, 3, 11, 11)), np.ones(96))
    with pytest.raises(ValueError, match=r"no entries for layer\(s\) \['conv2'\]"):
        set_alexnet_weights(model, {"conv1": conv1})
    with pytest.raises(ValueError, match="needs a kernel and a bias"):
        set_alexnet_weights(model, {"conv1": conv1, "conv2": (np.ones((256, 48, 5, 5)),)})
    with pytest.raises(ValueError, match=r"'conv2': the bias .* \(128,\).* \(256,\)"):
        set_alexnet_weights(
            model, {"conv1": conv1, "conv2": (np.ones((256, 48, 5, 5)), np.ones(128))}
        )
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)


def test_in_tf_data_pipeline():
    model = alexnet("caffe", outputs=["conv1"])
    images = np.random.default_rng(0).integers(0, 256, (2, 240, 260, 3), dtype=np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(2).map(lambda x: model(x)["conv1"])
    batch = next(iter(dataset))
    np.testing.assert_allclose(batch, model(images)["conv1"], rtol=1e-5, atol=1e-4)


def test_keras_file_round_trip(tmp_path):
    model = alexnet("caffe", outputs=["conv2"])
    image = np.random.default_rng(0).integers(0, 256, (1, 240, 250, 3), dtype=np.uint8)
    path = tmp_path / "alexnet_conv2.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored(image)["conv2"], model(image)["conv2"])
