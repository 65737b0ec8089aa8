"""A SIGKILLed `launch.train` resumes on the same data stream: the same final weights."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "--representation=hog", "--data=samples", "--image_size=64", "--width=0.05",
    "--batch_size=4", "--steps_per_epoch=5", "--steps=30", "--seed=0",
]  # fmt: skip


def _train(work_dir, **popen):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("TF_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "launch.train", f"--work_dir={work_dir}", *TINY],
        cwd=REPO, env=env, text=True, **popen,
    )  # fmt: skip


def _checkpoint_steps(work_dir):
    from keras_invert import training

    return training.Checkpoints(os.path.join(work_dir, "checkpoints")).steps()


@pytest.mark.slow  # Three training processes: about 3 minutes on 2 loaded cores.
def test_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    # The fast variant: tests/test_training.py, an interrupted in-process run.
    whole_dir, cut_dir = str(tmp_path / "whole"), str(tmp_path / "cut")
    whole = _train(whole_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cut = _train(cut_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not _checkpoint_steps(cut_dir) and cut.poll() is None:
        time.sleep(0.05)
    cut.send_signal(signal.SIGKILL)
    cut.wait()
    assert not os.path.exists(os.path.join(cut_dir, "model.keras")), "killed too late"
    last = max(_checkpoint_steps(cut_dir))
    assert 5 <= last < 30

    resumed = _train(cut_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, log = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, log[-3000:]
    # It lost at most one checkpoint interval: it went on from the newest checkpoint.
    assert re.search(rf"Resuming from \S+ \(step {last}\)", log), log[-3000:]
    _, whole_log = whole.communicate(timeout=400)
    assert whole.returncode == 0, whole_log[-3000:]

    import keras

    final = [
        keras.saving.load_model(os.path.join(d, "model.keras")).get_weights()
        for d in (whole_dir, cut_dir)
    ]
    for a, b in zip(*final, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-8)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(*final, strict=True))
    print(f"killed after checkpoint {last}; max abs weight difference {largest:.2e}")
