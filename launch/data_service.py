"""Starts a tf.data service dispatcher or worker (`pipelines.service`) for `--data_service`.

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

import re

from absl import app, flags, logging

from keras_invert import config as config_lib
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
# Without a port the worker would wait for a dispatcher it can never reach, silently.
common.validate(
    "dispatcher",
    lambda address: re.fullmatch("(grpc://)?" + config_lib.DISPATCHER_ADDRESS, address),
    "HOST:PORT of the dispatcher",
)
common.validate_path("work_dir")


def main(argv):
    del argv
    from pipelines import service

    if FLAGS.role == "dispatcher":
        if FLAGS.dispatcher is not None:
            raise app.UsageError("--dispatcher is for --role=worker.")
        server = service.start_dispatcher(FLAGS.port, FLAGS.work_dir)
    else:
        if not FLAGS.dispatcher:
            raise app.UsageError("--role=worker needs --dispatcher=HOST:PORT.")
        service.check_port_free(FLAGS.port, "worker")  # Before the wait below.
        try:
            service.check_reachable(FLAGS.dispatcher, service.DISPATCHER_WAIT_SECONDS, "dispatcher")
        except ValueError as error:
            # A worker may start before its dispatcher: it keeps trying, but says so.
            logging.warning("%s This worker keeps trying to reach it.", error)
        server = service.start_worker(
            FLAGS.dispatcher, FLAGS.port, FLAGS.worker_host, FLAGS.heartbeat_ms
        )
    server.join()  # Serves until the process is killed.


if __name__ == "__main__":
    common.run(main)
