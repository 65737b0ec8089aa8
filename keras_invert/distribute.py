"""tf.distribute for training: strategies, the chief, and per-worker input pipelines.

`make_strategy(name)` turns the config's `strategy` field into a
`tf.distribute.Strategy`:

- "default": no distribution (TensorFlow's default strategy, one device);
- "mirrored": synchronous data parallelism over the visible GPUs of this
  machine, else over its logical CPU devices;
- "multi_worker": synchronous data parallelism over several machines
  (`MultiWorkerMirroredStrategy`), the cluster read from the `TF_CONFIG`
  environment variable;
- "tpu": `TPUStrategy` on the TPU found by `TPUClusterResolver`.

`batch_size` stays the global batch: each of the `num_replicas_in_sync`
replicas computes the gradient of `batch_size / num_replicas_in_sync`
examples and the gradients are averaged, so a step is the step of the
single-device run at the same global batch.

Input. Every worker builds its own input pipeline with
`distribute_datasets_from_function`: `dataset_function(shard)` receives an
`InputShard` (this pipeline's batch, the number of pipelines and this
pipeline's index, and its first batch when a run resumes) and is expected to
read only its share of the stream. This manual sharding is the policy
(auto-sharding is switched off): the training stream is a function of the
element position and the seed, so shard `i` of `n` taking the positions
`i, i + n, ...` gives disjoint shards whose batches at step `k` together are
the examples of step `k` of the single-pipeline run, and a resumed run skips
to its step without reading what it skips. TensorFlow's auto-sharding would
be wrong here: FILE sharding hands whole files to workers (with the
bundled photos fewer files than a useful number of workers, and each
worker's crops would then come from its own photos, not from the seeded
stream), and DATA sharding makes every worker read, decode and compute the
features of the whole stream to keep every n-th element (n times the work).

Only the chief writes (`is_chief`): checkpoints, TensorBoard, images and the
final model; the other workers write nothing into the work dir.

Keras 3 (3.15) quirk: `fit` under `MultiWorkerMirroredStrategy` fails in
`strategy.reduce`, which Keras calls on a whole `(features, target)` batch
and on scalar losses with `axis=0` (keras-team/keras issue 20585). The
strategy made here reduces structures leaf by leaf and scalars without an
axis; nothing else changes.

Example:
    >>> from keras_invert import distribute
    >>> strategy = distribute.make_strategy("mirrored")
    >>> strategy.num_replicas_in_sync
    2
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf
from absl import logging

from keras_invert.config import STRATEGIES

COLLECTIVE_TIMEOUT_SECONDS = 600.0
"""How long a multi-worker collective waits for its peers before the run fails.

