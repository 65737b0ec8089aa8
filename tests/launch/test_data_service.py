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
from pipelines import build_dataset, service

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
    dispatcher = service.start_dispatcher()
    worker = service.start_worker(dispatcher.target, heartbeat_ms=200)
    try:
        _check_served(dispatcher.target, _local_targets())
    finally:
        worker._stop()
        dispatcher._stop()


def test_service_feeds_fit_under_a_strategy_and_resumes_at_its_step(tmp_path):
    """The tf.data service feeding `training.train` under a MirroredStrategy, in this process.

    The fast variant of the two mirrored tests below. Here the strategy
    mirrors this process's one CPU device (two devices need a fresh process:
    those tests' subprocess), so the per-replica split of a batch is not
    exercised here; it is the same as without a service (`test_distribute`).
    The strategy's input path is: `distribute_input` calls the dataset
    function, Keras peeks at a batch through an iterator of its own, the
    service runs the pipeline, and the model and optimiser are mirrored
    variables. The trainer must receive the seeded stream's crops, and the
    input of a run resumed at step 2 (`distribute_input(start_step=2)`, as
    `training.train` passes a restored step: `test_training`) must start at
    element 8 and never serve the elements before it.
    """
    import tensorflow as tf

    from keras_invert import config as config_lib
    from keras_invert import distribute, training
    from keras_invert.checkpoints import Checkpoints, optimizer_step

    run = config_lib.TrainConfig(
        representation="hog", image_size=64, width=0.05, batch_size=4, steps=2,
        steps_per_epoch=2, learning_rate=1e-3, summary_images=0, seed=3,
    )  # fmt: skip
    # HOG without XLA on both sides: the same crops, faster to start.
    plain_hog = dataclasses.replace(registry.get("hog"), jit_compile=False)
    local = build_dataset("samples", "train", representation=plain_hog, image_size=64,
                          batch_size=4, seed=run.seed)  # fmt: skip
    # Elements 0-63: more than the trainer's prefetching reads in these runs.
    local = np.concatenate([target.numpy() for _, target in local.take(16)])
    shards, received = [], []

    def note(target):
        received.append(target.numpy())
        return target

    dispatcher = service.start_dispatcher()
    worker = service.start_worker(dispatcher.target, heartbeat_ms=200)

    def dataset_function(shard):
        shards.append(shard)
        served = build_dataset(
            "samples", "train", representation=plain_hog, image_size=64,
            batch_size=shard.batch_size, seed=run.seed, start_step=shard.start_step,
            num_shards=shard.num_shards, shard_index=shard.shard_index,
            data_service=dispatcher.target,
        )  # fmt: skip

        def tap(features, target):  # Notes what the trainer's side of the service receives.
            noted = tf.py_function(note, [target], tf.float32)
            noted.set_shape(target.shape)
            return features, noted

        return served.map(tap)

    def positions():
        """Each received crop's position in the seeded stream (-1: not among its first 64)."""
        crops = np.concatenate(received)
        distance = np.abs(crops[:, None] - local[None]).max(axis=(2, 3, 4))
        return {int(d.argmin()) if d.min() == 0.0 else -1 for d in distance}

    try:
        strategy = distribute.make_strategy("mirrored")
        model = training.train(run, dataset_function, str(tmp_path), strategy=strategy, verbose=0)
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert shards == [distribute.InputShard(batch_size=4)]
        assert type(model.trainable_variables[0].value).__name__ == "MirroredVariable"
        assert optimizer_step(model) == 2
        assert Checkpoints(str(tmp_path / "checkpoints")).steps() == [2]
        # Two steps' crops, and prefetched ones: all of the seeded stream.
        assert set(range(8)) <= positions() <= set(range(64))

        shards.clear()
        received.clear()
        resumed = distribute.distribute_input(strategy, dataset_function, 4, start_step=2)
        next(iter(resumed))
        assert shards == [distribute.InputShard(batch_size=4, start_step=2)]
        assert set(range(8, 12)) <= positions() <= set(range(8, 64))
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


@pytest.mark.slow  # Fast variant: the in-process servers (what the script's main starts).
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


