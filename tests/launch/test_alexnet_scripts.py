"""The launch scripts with an AlexNet layer: train with given weights, export, reconstruct."""

import json
import os
import subprocess
import sys

import cv2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(f"{module} failed:\n{result.stdout}\n{result.stderr}")
    return result


def test_train_export_reconstruct_conv5(tmp_path):
    from keras_invert.encoders import alexnet

    weights = str(tmp_path / "random_caffenet.weights.h5")
    alexnet("caffe").save_weights(weights)
    work_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "exports")
    trained = _run(
        "launch.train", f"--work_dir={work_dir}", "--representation=alexnet/conv5",
        "--data=samples", "--image_size=64", "--width=0.0625", "--batch_size=2", "--steps=2",
        "--steps_per_epoch=2", "--seed=0",
        f"--encoder_weights={weights}",
    )  # fmt: skip
    assert "fixed encoder" in trained.stderr and "RANDOM" not in trained.stderr
    with open(os.path.join(work_dir, "config.json")) as file:
        stored = json.load(file)
    assert stored["encoder_weights"] == weights and stored["autoencoder"] is False

    _run("launch.export", f"--work_dir={work_dir}", f"--export_dir={export_dir}")
    grid = str(tmp_path / "grid.png")
    metrics_file = str(tmp_path / "metrics.json")
    result = _run(
        "launch.reconstruct", f"--model={export_dir}", "--data=samples", "--split=test",
        f"--out={grid}", f"--metrics_out={metrics_file}",
    )  # fmt: skip
    assert "alexnet/conv5 decoder" in result.stdout
    with open(metrics_file) as file:
        count = len(json.load(file)["images"])
    # Rows of original | reconstruction at the conv5 decoder's 192 x 192.
    assert cv2.imread(grid).shape == (24 + 192 * count, 2 * 192, 3)
