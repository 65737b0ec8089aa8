"""The demo decoders' training step with ways of computing their leaky ReLUs (TensorFlow).

    python -m benchmarks.bench_leaky_relu --presets=demo,demo_hog --rounds=8 --steps=6

Every training step of a decoder logs Grappler's "remapper failed ...
LeakyReluGrad exist for missing node .../BiasAdd": the remapper fuses
Conv2D + BiasAdd + LeakyRelu, but the leaky ReLU's gradient reads the
BiasAdd output, so the rewrite is refused. This times `train_on_batch`
(Adam, squared error, one batch of random features in memory, the preset's
decoder and batch size) with the activation computed as shipped and in the
candidate ways:

- `keras`: `keras.layers.LeakyReLU`, as the decoders build it;
- `no_remapping`: the same with Grappler's remapper off (does the failed
  pass cost anything?);
- `output_gradient`: the same values, the gradient `LeakyReluGrad(upstream, y)`
  read from the output (equal for a slope >= 0), so that the fusion goes through;
- `maximum`: `ops.maximum(x, slope * x)`;
- `jit_compile`: `keras` with the train step compiled by XLA.

The variants take turns (round r runs them in one order, round r + 1 in the
reverse), so a machine shared with other jobs slows all alike; the table gives
the median over rounds of wall-clock and process CPU milliseconds per step, and
the load average before and after.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import layers, ops  # noqa: E402

from keras_invert import presets, registry  # noqa: E402

FLAGS = flags.FLAGS
VARIANTS = ("keras", "no_remapping", "output_gradient", "maximum", "jit_compile")


def define_flags():
    """The script's flags, defined when it runs (importing it defines none)."""
    flags.DEFINE_list("presets", ["demo", "demo_hog"], "Presets whose decoders are timed.")
    flags.DEFINE_list("variants", list(VARIANTS), f"Any of {', '.join(VARIANTS)}.")
    flags.DEFINE_integer("rounds", 8, "Rounds; each times every variant once.")
    flags.DEFINE_integer("steps", 6, "Training steps per variant and round.")


class OutputGradientLeakyReLU(layers.LeakyReLU):
    """Keras' leaky ReLU with its gradient read from the output (same gradient for slope >= 0)."""

    def call(self, inputs):
        slope = self.negative_slope

        @tf.custom_gradient
        def leaky_relu(x):
            y = tf.nn.leaky_relu(x, alpha=slope)
            return y, lambda upstream: tf.raw_ops.LeakyReluGrad(
                gradients=upstream, features=y, alpha=slope
            )

        return leaky_relu(inputs)


class MaximumLeakyReLU(layers.LeakyReLU):
    """`max(x, slope * x)`: a leaky ReLU for 0 <= slope <= 1 without the LeakyRelu op."""

    def call(self, inputs):
        return ops.maximum(inputs, ops.cast(self.negative_slope, inputs.dtype) * inputs)


_ACTIVATIONS = {"output_gradient": OutputGradientLeakyReLU, "maximum": MaximumLeakyReLU}


def build(preset: str, variant: str) -> keras.Model:
    """The preset's decoder, its leaky ReLUs replaced by the variant's, compiled."""
    config = presets.preset(preset)
    representation = registry.get(config.representation)
    keras.utils.set_random_seed(0)
    decoder = representation.build_decoder(
        representation.image_size(config.image_size),
        width=config.width,
        negative_slope=config.negative_slope,
    )
    activation = _ACTIVATIONS.get(variant, layers.LeakyReLU)

    def clone(layer):
        if isinstance(layer, layers.LeakyReLU):
            return activation(layer.negative_slope, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    model = keras.models.clone_model(decoder, clone_function=clone)
    model.set_weights(decoder.get_weights())
    model.compile(keras.optimizers.Adam(1e-4), "mse", jit_compile=variant == "jit_compile")
    return model


def time_steps(model, variant, batch, steps):
    """Wall-clock and process CPU seconds per step."""
    tf.config.optimizer.set_experimental_options({"remapping": variant != "no_remapping"})
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = model.train_on_batch(*batch)  # returns host values: waits for the step
    if not np.isfinite(loss):
        raise RuntimeError(f"{variant}: the loss is not finite ({loss}).")
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def load_average() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.variants) - set(VARIANTS))
    if unknown:
        raise app.UsageError(f"Expected variants among {VARIANTS}. Received: {unknown}")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores\n")
    print("| preset | variant | parameters | wall ms/step | CPU ms/step | speed-up (wall, CPU) |")
    print("|---|---|---|---|---|---|")
    for preset in FLAGS.presets:
        models = {variant: build(preset, variant) for variant in FLAGS.variants}
        first = models[FLAGS.variants[0]]
        rng = np.random.default_rng(0)
        batch_size = presets.preset(preset).batch_size
        features = rng.standard_normal((batch_size, *first.input_shape[1:]), np.float32)
        targets = rng.uniform(size=(batch_size, *first.output_shape[1:])).astype(np.float32)
        batch = (tf.constant(features), tf.constant(targets))
        for variant, model in models.items():  # tracing, graph optimisation, allocation
            time_steps(model, variant, batch, 2)
        before = load_average()
        times = {variant: [] for variant in models}
        for round_index in range(FLAGS.rounds):
            order = list(models) if round_index % 2 == 0 else list(models)[::-1]
            for variant in order:
                times[variant].append(time_steps(models[variant], variant, batch, FLAGS.steps))
        medians = {
            variant: [statistics.median(column) for column in zip(*rows, strict=True)]
            for variant, rows in times.items()
        }
        base_wall, base_cpu = medians[FLAGS.variants[0]]
        for variant, (wall, cpu) in medians.items():
            parameters = models[variant].count_params()
            print(
                f"| {preset} | {variant} | {parameters:,} | {1000 * wall:.1f} | {1000 * cpu:.1f} | "
                f"{base_wall / wall:.2f}x, {base_cpu / cpu:.2f}x |",
                flush=True,
            )
        print(f"\nload average before / after {preset}: {before} / {load_average()}\n")
    tf.config.optimizer.set_experimental_options({"remapping": True})


if __name__ == "__main__":
    define_flags()
    app.run(main)
