"""Decoder training throughput: in-memory batch vs the real input pipeline.

    python -m benchmarks.bench_train --representation=hog --image_size=256 --width=1.0 \
        --batch_size=16 --steps=20

Times training steps of the representation's decoder (1) on one batch held in
memory and (2) fed by `pipelines.build_dataset` on the bundled sample photos,
features included (streaming, no cache). The two feeds alternate in two
rounds of `steps / 2` steps each (`benchmarks.rates.training_rates`, which
runs the step `model.fit` runs). Prints images/s and their ratio: a ratio near
1 means the pipeline keeps up with training. `python -m launch.benchmark`
gives the fuller picture (several representations, SIFT's cache, FLOP/s).
"""

from __future__ import annotations

import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import pipelines  # noqa: E402
from benchmarks.rates import training_rates  # noqa: E402
from keras_invert import building  # noqa: E402
from keras_invert import config as config_lib  # noqa: E402

flags.DEFINE_string("representation", "hog", "Registered representation.")
flags.DEFINE_integer("image_size", 256, "Input image side.")
flags.DEFINE_float("width", 1.0, "Decoder width multiplier (1.0 = the paper's).")
flags.DEFINE_integer("batch_size", 16, "Batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps per feed (in two rounds).")
flags.DEFINE_string("data", "samples", "Pipeline source.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    run = config_lib.TrainConfig(
        representation=FLAGS.representation,
        image_size=FLAGS.image_size,
        width=FLAGS.width,
        batch_size=FLAGS.batch_size,
        steps=1_000_000,  # no learning-rate drop inside the benchmark
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
    model = building.build_model(run)
    figures = training_rates(
        model,
        dataset,
        dataset.take(1).cache().repeat(),  # the first batch, held in memory
        batch_size=FLAGS.batch_size,
        steps=max(1, FLAGS.steps // 2),
        rounds=2,
    )
    memory_rate = statistics.mean(figures["memory"]["rates"])
    pipeline_rate = statistics.mean(figures["pipeline"]["rates"])
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
