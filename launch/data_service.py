"""Starts a tf.data service dispatcher or worker, for `build_dataset(data_service=...)`.

    python -m launch.data_service --role=dispatcher --port=5050
    python -m launch.data_service --role=worker --dispatcher=HOST:5050 --port=5051

and train with `--data_service=grpc://HOST:5050` (or `build_dataset(...,
data_service="grpc://HOST:5050")`). The trainer sends the dataset graph to the
dispatcher; the workers run it (read, decode, crop, features, batch) and
stream the batches back. Start one dispatcher and any number of workers, on
machines that see the photos at the same paths as the trainer; workers may
join while a job runs. The graph holds plain TensorFlow ops (HOG, LBP,
AlexNet crops), so a worker needs this project's TensorFlow, not its Python
code; SIFT's numpy encoder cannot run on a worker. The process logs its
address and blocks until killed.

`--work_dir` keeps the dispatcher's journal there, so a restarted dispatcher
resumes its jobs (fault tolerance); without it the state is in memory only.
"""

from __future__ import annotations

from absl import app, flags, logging

from launch import common  # Also quiets TensorFlow's C++ logs.

FLAGS = flags.FLAGS
flags.DEFINE_enum("role", None, ["dispatcher", "worker"], "Which server to run.", required=True)
flags.DEFINE_integer(
    "port", 0, "Port to listen on (0: pick a free one, logged).", lower_bound=0, upper_bound=65535
)
flags.DEFINE_string("dispatcher", None, "Worker: the dispatcher's HOST:PORT.")
flags.DEFINE_string(
    "worker_host",
    "localhost",
    "Worker: the host name under which the dispatcher and trainers reach this worker.",
)
flags.DEFINE_integer(
    "heartbeat_ms",
    None,
    "Worker: milliseconds between heartbeats to the dispatcher (default: TensorFlow's); "
    "lower picks new jobs up sooner.",
    lower_bound=1,
)
flags.DEFINE_string("work_dir", None, "Dispatcher: folder of its journal (fault tolerance).")


def start_dispatcher(port: int = 0, work_dir: str | None = None):
    """Starts a `tf.data.experimental.service.DispatchServer`; returns it (running)."""
    import tensorflow as tf

    service = tf.data.experimental.service
    config = service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    server = service.DispatchServer(config)
    # The address trainers pass to build_dataset(data_service=...).
    logging.info("tf.data service dispatcher at %s", server.target)
    return server


def start_worker(
    dispatcher: str, port: int = 0, worker_host: str = "localhost", heartbeat_ms: int | None = None
):
    """Starts a `tf.data.experimental.service.WorkerServer` of `dispatcher` (HOST:PORT)."""
    import tensorflow as tf

    service = tf.data.experimental.service
    dispatcher = dispatcher.removeprefix("grpc://")
    config = service.WorkerConfig(
        dispatcher_address=dispatcher,
        worker_address=f"{worker_host}:%port%",  # TF fills in the bound port.
        port=port,
        heartbeat_interval_ms=heartbeat_ms,
    )
    server = service.WorkerServer(config)
    # `_address` ("localhost:PORT") is the only way TF offers to read the bound port.
    bound_port = server._address.rsplit(":", 1)[1]
    logging.info("tf.data service worker at %s:%s for %s", worker_host, bound_port, dispatcher)
    return server


def main(argv):
    del argv
    if FLAGS.role == "dispatcher":
        if FLAGS.dispatcher is not None:
            raise app.UsageError("--dispatcher is for --role=worker.")
        server = start_dispatcher(FLAGS.port, FLAGS.work_dir)
    else:
        if not FLAGS.dispatcher:
            raise app.UsageError("--role=worker needs --dispatcher=HOST:PORT.")
        server = start_worker(FLAGS.dispatcher, FLAGS.port, FLAGS.worker_host, FLAGS.heartbeat_ms)
    server.join()  # Serves until the process is killed.


if __name__ == "__main__":
    common.run(main)
