"""tf.distribute training: strategies, the chief, sharded input, precision and XLA."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert import building, decoders, distribute, training
from keras_invert import config as config_lib
from keras_invert.checkpoints import Checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(**changes):
    values = dict(
        representation="hog", image_size=64, width=0.05, batch_size=4, steps=6,
        steps_per_epoch=3, learning_rate=1e-3, summary_images=0, seed=0,
    )  # fmt: skip
    values.update(changes)
    return config_lib.TrainConfig(**values)


def _examples(count=24, seed=0):
    """Random HOG-shaped features and images: the arithmetic, not the task, is tested."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 0.3, size=(count, 8, 8, 31)).astype(np.float32)
    targets = rng.uniform(0, 1, size=(count, 64, 64, 3)).astype(np.float32)
    return features, targets


def _tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_config_validates_execution_fields():
    run = _tiny_config(strategy="mirrored", precision="mixed_bfloat16", jit_compile=True)
    assert config_lib.from_dict(config_lib.to_dict(run)) == run
    for field, value in [
        ("strategy", "horovod"),
        ("precision", "float16"),
        ("jit_compile", "yes"),
        ("data_service", "localhost:5000"),
    ]:
        with pytest.raises(ValueError, match=field):
            _tiny_config(**{field: value})
    assert _tiny_config(data_service="grpc://localhost:5000").data_service.startswith("grpc")
    # Unseeded workers would cut their shards from different streams.
    with pytest.raises(ValueError, match="multi_worker.*seed=None"):
        _tiny_config(strategy="multi_worker", seed=None)
    assert _tiny_config(strategy="multi_worker", seed=3).seed == 3


def test_multi_worker_without_valid_tf_config_names_it(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    for text in ("{not json", '{"cluster": {}}', _tf_config({"worker": ["a:1"]}, "worker", 3)):
        monkeypatch.setenv("TF_CONFIG", text)
        with pytest.raises(ValueError, match="TF_CONFIG"):
            distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="strategy='gpu'"):
        distribute.make_strategy("gpu")


def test_tpu_strategy_without_tpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="No TPU"):
        distribute.make_strategy("tpu")


def test_multi_worker_strategy_gets_a_collective_timeout(monkeypatch):
    made = {}

    class Recorder:
        def __init__(self, communication_options):
            made["options"] = communication_options
            self.num_replicas_in_sync = 2

    monkeypatch.setattr(distribute, "_MultiWorkerMirroredStrategy", Recorder)
    monkeypatch.setenv("TF_CONFIG", _tf_config({"worker": ["a:1", "b:1"]}, "worker", 1))
    distribute.make_strategy("multi_worker")
    assert made["options"].timeout_seconds == distribute.COLLECTIVE_TIMEOUT_SECONDS
    distribute.make_strategy("multi_worker", collective_timeout=7.5)
    assert made["options"].timeout_seconds == 7.5
    with pytest.raises(ValueError, match="collective_timeout"):
        distribute.communication_options(0)


