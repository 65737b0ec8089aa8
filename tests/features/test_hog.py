"""HOG against VLFeat's C library (the paper's exact feature), and its TF behaviour."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert import vlfeat
from keras_invert.features.hog import HOG, hog, hog_output_size

MAX_ABS_TOLERANCE = 1e-4
MEAN_ABS_TOLERANCE = 1e-5


def _compare(image):
    reference = vlfeat.hog(image, cell_size=8, num_orientations=9)
    ours = hog(image).numpy()
    assert ours.shape == reference.shape
    difference = np.abs(ours - reference)
    assert difference.max() <= MAX_ABS_TOLERANCE
    assert difference.mean() <= MEAN_ABS_TOLERANCE
    return difference


@pytest.mark.parametrize(
    "name, height, width",
    [("astronaut", 256, 256), ("coffee", 197, 251), ("chelsea", 100, 77), ("rocket", 45, 64)],
)
def test_matches_vlfeat_on_real_photos(real_photos, name, height, width):
    image = real_photos[name][:height, :width].astype(np.float32)
    _compare(image)


def test_matches_vlfeat_on_grayscale_and_unit_range(real_photos):
    gray = real_photos["coffee"][:120, :136].mean(axis=-1, keepdims=True).astype(np.float32)
    _compare(gray)
    _compare(real_photos["astronaut"][:64, :72].astype(np.float32) / 255.0)


@pytest.mark.parametrize("cell_size, num_orientations", [(4, 9), (5, 9), (6, 6), (16, 12)])
def test_matches_vlfeat_for_other_cells_and_orientations(real_photos, cell_size, num_orientations):
    image = real_photos["coffee"][:83, :101].astype(np.float32)
    reference = vlfeat.hog(image, cell_size=cell_size, num_orientations=num_orientations)
    ours = hog(image, cell_size=cell_size, num_orientations=num_orientations).numpy()
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= MAX_ABS_TOLERANCE


def test_xla_compiled_matches_vlfeat(real_photos):
    batch = np.stack([real_photos[n][:96, :104] for n in ("astronaut", "rocket")]).astype(
        np.float32
    )
    compiled = tf.function(hog, jit_compile=True)
    reference = np.stack([vlfeat.hog(image) for image in batch])
    assert np.abs(compiled(batch).numpy() - reference).max() <= MAX_ABS_TOLERANCE


def test_xla_compiled_is_exact_on_unit_range_and_unknown_sizes(real_photos):
    # Fused multiply-adds would flip near-tied channels and orientations on 0..1
    # pixels (~1% of the values, by up to 6e-2); the op keeps its products rounded.
    batch = np.stack([real_photos[n][:72, :88] for n in ("astronaut", "rocket")])
    batch = batch.astype(np.float32) / np.float32(255)
    compiled = tf.function(
        hog, jit_compile=True, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )
    reference = np.stack([vlfeat.hog(image) for image in batch])
    assert np.abs(compiled(batch).numpy() - reference).max() <= 1e-4


def test_output_shape_follows_vlfeat_rounding():
    for size in (8, 11, 12, 64, 67, 68, 255):
        assert hog_output_size(size) == (size + 4) // 8
    image = np.zeros((2, 67, 68, 3), np.float32)
    assert hog(image).shape == (2, 8, 9, 31)


def test_batch_equals_per_image(real_photos):
    batch = np.stack([real_photos[n][:96, :96] for n in ("astronaut", "coffee")]).astype(np.float32)
    batched = hog(batch).numpy()
    for i in range(2):
        np.testing.assert_allclose(batched[i], hog(batch[i]).numpy(), atol=1e-6)


def test_runs_in_tf_data_with_unknown_shapes(real_photos):
    image = real_photos["astronaut"][:80, :88].astype(np.float32)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter([image]), output_signature=tf.TensorSpec([None, None, 3], tf.float32)
    ).map(hog)
    (features,) = list(dataset)
    np.testing.assert_allclose(features.numpy(), vlfeat.hog(image), atol=1e-5)


def test_gradient_is_finite_and_nonzero():
    image = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32))
    # A flat region gives zero-norm gradients: the square root must not produce NaN there.
    image[:, :8, :8, :].assign(tf.zeros((1, 8, 8, 3)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(hog(image) ** 2)
    gradient = tape.gradient(loss, image).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.abs(gradient).sum() > 0


def test_rejects_wrong_channels_and_rank():
    with pytest.raises(ValueError, match="channels"):
        hog(np.zeros((1, 16, 16, 4), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        hog(np.zeros((16, 16), np.float32))


def test_rejects_nan_and_inf_images():
    image = np.full((1, 16, 16, 3), 128.0, np.float32)
    image[0, 5, 5, 1] = np.nan
    with pytest.raises(ValueError, match="Expected finite images.*1 NaN and 0 Inf"):
        hog(image)
    image[0, 5, 5, 1] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite images"):
        tf.function(hog)(image)


def test_layer_round_trips_through_keras_file(tmp_path, real_photos):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, HOG(cell_size=8, num_orientations=9, name="hog")(inputs))
    path = tmp_path / "hog.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    image = real_photos["chelsea"][None, :64, :64].astype(np.float32)
    np.testing.assert_allclose(restored.predict(image, verbose=0), model.predict(image, verbose=0))
    assert restored.get_layer("hog").get_config()["num_orientations"] == 9


def test_the_smallest_images_match_vlfeat_and_smaller_or_non_images_are_refused(real_photos):
    photo = real_photos["astronaut"].astype(np.float32)
    for side in (4, 5, 7):  # One cell of 8: (side + 4) // 8 = 1.
        crop = photo[100 : 100 + side, 200 : 200 + side]
        np.testing.assert_allclose(hog(crop).numpy(), vlfeat.hog(crop), atol=1e-5)
    for side in (1, 3):
        with pytest.raises(ValueError, match=r"at least 4x4 pixels \(one cell of 8\)"):
            hog(photo[:side, :side])
    for value, received in [("a.jpg", "dtype=string"), (None, "Received: NoneType")]:
        with pytest.raises(ValueError, match=f"Expected images as an integer or float.*{received}"):
            hog(value)
