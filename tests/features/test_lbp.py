"""Uniform LBP against VLFeat's C library (the paper's exact feature), and its TF behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert import vlfeat
from keras_invert.features.lbp import LBP, lbp, lbp_output_size
from keras_invert.features.lbp_histograms import UNIFORM_BINS

MAX_ABS_TOLERANCE = 1e-4
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _reference(gray_batch, cell_size=16):
    """libvl on each `[H, W]` image of the very same grayscale float array."""
    return np.stack([vlfeat.lbp(gray, cell_size) for gray in gray_batch])


def _crops(real_photos, height, width):
    return np.stack([real_photos[name][:height, :width] for name in PHOTOS]).astype(np.float32)


@pytest.mark.parametrize(
    "height, width, scale",
    [(256, 256, 1.0), (197, 251, 1.0), (100, 77, 1 / 255), (16, 16, 1 / 255), (45, 300, 1.0)],
)
def test_matches_vlfeat_on_real_photos(real_photos, height, width, scale):
    images = _crops(real_photos, height, width) * np.float32(scale)
    ours = lbp(images).numpy()
    # rgb_to_grayscale on the same batch gives bit-identical gray values to the op's.
    reference = _reference(tf.image.rgb_to_grayscale(images)[..., 0].numpy())
    assert ours.shape == reference.shape == (len(PHOTOS), height // 16, width // 16, 58)
    assert np.abs(ours - reference).max() <= MAX_ABS_TOLERANCE
    # The photos are textured: most of the 58 bins are used, and cells are unit-norm.
    assert np.count_nonzero(ours.max(axis=(0, 1, 2))) >= 50
    np.testing.assert_allclose(np.sum(ours**2, axis=-1), 1.0, atol=1e-5)


def test_matches_vlfeat_on_grayscale_other_cell_sizes_and_rank3(real_photos):
    gray = real_photos["chelsea"][:90, :121].mean(axis=-1, keepdims=True).astype(np.float32)
    for cell_size in (5, 8, 32):
        ours = lbp(gray, cell_size=cell_size).numpy()
        reference = vlfeat.lbp(gray[..., 0], cell_size)
        assert ours.shape == (90 // cell_size, 121 // cell_size, 58)
        assert np.abs(ours - reference).max() <= MAX_ABS_TOLERANCE


def test_uniform_bins_follow_vlfeat_quantisation():
    assert UNIFORM_BINS.shape == (256,)
    assert sorted(set(UNIFORM_BINS.tolist())) == list(range(58))
    assert UNIFORM_BINS[0b00000000] == UNIFORM_BINS[0b11111111] == 56
    assert UNIFORM_BINS[0b00000001] == 0  # one E neighbour brighter: run start 0, length 1
    assert UNIFORM_BINS[0b00001100] == 7 * 2 + 1  # S and SW: run start 2, length 2
    assert UNIFORM_BINS[0b10000001] == 7 * 7 + 1  # NE and E: the run starts at 7 and wraps
    assert UNIFORM_BINS[0b00000101] == 57  # two runs: not uniform


def test_output_shape_is_floor_of_cells():
    for size in (16, 31, 32, 255):
        assert lbp_output_size(size) == size // 16
    assert lbp(np.zeros((2, 31, 48, 3), np.float32)).shape == (2, 1, 3, 58)


def test_unknown_shapes_in_tf_function_and_tf_data(real_photos):
    images = _crops(real_photos, 70, 90)
    reference = _reference(tf.image.rgb_to_grayscale(images)[..., 0].numpy())
    dynamic = tf.function(lbp, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    assert np.abs(dynamic(images).numpy() - reference).max() <= MAX_ABS_TOLERANCE

    dataset = tf.data.Dataset.from_generator(
        lambda: iter(images), output_signature=tf.TensorSpec([None, None, 3], tf.float32)
    ).map(lbp)
    assert np.abs(np.stack(list(dataset)) - reference).max() <= MAX_ABS_TOLERANCE

    static = tf.data.Dataset.from_tensor_slices(images).map(lbp).batch(len(PHOTOS))
    assert static.element_spec.shape.as_list() == [None, 4, 5, 58]
    assert np.abs(next(iter(static)).numpy() - reference).max() <= MAX_ABS_TOLERANCE


def test_saved_model_with_unknown_batch_size(real_photos, tmp_path):
    module = tf.Module()
    module.features = tf.function(
        lambda images: lbp(images), input_signature=[tf.TensorSpec([None, 48, 64, 3], tf.float32)]
    )
    tf.saved_model.save(module, str(tmp_path / "lbp"))
    restored = tf.saved_model.load(str(tmp_path / "lbp"))
    images = _crops(real_photos, 48, 64)[:3]
    np.testing.assert_allclose(restored.features(images).numpy(), lbp(images).numpy(), atol=1e-6)


def test_layer_config_and_keras_file_round_trip(real_photos, tmp_path):
    inputs = keras.Input((64, 80, 3))
    model = keras.Model(inputs, LBP(cell_size=16, name="lbp")(inputs))
    assert model.output_shape == (None, 4, 5, 58)
    assert LBP.from_config(model.get_layer("lbp").get_config()).cell_size == 16

    path = tmp_path / "lbp.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.get_layer("lbp"), LBP)
    images = _crops(real_photos, 64, 80)
    expected = _reference(tf.image.rgb_to_grayscale(images)[..., 0].numpy())
    np.testing.assert_allclose(
        restored.predict(images, verbose=0), expected, atol=MAX_ABS_TOLERANCE
    )


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        lbp(np.zeros((1, 32, 32, 2), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        lbp(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="at least 16x16"):
        lbp(np.zeros((1, 15, 64, 3), np.float32))
    with pytest.raises(ValueError, match="cell_size"):
        lbp(np.zeros((1, 32, 32, 3), np.float32), cell_size=0)
    with pytest.raises(ValueError, match="cell_size"):
        LBP(cell_size=2.5)
    dynamic = tf.function(lbp, input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 16x16"):
        dynamic(np.zeros((1, 20, 8, 1), np.float32))


def test_rejects_nan_and_inf_images():
    image = np.full((1, 16, 16, 3), 128.0, np.float32)
    image[0, 5, 5, 1] = -np.inf
    with pytest.raises(ValueError, match="Expected finite images.*0 NaN and 1 Inf"):
        lbp(image)
    image[0, 5, 5, 1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
        tf.function(lbp)(image)
    # In a graph the compiled path checks each half of a batch's gray image.
    batch = np.concatenate([np.full_like(image, 128.0), image])
    batch[1, 5, 5, 1] = -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
        tf.function(lbp)(batch)


def test_clip_prepares_raw_float_pixels_as_the_served_crops(real_photos):
    """`clip=True`: each channel clipped to 0..255 before the gray conversion, in every path."""
    raw = _crops(real_photos, 48, 64) * np.float32(1.4) - np.float32(40)  # About -40..317.
    expected = lbp(raw.clip(0, 255)).numpy()
    assert not np.array_equal(lbp(raw).numpy(), expected)
    dynamic = tf.function(
        lambda images: lbp(images, clip=True),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    compiled = tf.function(lambda images: lbp(images, clip=True))  # Static shape: XLA steps.
    for clipped in (lbp(raw, clip=True), dynamic(raw), compiled(raw), compiled(raw[:1])):
        np.testing.assert_array_equal(clipped.numpy(), expected[: len(clipped)])
    # Compiled, NaN and Inf are refused although the clip would make Inf 255.
    for value in (np.nan, np.inf, -np.inf):
        bad = raw.copy()
        bad[2, 7, 9, 0] = value
        with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
            compiled(bad)
