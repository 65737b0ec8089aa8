"""HOG throughput: batched TensorFlow op against VLFeat's C code per image.

    python -m benchmarks.bench_hog [--batch_size=64] [--image_size=256] [--repeats=5]

Both run on the same 256x256 crops of the bundled photos, on this machine's
CPU cores; VLFeat is called once per image (its API is per image), the TF op
once per batch. Prints images/s and the agreement of the two outputs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import best_time, photo_crops  # noqa: E402
from keras_invert import vlfeat  # noqa: E402
from keras_invert.features import hog  # noqa: E402

flags.DEFINE_integer("batch_size", 64, "Images per TF call.")
flags.DEFINE_integer("image_size", 256, "Square image side.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (best is reported).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    images = photo_crops(FLAGS.batch_size, FLAGS.image_size)
    tensor = tf.constant(images)
    xla = tf.function(hog, jit_compile=True)
    rows = [
        (
            "TF batched (XLA, as in the pipelines and exports)",
            FLAGS.batch_size / best_time(lambda: xla(tensor).numpy(), FLAGS.repeats),
        )
    ]
    graph = tf.function(hog)
    rows.append(
        (
            "TF batched (graph, no XLA)",
            FLAGS.batch_size / best_time(lambda: graph(tensor).numpy(), FLAGS.repeats),
        )
    )
    if vlfeat.is_available():
        c_time = best_time(lambda: [vlfeat.hog(image) for image in images], FLAGS.repeats)
        rows.append(("VLFeat C, per image", FLAGS.batch_size / c_time))
        difference = np.abs(xla(tensor).numpy() - np.stack([vlfeat.hog(i) for i in images]))
        parity = f"max abs diff {difference.max():.2e}, mean abs diff {difference.mean():.2e}"
    else:
        parity = "VLFeat not installed"
    print(
        f"\nHOG, {FLAGS.image_size}x{FLAGS.image_size}, batch {FLAGS.batch_size}, "
        f"{os.cpu_count()} CPU cores, TF {tf.__version__}"
    )
    print("| implementation | images/s | ms/image |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {1000 / rate:.2f} |")
    print(f"\nParity against VLFeat: {parity}")


if __name__ == "__main__":
    app.run(main)
