"""LBP throughput: batched TensorFlow op against VLFeat's C code per image.

    python -m benchmarks.bench_lbp [--batch_size=64] [--image_size=256] [--repeats=5]

Both run on the same crops of the bundled photos (skimage astronaut, coffee,
chelsea, rocket), on this machine's CPU cores; VLFeat is called once per image
(its API is per image, on one core), the TF op once per batch after a warm-up
call (tracing and XLA compilation of the pattern kernel). Prints images/s and
the agreement of the two outputs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import best_time, photo_crops  # noqa: E402
from keras_invert import vlfeat  # noqa: E402
from keras_invert.features.lbp import lbp  # noqa: E402

flags.DEFINE_integer("batch_size", 64, "Images per TF call.")
flags.DEFINE_integer("image_size", 256, "Square image side.")
flags.DEFINE_integer("cell_size", 16, "LBP cell size.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (best is reported).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    cell_size = FLAGS.cell_size
    images = photo_crops(FLAGS.batch_size, FLAGS.image_size)
    tensor = tf.constant(images)
    compiled = tf.function(lambda batch: lbp(batch, cell_size))
    rows = [("TF batched (graph)", best_time(lambda: compiled(tensor).numpy(), FLAGS.repeats))]
    dynamic = tf.function(
        lambda batch: lbp(batch, cell_size),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    rows.append(
        (
            "TF batched (graph, unknown H, W: no XLA)",
            best_time(lambda: dynamic(tensor).numpy(), FLAGS.repeats),
        )
    )
    rows.append(
        ("TF batched (eager)", best_time(lambda: lbp(tensor, cell_size).numpy(), FLAGS.repeats))
    )
    if vlfeat.is_available():
        gray = tf.image.rgb_to_grayscale(tensor)[..., 0].numpy()
        rows.append(
            (
                "VLFeat C, per image (1 core)",
                best_time(lambda: [vlfeat.lbp(g, cell_size) for g in gray], FLAGS.repeats),
            )
        )
        reference = np.stack([vlfeat.lbp(g, cell_size) for g in gray])
        difference = np.abs(compiled(tensor).numpy() - reference)
        parity = f"max abs diff {difference.max():.2e}, mean abs diff {difference.mean():.2e}"
    else:
        parity = "VLFeat not installed"
    print(
        f"\nLBP (uniform, cell {cell_size}), {FLAGS.image_size}x{FLAGS.image_size}, "
        f"batch {FLAGS.batch_size}, {os.cpu_count()} CPU cores, TF {tf.__version__}"
    )
    print("| implementation | images/s | ms/image |")
    print("|---|---|---|")
    for name, seconds in rows:
        rate = FLAGS.batch_size / seconds
        print(f"| {name} | {rate:.1f} | {1000 / rate:.2f} |")
    print(f"\nParity against VLFeat: {parity}")


if __name__ == "__main__":
    app.run(main)
