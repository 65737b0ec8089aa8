"""Starts the tf.data service servers that run `build_dataset(data_service=...)` pipelines.

One dispatcher and any number of workers: the trainer sends the dataset graph
to the dispatcher, the workers run it (read, decode, crop, features, batch)
and stream the batches back. Workers must see the photos at the trainer's
paths; they need this project's TensorFlow, not its Python code (the graph
holds plain TensorFlow ops), so SIFT's NumPy encoder cannot run on one.

Example:
    >>> dispatcher = start_dispatcher(port=5050)
    >>> worker = start_worker("localhost:5050")
    >>> dataset = build_dataset(..., data_service=dispatcher.target)
"""

from __future__ import annotations

import socket
import time

import tensorflow as tf
from absl import logging

from keras_invert import files

DISPATCHER_WAIT_SECONDS = 20.0
"""How long a trainer or a worker waits for its dispatcher to answer."""


def check_reachable(
    address: str, seconds: float = DISPATCHER_WAIT_SECONDS, name: str = "data_service"
) -> None:
    """Refuses a dispatcher `address` ("grpc://HOST:PORT") that nothing answers at.

    A trainer pointed at a dispatcher that is not running would otherwise wait
    without a word. The dispatcher gets `seconds` to come up (started just
    before, in another shell). `name`: the argument or flag that gave it.

    Raises:
        ValueError: no connection to `address` within `seconds`.
    """
    host, _, port = address.removeprefix("grpc://").rpartition(":")
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
            return
        except (OSError, ValueError) as error:
            if time.monotonic() >= deadline:
                raise ValueError(
                    f"Expected a tf.data service dispatcher at {address}; nothing answered "
                    f"there in {seconds:g} s ({error}). Start one first (python -m "
                    f"launch.data_service --role=dispatcher --port=PORT). "
                    f"Received: {name}={address!r}"
                ) from None
            time.sleep(0.5)


def start_dispatcher(port: int = 0, work_dir: str | None = None):
    """Starts a `tf.data.experimental.service.DispatchServer`; returns it (running).

    Args:
        port: the port to listen on (0: a free one, logged).
        work_dir: folder of the dispatcher's journal: a restarted dispatcher
            resumes its jobs from it (None: state in memory only).

    Raises:
        ValueError: `work_dir` is a file, or a folder this process cannot write
            into; or the server cannot listen on `port`.
    """
    if work_dir is not None:
        files.check_folder(work_dir, "work_dir")
    service = tf.data.experimental.service
    config = service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=work_dir is not None
    )
    server = _started(lambda: service.DispatchServer(config), "dispatcher", port)
    # The address trainers pass to build_dataset(data_service=...).
    logging.info("tf.data service dispatcher at %s", server.target)
    return server


def start_worker(
    dispatcher: str, port: int = 0, worker_host: str = "localhost", heartbeat_ms: int | None = None
):
    """Starts a `tf.data.experimental.service.WorkerServer` of `dispatcher` (HOST:PORT).

    Args:
        dispatcher: the dispatcher's address, with or without "grpc://".
        port: the port to listen on (0: a free one, logged).
        worker_host: the host name under which the dispatcher and trainers
            reach this worker.
        heartbeat_ms: milliseconds between heartbeats to the dispatcher
            (None: TensorFlow's default); lower picks new jobs up sooner.

    Raises:
        ValueError: the server cannot listen on `port`.
    """
    service = tf.data.experimental.service
    dispatcher = dispatcher.removeprefix("grpc://")
    config = service.WorkerConfig(
        dispatcher_address=dispatcher,
        worker_address=f"{worker_host}:%port%",  # TF fills in the bound port.
        port=port,
        heartbeat_interval_ms=heartbeat_ms,
    )
    server = _started(lambda: service.WorkerServer(config), "worker", port)
    # `_address` ("localhost:PORT") is the only way TF offers to read the bound port.
    bound_port = server._address.rsplit(":", 1)[1]
    logging.info("tf.data service worker at %s:%s for %s", worker_host, bound_port, dispatcher)
    return server


def check_port_free(port: int, role: str) -> None:
    """Refuses a `port` that another process listens on, without starting a server.

    A worker waits for its dispatcher before it listens (TensorFlow's worker
    server does not return until the dispatcher answers), so a port in use
    would otherwise be reported only after that wait. `role`: "dispatcher"
    or "worker", for the message. Port 0 (any free port) always passes.

    Raises:
        ValueError: nothing may listen on `port` here.
    """
    if port == 0:
        return
    with socket.socket() as probe:
        # As gRPC does: a port left in TIME_WAIT by a stopped server is free to reuse.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as error:
            raise _port_error(role, port, error) from None


def _started(start, role: str, port: int):
    """`start()`, a server listening on `port`; a port it cannot bind is a ValueError."""
    try:
        return start()
    except RuntimeError as error:
        # gRPC says only "Could not start gRPC server"; a port in use is the usual cause.
        raise _port_error(role, port, error) from None


def _port_error(role: str, port: int, error: Exception) -> ValueError:
    return ValueError(
        f"Expected a free port for the tf.data service {role}; it could not listen on "
        f"port {port} (in use by another process, or not allowed here: {error}). "
        f"Received: port={port}"
    )