@pytest.mark.parametrize(
    "cluster, task_type, index, chief",
    [
        ({"worker": ["a:1", "b:1"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:1"]}, "worker", 1, False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0, True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, "worker", 0, False),
        ({"worker": ["a:1"], "evaluator": ["e:1"]}, "evaluator", 0, False),
    ],
)
def test_is_chief_follows_tf_config(monkeypatch, cluster, task_type, index, chief):
    monkeypatch.setenv("TF_CONFIG", _tf_config(cluster, task_type, index))
    assert distribute.is_chief() is chief


def test_single_process_is_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief(tf.distribute.get_strategy())


def test_multi_worker_reduce_takes_what_keras_fit_gives():
    # Keras 3 reduces whole (features, target) batches, and scalar losses with axis=0.
    strategy = distribute._MultiWorkerMirroredStrategy()  # No TF_CONFIG: one local worker.
    batch = strategy.run(lambda: (tf.ones([2, 3]), tf.zeros([2])))
    features, target = strategy.reduce("MEAN", batch, axis=None)
    np.testing.assert_array_equal(features, np.ones([2, 3]))
    loss = strategy.run(lambda: tf.constant(0.5))
    assert float(strategy.reduce("MEAN", loss, axis=0)) == 0.5


def test_mixed_float16_keeps_a_float32_output_and_scales_the_loss(tmp_path):
    run = _tiny_config(precision="mixed_float16", steps=3)
    model = building.build_model(run)
    assert keras.config.dtype_policy().name == "float32"  # Only the model is mixed.
    assert model.layers[1].compute_dtype == "float16"
    assert model.outputs[0].dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    features, targets = _examples(12)
    data = tf.data.Dataset.from_tensor_slices((features, targets)).repeat().batch(4)
    trained = training.train(run, data, str(tmp_path), verbose=0)
    assert int(trained.optimizer.iterations) == 3
    assert trained.predict(features[:2], verbose=0).dtype == np.float32
    with building.precision_scope("mixed_float16"):
        restored = Checkpoints(str(tmp_path / "checkpoints")).restore_latest()
    assert isinstance(restored.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(restored.optimizer.iterations) == 3
    assert float(restored.optimizer.dynamic_scale) > 1  # The loss scale was in use.
    # Restored in float32 the optimiser state would be dropped: refused instead.
    with pytest.raises(ValueError, match="precision='mixed_float16'"):
        training.train(config_lib.replace(run, precision="float32", steps=6), data, str(tmp_path))


def test_bfloat16_trains_a_step_without_loss_scaling():
    """mixed_bfloat16: bfloat16 compute, float32 weights and output, one finite Adam step."""
    # The table alone: after a learnt mean colour the output layer's bias has no gradient.
    model = building.build_model(_tiny_config(precision="mixed_bfloat16", mean_colour=False))
    assert keras.config.dtype_policy().name == "float32"  # Only the model is mixed.
    *hidden, last = [layer for layer in model.layers if layer.weights]
    assert {layer.dtype_policy.name for layer in hidden} == {"mixed_bfloat16"}
    assert last.dtype_policy.name == "float32" and model.outputs[0].dtype == "float32"
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    assert not isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    features, targets = _examples(4)
    # The first layer computes in bfloat16: the same weights in float32 give
    # other activations, by bfloat16's rounding (8 bits of mantissa) and no more.
    reference = building.build_model(_tiny_config(mean_colour=False))
    reference.set_weights(model.get_weights())
    mixed, exact = (
        keras.Model(m.input, m.get_layer(hidden[0].name).output)(features).numpy()
        for m in (model, reference)
    )
    assert str(mixed.dtype) == "bfloat16"
    relative = np.abs(mixed.astype(np.float32) - exact).max() / np.abs(exact).max()
    assert 2**-12 < relative < 2**-7, relative
    before = [v.numpy().copy() for v in model.trainable_variables]
    loss = float(model.train_on_batch(features, targets))
    assert np.isfinite(loss) and int(model.optimizer.iterations) == 1
    changed = [
        not np.array_equal(b, v.numpy())
        for b, v in zip(before, model.trainable_variables, strict=True)
    ]
    assert all(changed), changed
    # The learnt mean colour computes in float32 too, after the float32 output layer.
    coloured = building.build_model(_tiny_config(precision="mixed_bfloat16"))
    assert coloured.layers[-1].name == decoders.MEAN_COLOUR_LAYER
    assert coloured.layers[-1].dtype_policy.name == "float32"
    assert coloured.outputs[0].dtype == "float32"
    assert np.isfinite(float(coloured.train_on_batch(features, targets)))


def test_jit_compile_reaches_compile_and_a_resumed_model(tmp_path):
    assert building.build_model(_tiny_config(jit_compile=True)).jit_compile is True
    assert building.build_model(_tiny_config()).jit_compile is False
    features, targets = _examples(8)
    data = tf.data.Dataset.from_tensor_slices((features, targets)).repeat().batch(4)
    training.train(_tiny_config(steps=3), data, str(tmp_path), verbose=0)
    # XLA is an execution switch: a resumed run may turn it on.
    resumed = training.train(_tiny_config(steps=3, jit_compile=True), data, str(tmp_path))
    assert resumed.jit_compile is True


def test_jit_compile_trains_a_small_decoder_like_the_graph_step(saved_network):
    """The XLA train step computes the graph step's losses and weights.

    The fast variant of the HOG test below: a `keras:` network tap, whose
    generic decoder (3 convolutions, 2 up-convolutions) XLA compiles in
    about a second, in a `Reconstructor` with the frozen network.
    """
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    targets = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    losses, weights = [], []
    for jit_compile in (False, True):
        run = _tiny_config(
            representation=f"keras:{saved_network[1]}#conv2", image_size=32,
            jit_compile=jit_compile,
        )  # fmt: skip
        model = building.build_model(run)
        assert model.jit_compile is jit_compile
        history = model.fit(images, targets, batch_size=4, epochs=2, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
        weights.append(model.get_weights())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    assert losses[0][1] < losses[0][0]  # It learnt: the steps did something to compare.
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # XLA compiles the decoder's train step: about 30 s on 2 loaded cores.
def test_jit_compile_trains_like_the_graph_step():
    # The fast variant: the small network's decoder above.
    features, targets = _examples(8)
    losses = []
    for jit_compile in (False, True):
        model = building.build_model(_tiny_config(jit_compile=jit_compile))
        assert model.jit_compile is jit_compile
        history = model.fit(features, targets, batch_size=4, epochs=2, shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


_MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras, numpy as np
from keras_invert import config as config_lib, distribute, training
from keras_invert.checkpoints import optimizer_step

rng = np.random.default_rng(0)
features = rng.uniform(0, 0.3, size=(24, 8, 8, 31)).astype(np.float32)
targets = rng.uniform(0, 1, size=(24, 64, 64, 3)).astype(np.float32)


def dataset_function(shard):
    # The pipelines' contract: positions i, i + n, ... of the stream, from batch start_step.
    first = shard.start_step * shard.batch_size * shard.num_shards
    data = tf.data.Dataset.from_tensor_slices((features, targets)).repeat().skip(first)
    return data.shard(shard.num_shards, shard.shard_index).batch(shard.batch_size, True)


class Losses(keras.callbacks.Callback):
    # Keras logs the epoch's running mean; per-step losses are recovered from it.
    def __init__(self):
        super().__init__()
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append((batch, float(logs["loss"])))

    def steps(self):
        out, previous = [], 0.0
        for batch, mean in self.means:
            total = mean * (batch + 1)
            out.append(total - (previous if batch else 0.0))
            previous = total
        return out


class Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


run = config_lib.TrainConfig(
    representation="hog", image_size=64, width=0.05, batch_size=4, steps=6,
    steps_per_epoch=3, learning_rate=1e-3, summary_images=0, seed=0,
)
work, mode = sys.argv[1:]
result = {}
runs = ("default", "mirrored") if mode == "compare" else ("mirrored",)
for name in runs:
    strategy = distribute.make_strategy(name)
    record = Losses()
    model = training.train(run, dataset_function, f"{work}/{name}", strategy=strategy,
                           callbacks=[record], verbose=0)
    result[name] = dict(
        replicas=strategy.num_replicas_in_sync, losses=record.steps(),
        weights=[w.tolist() for w in model.get_weights()],
    )
if mode == "compare":
    # Another model, another strategy request in the same process (as a second
    # `training.train(strategy=None)` call makes): its collectives have other shapes.
    other = config_lib.replace(run, width=0.1, steps=3)
    model = training.train(other, dataset_function, f"{work}/other",
                           strategy=distribute.make_strategy("mirrored"), verbose=0)
    result["second_model_steps"] = optimizer_step(model)
if mode == "resume":
    # Interrupted after its first epoch, then resumed: restored inside the scope.
    strategy = distribute.make_strategy("mirrored")
    try:
        training.train(run, dataset_function, f"{work}/resumed", strategy=strategy,
                       callbacks=[Stop()], verbose=0)
    except KeyboardInterrupt:
        pass
    model = training.train(run, dataset_function, f"{work}/resumed", strategy=strategy, verbose=0)
    result["resumed"] = dict(
        weights=[w.tolist() for w in model.get_weights()],
        variable=type(model.trainable_variables[0].value).__name__,
        strategy=type(model.distribute_strategy).__name__,
    )
print("RESULT " + json.dumps(result))
"""


def _run_mirrored_script(result_script, tmp_path, mode):
    return result_script(_MIRRORED_SCRIPT, tmp_path, tmp_path, mode, name="mirrored").result()


def test_mirrored_on_two_cpus_matches_one_device(result_script, tmp_path):
    result = _run_mirrored_script(result_script, tmp_path, "compare")
    single, mirrored = result["default"], result["mirrored"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert len(single["losses"]) == 6
    # Same examples per step: the two replicas' halves make the single device's batch.
    np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5)
    difference = np.abs(np.subtract(mirrored["losses"], single["losses"])) / single["losses"]
    print(f"mirrored vs single device: max relative loss difference {difference.max():.2e}")
    for a, b in zip(mirrored["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert result["second_model_steps"] == 3


@pytest.mark.slow
def test_mirrored_run_resumes_inside_the_scope_on_the_same_stream(result_script, tmp_path):
    # Fast variants: test_training's interrupted run resumes on the same stream;
    # test_losses_distribute resumes a checkpoint inside the mirrored scope.
    result = _run_mirrored_script(result_script, tmp_path, "resume")
    assert result["resumed"]["variable"] == "MirroredVariable"
    assert result["resumed"]["strategy"] == "MirroredStrategy"
    # The pipeline of two replicas restarts at batch 2 * step of its stream.
    for a, b in zip(result["resumed"]["weights"], result["mirrored"]["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
