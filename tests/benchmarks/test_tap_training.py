"""benchmarks.pack_tap_crops and bench_tap_training: the taps trained from a packed file."""

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import bench_tap_training, pack_tap_crops

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """One crop per training photo of the bundled samples, packed and read back."""
    arrays = pack_tap_crops.pack("samples", crops_per_image=1, seed=0)
    path = tmp_path_factory.mktemp("packed") / "taps.npz"
    np.savez(path, **arrays)
    return arrays, bench_tap_training.load_packed(str(path))


def test_the_packed_crops_are_the_reproduction_runs_cached_crops(packed):
    from keras_invert import images
    from pipelines import cache_files, examples, sources
    from pipelines.training_data import cache_config

    arrays, loaded = packed
    run = bench_tap_training.tap_runs(["stage2"], crops_per_image=1)["stage2"]
    assert (run.steps, run.learning_rate, run.batch_size, run.width) == (1500, 2.4e-3, 16, 0.25)
    config = cache_config(run, cache_dir="unused")
    crops = examples.fixed_crops(
        config, sources.resolve(config.source, config.split), cache_files.crop_seed(config)
    )
    expected = np.stack([example["image"].numpy() for example in crops])
    assert loaded["train"].shape == expected.shape == (23, 224, 224, 3)
    # JPEG at quality 95: a few levels of 255 at most, on average.
    rms = np.sqrt(np.mean((loaded["train"].astype(np.float32) - expected) ** 2))
    assert 0 < rms < 3.0
    # The vector taps' targets: the crops' area average at 128 px, through JPEG too.
    small = images.target(expected, 128).numpy() * 255
    assert np.sqrt(np.mean((loaded["train_targets_128"] - small) ** 2)) < 3.0
    assert "train_jpeg" not in loaded and "train_offsets" not in loaded
    # The test crops exactly; their targets within float16's rounding.
    assert loaded["test_images"].dtype == np.float32 and len(loaded["test_names"]) == 6
    np.testing.assert_allclose(
        loaded["test_targets_224"], images.target(loaded["test_images"], 224), atol=5e-4
    )
    assert loaded["mean_target_128"].shape == (128, 128, 3)


def test_a_tap_trains_and_is_measured_against_the_mean_training_image(packed):
    _, loaded = packed
    run = bench_tap_training.tap_runs(["head"], step_scale=0.002)["head"]
    assert run.steps == 5  # 2,500 planned
    train, test = bench_tap_training.encode(
        ["head"], "imagenet", loaded["train"], loaded["test_images"]
    )
    features = {"train": train["head"], "test": test["head"]}
    assert features["train"].shape == (23, 1280)
    row, pictures = bench_tap_training.measure("head", run, features, loaded)
    assert (row["tap"], row["steps"], row["batch_size"]) == ("head", 5, 16)
    assert pictures.shape == (6, 128, 128, 3) and pictures.dtype == np.uint8
    for key in ("normalized_error", "ssim", "mean_training_image_error", "images_per_second"):
        assert np.isfinite(row[key]), key
    assert 0.3 < row["mean_training_image_error"] < 1.0
    line = bench_tap_training.format_row(row)
    assert line.split()[:5] == ["head", "0.25", "1.2e-03", "5", "16"]


def test_bad_flags_end_in_one_line(tmp_path):
    missing = tmp_path / "missing.npz"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_tap_training", f"--data={missing}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"Received: data='{missing}', not found" in result.stderr
    other = tmp_path / "other.npz"
    np.savez(other, train=np.zeros(3))
    with pytest.raises(ValueError, match="without test_images, test_names, test_targets_224, "):
        bench_tap_training.load_packed(str(other))
    for name, write in (("text.npz", lambda p: p.write_text("not numpy")),
                        ("array.npy", lambda p: np.save(p, np.zeros(3)))):  # fmt: skip
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=r"Expected a file of benchmarks.pack_tap_crops"):
            bench_tap_training.load_packed(str(path))
