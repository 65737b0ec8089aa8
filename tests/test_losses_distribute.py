"""The perceptual and DeepSiM losses under tf.distribute: mirrored on two CPUs = one device.

TensorFlow splits the CPU into two logical devices only before it
initialises, so the runs happen in subprocesses (as in test_distribute), one
on the default strategy and one mirrored, whose results the tests below share.
The perceptual loss's own runs are slow-marked (`bash scripts/test.sh -m slow
tests/test_losses_distribute.py`): its terms are DeepSiM's less the adversarial one.
"""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 4
LEARNING_RATE = 1e-3  # The script's runs (`config` below).
# Adam moves a weight by about the learning rate each step whatever the size of
# its gradient, so a gradient component within rounding of zero moves its weight
# differently when the replicas' gradients are summed in another order. Measured
# on one machine: 8.7e-5 after 4 steps (2% of the 4e-3 Adam can move a weight);
# on the machines before, within 1e-6 plus 1e-4 of the weight. A wrong gradient
# (one replica's half batch alone) changes Adam's steps by up to their whole
# size, 1e-3 each.
WEIGHT_ATOL = 0.05 * STEPS * LEARNING_RATE
COMPONENTS = {
    "perceptual": ["feature", "loss", "pixel"],
    "deepsim": ["adversarial", "discriminator", "feature", "loss", "paused", "pixel"],
}

_SCRIPT = """
import json, sys
import tensorflow as tf

work, name, losses = sys.argv[1:]
if name == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras, numpy as np
from keras_invert import config as config_lib, distribute, training

rng = np.random.default_rng(0)
features = rng.uniform(0, 0.3, size=(16, 8, 8, 31)).astype(np.float32)
targets = rng.uniform(0, 1, size=(16, 64, 64, 3)).astype(np.float32)
# Some targets darker than others: the feature loss's normaliser then
# differs between the two replicas' halves of a batch.
targets[::4] *= 0.2


def dataset_function(shard):
    # The pipelines' contract: positions i, i + n, ... of the stream, from batch start_step.
    first = shard.start_step * shard.batch_size * shard.num_shards
    data = tf.data.Dataset.from_tensor_slices((features, targets)).repeat().skip(first)
    return data.shard(shard.num_shards, shard.shard_index).batch(shard.batch_size, True)


class Record(keras.callbacks.Callback):
    # Keras logs the epoch's running means; per-step values are recovered from them.
    def __init__(self):
        super().__init__()
        self.means, self.start = [], None

    def on_train_begin(self, logs=None):
        model = self.model
        optimizers = [model.optimizer] + [model.discriminator_optimizer] * (
            model.discriminator is not None)
        self.start = [int(o.iterations.numpy()) for o in optimizers]

    def on_train_batch_end(self, batch, logs=None):
        self.means.append((batch, {k: float(v) for k, v in logs.items()}))

    def steps(self):
        out, previous = {}, {}
        for batch, means in self.means:
            for name, mean in means.items():
                total = mean * (batch + 1)
                out.setdefault(name, []).append(total - (previous.get(name, 0.0) if batch else 0.0))
                previous[name] = total
        return out


def summary(model, record, strategy):
    optimizers = {"generator": model.optimizer}
    parts = {"generator": model.generator}
    if model.discriminator is not None:
        optimizers["discriminator"] = model.discriminator_optimizer
        parts["discriminator"] = model.discriminator
    return dict(
        replicas=strategy.num_replicas_in_sync,
        strategy=type(model.distribute_strategy).__name__,
        losses=record.steps(),
        start=record.start,
        iterations={k: int(o.iterations.numpy()) for k, o in optimizers.items()},
        weights={k: [w.tolist() for w in p.get_weights()] for k, p in parts.items()},
        # Where the variables live: mirrored ones were created inside the scope.
        variables={f"{k}_optimizer": sorted({type(v.value).__name__ for v in o.variables})
                   for k, o in optimizers.items()}
        | {k: sorted({type(v.value).__name__ for v in p.weights}) for k, p in parts.items()},
    )


def config(loss):
    return config_lib.TrainConfig(
        representation="hog", image_size=64, width=0.05, batch_size=4, steps=4,
        steps_per_epoch=2, learning_rate=1e-3, summary_images=0, seed=0, loss=loss,
        # No rate drops: they sit at fractions of `steps`, which the stopped run changes.
        learning_rate_drops=(),
        loss_weights=(1.0, 0.5, 0.1 if loss == "deepsim" else 0.0),
        comparator="alexnet/conv1",  # the cheapest network tap (random weights)
    )


# One strategy for all the runs: a second MirroredStrategy in the same process
# reuses the first one's collective instance keys, which TensorFlow has cached
# with the first model's gradient shapes ("Shape mismatch in the collective instance").
strategy = distribute.make_strategy(name)
result = {}
for loss in losses.split(","):
    # The mirrored DeepSiM run stops at its step-2 checkpoint, and a second
    # run restores that checkpoint under the strategy and goes on to step 4.
    stops = (2, 4) if (loss, name) == ("deepsim", "mirrored") else (4,)
    for steps in stops:
        record = Record()
        model = training.train(config_lib.replace(config(loss), steps=steps),
                               dataset_function, f"{work}/{loss}-{name}",
                               strategy=strategy, callbacks=[record], verbose=0)
        result[f"{loss}-{name}-{steps}"] = summary(model, record, strategy)
print("RESULT " + json.dumps(result))
"""


