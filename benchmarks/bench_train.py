"""Decoder training throughput: in-memory batch vs the real input pipeline.

    python -m benchmarks.bench_train --representation=hog --image_size=256 --width=1.0 \
        --batch_size=16 --steps=20

Times `model.fit` steps (after a warm-up epoch) of the representation's decoder
(1) on one batch held in memory and (2) fed by `pipelines.build_dataset` on the
bundled sample photos, features included. Prints images/s and their ratio:
a ratio near 1 means the pipeline keeps up with training.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import pipelines  # noqa: E402
from keras_invert import config as config_lib  # noqa: E402
from keras_invert import training  # noqa: E402

flags.DEFINE_string("representation", "hog", "Registered representation.")
flags.DEFINE_integer("image_size", 256, "Input image side.")
flags.DEFINE_float("width", 1.0, "Decoder width multiplier (1.0 = the paper's).")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
flags.DEFINE_string("data", "samples", "Pipeline source.")
FLAGS = flags.FLAGS


class _Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _images_per_second(model, dataset):
    timer = _Timer()
    model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=2, callbacks=[timer], verbose=0)
    return FLAGS.steps * FLAGS.batch_size / timer.seconds  # second epoch: warm


def main(argv):
    del argv
    run = config_lib.TrainConfig(
        representation=FLAGS.representation,
        image_size=FLAGS.image_size,
        width=FLAGS.width,
        batch_size=FLAGS.batch_size,
        steps=2 * FLAGS.steps,
        learning_rate=1e-4,
    )
    dataset = pipelines.build_dataset(
        FLAGS.data,
        "train",
        representation=FLAGS.representation,
        image_size=FLAGS.image_size,
        batch_size=FLAGS.batch_size,
        training=True,
        seed=0,
    )
    batch = next(iter(dataset))
    in_memory = tf.data.Dataset.from_tensors(batch).repeat()
    model = training.build_model(run)
    memory_rate = _images_per_second(model, in_memory)
    model = training.build_model(run)
    pipeline_rate = _images_per_second(model, dataset)
    print(
        f"\n{FLAGS.representation} decoder, width {FLAGS.width}, image {FLAGS.image_size}, "
        f"batch {FLAGS.batch_size}, {model.count_params():,} parameters, {os.cpu_count()} CPU cores"
    )
    print("| feed | images/s |")
    print("|---|---|")
    print(f"| batch in memory | {memory_rate:.1f} |")
    print(f"| pipeline ({FLAGS.data}, features in graph) | {pipeline_rate:.1f} |")
    print(f"| ratio pipeline / memory | {pipeline_rate / memory_rate:.2f} |")


if __name__ == "__main__":
    app.run(main)
