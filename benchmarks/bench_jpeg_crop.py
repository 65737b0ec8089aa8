"""CPU time of a training crop from JPEG bytes: decoding the whole photo vs only the crop's window.

    python -m benchmarks.bench_jpeg_crop [--image_size=256] [--min_crop_scale=0.35]
        [--crops=4] [--rounds=5]

On the bundled JPEG photos (sizes 427x640 to 600x512), each crop keyed by
its own seed, as the streaming training pipeline makes one per photo read:
- whole: `images.random_crop(images.decode(bytes))`, the photo decoded whole;
- window: `images.decode_random_crop(bytes)`, only the crop's window decoded
  (`tf.io.decode_and_crop_jpeg`), the path `pipelines.builder` streams with.
Prints CPU milliseconds per photo (process time, all threads; the best of
`--rounds` alternated rounds), wall milliseconds, and whether the crops of
the two are bit-identical.
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_invert import images  # noqa: E402
from pipelines.sources import SAMPLE_PHOTOS, sample_path  # noqa: E402

flags.DEFINE_integer("image_size", 256, "Side of the crops.")
flags.DEFINE_float("min_crop_scale", 0.35, "Smallest crop side over the short side.")
flags.DEFINE_integer("crops", 4, "Crops (seeds) per photo per round.")
flags.DEFINE_integer("rounds", 5, "Alternated timed rounds (best is reported).")
FLAGS = flags.FLAGS


def _crop_function(crop):
    return tf.function(
        lambda contents, seed: crop(contents, FLAGS.image_size, seed, FLAGS.min_crop_scale),
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([2], tf.int64)],
    )


def _round(function, photos, seeds) -> tuple[float, float, list[np.ndarray]]:
    """CPU and wall seconds of one crop per (photo, seed), and the crops."""
    crops = []
    cpu, wall = time.process_time(), time.perf_counter()
    for contents in photos:
        for seed in seeds:
            crops.append(function(contents, seed).numpy())
    return time.process_time() - cpu, time.perf_counter() - wall, crops


def main(argv):
    del argv
    photos = [tf.io.read_file(sample_path(name)) for name in SAMPLE_PHOTOS if name.endswith(".jpg")]
    seeds = [tf.constant([index, 11], tf.int64) for index in range(FLAGS.crops)]
    functions = {
        "whole photo decoded, then cropped": _crop_function(
            lambda contents, *crop: images.random_crop(images.decode(contents), *crop)
        ),
        "crop window decoded (decode_and_crop_jpeg)": _crop_function(images.decode_random_crop),
    }
    best = {name: (np.inf, np.inf) for name in functions}
    crops = {}
    for function in functions.values():
        _round(function, photos[:1], seeds[:1])  # Tracing.
    for _ in range(FLAGS.rounds):
        for name, function in functions.items():
            cpu, wall, crops[name] = _round(function, photos, seeds)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    whole, window = crops.values()
    identical = all(np.array_equal(a, b) for a, b in zip(whole, window, strict=True))
    count = len(photos) * len(seeds)
    print(
        f"\n{len(photos)} bundled JPEGs x {len(seeds)} crops, {FLAGS.image_size} px crops, "
        f"min_crop_scale {FLAGS.min_crop_scale}; {os.cpu_count()} CPU cores, "
        f"TF {tf.__version__}; crops bit-identical: {identical}"
    )
    print("| training crop | CPU ms/photo | wall ms/photo |")
    print("|---|---|---|")
    for name, (cpu, wall) in best.items():
        print(f"| {name} | {1000 * cpu / count:.2f} | {1000 * wall / count:.2f} |")
    (whole_cpu, _), (window_cpu, _) = best.values()
    print(f"CPU time ratio (whole / window): {whole_cpu / window_cpu:.2f}")


if __name__ == "__main__":
    app.run(main)
