"""launch.evaluate: decoders (work dir and export) and the optimisation in one table."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _work_dir(path, representation="hog", image_size=64, data="samples"):
    """A work dir with an untrained tiny decoder, as `launch.train` leaves it."""
    from keras_invert import config, presets, registry
    from keras_invert.checkpoints import FINAL_MODEL

    run = config.replace(
        presets.preset("demo_hog"), representation=representation, image_size=image_size,
        width=0.125, cache_dir=None, data=data,
    )  # fmt: skip
    config.save(run, str(path))
    decoder = registry.get(representation).build_decoder(image_size, width=0.125)
    decoder.save(os.path.join(str(path), FINAL_MODEL))
    return decoder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tensorflow as tf

    from keras_invert import export

    root = tmp_path_factory.mktemp("models")
    # Its own training data, not --data's: a red and a blue photo (mean: purple).
    for split, colours in {"train": [(255, 0, 0), (0, 0, 255)], "test": [(0, 255, 0)]}.items():
        for index, colour in enumerate(colours):
            image = np.broadcast_to(np.array(colour, np.uint8), (60, 80, 3))
            tf.io.write_file(str(root / "own" / split / f"{index}.png"), tf.io.encode_png(image))
    decoder = _work_dir(root / "hog", data=f"folder:{root / 'own'}")
    export.export_saved_model(decoder, "hog", str(root / "exports"), image_size=64)
    return str(root / "hog"), str(root / "exports")


def _save_classifier(path):
    """A small untrained 10-class Keras classifier (for the agreement columns)."""
    import keras

    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(10, name="scores")(pooled)).save(path)


def test_one_table_for_decoders_optimization_and_the_mean_image(models, tmp_path):
    work_dir, export_dir = models
    out_dir = tmp_path / "evaluation"
    _save_classifier(tmp_path / "classifier.keras")
    result = subprocess.run(
        [sys.executable, "-m", "launch.evaluate", f"--model={work_dir},{export_dir}",
         "--method=decoder,optimization", "--optimization_steps=4", "--num_images=3",
         f"--classifier=keras:{tmp_path / 'classifier.keras'}#scores", f"--out_dir={out_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| method | representation |" in result.stdout
    with open(out_dir / "evaluation.json") as file:
        figures = json.load(file)
    with open(out_dir / "evaluation.csv") as file:
        table = list(csv.DictReader(file))
    rows = figures["rows"]
    assert len(figures["images"]) == 3 and len(rows) == len(table) == 5
    work, exported, optimization, train_mean, mean = rows
    assert train_mean["method"] == "mean training image"
    assert work["method"] == f"decoder {work_dir}" and optimization["method"].startswith("optim")
    assert mean["method"].startswith("mean image") and mean["feature_error"] is None
    for row in (work, exported, optimization):
        assert row["representation"] == "hog" and row["image_size"] == 64
        assert np.isfinite(row["feature_error"]) and row["seconds_per_image"] > 0
        assert 0 < row["normalized_error"] < 2 and -1 <= row["luma_correlation"] <= 1
    # The export reconstructs as its work dir does.
    for key in ("normalized_error", "feature_error", "psnr", "ssim"):
        np.testing.assert_allclose(exported[key], work[key], rtol=1e-3)
    assert float(table[4]["normalized_error"]) == pytest.approx(mean["normalized_error"])
    # The mean-image row is the baseline of the same crops.
    import pipelines
    from keras_invert import images, metrics

    originals = np.asarray(images.target(pipelines.load_images(figures["images"], 64), 64))
    expected = metrics.mean_image_baseline(originals)["normalized_error"]
    assert mean["normalized_error"] == pytest.approx(expected)
    # The mean training image is the work dir's own training data's (config.json), not --data's.
    assert "mean of 2 training photos (folder:" in train_mean["note"]
    purple = np.broadcast_to(np.float32([0.5, 0.0, 0.5]), (64, 64, 3))
    expected = metrics.mean_image_baseline(originals, purple)["normalized_error"]
    assert train_mean["normalized_error"] == pytest.approx(expected, rel=1e-5)
    assert f"| {rows[2]['method']} | hog | 64 |" in result.stdout
    # --classifier: top-1/top-5 agreement on every row, the mean images' included.
    assert "| note | top1_agreement | top5_agreement |" in result.stdout
    for row in table:
        assert 0 <= float(row["top1_agreement"]) <= float(row["top5_agreement"]) <= 1


def test_evaluate_reconstruct_and_experiment_read_the_first_photos_of_a_tfds_split(
    models, tmp_path, run_script
):
    import tensorflow_datasets as tfds

    work_dir, _ = models
    with tfds.testing.mock_data(num_examples=4):
        status, stderr = run_script(
            "evaluate", f"--model={work_dir}", "--data=tfds:cifar10", "--num_images=3",
            f"--out_dir={tmp_path / 'evaluation'}",
        )  # fmt: skip
        assert status == 0, stderr
        status, stderr = run_script(
            "reconstruct", f"--model={work_dir}", "--data=tfds:cifar10", "--num_images=2",
            f"--out={tmp_path / 'grid.png'}", f"--metrics_out={tmp_path / 'metrics.json'}",
        )  # fmt: skip
        assert status == 0, stderr
        status, stderr = run_script(
            "experiment", "--name=layers", f"--model={work_dir}", "--data=tfds:cifar10",
            "--num_images=2", f"--out={tmp_path / 'figures'}",
        )  # fmt: skip
        assert status == 0, stderr
    with open(tmp_path / "figures" / "layers.json") as file:
        assert json.load(file)["photos"] == ["test-0", "test-1"]
    with open(tmp_path / "evaluation" / "evaluation.json") as file:
        figures = json.load(file)
    assert figures["images"] == ["test-0", "test-1", "test-2"]
    assert 0 < figures["rows"][0]["normalized_error"] < 2
    with open(tmp_path / "metrics.json") as file:
        assert json.load(file)["images"] == ["test-0", "test-1"]


def test_small_reconstructions_are_resized_up_before_reencoding():
    from keras_invert import evaluation

    seen = []

    def encode(images):
        seen.append(images.shape)
        return images.mean(axis=(1, 2))

    reconstructions = np.full((2, 16, 16, 3), 0.5, np.float32)
    features, resized = evaluation.reencode(encode, reconstructions, 24)
    assert resized and seen == [(2, 24, 24, 3)]
    np.testing.assert_allclose(features, 127.5, rtol=1e-5)
    assert not evaluation.reencode(encode, np.zeros((1, 24, 24, 3)), 24)[1]


def test_the_time_per_image_is_taken_after_every_batch_shape_it_uses_was_called(monkeypatch):
    """Tracing or compiling for a new batch shape is not counted as time per image."""
    import types

    from keras_invert import evaluation

    events = []

    def encode(photos):
        events.append(("encode", photos.shape))
        return photos.mean(axis=(1, 2))

    def decode(features):
        events.append(("decode", features.shape))
        return np.broadcast_to(features[:, None, None, :] / 255.0, (len(features), 16, 16, 3))

    model = types.SimpleNamespace(
        image_size=16, output_size=16, representation="hog", encoder_source="registry",
        mirror_average=False, encode=encode, decode=decode,
        reconstruct=lambda photos: decode(encode(photos)),
    )  # fmt: skip
    clock = iter(range(100))

    def perf_counter():
        events.append(("clock", None))
        return float(next(clock))

    monkeypatch.setattr(evaluation.time, "perf_counter", perf_counter)
    photos = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3))
    row, _, _ = evaluation.evaluate_decoder("runs/x", model, lambda size: photos)
    start = events.index(("clock", None))
    end = events.index(("clock", None), start + 1)
    timed = events[start + 1 : end]
    assert timed and set(timed) <= set(events[:start])
    assert row["seconds_per_image"] == pytest.approx(1 / 6)


def test_agreement_of_a_classifier_on_originals_and_reconstructions():
    from keras_invert import evaluation

    weights = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)

    def classify(images):  # Scores from the mean colour: a stand-in classifier.
        return np.asarray(images, np.float32).mean(axis=(1, 2)) @ weights

    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (6, 16, 16, 3)).astype(np.float32)
    same = evaluation.agreement(classify, images, images / 255.0)
    assert same == {"top1_agreement": 1.0, "top5_agreement": 1.0}
    # Reconstructions at another size are resized to the crops' first.
    other = rng.uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)
    result = evaluation.agreement(classify, images, other)
    original = np.argmax(classify(images), axis=-1)
    import tensorflow as tf

    again = classify(tf.image.resize(other, [16, 16], method="bilinear").numpy() * 255.0)
    top5 = np.argsort(-again, axis=-1)[:, :5]
    assert result["top1_agreement"] == pytest.approx(np.mean(top5[:, 0] == original))
    assert result["top5_agreement"] == pytest.approx(
        np.mean([o in row for o, row in zip(original, top5, strict=True)])
    )
    assert result["top1_agreement"] <= result["top5_agreement"]


def test_classifier_must_be_a_vector_of_class_scores():
    from keras_invert import evaluation

    for name in ("hog", "efficientnet-lite0/stage4"):
        with pytest.raises(ValueError, match="class scores"):
            evaluation.make_classifier(name)


def test_save_writes_undefined_measures_as_null_and_empty_fields(tmp_path):
    from keras_invert import evaluation

    row = {"method": "decoder", "normalized_error": float("nan"), "psnr": np.float32("inf")}
    json_path, csv_path = evaluation.save(str(tmp_path), [row], ["a.png"])
    with open(csv_path) as file:
        (written,) = csv.DictReader(file)
    assert (written["normalized_error"], written["psnr"]) == ("", "")
    with open(json_path) as file:
        (stored,) = json.load(file)["rows"]
    assert (stored["normalized_error"], stored["psnr"]) == (None, None)


def test_the_markdown_table_writes_nan_and_inf_as_dashes():
    from keras_invert import evaluation

    rows = [{"method": "decoder", "normalized_error": float("nan"), "psnr": np.float32("inf")}]
    table = evaluation.format_table(rows, ["method", "normalized_error", "psnr"])
    assert table.splitlines()[2] == "| decoder | - | - |"


def test_the_markdown_table_of_evaluate_and_of_reconstruct():
    from keras_invert import evaluation

    row = dict.fromkeys(evaluation.COLUMNS)
    row.update(method="decoder runs/hog", representation="hog", image_size=64, psnr=12.34567)
    lines = evaluation.format_table([row]).splitlines()
    assert lines[0] == "| " + " | ".join(evaluation.COLUMNS) + " |"
    assert lines[1] == "|" + "---|" * len(evaluation.COLUMNS)
    assert lines[2].startswith("| decoder runs/hog | hog | 64 | - | - | - | - | 12.346 |")
    # Named rows (launch.reconstruct): the name column has no title.
    named = [{"": "hog decoder", "normalized_error": None, "psnr": 20.0}]
    table = evaluation.format_table(named, ["", "normalized_error", "psnr"])
    assert table.splitlines() == [
        "| | normalized_error | psnr |",
        "|---|---|---|",
        "| hog decoder | - | 20.000 |",
    ]