def _runs(tmp_path_factory, result_script, loss):
    """Runs of `loss` on one device and mirrored, side by side (one core each)."""
    work = tmp_path_factory.mktemp(f"losses_distribute_{loss}")
    scripts = [
        result_script(_SCRIPT, work, work, mode, loss, name=f"runs_{loss}_{mode}")
        for mode in ("default", "mirrored")
    ]
    result = {}
    for script in scripts:
        result.update(script.result())
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory, result_script):
    """DeepSiM runs on one device and mirrored, the mirrored one resumed.

    DeepSiM's loss holds the perceptual loss's terms (pixel and feature) and
    the adversarial one; the perceptual runs alone are the slow test's.
    """
    return _runs(tmp_path_factory, result_script, "deepsim")


@pytest.fixture(scope="module")
def perceptual_runs(tmp_path_factory, result_script):
    return _runs(tmp_path_factory, result_script, "perceptual")


def _assert_same_weights(a, b, rtol):
    assert sorted(a) == sorted(b)
    for part in a:
        for x, y in zip(a[part], b[part], strict=True):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=WEIGHT_ATOL, err_msg=part)


def _max_relative_difference(got, expected, steps):
    """The largest relative difference over the components; asserts them close."""
    assert sorted(got) == sorted(expected)
    worst = 0.0
    for name in got:
        want, have = np.array(expected[name])[steps], np.array(got[name])
        if name == "paused":  # 1 or 0 per step: the same decisions, not close values.
            np.testing.assert_allclose(have, want, atol=1e-6, err_msg=name)
            continue
        assert have.shape == want.shape and np.all(want > 0)
        np.testing.assert_allclose(have, want, rtol=1e-5, err_msg=name)
        worst = max(worst, float(np.max(np.abs(have - want) / want)))
    return worst


@pytest.mark.slow  # Two more processes (about 40 s); DeepSiM's runs below hold its terms.
def test_mirrored_perceptual_on_two_cpus_matches_one_device(perceptual_runs):
    runs = perceptual_runs
    single, mirrored = runs["perceptual-default-4"], runs["perceptual-mirrored-4"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    assert sorted(single["losses"]) == COMPONENTS["perceptual"]
    # The same global batch per step (the replicas take one half each): the same losses.
    worst = _max_relative_difference(mirrored["losses"], single["losses"], slice(0, STEPS))
    print(f"perceptual: mirrored vs single device, max relative loss difference {worst:.2e}")
    assert single["iterations"] == mirrored["iterations"] == {"generator": STEPS}
    _assert_same_weights(mirrored["weights"], single["weights"], rtol=1e-4)


def test_mirrored_deepsim_on_two_cpus_matches_one_device(runs):
    single, mirrored = runs["deepsim-default-4"], runs["deepsim-mirrored-2"]
    assert (single["replicas"], mirrored["replicas"]) == (1, 2)
    # The discriminator's loss and the adversarial term included.
    assert sorted(single["losses"]) == COMPONENTS["deepsim"]
    worst = _max_relative_difference(mirrored["losses"], single["losses"], slice(0, 2))
    print(f"deepsim: mirrored vs single device, max relative loss difference {worst:.2e}")
    assert mirrored["iterations"] == {"generator": 2, "discriminator": 2}
    # Both networks and both optimisers' slots were created inside the scope.
    variables = mirrored["variables"]
    assert sorted(variables) == [
        "discriminator",
        "discriminator_optimizer",
        "generator",
        "generator_optimizer",
    ]
    assert all(types == ["MirroredVariable"] for types in variables.values()), variables


def test_deepsim_checkpoint_saved_under_mirrored_resumes_both_optimisers(runs):
    resumed, single = runs["deepsim-mirrored-4"], runs["deepsim-default-4"]
    assert resumed["strategy"] == "MirroredStrategy"
    assert resumed["start"] == [2, 2]  # Both step counters restored from the checkpoint.
    assert resumed["iterations"] == {"generator": STEPS, "discriminator": STEPS}
    assert all(types == ["MirroredVariable"] for types in resumed["variables"].values())
    # The restored weights and slots go on as the uninterrupted single-device run.
    worst = _max_relative_difference(resumed["losses"], single["losses"], slice(2, STEPS))
    print(f"deepsim resumed under mirrored: max relative loss difference {worst:.2e}")
    _assert_same_weights(resumed["weights"], single["weights"], rtol=1e-4)
