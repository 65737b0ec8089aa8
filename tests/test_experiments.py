"""The paper's feature experiments (keras_invert.experiments) and launch.experiment."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_invert import experiments, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyModel:
    """HOG and an untrained width-0.125 decoder: the interface of launch.common's parts."""

    representation = "hog"
    image_size = output_size = 64

    def __init__(self):
        self.hog = registry.get("hog").make_encoder()
        self.decoder = registry.get("hog").build_decoder(64, width=0.125)

    def encode(self, images):
        return np.asarray(self.hog(np.asarray(images, np.float32)))

    def decode(self, features):
        return np.clip(self.decoder(np.asarray(features, np.float32)).numpy(), 0.0, 1.0)


@pytest.fixture(scope="module")
def model():
    return TinyModel()


@pytest.fixture(scope="module")
def crops(real_photos):
    import tensorflow as tf

    photos = [real_photos[n][:256, :256] for n in ("astronaut", "coffee", "chelsea")]
    return np.stack([tf.image.resize(p, [64, 64]).numpy() for p in photos]).astype(np.float32)


@pytest.fixture
def relu_features():
    values = np.random.default_rng(0).normal(size=(40, 6, 5)).astype(np.float32)
    return np.maximum(values, 0.0)  # Many exact zeros, as after a ReLU.