A dead peer is detected sooner by the coordination service's heartbeats (about
10 s here, the survivor's step fails with "unhealthy" or "connection reset");
the timeout catches a peer that is alive but stuck. It has to exceed the
longest legitimate wait between workers: the chief writing a checkpoint and
images while the others wait in the next step, and one worker tracing or
compiling its step for longer than another.
"""


@dataclasses.dataclass(frozen=True)
class InputShard:
    """What one input pipeline reads; the fields are `pipelines.build_dataset` arguments.

    Args:
        batch_size: the batch of this pipeline's elements (one replica's batch).
        start_step: the first batch of this pipeline's stream (not the
            optimiser step: a pipeline feeding R replicas yields R batches per step).
        num_shards: number of input pipelines (workers).
        shard_index: this pipeline's index in `[0, num_shards)`.
    """

    batch_size: int
    start_step: int = 0
    num_shards: int = 1
    shard_index: int = 0


# One MirroredStrategy per device set and process: a second instance restarts
# the collective instance keys, and its first all-reduce then meets the first
# instance's collectives ("Shape mismatch in the collective instance"), e.g.
# when a program trains two models with strategy="mirrored", one after the other.
_MIRRORED: dict[tuple[str, ...], tf.distribute.Strategy] = {}


def make_strategy(name: str, *, collective_timeout: float = COLLECTIVE_TIMEOUT_SECONDS):
    """The `tf.distribute.Strategy` named `name` (one of `STRATEGIES`).

    Create it at program start, before any TensorFlow op runs: the
    multi-worker strategy configures this process's collective ops and
    starts its server. "mirrored" gives the same strategy object on every
    call in a process (for its devices), so one program may train several
    models with it.

    Args:
        name: "default", "mirrored", "multi_worker" or "tpu".
        collective_timeout: seconds a multi-worker collective may wait for its
            peers before the run fails (see `COLLECTIVE_TIMEOUT_SECONDS`).

    Raises:
        ValueError: unknown name; "multi_worker" without a valid `TF_CONFIG`;
            "tpu" without a TPU.

    Example:
        >>> strategy = make_strategy("default")
        >>> strategy.num_replicas_in_sync
        1
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        names = tuple(device.name for device in devices)
        if names not in _MIRRORED:
            _MIRRORED[names] = tf.distribute.MirroredStrategy(list(names))
            logging.info("MirroredStrategy over %s.", list(names))
        return _MIRRORED[names]
    if name == "multi_worker":
        read_tf_config()
        strategy = _MultiWorkerMirroredStrategy(
            communication_options=communication_options(collective_timeout)
        )
        logging.info(
            "MultiWorkerMirroredStrategy: %d replicas, chief: %s.",
            strategy.num_replicas_in_sync,
            is_chief(),
        )
        return strategy
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.OpError) as error:
            raise ValueError(
                f"No TPU found ({error}). Run on a TPU VM (or set TPU_NAME), or choose "
                f"another strategy. Received: strategy={name!r}"
            ) from error
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Expected a strategy in {STRATEGIES}. Received: strategy={name!r}")


def communication_options(collective_timeout: float = COLLECTIVE_TIMEOUT_SECONDS):
    """Collective options of the multi-worker strategy: a timeout instead of a hang."""
    if not collective_timeout > 0:
        raise ValueError(
            "Expected a positive collective timeout in seconds. "
            f"Received: collective_timeout={collective_timeout!r}"
        )
    return tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)


