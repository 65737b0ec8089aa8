"""launch.data_service: a dispatcher and a worker on loopback serve build_dataset's batches."""

import dataclasses
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_invert import registry
from keras_invert.features import hog
from launch import data_service
from pipelines import build_dataset

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTIONS = dict(representation="hog", image_size=32, batch_size=4, seed=3)


def _local_targets():
    """Targets of the first 6 local batches (HOG without XLA: same crops, faster to start)."""
    plain_hog = dataclasses.replace(registry.get("hog"), jit_compile=False)
    local = build_dataset("samples", "train", **{**OPTIONS, "representation": plain_hog})
    return np.concatenate([target.numpy() for _, target in local.take(6)])


def _check_served(address, local_targets):
    served = build_dataset("samples", "train", data_service=address, **OPTIONS)
    features_spec, target_spec = served.element_spec
    assert features_spec.shape == (4, 4, 4, 31) and target_spec.shape == (4, 32, 32, 3)
    for features, target in served.take(3):
        features, target = features.numpy(), target.numpy()
        assert features.shape == (4, 4, 4, 31) and features.dtype == np.float32
        assert target.shape == (4, 32, 32, 3) and target.dtype == np.float32
        assert np.isfinite(features).all() and 0.0 <= target.min() and target.max() <= 1.0
        # The features are HOG of the crop whose copy in 0..1 is the target.
        np.testing.assert_allclose(features, hog(target * 255.0).numpy(), atol=2e-3)
        # Every served crop is one of the seeded stream's (one worker takes the
        # positions in order; the check only needs them to come from the stream).
        for crop in target:
            assert np.abs(local_targets - crop).max(axis=(1, 2, 3)).min() == 0.0


def test_in_process_servers_serve_the_seeded_stream():
    dispatcher = data_service.start_dispatcher()
    worker = data_service.start_worker(dispatcher.target, heartbeat_ms=200)
    try:
        _check_served(dispatcher.target, _local_targets())
    finally:
        worker._stop()
        dispatcher._stop()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _start(*flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "launch.data_service", *flags],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_until_listening(port, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"launch.data_service exited early:\n{process.stdout.read()}")
        with socket.socket() as probe:
            if probe.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"Nothing listens on port {port} after {timeout} s.")


@pytest.mark.slow
def test_script_servers_serve_the_seeded_stream():
    dispatcher_port, worker_port = _free_port(), _free_port()
    processes = []
    try:
        processes.append(_start("--role=dispatcher", f"--port={dispatcher_port}"))
        processes.append(
            _start(
                "--role=worker",
                f"--dispatcher=localhost:{dispatcher_port}",
                f"--port={worker_port}",
                "--heartbeat_ms=200",
            )
        )
        local_targets = _local_targets()  # While the servers start.
        for port, process in zip((dispatcher_port, worker_port), processes, strict=True):
            _wait_until_listening(port, process)
        _check_served(f"grpc://localhost:{dispatcher_port}", local_targets)
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=30)
