"""The launch scripts end to end: train, resume with more steps, export, reconstruct."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--data=samples", "--image_size=64", "--width=0.125", "--batch_size=4", "--seed=3"]


def _command(module, *args, timeout=300):
    """`python -m <module> args` in a subprocess: the command as a user types it.

    The other runs call the scripts in this process (`launch_script`).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"{module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _steps(work_dir):
    from keras_invert.checkpoints import Checkpoints

    return Checkpoints(os.path.join(work_dir, "checkpoints")).steps()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, launch_script):
    # `python -m launch.train` itself trains in tests/launch/test_multi_worker.py.
    work_dir = str(tmp_path_factory.mktemp("run"))
    launch_script("train", f"--work_dir={work_dir}", *TINY, "--steps=6", "--steps_per_epoch=3")
    return work_dir


def test_train_writes_config_checkpoints_and_model(trained):
    with open(os.path.join(trained, "config.json")) as file:
        stored = json.load(file)
    assert stored["image_size"] == 64 and stored["width"] == 0.125 and stored["steps"] == 6
    assert _steps(trained) == [3, 6]
    assert os.path.exists(os.path.join(trained, "model.keras"))


def test_conflicting_flags_on_resume_are_refused(trained, launch_script):
    result = launch_script("train", f"--work_dir={trained}", "--width=0.5", check=False)
    assert result.returncode != 0
    assert "different config" in result.stderr


def test_a_finished_run_goes_on_when_given_more_steps(trained, tmp_path, launch_script):
    # `--steps` may change on resume. A SIGKILLed run resumes: tests/launch/test_resume.py.
    import keras_invert

    work_dir = str(tmp_path / "run")
    shutil.copytree(trained, work_dir)
    launch_script("train", f"--work_dir={work_dir}", "--steps=9")
    assert _steps(work_dir) == [6, 9]
    with open(os.path.join(work_dir, "config.json")) as file:
        assert json.load(file)["steps"] == 9
    assert int(keras_invert.load(work_dir).model.optimizer.iterations) == 9


def test_export_and_reconstruct(trained, tmp_path, launch_script):
    export_dir = str(tmp_path / "exports")
    launch_script("export", f"--work_dir={trained}", f"--export_dir={export_dir}")
    assert os.listdir(export_dir) == ["1"]
    grid = str(tmp_path / "grid.png")
    metrics_file = str(tmp_path / "metrics.json")
    result = _command(
        "launch.reconstruct", f"--model={export_dir}", "--data=samples", "--split=test",
        f"--out={grid}", f"--metrics_out={metrics_file}",
    )  # fmt: skip
    assert "normalized_error" in result.stdout and "mean image" in result.stdout
    import cv2

    image = cv2.imread(grid)
    with open(metrics_file) as file:
        figures = json.load(file)
    assert image.shape[1] == 128 and image.shape[0] == 24 + 64 * len(figures["images"])
    assert 0 < figures["results"]["mean image (of these photos)"]["normalized_error"] < 1
    # The work dir gives the same reconstructions as its export.
    from_work_dir = launch_script(
        "reconstruct", f"--model={trained}", "--data=samples", "--split=test",
        f"--out={tmp_path / 'grid2.png'}", f"--metrics_out={tmp_path / 'm2.json'}",
    )  # fmt: skip
    assert from_work_dir.returncode == 0
    with open(tmp_path / "m2.json") as file:
        again = json.load(file)
    np.testing.assert_allclose(
        again["results"]["hog decoder"]["normalized_error"],
        figures["results"]["hog decoder"]["normalized_error"],
        rtol=1e-3,
    )


def test_reconstruct_a_single_photo(trained, tmp_path, launch_script):
    import cv2

    import pipelines

    photo = pipelines.list_source_files("samples", "test")[0]
    grid, metrics_file = str(tmp_path / "one.png"), str(tmp_path / "one.json")
    result = launch_script(
        "reconstruct", f"--model={trained}", f"--images={photo}", f"--out={grid}",
        f"--metrics_out={metrics_file}",
    )  # fmt: skip
    with open(metrics_file) as file:
        figures = json.load(file)
    assert cv2.imread(grid).shape == (24 + 64, 128, 3)
    # One photo has no normalised error (it needs pairs) and no mean of "these photos";
    # the work dir's own mean training photo is still a baseline.
    assert set(figures["results"]) == {"hog decoder", "mean training image"}
    for row in figures["results"].values():
        assert row["normalized_error"] is None and -1 <= row["luma_correlation"] <= 1
    assert "| hog decoder | - |" in result.stdout


def test_divergent_run_stops_with_message(tmp_path, launch_script):
    result = launch_script(
        "train", f"--work_dir={tmp_path}", *TINY, "--steps=20", "--steps_per_epoch=5",
        "--learning_rate=1", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "diverged" in result.stderr and "learning_rate" in result.stderr


def test_failed_starts_write_nothing_and_steps_are_exact(launch_script, tmp_path, monkeypatch):
    import keras_invert
    from keras_invert import training
    from keras_invert.checkpoints import Checkpoints, optimizer_step

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    work_dir = tmp_path / "run"
    config_file = work_dir / "config.json"
    config_at_train = []
    original_train = training.train

    def recording_train(*args, **kwargs):
        config_at_train.append(config_file.exists())
        return original_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", recording_train)

    def start(*flags):
        tiny = ["--representation=hog", "--width=0.05", "--batch_size=4", "--seed=0"]
        return launch_script("train", f"--work_dir={work_dir}", *tiny, *flags, check=False)

    empty_start = start(f"--data=folder:{empty}", "--image_size=64", "--steps=3")
    # Refused before anything was written: the work dir was never made.
    assert empty_start.returncode == 2 and "photos" in empty_start.stderr
    assert not work_dir.exists()
    image_size = start("--data=samples", "--image_size=96", "--steps=3")
    assert image_size.returncode == 2 and "multiple of 64" in image_size.stderr
    assert not work_dir.exists()
    # The corrected command is a new run; its config is written once training has started.
    assert start("--data=samples", "--image_size=64", "--steps=3").returncode == 0
    assert config_at_train == [False]
    with open(config_file) as file:
        assert json.load(file)["steps"] == 3
    # --steps=3 with the preset's 500 steps per epoch: 3 steps, a checkpoint at the last.
    assert Checkpoints(str(work_dir / "checkpoints")).steps() == [3]
    assert optimizer_step(keras_invert.load(str(work_dir)).model) == 3
