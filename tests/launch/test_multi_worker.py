"""`launch.train --strategy=multi_worker`: two worker processes on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import keras_invert

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = [
    "--strategy=multi_worker", "--representation=hog", "--data=samples", "--image_size=64",
    "--width=0.05", "--batch_size=4", "--steps_per_epoch=2", "--seed=0",
]  # fmt: skip


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(work_dirs, extra_flags):
    """One `launch.train` per worker; worker 0 is the chief (the cluster has no "chief")."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(len(work_dirs))]}
    workers = []
    for index, (work_dir, flags) in enumerate(zip(work_dirs, extra_flags, strict=True)):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "launch.train", f"--work_dir={work_dir}", *TINY, *flags],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    return workers


def _finish(workers, timeout):
    try:
        return [worker.communicate(timeout=timeout)[1] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _check_chief_only(chief_dir, other_dir, logs, checkpoints):
    """Both workers trained to the last of `checkpoints`; only the chief wrote anything."""
    from keras_invert.checkpoints import Checkpoints, optimizer_step

    assert Checkpoints(os.path.join(chief_dir, "checkpoints")).steps() == checkpoints
    assert optimizer_step(keras_invert.load(chief_dir).model) == checkpoints[-1]
    assert sorted(os.listdir(chief_dir)) == [
        "checkpoints",
        "config.json",
        "model.keras",
        "tensorboard",
    ]
    assert not os.path.exists(other_dir)  # The other worker wrote nothing.
    assert "2 replicas" in logs[1]


def test_two_workers_train_and_only_the_chief_writes(tmp_path):
    # Two TensorFlow processes: about 25 s on 2 quiet cores (1-2 minutes loaded).
    # Unit tests of the parts: tests/test_distribute.py (chief rules, reduce, TF_CONFIG).
    chief_dir, other_dir = str(tmp_path / "chief"), str(tmp_path / "other")
    start = time.monotonic()
    # The chief's time budget is spent after the first epoch, the other's is not:
    # both must stop there together (one leaving alone would strand the other).
    workers = _start_workers(
        [chief_dir, other_dir],
        [["--steps=6", "--max_minutes=0"], ["--steps=6", "--max_minutes=1000"]],
    )
    logs = _finish(workers, timeout=480)
    seconds = time.monotonic() - start
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-3000:]
    print(f"two-worker run (2 steps, 2 replicas): {seconds:.1f} s wall")
    _check_chief_only(chief_dir, other_dir, logs, checkpoints=[2])


# Fast variant: tests/launch/test_data_service.py's service feeding `fit` under a
# strategy in the test process (two worker processes and the service: 1-2 minutes).
@pytest.mark.slow
def test_two_workers_train_from_one_data_service(tmp_path):
    # The service (a dispatcher and one worker) runs in this process; each
    # training worker asks it for its own shard of the positions.
    from pipelines import service

    dispatcher = service.start_dispatcher()
    server = service.start_worker(dispatcher.target, heartbeat_ms=200)
    work_dirs = [str(tmp_path / "chief"), str(tmp_path / "other")]
    try:
        flags = ["--steps=4", f"--data_service={dispatcher.target}"]
        workers = _start_workers(work_dirs, [flags, flags])
        logs = _finish(workers, timeout=480)
    finally:
        server._stop()
        dispatcher._stop()
    for worker, log in zip(workers, logs, strict=True):
        assert worker.returncode == 0, log[-3000:]
    _check_chief_only(*work_dirs, logs, checkpoints=[2, 4])


def test_survivor_of_a_killed_worker_fails_instead_of_hanging(tmp_path):
    # About 28 s on 2 quiet cores (1-2 minutes loaded); bounded by the timeout below.
    # Unit test of the configuration: test_distribute's collective timeout.
    work_dirs = [str(tmp_path / "chief"), str(tmp_path / "other")]
    workers = _start_workers(work_dirs, [["--steps=100000"]] * 2)
    from keras_invert.checkpoints import Checkpoints

    checkpoints = Checkpoints(os.path.join(work_dirs[0], "checkpoints"))
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and not checkpoints.steps():
        assert all(worker.poll() is None for worker in workers)
        time.sleep(0.2)
    assert checkpoints.steps(), "training did not start"
    workers[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    logs = _finish(workers[:1], timeout=120)
    seconds = time.monotonic() - killed
    workers[1].wait()
    assert workers[0].returncode == 3, logs[0][-3000:]
    # One clear line, not a TensorFlow traceback.
    assert "ERROR: another worker of this multi-worker run stopped" in logs[0], logs[0][-3000:]
    assert "Traceback" not in logs[0], logs[0][-3000:]
    print(f"the survivor exited with {workers[0].returncode} {seconds:.1f} s after the kill")
