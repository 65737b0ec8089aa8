"""A SIGKILLed `launch.train` resumes on the same data stream: the same weights and curves."""

import collections
import glob
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
    from keras_invert.checkpoints import Checkpoints

    return Checkpoints(os.path.join(work_dir, "checkpoints")).steps()


def _final_weights(work_dir):
    import keras

    return keras.saving.load_model(os.path.join(work_dir, "model.keras")).get_weights()


# launch.train's own `main` (its flags, config, `dataset_from` and checkpoint
# restore) in two processes: "kill" SIGKILLs itself in the step after its
# first checkpoint; "resume_then_whole" then resumes that work dir, a fresh
# process as after a real crash, and afterwards trains the uninterrupted
# reference run in another work dir. Each reports the step its runs started at.
_SCRIPT = """
import json, os, signal, sys
import keras
from absl import flags
from keras_invert import training
from keras_invert.checkpoints import optimizer_step
from launch import train

mode, kill_after, work_dirs, *argv = sys.argv[1:]
first_steps = []


class Watch(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        first_steps.append(optimizer_step(self.model))

    def on_train_batch_end(self, batch, logs=None):
        if mode == "kill" and optimizer_step(self.model) > int(kill_after):
            os.kill(os.getpid(), signal.SIGKILL)


run_training = training.train
training.train = lambda *args, callbacks=(), **kwargs: run_training(
    *args, callbacks=[*callbacks, Watch()], **kwargs
)
for work_dir in work_dirs.split(","):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["launch.train", f"--work_dir={work_dir}", *argv])
    train.main([])
print("RESULT " + json.dumps({"first_steps": first_steps}))
"""
_KILL_AFTER = 2


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, result_script, saved_network):
    """Work dirs "cut" (SIGKILLed during step 3, then resumed) and "whole".

    The tiniest run with three checkpoints, killed during step 3 (it loses
    one step), on a `keras:` representation: a small network inside the
    model, so the pipeline yields crops and no feature op has to be traced.
    """
    folder = tmp_path_factory.mktemp("resume")
    flags = [
        f"--representation=keras:{saved_network[1]}#conv2", "--data=samples",
        "--image_size=32", "--width=0.05", "--batch_size=2", "--steps_per_epoch=2", "--steps=6",
        "--seed=0",
    ]  # fmt: skip
    cut, whole = str(folder / "cut"), str(folder / "whole")
    killed = result_script(_SCRIPT, folder, "kill", _KILL_AFTER, cut, *flags, name="kill")
    _, stderr = killed.process.communicate(timeout=600)
    assert killed.process.returncode == -signal.SIGKILL, stderr[-3000:]
    assert _checkpoint_steps(cut) == [_KILL_AFTER]
    assert not os.path.exists(os.path.join(cut, "model.keras"))
    resumed = result_script(
        _SCRIPT, folder, "resume_then_whole", _KILL_AFTER, f"{cut},{whole}", *flags, name="resume"
    ).result()
    # The rerun restored the checkpoint (a fresh start would reach the reference's weights too).
    assert resumed["first_steps"] == [_KILL_AFTER, 0]
    return cut, whole


def test_sigkilled_launch_train_resumes_to_the_weights_of_an_uninterrupted_run(
    killed_and_resumed,
):
    """Bitwise-equal final weights after a SIGKILL and a rerun of the same command.

    The fast variant of the slow test below. Both processes run
    `launch.train.main`: its own `dataset_from`, given the restored step as
    `start_step`, and its checkpoint restore. The kill is a real SIGKILL at
    a fixed step after the first checkpoint, so the resumed process starts
    from exactly what a crashed run leaves on disk, and it is a fresh
    process. The uninterrupted reference runs after it in the same process.
    """
    cut, whole = killed_and_resumed
    final = [_final_weights(d) for d in (whole, cut)]
    assert len(final[0]) > 2
    for a, b in zip(*final, strict=True):
        np.testing.assert_array_equal(b, a)


def _scalars(work_dir):
    """`{tag: [(step, value), ...]}` of every event file of the run, in file order."""
    import tensorflow as tf

    scalars = collections.defaultdict(list)
    files = sorted(
        glob.glob(os.path.join(work_dir, "tensorboard", "**", "events.*"), recursive=True)
    )
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalars[value.tag].append((event.step, float(tf.make_ndarray(value.tensor))))
    return dict(scalars)


def test_tensorboard_scalars_continue_after_a_sigkill_and_resume(killed_and_resumed):
    """The killed run's curves survive it, and the resumed run's continue them.

    Each scalar's steps over all event files of the killed-and-resumed run are
    those of the uninterrupted run, each once (no restart at 0, no gap, no
    duplicate), with the same values.
    """
    cut, whole = killed_and_resumed
    expected, got = _scalars(whole), _scalars(cut)
    assert {"epoch_loss", "epoch_learning_rate"} <= set(expected)
    assert sorted(got) == sorted(expected)
    for tag, points in expected.items():
        steps = [step for step, _ in got[tag]]
        assert sorted(steps) == [step for step, _ in points] == list(range(3)), (tag, got[tag])
        np.testing.assert_allclose(sorted(got[tag]), points, rtol=1e-6, err_msg=tag)


@pytest.mark.slow  # Three training processes: about 3 minutes on 2 loaded cores.
def test_sigkilled_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    # A kill at a random moment of a longer run; the fast variant kills at a fixed step.
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

    final = [_final_weights(d) for d in (whole_dir, cut_dir)]
    for a, b in zip(*final, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-8)
    largest = max(float(np.abs(a - b).max()) for a, b in zip(*final, strict=True))
    print(f"killed after checkpoint {last}; max abs weight difference {largest:.2e}")