# Two replicas need two logical CPU devices, configured before TensorFlow
# starts: the run (and the in-process servers) live in a subprocess.
_MIRRORED_SCRIPT = """
import dataclasses, json, os, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras, numpy as np
import pipelines
from keras_invert import config as config_lib, distribute, registry, training
from keras_invert.checkpoints import optimizer_step
from pipelines import service

run = config_lib.TrainConfig(
    representation="hog", image_size=64, width=0.05, batch_size=4, steps=4,
    steps_per_epoch=2, learning_rate=1e-3, summary_images=0, seed=0,
    strategy="mirrored",
)
dispatcher = service.start_dispatcher()
run = config_lib.replace(run, data_service=dispatcher.target)
worker = service.start_worker(dispatcher.target, heartbeat_ms=200)
shards, received = [], []


def note(target):
    received.append(target.numpy())
    return target


def dataset_function(shard):
    # As launch/train.py's dataset_from; the map after it notes the targets
    # the trainer's input received (trainer side of the service).
    shards.append(dataclasses.asdict(shard))
    served = pipelines.build_dataset(
        run.data, run.train_split, representation=run.representation,
        image_size=run.image_size, batch_size=shard.batch_size, training=True,
        seed=run.seed, min_crop_scale=run.min_crop_scale, color_jitter=run.color_jitter,
        start_step=shard.start_step, num_shards=shard.num_shards,
        shard_index=shard.shard_index, data_service=run.data_service,
    )

    def tap(features, target):
        noted = tf.py_function(note, [target], tf.float32)
        noted.set_shape(target.shape)
        return features, noted

    return served.map(tap)


class Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


class Losses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))


# The seeded stream's first 16 crops, made locally (HOG without XLA: same crops).
plain_hog = dataclasses.replace(registry.get("hog"), jit_compile=False)
local = pipelines.build_dataset(
    run.data, run.train_split, representation=plain_hog, image_size=run.image_size,
    batch_size=4, training=True, seed=run.seed, min_crop_scale=run.min_crop_scale,
)
local = np.concatenate([target.numpy() for _, target in local.take(4)])


def positions():
    # Each received crop's position in the seeded stream (-1: beyond the first 16).
    crops = np.concatenate(received) if received else np.zeros((0,) + local.shape[1:])
    distance = np.abs(crops[:, None] - local[None]).max(axis=(2, 3, 4))
    return [int(d.argmin()) if d.min() == 0.0 else -1 for d in distance]


work, mode = sys.argv[1:]
strategy = distribute.make_strategy(run.strategy)
result = dict(replicas=strategy.num_replicas_in_sync)
if mode == "resume":
    # Interrupted after its first epoch (2 steps); the run below resumes it.
    try:
        training.train(run, dataset_function, work, strategy=strategy, callbacks=[Stop()],
                       verbose=0)
    except KeyboardInterrupt:
        pass
    result["interrupted"] = dict(
        positions=positions(), shards=list(shards),
        checkpoints=sorted(os.listdir(os.path.join(work, "checkpoints"))),
    )
    received.clear(); shards.clear()
tasks_before = worker._num_tasks()
record = Losses()
model = training.train(run, dataset_function, work, strategy=strategy, callbacks=[record],
                       verbose=0)
result.update(
    positions=positions(), shards=list(shards), losses=record.values,
    tasks=worker._num_tasks() - tasks_before, steps=optimizer_step(model),
    checkpoints=sorted(os.listdir(os.path.join(work, "checkpoints"))),
    final=os.path.isfile(os.path.join(work, "model.keras")),
    variable=type(model.trainable_variables[0].value).__name__,
)
worker._stop()
dispatcher._stop()
print("RESULT " + json.dumps(result))
"""


def _run_mirrored_script(result_script, tmp_path, mode):
    script = result_script(
        _MIRRORED_SCRIPT, tmp_path, tmp_path / "run", mode, name="service_mirrored", timeout=300
    )
    return script.result()


# About 25 s. Fast variant: test_service_feeds_fit_under_a_strategy_and_resumes_at_its_step.
@pytest.mark.slow
def test_mirrored_training_reads_the_service(result_script, tmp_path):
    result = _run_mirrored_script(result_script, tmp_path, "train")
    assert result["replicas"] == 2
    # One pipeline feeds both replicas: batches of 2, two per optimiser step.
    assert result["shards"] == [dict(batch_size=2, start_step=0, num_shards=1, shard_index=0)]
    # The service's worker made the batches: fit's input started jobs on it
    # (two: under a strategy, Keras peeks at a batch through an iterator of its own).
    assert result["tasks"] >= 1
    # The trainer received the seeded stream's crops: the 4 steps' 16 elements.
    assert set(range(16)) <= set(result["positions"])
    assert result["steps"] == 4 and result["final"]
    assert result["checkpoints"] == ["ckpt-000000002.keras", "ckpt-000000004.keras"]
    assert result["variable"] == "MirroredVariable"
    assert len(result["losses"]) == 4 and np.isfinite(result["losses"]).all()


@pytest.mark.slow  # Two runs: about 70 s on 2 loaded cores. Fast variant: as above.
def test_mirrored_training_resumes_on_the_service(result_script, tmp_path):
    result = _run_mirrored_script(result_script, tmp_path, "resume")
    interrupted = result["interrupted"]
    assert interrupted["checkpoints"] == ["ckpt-000000002.keras"]
    assert set(range(8)) <= set(interrupted["positions"])
    # Resumed at step 2, the pipeline of two replicas starts at its batch 4
    # (element 8): the service's job starts there, and nothing earlier is served.
    assert result["shards"] == [dict(batch_size=2, start_step=4, num_shards=1, shard_index=0)]
    assert set(range(8, 16)) <= set(result["positions"])
    assert not set(range(8)) & set(result["positions"])
    assert result["steps"] == 4 and result["final"] and result["tasks"] >= 1
    assert len(result["losses"]) == 2 and np.isfinite(result["losses"]).all()


def test_a_dispatcher_that_nothing_answers_at_is_refused_in_seconds():
    with socket.socket() as listening:  # A port that answers, then one that does not.
        listening.bind(("localhost", 0))
        listening.listen()
        address = f"grpc://localhost:{listening.getsockname()[1]}"
        service.check_reachable(address, seconds=2)
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"nothing answered there in 1 s .*Received: data_serv"):
        service.check_reachable(address, seconds=1)
    assert time.monotonic() - start < 10