def test_interpolation_ends_are_the_two_features_and_the_middle_is_their_mean():
    a, b = np.zeros((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    blends = experiments.interpolate(a, b, steps=5)
    assert blends.shape == (5, 2, 3)
    np.testing.assert_array_equal(blends[0], a)
    np.testing.assert_array_equal(blends[-1], b)
    np.testing.assert_allclose(blends[2], (a + b) / 2)


def test_decoded_interpolation_ends_equal_the_two_images_decodes(model, crops):
    figure = experiments.run_interpolation(model, crops[:2], steps=4)
    assert max(figure.numbers["endpoint_difference"]) < 1e-4
    assert figure.numbers["distance_to_first"][0] == pytest.approx(0, abs=1e-3)
    assert figure.numbers["distance_to_second"][-1] == pytest.approx(0, abs=1e-3)
    assert len(figure.rows[0]) == len(figure.column_labels) == 4 + 2


def test_binarised_features_keep_the_pattern_of_nonzeros_and_the_norm(relu_features):
    binary = experiments.binarize(relu_features)
    np.testing.assert_array_equal(binary != 0, relu_features != 0)
    flat, original = binary.reshape(40, -1), relu_features.reshape(40, -1)
    np.testing.assert_allclose(
        np.linalg.norm(flat, axis=1), np.linalg.norm(original, axis=1), rtol=1e-6
    )
    for row in flat:  # One magnitude per example.
        assert len(np.unique(row[row != 0])) == 1


def test_dropout_zeroes_about_half_and_keeps_the_norm_when_asked():
    features = np.random.default_rng(1).uniform(0.1, 1, (4, 2500)).astype(np.float32)
    dropped, kept = experiments.dropout(features, 0.5, seed=3)
    assert abs((dropped == 0).mean() - 0.5) < 0.03
    np.testing.assert_array_equal(dropped != 0, kept)
    np.testing.assert_allclose(
        np.linalg.norm(dropped, axis=1), np.linalg.norm(features, axis=1), rtol=1e-5
    )
    plain, kept = experiments.dropout(features, 0.5, keep_norm=False, seed=3)
    np.testing.assert_array_equal(plain[kept], features[kept])


def test_dark_knowledge_variants_zero_the_right_units():
    features = np.array([[0.5, 3.0, -1.0, 2.0, 0.25, 4.0]], np.float32)
    np.testing.assert_array_equal(experiments.top_k_only(features, 2), [[0, 3.0, 0, 0, 0, 4.0]])
    np.testing.assert_array_equal(
        experiments.all_but_top_k(features, 2), [[0.5, 0, -1.0, 2.0, 0.25, 0]]
    )
    assert experiments.single_unit((2, 3), 4, 7.0).tolist() == [[[0, 0, 0], [0, 7.0, 0]]]


def test_histogram_samples_stay_inside_each_units_observed_range(relu_features):
    relu_features[:, 0, 0] = 2.5  # A constant unit.
    histogram = experiments.HistogramDistribution.fit(relu_features, bins=8)
    samples = histogram.sample(500, seed=0)
    assert samples.shape == (500, 6, 5)
    assert np.all(samples >= relu_features.min(axis=0))
    assert np.all(samples <= relu_features.max(axis=0))
    np.testing.assert_array_equal(samples[:, 0, 0], 2.5)
    # Each unit's distribution is its own: the means follow the data's.
    np.testing.assert_allclose(samples.mean(axis=0), relu_features.mean(axis=0), atol=0.2)


def test_truncated_gaussian_fits_the_covariance_and_has_no_negative_values():
    data = np.random.default_rng(2).multivariate_normal(
        [1.0, 2.0, 0.0], [[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 0.25]], size=400
    )
    full = experiments.GaussianDistribution.fit(data)
    samples = full.sample(20000, seed=1, truncate=False)
    np.testing.assert_allclose(np.cov(samples.T), np.cov(data.T), atol=0.06)
    assert full.sample(100, seed=1).min() >= 0
    diagonal = experiments.GaussianDistribution.fit(data, covariance="diagonal")
    assert abs(np.corrcoef(diagonal.sample(20000, truncate=False).T)[0, 1]) < 0.05


def test_runners_give_labelled_rows_and_numbers(model, crops, relu_features):
    names = ["astronaut", "coffee", "chelsea"]
    layers = experiments.run_layers({"a": model, "b": model}, lambda size: crops, names)
    assert len(layers.rows) == 3 and len(layers.rows[0]) == 3 == len(layers.column_labels)
    assert len(layers.numbers["models"]["a"]["per_image"]) == 3
    assert layers.render().dtype == np.uint8

    perturbed = experiments.run_perturbation(model, crops, names, seed=0)
    assert set(perturbed.numbers["errors"]) == {"features", "binarised", "dropout"}
    assert 0.4 < perturbed.numbers["fraction_dropped"] < 0.6

    dark = experiments.run_dark_knowledge(model, crops, names, k=5)
    features = model.encode(crops).reshape(3, -1)
    # HOG has ties (the 0.2 clamp): check the values of the chosen units.
    top = np.sort(features[0])[::-1][:5]
    np.testing.assert_array_equal(features[0][dark.numbers["top_units"][0]], top)

    fitted = model.encode(crops)
    samples = experiments.run_random_samples(model, fitted, count=3, bins=4)
    assert samples.numbers["fraction_inside_observed_range"] == 1.0 and len(samples.rows[0]) == 3
    gaussian = experiments.run_random_samples(model, fitted, distribution="truncated_gaussian")
    assert gaussian.numbers["covariance"] == "full"

    values = experiments.unit_values(fitted, [0, 7], percentile=99)
    single = experiments.run_single_neuron(model, fitted.shape[1:], [0, 7], values)
    assert single.column_labels[1].startswith("unit 7") and len(single.rows[0]) == 2


def test_figure_draws_labels_and_resizes_cells():
    rows = [[np.zeros((8, 8, 3)), np.ones((16, 16, 3))]]
    image = experiments.figure(rows, column_labels=["a", "b"], row_labels=["row"])
    assert image.shape[0] == 18 + 16 + 2 and image[:18].min() < 255  # Header text drawn.
    assert image[18:34, -18:-2].min() == 255 and image[18:34, -36:-20].max() == 0


def test_experiment_command_writes_png_and_json(tmp_path):
    from keras_invert import config, training

    work_dir = tmp_path / "hog"
    run = config.replace(config.preset("demo"), image_size=64, width=0.125, cache_dir=None)
    config.save(run, str(work_dir))
    TinyModel().decoder.save(str(work_dir / training.FINAL_MODEL))
    result = subprocess.run(
        [sys.executable, "-m", "launch.experiment", "--name=layers",
         f"--model={work_dir},{work_dir}", "--num_images=2", f"--out={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import cv2

    image = cv2.imread(str(tmp_path / "out" / "layers.png"))
    with open(tmp_path / "out" / "layers.json") as file:
        record = json.load(file)
    assert image.shape[0] == 18 + 2 * (64 + 2)
    assert list(record["models"]) == ["hog (hog)", "hog (hog)'"]
    assert len(record["results"]["models"]["hog (hog)"]["per_image"]) == 2


@pytest.mark.slow
def test_dark_knowledge_and_single_neuron_on_an_fc8_work_dir(tmp_path, crops):
    from keras_invert import config, training
    from launch import common

    run = config.replace(
        config.preset("demo"), representation="alexnet/fc8", image_size=67, width=0.125,
        cache_dir=None,
    )  # fmt: skip
    config.save(run, str(tmp_path))
    training.build_model(run).save(str(tmp_path / training.FINAL_MODEL))  # Random encoder.
    parts = common.load_model_parts(str(tmp_path))
    assert parts.encoder_source == "model" and parts.output_size == 128
    images = crops[:, :67, :67]
    dark = experiments.run_dark_knowledge(parts, images, ["a", "b", "c"], k=5)
    fc8 = parts.encode(images)
    assert fc8.shape == (3, 1000)
    np.testing.assert_array_equal(
        np.sort(fc8[0][dark.numbers["top_units"][0]]), np.sort(fc8[0])[-5:]
    )
    values = experiments.unit_values(fc8, [3, 9])
    single = experiments.run_single_neuron(parts, (1000,), [3, 9], values)
    assert single.rows[0][0].shape == (128, 128, 3)
