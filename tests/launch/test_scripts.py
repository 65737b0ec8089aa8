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


def _run(module, *args, check=True, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def _steps(work_dir):
    from keras_invert import training

    return training.Checkpoints(os.path.join(work_dir, "checkpoints")).steps()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp("run"))
    _run("launch.train", f"--work_dir={work_dir}", *TINY, "--steps=6", "--steps_per_epoch=3")
    return work_dir


def test_train_writes_config_checkpoints_and_model(trained):
    with open(os.path.join(trained, "config.json")) as file:
        stored = json.load(file)
    assert stored["image_size"] == 64 and stored["width"] == 0.125 and stored["steps"] == 6
    assert _steps(trained) == [3, 6]
    assert os.path.exists(os.path.join(trained, "model.keras"))


def test_conflicting_flags_on_resume_are_refused(trained):
    result = _run("launch.train", f"--work_dir={trained}", "--width=0.5", check=False)
    assert result.returncode != 0
    assert "different config" in result.stderr


def test_a_finished_run_goes_on_when_given_more_steps(trained, tmp_path):
    # `--steps` may change on resume. A SIGKILLed run resumes: tests/launch/test_resume.py.
    from keras_invert import training

    work_dir = str(tmp_path / "run")
    shutil.copytree(trained, work_dir)
    _run("launch.train", f"--work_dir={work_dir}", "--steps=9")
    assert _steps(work_dir) == [6, 9]
    with open(os.path.join(work_dir, "config.json")) as file:
        assert json.load(file)["steps"] == 9
    assert int(training.load_trained_model(work_dir).optimizer.iterations) == 9


def test_export_and_reconstruct(trained, tmp_path):
    export_dir = str(tmp_path / "exports")
    _run("launch.export", f"--work_dir={trained}", f"--export_dir={export_dir}")
    assert os.listdir(export_dir) == ["1"]
    grid = str(tmp_path / "grid.png")
    metrics_file = str(tmp_path / "metrics.json")
    result = _run(
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
    from_work_dir = _run(
        "launch.reconstruct", f"--model={trained}", "--data=samples", "--split=test",
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


def test_divergent_run_stops_with_message(tmp_path):
    result = _run(
        "launch.train", f"--work_dir={tmp_path}", *TINY, "--steps=20", "--steps_per_epoch=5",
        "--learning_rate=1e7", check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "diverged" in result.stderr and "learning_rate" in result.stderr