def read_tf_config() -> dict:
    """The parsed `TF_CONFIG` of a multi-worker run, checked.

    Example (two machines; the same cluster on both, each its own task):
        TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                    "task": {"type": "worker", "index": 0}}'

    Raises:
        ValueError: missing, not JSON, or its task is not in its cluster.
    """
    text = os.environ.get("TF_CONFIG")
    example = (
        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not text:
        raise ValueError(
            "strategy='multi_worker' needs the TF_CONFIG environment variable naming the "
            f"cluster and this task, e.g. TF_CONFIG='{example}'. Received: TF_CONFIG={text!r}"
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        addresses = cluster[task["type"]]
        index = task["index"]
        valid = isinstance(index, int) and 0 <= index < len(addresses)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(
            f"TF_CONFIG is not a valid cluster description ({error!r}); expected e.g. "
            f"TF_CONFIG='{example}'. Received: TF_CONFIG={text!r}"
        ) from error
    if not valid:
        raise ValueError(
            f"TF_CONFIG's task index is not in its cluster. Received: TF_CONFIG={text!r}"
        )
    return tf_config


def is_chief(strategy=None) -> bool:
    """Whether this process writes the run's files.

    The "chief" task, or worker 0 when the cluster has no chief; the cluster
    is the strategy's (multi-worker, TPU), else `TF_CONFIG`'s. Without a
    cluster (one process) the process is the chief.

    Args:
        strategy: the run's strategy, or None to read `TF_CONFIG` alone.

    Example:
        >>> is_chief()  # No TF_CONFIG: a single process.
        True
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if cluster:
        task_type, index = resolver.task_type, resolver.task_id
    else:
        text = os.environ.get("TF_CONFIG")
        tf_config = json.loads(text) if text else {}
        cluster, task = tf_config.get("cluster") or {}, tf_config.get("task") or {}
        task_type, index = task.get("type"), task.get("index", 0)
    if not cluster or task_type is None:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and index == 0 and "chief" not in cluster


def distribute_input(strategy, dataset_function, global_batch_size: int, start_step: int = 0):
    """The per-worker input of `fit`: `dataset_function(InputShard)` on each pipeline.

    Args:
        strategy: the run's strategy.
        dataset_function: `InputShard -> tf.data.Dataset` of batches of
            `shard.batch_size`, the `shard_index`-th of `num_shards` disjoint
            shares of the stream, starting at batch `shard.start_step`.
        global_batch_size: examples per optimiser step over all replicas.
        start_step: the optimiser step the run starts at (a resumed run).

    Returns:
        A distributed dataset for `fit` (under the default strategy, the
        `tf.data.Dataset` of the one pipeline).

    Raises:
        ValueError: the global batch does not split evenly over the replicas.
    """
    check_global_batch(strategy, global_batch_size)

    def function(context: tf.distribute.InputContext):
        # Each element of a pipeline feeds one replica: a pipeline serving R
        # replicas yields R batches per optimiser step.
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        shard = InputShard(
            batch_size=context.get_per_replica_batch_size(global_batch_size),
            start_step=start_step * per_pipeline,
            num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
        )
        return _without_auto_sharding(dataset_function(shard))

    return strategy.distribute_datasets_from_function(function)


def check_global_batch(strategy, global_batch_size: int) -> None:
    """Raises ValueError unless the global batch splits evenly over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"The global batch must be a multiple of the {replicas} replicas. "
            f"Received: batch_size={global_batch_size!r}"
        )


def _without_auto_sharding(dataset):
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def any_worker(strategy, flag: bool) -> bool:
    """True on every worker when `flag` is true on any (a collective under multi-worker).

    Workers decide together whether to stop (a time budget measured by each
    worker's clock): one worker leaving `fit` alone would leave the others
    waiting in their next step.
    """
    return bool(max(_gather(strategy, int(flag))))


def num_workers(strategy) -> int:
    """The number of worker processes (tasks "chief" and "worker") of `strategy`'s cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, sum(len(cluster.get(job, ())) for job in ("chief", "worker")))


def same_on_all_workers(strategy, value: int) -> bool:
    """Whether every worker holds the same integer `value` (a collective under multi-worker)."""
    return len(set(_gather(strategy, value))) == 1


def _gather(strategy, value: int) -> list[int]:
    """`value` of every replica of every worker (just `[value]` on one worker)."""
    if num_workers(strategy) == 1:
        return [value]
    per_replica = strategy.run(lambda: tf.constant([value], tf.int64))
    return [int(v) for v in strategy.gather(per_replica, axis=0).numpy()]


def apply_gradients_unless(skip, optimizer, gradients, variables) -> None:
    """`optimizer.apply_gradients` unless `skip`, a boolean equal on all replicas.

    A skipped step leaves the variables, the moments and the step count as
    they were. Under a strategy that updates variables through `merge_call`,
    the condition is taken in the cross-replica context, as Keras's
    `LossScaleOptimizer` skips non-finite steps: a branch of a condition in
    the replica context may not call `merge_call`.
    """

    def apply(gradients):
        optimizer.apply_gradients(zip(gradients, variables, strict=True))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(skip, lambda: None, lambda: apply(gradients))
        return

    def cross_replica(distribution, skip, gradients):
        skip = distribution.experimental_local_results(skip)[0]
        tf.cond(
            skip,
            lambda: None,
            lambda: distribution.extended.call_for_each_replica(apply, args=(gradients,)),
        )

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(skip, gradients))


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes what Keras 3 `fit` gives it.

    Keras 3.15 calls `reduce("MEAN", batch, axis=None)` on a whole
    `(features, target)` structure before the first step, and
    `reduce("MEAN", loss, axis=0)` on scalar metrics after each step; the
    stock strategy accepts neither (keras-team/keras issue 20585).
    """

    def reduce(self, reduce_op, value, axis):
        def reduce_one(leaf):
            sample = leaf.values[0] if isinstance(leaf, tf.distribute.DistributedValues) else leaf
            rank = tf.convert_to_tensor(sample).shape.rank
            return super(_MultiWorkerMirroredStrategy, self).reduce(
                reduce_op, leaf, None if rank == 0 else axis
            )

        return tf.nest.map_structure(reduce_one, value)
