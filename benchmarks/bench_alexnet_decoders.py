"""AlexNet decoders: parameter counts of all eight, and training throughput.

    python -m benchmarks.bench_alexnet_decoders [--layers=conv5,fc8] [--batch_size=8] [--steps=3]
        [--modes=fixed,decoder_only,cached]

Prints (1) the parameter count and output size of the decoder of every AlexNet
layer at `--width` (1.0 = the paper's networks, Tables 5 and 6 and docs/reference.md,
Decoders), and (2) training images/s of the `--layers` decoders, timed over
`--steps` `model.fit` steps on one batch of 227 x 227 images held in memory,
after a warm-up step:

- `fixed encoder in model`: the training model of `launch.train`,
  `images -> frozen AlexNet -> decoder` (the network's forward pass is part
  of every step);
- `decoder only`: the decoder on features computed beforehand (what a feature
  cache would give), for comparison;
- `autoencoder` (with `--modes=...,autoencoder`): the encoder trained jointly;
- `cached` (with `--modes=...,cached`): `launch.train --cache_features`, the
  decoder fed by `pipelines.build_dataset(cache_features=True)` from the
  bundled photos (`--crops_per_image` crops each), timed in `--rounds`
  rounds alternated with the same decoder on one batch held in memory
  (`benchmarks.rates.training_rates`; medians), so that a ratio near 1 says
  the cache keeps up; also prints how fast the cache was built (network
  features per second, crops read and decoded included).

Weights are random (speed does not depend on them). Throughput is the
machine's; the CPU figures in BUILD.md came from 2 shared cores.
"""

from __future__ import annotations

import gc
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_list("layers", ["conv5", "fc8"], "Layers whose training is timed.")
flags.DEFINE_list(
    "modes", ["fixed", "decoder_only"], "Timed set-ups: fixed, decoder_only, autoencoder, cached."
)
flags.DEFINE_float("width", 1.0, "Decoder width multiplier (1.0 = the paper's).")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("steps", 3, "Timed training steps per measurement.")
flags.DEFINE_string("variant", "caffe", "AlexNet variant: caffe or torchvision.")
flags.DEFINE_integer("crops_per_image", 2, "cached: crops per bundled photo in the cache.")
flags.DEFINE_integer("rounds", 3, "cached: alternated rounds (cache-fed, in memory); median.")
FLAGS = flags.FLAGS

_MODE_NAMES = {
    "fixed": "fixed encoder in model",
    "decoder_only": "decoder only (features given)",
    "autoencoder": "autoencoder (encoder trained)",
    "cached": "decoder on the feature cache (--cache_features)",
}


def _cached_rate(name, run_fields, work_dir) -> tuple[float, float]:
    """`(cache build images/s, training images/s)` of `--cache_features` on the bundled photos."""
    import pipelines
    from benchmarks.rates import training_rates
    from keras_invert import building
    from keras_invert import config as config_lib
    from keras_invert.encoders import alexnet

    weights = os.path.join(work_dir, "random.weights.h5")
    if not os.path.exists(weights):
        alexnet(FLAGS.variant).save_weights(weights)  # Random: speed does not depend on them.
    run = config_lib.TrainConfig(
        **run_fields, cache_dir=os.path.join(work_dir, "cache"), cache_features=True,
        encoder_weights=weights,
    )  # fmt: skip
    start = time.perf_counter()
    dataset = pipelines.build_dataset(
        "samples", "train", representation=name, batch_size=FLAGS.batch_size, seed=0,
        cache_dir=run.cache_dir, crops_per_image=FLAGS.crops_per_image, cache_features=True,
        encoder_options=config_lib.encoder_options(run),
    )  # fmt: skip
    built = time.perf_counter() - start
    count = len(pipelines.list_source_files("samples", "train")) * FLAGS.crops_per_image
    model = building.build_model(run)
    # Alternated rounds against one batch held in memory: the machine's drift
    # (2 shared cores here) hits both feeds alike.
    figures = training_rates(
        model, dataset, dataset.take(1).cache().repeat(), batch_size=FLAGS.batch_size,
        steps=FLAGS.steps, rounds=FLAGS.rounds,
    )  # fmt: skip
    fed, memory = (statistics.median(figures[feed]["rates"]) for feed in ("pipeline", "memory"))
    return count / built, fed, memory


def _images_per_second(model, inputs, targets) -> float:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors((inputs, targets)).repeat()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)  # warm-up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0, shuffle=False)
    return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from keras_invert import building, optimizers, registry
    from keras_invert import config as config_lib
    from keras_invert.encoders import ALEXNET_LAYERS

    prefix = "alexnet" if FLAGS.variant == "caffe" else f"alexnet-{FLAGS.variant}"
    unknown = set(FLAGS.modes) - set(_MODE_NAMES)
    if unknown:
        raise app.UsageError(f"Unknown --modes {sorted(unknown)}; expected {list(_MODE_NAMES)}.")
    logging.set_verbosity(logging.ERROR)  # the random-weights warning is expected here
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"

    print(f"\nAlexNet ({FLAGS.variant}) decoders, width {FLAGS.width}\n")
    print("| layer | features | output | parameters |")
    print("|---|---|---|---|")
    for layer in ALEXNET_LAYERS:
        representation = registry.get(f"{prefix}/{layer}")
        decoder = representation.build_decoder(width=FLAGS.width)
        shape = "x".join(map(str, decoder.input_shape[1:]))
        side = decoder.output_shape[1]
        print(f"| {layer} | {shape} | {side}x{side}x3 | {decoder.count_params():,} |")
        del decoder
        gc.collect()

    rows = []
    for layer in FLAGS.layers:
        name = f"{prefix}/{layer}"
        representation = registry.get(name)
        size = representation.default_image_size
        target = representation.target_size(size)
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(0, 255, (FLAGS.batch_size, size, size, 3)), tf.float32)
        targets = tf.constant(rng.uniform(0, 1, (FLAGS.batch_size, target, target, 3)), tf.float32)
        for mode in FLAGS.modes:
            if mode == "cached":
                fields = dict(representation=name, width=FLAGS.width,
                              batch_size=FLAGS.batch_size, learning_rate=1e-4)  # fmt: skip
                with tempfile.TemporaryDirectory() as work_dir:
                    build_rate, fed, memory = _cached_rate(name, fields, work_dir)
                rows.append((layer, "feature cache build (photos -> features)", build_rate))
                rows.append((layer, _MODE_NAMES[mode], fed))
                rows.append((layer, "  the same decoder on one batch in memory", memory))
                gc.collect()
                continue
            run = config_lib.TrainConfig(
                representation=name,
                width=FLAGS.width,
                batch_size=FLAGS.batch_size,
                learning_rate=1e-4,
                autoencoder=mode == "autoencoder",
            )
            model = building.build_model(run)
            inputs = images
            if mode == "decoder_only":
                inputs = model.encoder(images)
                model = model.decoder
                model.compile(optimizer=optimizers.build_optimizer(run), loss="mean_squared_error")
            rate = _images_per_second(model, inputs, targets)
            rows.append((layer, _MODE_NAMES[mode], rate))
            del model
            gc.collect()

    print(
        f"\nTraining images/s, batch {FLAGS.batch_size}, {size}x{size} input, {FLAGS.steps} "
        f"timed steps, {device}, {os.cpu_count()} logical CPUs\n"
    )
    print("| layer | set-up | images/s |")
    print("|---|---|---|")
    for layer, mode, rate in rows:
        print(f"| {layer} | {mode} | {rate:.1f} |")


if __name__ == "__main__":
    app.run(main)
