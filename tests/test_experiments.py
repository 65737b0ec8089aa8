"""The paper's feature experiments (keras_invert.experiments) and launch.experiment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import keras_invert
from keras_invert import experiments, figures, presets, registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TinyModel:
    """HOG and an untrained width-0.125 decoder, with the interface `keras_invert.load` gives."""

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


def test_finetuned_decoders_beat_the_original_on_perturbed_features():
    # A linear decoder that inverts clean features exactly: on perturbed
    # features the best linear decoder (least squares) is 7% (binarised) and
    # 32% (dropout) better than it, so fine-tuning must find a better one.
    import keras

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(24, 8)).astype(np.float32)
    inputs = keras.Input((24,))
    decoder = keras.Model(inputs, keras.layers.Dense(8)(inputs))
    decoder.layers[-1].set_weights([mixing, np.zeros(8, np.float32)])

    def data(count, seed):
        features = np.maximum(np.random.default_rng(seed).normal(size=(count, 24)), 0)
        return features.astype(np.float32), features.astype(np.float32) @ mixing

    batches = (data(64, 100 + step) for step in range(250))
    tuned = experiments.finetune_decoders(decoder, batches, steps=250, learning_rate=3e-3)
    np.testing.assert_array_equal(decoder.layers[-1].get_weights()[0], mixing)  # Untouched.
    features, wanted = data(500, 1)
    for name, bound in (("binarised", 0.97), ("dropout", 0.8)):
        model, losses = tuned[name]
        assert len(losses) == 250 and np.mean(losses[-20:]) < np.mean(losses[:20])
        perturbed = experiments.perturb(features, name, seed=5)
        original = np.mean((decoder.predict(perturbed, verbose=0) - wanted) ** 2)
        retrained = np.mean((model.predict(perturbed, verbose=0) - wanted) ** 2)
        assert retrained < bound * original, (name, retrained, original)


def test_finetuning_checks_its_arguments():
    import keras

    inputs = keras.Input((3,))
    decoder = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    batches = [(np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32))]
    with pytest.raises(ValueError, match="perturbations"):
        experiments.finetune_decoders(decoder, batches, ["noise"], steps=1)
    with pytest.raises(ValueError, match="steps=0"):
        experiments.finetune_decoders(decoder, batches, steps=0)
    with pytest.raises(ValueError, match="ran out after 1 steps"):
        experiments.finetune_decoders(decoder, batches, steps=2)


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
    # A "retrained" decoder gets the same perturbed features: here the same decoder.
    same = experiments.run_perturbation(model, crops, names, retrained={"dropout": model.decode})
    errors = same.numbers["errors"]
    assert errors["dropout_retrained"]["normalized_error"] == errors["dropout"]["normalized_error"]
    assert same.column_labels[-1] == "dropout 0.5, retrained" and len(same.rows[0]) == 5

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
    size = int(np.prod(fitted.shape[1:]))
    with pytest.raises(ValueError, match=rf"units in \[0, {size}\)\. Received: units=\[{size}\]"):
        experiments.unit_values(fitted, [0, size])
    single = experiments.run_single_neuron(model, fitted.shape[1:], [0, 7], values)
    assert single.column_labels[1].startswith("unit 7") and len(single.rows[0]) == 2


def test_autoencoder_vs_fixed_compares_reconstructions_and_each_models_own_features(model, crops):
    class Doubled(TinyModel):
        """Another encoder of the same shape: twice the HOG features."""

        def encode(self, images):
            return 2 * super().encode(images)

    figure = experiments.run_autoencoder_vs_fixed(model, Doubled(), lambda size: crops, "abc")
    assert figure.column_labels == ["original", "fixed", "autoencoder"]
    assert set(figure.numbers["models"]) == {"fixed", "autoencoder"}
    features = figure.numbers["features"]
    assert features["relative_distance"] == pytest.approx(1.0, rel=1e-5)
    assert features["cosine_similarity"] == pytest.approx(1.0, rel=1e-5)
    hog = model.encode(crops).reshape(3, -1)
    expected = np.linalg.norm(hog, axis=1).mean()
    assert features["fixed"]["mean_norm"] == pytest.approx(expected, rel=1e-5)
    assert features["autoencoder"]["mean_norm"] == pytest.approx(2 * expected, rel=1e-5)


def test_figure_draws_labels_and_resizes_cells():
    rows = [[np.zeros((8, 8, 3)), np.ones((16, 16, 3))]]
    image = figures.figure(rows, column_labels=["a", "b"], row_labels=["row"])
    assert image.shape[0] == 18 + 16 + 2 and image[:18].min() < 255  # Header text drawn.
    assert image[18:34, -18:-2].min() == 255 and image[18:34, -36:-20].max() == 0


def _experiment(*args):
    return subprocess.run(
        [sys.executable, "-m", "launch.experiment", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip


def _hog_work_dir(work_dir):
    from keras_invert import config
    from keras_invert.checkpoints import FINAL_MODEL

    run = config.replace(presets.preset("demo_hog"), image_size=64, width=0.125, cache_dir=None)
    config.save(run, str(work_dir))
    TinyModel().decoder.save(str(work_dir / FINAL_MODEL))
    return work_dir


def test_experiment_command_writes_png_and_json(tmp_path):
    work_dir = _hog_work_dir(tmp_path / "hog")
    result = _experiment(
        "--name=layers", f"--model={work_dir},{work_dir}", "--num_images=2",
        f"--out={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import cv2

    image = cv2.imread(str(tmp_path / "out" / "layers.png"))
    with open(tmp_path / "out" / "layers.json") as file:
        record = json.load(file)
    assert image.shape[0] == 18 + 2 * (64 + 2)
    assert list(record["models"]) == ["hog (hog)", "hog (hog)'"]
    assert len(record["results"]["models"]["hog (hog)"]["per_image"]) == 2


def test_dark_knowledge_and_single_neuron_on_a_work_dir_of_class_scores(
    tmp_path, crops, saved_network
):
    """Vector features from a network inside the model: its own encoder's, from the work dir.

    The fast variant of the fc8 test below: a `keras:` work dir of the 10
    class scores of a small network (AlexNet's fc8 works the same way, at
    the cost of building and saving a 60-million-parameter network).
    """
    from keras_invert import building, config
    from keras_invert.checkpoints import FINAL_MODEL

    network, path = saved_network
    run = config.TrainConfig(
        representation=f"keras:{path}#scores?input_range=0,1", image_size=32, width=0.125,
        summary_images=0,
    )  # fmt: skip
    config.save(run, str(tmp_path))
    building.build_model(run).save(str(tmp_path / FINAL_MODEL))
    parts = keras_invert.load(str(tmp_path))
    assert parts.encoder_source == "model" and parts.output_size == 32
    images = crops[:, :32, :32]
    scores = parts.encode(images)
    np.testing.assert_allclose(scores, network.predict(images / 255.0, verbose=0), atol=1e-5)
    dark = experiments.run_dark_knowledge(parts, images, ["a", "b", "c"], k=3)
    for row, units in zip(scores, dark.numbers["top_units"], strict=True):
        np.testing.assert_array_equal(np.sort(row[units]), np.sort(row)[-3:])
    # "top 3 only" decodes the scores with the other 7 zeroed.
    expected = parts.decode(experiments.top_k_only(scores, 3))
    np.testing.assert_allclose(dark.rows[0][2], expected[0], atol=1e-6)
    values = experiments.unit_values(scores, [3, 9], percentile=50)
    single = experiments.run_single_neuron(parts, (10,), [3, 9], values)
    only_unit_3 = np.zeros((1, 10), np.float32)
    only_unit_3[0, 3] = values[0]
    np.testing.assert_allclose(single.rows[0][0], parts.decode(only_unit_3)[0], atol=1e-6)


@pytest.mark.slow  # Fast variant: the work dir of class scores above.
def test_dark_knowledge_and_single_neuron_on_an_fc8_work_dir(tmp_path, crops):
    from keras_invert import building, config
    from keras_invert.checkpoints import FINAL_MODEL

    run = config.replace(
        presets.preset("demo_hog"), representation="alexnet/fc8", image_size=67, width=0.125,
        cache_dir=None,
    )  # fmt: skip
    config.save(run, str(tmp_path))
    building.build_model(run).save(str(tmp_path / FINAL_MODEL))  # Random encoder.
    parts = keras_invert.load(str(tmp_path))
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


# About 25 s on 2 free cores: a pipeline and two train steps traced. Fast variant:
# test_autoencoder_vs_fixed_command_fits_features_and_retrains_decoders.
@pytest.mark.slow
def test_perturbation_command_fine_tunes_a_decoder_per_perturbation(tmp_path):
    import cv2

    work_dir = _hog_work_dir(tmp_path / "hog")
    stored = (work_dir / "model.keras").read_bytes()
    result = _experiment(
        "--name=perturbation", f"--model={work_dir}", "--num_images=2", "--retrain_steps=1",
        "--retrain_batch_size=2", f"--out={tmp_path / 'out'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "perturbation.json") as file:
        numbers = json.load(file)["results"]["hog (hog)"]
    assert set(numbers["errors"]) == {
        "features", "binarised", "dropout", "binarised_retrained", "dropout_retrained"
    }  # fmt: skip
    retraining = numbers["retraining"]
    assert retraining["steps"] == 1 and retraining["split"] == "train"
    assert [len(v) for v in retraining["losses"].values()] == [1, 1]
    # Rows of original | decoded | binarised | dropout | both retrained, 64 px cells.
    assert cv2.imread(str(tmp_path / "out" / "perturbation.png")).shape[1] > 6 * 66
    assert (work_dir / "model.keras").read_bytes() == stored  # The given decoder is untouched.


@pytest.fixture(scope="module")
def conv1_work_dirs(tmp_path_factory):
    """Untrained alexnet/conv1 work dirs: fixed (random encoder) and autoencoder."""
    from keras_invert import building, config
    from keras_invert.checkpoints import FINAL_MODEL

    work_dirs = {}
    for autoencoder in (False, True):
        path = tmp_path_factory.mktemp("autoencoder" if autoencoder else "fixed")
        run = config.TrainConfig(
            representation="alexnet/conv1", image_size=64, width=1 / 16, batch_size=2, steps=1,
            seed=int(autoencoder), autoencoder=autoencoder, summary_images=0,
        )  # fmt: skip
        config.save(run, str(path))
        building.build_model(run).save(str(path / FINAL_MODEL))
        work_dirs[autoencoder] = str(path)
    return work_dirs[False], work_dirs[True]


def test_autoencoder_vs_fixed_checks_the_pair(conv1_work_dirs):
    from keras_invert import config

    fixed, autoencoder = [(config.load(p), keras_invert.load(p).model) for p in conv1_work_dirs]
    experiments.check_autoencoder_pair(fixed, autoencoder)
    with pytest.raises(ValueError, match="fixed model .* autoencoder=False. Received: auto"):
        experiments.check_autoencoder_pair(autoencoder, fixed)
    # A config that disagrees with its stored model is refused too.
    relabelled = (config.replace(fixed[0], autoencoder=True), fixed[1])
    with pytest.raises(ValueError, match="encoder trainable=False"):
        experiments.check_autoencoder_pair(fixed, relabelled)
    other = (config.replace(autoencoder[0], representation="alexnet/conv2"), autoencoder[1])
    with pytest.raises(ValueError, match="one representation"):
        experiments.check_autoencoder_pair(fixed, other)
    hog = (config.TrainConfig(representation="hog"), TinyModel().decoder)
    with pytest.raises(ValueError, match="network encoder"):
        experiments.check_autoencoder_pair(hog, hog)
    # A fixed run trained on cached features saves its bare decoder (the
    # registry's fixed encoder): a valid fixed side, never an autoencoder.
    cached = config.replace(fixed[0], cache_dir="cache", cache_features=True)
    experiments.check_autoencoder_pair((cached, fixed[1].decoder), autoencoder)
    bare = (fixed[0], fixed[1].decoder)
    with pytest.raises(ValueError, match="encoder trainable=None"):
        experiments.check_autoencoder_pair(bare, autoencoder)


def _autoencoder_vs_fixed(launch_script, work_dirs, out, *arguments):
    """launch.experiment in this process (`test_experiment_command_writes_png_and_json`
    runs the command)."""
    fixed, autoencoder = work_dirs
    launch_script(
        "experiment", "--name=autoencoder_vs_fixed", f"--model={fixed},{autoencoder}",
        "--num_images=2", f"--out={out}", *arguments,
    )  # fmt: skip
    with open(out / "autoencoder_vs_fixed.json") as file:
        record = json.load(file)
    assert {k: v["encoder_source"] for k, v in record["models"].items()} == {
        "fixed": "model", "autoencoder": "model"
    }  # fmt: skip
    features = record["results"]["reconstructions"]["features"]
    # Each decodes its own encoder's features: two differently seeded networks.
    assert features["fixed"]["shape"] == [27, 27, 96] and features["relative_distance"] > 0.1
    for label in ("fixed", "autoencoder"):
        assert len(record["results"]["reconstructions"]["models"][label]["per_image"]) == 2
    return record["results"]


def test_autoencoder_vs_fixed_command_fits_features_and_retrains_decoders(
    conv1_work_dirs, tmp_path, launch_script
):
    """Feature fitting and retrained decoders of launch.experiment, on both work dirs.

    `random_samples` fits its distribution on `--fit_examples` random
    training crops through each model's own encoder; `perturbation
    --retrain_steps` fine-tunes a copy of each work dir's decoder per
    perturbation and decodes the perturbed features with it. The fast
    variant of the slow tests that run every comparison and a HOG work dir.
    """
    import cv2

    import pipelines
    from keras_invert import registry

    stored = [(Path(d) / "model.keras").read_bytes() for d in conv1_work_dirs]
    results = _autoencoder_vs_fixed(
        launch_script, conv1_work_dirs, tmp_path, "--compare=perturbation,random_samples",
        "--retrain_steps=2", "--retrain_batch_size=2", "--fit_examples=4", "--num_samples=2",
        "--bins=4",
    )  # fmt: skip
    assert set(results) == {"reconstructions", "perturbation", "random_samples"}
    for label in ("fixed", "autoencoder"):
        fitted = results["random_samples"][label]
        assert (fitted["fit_examples"], fitted["dimensions"]) == (4, 27 * 27 * 96)
        assert fitted["fraction_inside_observed_range"] == 1.0
        perturbation = results["perturbation"][label]
        retraining = perturbation["retraining"]
        assert (retraining["steps"], retraining["split"]) == (2, "train")
        assert sorted(retraining["losses"]) == ["binarised", "dropout"]
        assert all(len(v) == 2 and np.all(np.isfinite(v)) for v in retraining["losses"].values())
        # The perturbed features went through the fine-tuned copies: other reconstructions.
        errors = perturbation["errors"]
        for name in ("binarised", "dropout"):
            retrained = errors[f"{name}_retrained"]["normalized_error"]
            assert retrained != errors[name]["normalized_error"], (label, name)
    # The given decoders are untouched.
    assert [(Path(d) / "model.keras").read_bytes() for d in conv1_work_dirs] == stored
    # The fit data: the seeded (--seed=0) training stream's first 4 crops, through the fixed
    # model's own encoder (the stream is keyed by position: any batch size gives them).
    fixed = keras_invert.load(conv1_work_dirs[0])
    stream = pipelines.build_dataset(
        "samples", "train", representation=registry.get("alexnet/conv1"), image_size=64,
        batch_size=4, training=True, seed=0,
    )  # fmt: skip
    crops, _ = next(iter(stream))
    norms = np.linalg.norm(fixed.encode(crops.numpy()).reshape(4, -1), axis=1)
    numbers = results["random_samples"]
    assert numbers["fixed"]["mean_norm_of_data"] == pytest.approx(norms.mean(), rel=1e-4)
    assert numbers["autoencoder"]["mean_norm_of_data"] != pytest.approx(norms.mean(), rel=1e-2)
    # original | fixed | autoencoder at the conv1 decoder's 216 px.
    height, width = cv2.imread(str(tmp_path / "autoencoder_vs_fixed.png")).shape[:2]
    assert height == 18 + 2 * (216 + 2) and 3 * (216 + 2) < width < 4 * (216 + 2)
    rows = cv2.imread(str(tmp_path / "autoencoder_vs_fixed_perturbation.png")).shape[0]
    assert rows == 18 + 4 * (216 + 2)  # Two photos for each model.


# Fast variants: the fitting and retraining test above; the library side of every
# comparison in test_runners_give_labelled_rows_and_numbers.
@pytest.mark.slow
def test_autoencoder_vs_fixed_command_with_every_comparison_and_retraining(
    conv1_work_dirs, tmp_path, launch_script
):
    compared = "interpolation,perturbation,random_samples,dark_knowledge,single_neuron"
    results = _autoencoder_vs_fixed(
        launch_script, conv1_work_dirs, tmp_path, f"--compare={compared}", "--retrain_steps=2",
        "--retrain_batch_size=2", "--fit_examples=8", "--units=0,1", "--num_samples=2",
    )  # fmt: skip
    assert set(results) == {"reconstructions", *compared.split(",")}
    for label in ("fixed", "autoencoder"):
        perturbation = results["perturbation"][label]
        assert "dropout_retrained" in perturbation["errors"]
        assert len(perturbation["retraining"]["losses"]["binarised"]) == 2
    for name in compared.split(","):
        assert (tmp_path / f"autoencoder_vs_fixed_{name}.png").exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--name=layers", "--retrain_steps=2"], "--retrain_steps fine-tunes"),
        (["--name=perturbation", "--retrain_learning_rate=0.1"], "need --retrain_steps > 0"),
        (["--name=layers", "--compare=perturbation"], "--compare is for"),
        (["--name=autoencoder_vs_fixed", "--compare=layers"], "--compare takes"),
    ],
)
def test_experiment_flags_that_would_do_nothing_are_refused(arguments, message, tmp_path):
    result = _experiment(*arguments, f"--model={tmp_path}", f"--out={tmp_path}")
    assert result.returncode != 0 and message in result.stderr
