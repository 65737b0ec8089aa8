"""Throughput of the AlexNet encoders on this machine's CPU (or GPU), all eight taps.

Times `model(images, training=False)` inside one compiled `tf.function` on
random uint8 images already at the network's size, after a warm-up call;
reports the best of `--repeats` runs, as images per second. Weights are random
(speed does not depend on them).

Usage:
    python -m benchmarks.bench_alexnet [--batch_size=64] [--repeats=3] [--variants=caffe]
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("batch_size", 64, "Images per call.")
flags.DEFINE_integer("repeats", 3, "Timed calls per configuration (the best is reported).")
flags.DEFINE_list("variants", ["caffe"], "AlexNet variants to time: caffe, torchvision.")
flags.DEFINE_list("modes", ["graph", "xla"], "Compilation: graph (tf.function), xla (jit).")
FLAGS = flags.FLAGS


def _time(function, images, repeats):
    function(images)  # trace, compile and warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = function(images)
        # Materialise every tap so nothing is left pending.
        for tensor in outputs.values():
            tensor.numpy()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from keras_invert.encoders import ALEXNET_IMAGE_SIZES, alexnet

    device = tf.config.list_physical_devices("GPU") and "GPU" or "CPU"
    print(
        f"AlexNet encoder throughput, batch {FLAGS.batch_size}, all 8 taps, {device}, "
        f"{os.cpu_count()} logical CPUs, best of {FLAGS.repeats}"
    )
    header = f"{'variant':<12} {'input':>9} {'mode':<6} {'ms/batch':>10} {'images/s':>10}"
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for variant in FLAGS.variants:
        size = ALEXNET_IMAGE_SIZES[variant]
        model = alexnet(variant, input_size=size)
        images = tf.constant(
            rng.integers(0, 256, (FLAGS.batch_size, size, size, 3), dtype=np.uint8)
        )
        for mode in FLAGS.modes:
            function = tf.function(
                lambda x, model=model: model(x, training=False), jit_compile=mode == "xla"
            )
            seconds = _time(function, images, FLAGS.repeats)
            print(
                f"{variant:<12} {f'{size}x{size}':>9} {mode:<6} {seconds * 1e3:>10.1f} "
                f"{FLAGS.batch_size / seconds:>10.1f}"
            )


if __name__ == "__main__":
    app.run(main)
