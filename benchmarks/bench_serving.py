"""Serving speed: photos in, reconstructions out, from an export and from the same model in Keras.

    python -m benchmarks.bench_serving [--representations=hog,lbp,efficientnet-lite0/stage2]
        [--photo_size=480x640] [--batch_sizes=1,64] [--calls=8] [--width=0.25]

For each representation an untrained decoder (width `--width`; speed does
not depend on the weights) is exported (`keras_invert.export`) and timed two
ways on the same uint8 photos of `--photo_size` (the bundled sample photos
resized to it):
- export: the SavedModel's `serving_default` signature loaded with
  `tf.saved_model.load`, the graph TF Serving runs (centre crop, features,
  decoder, all in the graph; HOG and LBP XLA-compiled);
- Keras: the ops `keras_invert.load(work_dir).reconstruct` runs for a work
  dir, called on the whole batch: `images.prepare`, the representation's
  batch encoder, then the decoder called eagerly.
Prints images/s (batch over the median call) and the median and 90th
percentile latency of one call, per batch size. The first calls (tracing,
compilation) are not timed.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_invert import export, registry  # noqa: E402
from keras_invert.images import prepare  # noqa: E402
from pipelines.photos import read_image  # noqa: E402
from pipelines.sources import SAMPLE_PHOTOS, sample_path  # noqa: E402

flags.DEFINE_list(
    "representations", ["hog", "lbp", "efficientnet-lite0/stage2"], "Representations to serve."
)
flags.DEFINE_string("photo_size", "480x640", "HEIGHTxWIDTH of the uint8 photos sent.")
flags.DEFINE_list("batch_sizes", ["1", "64"], "Photos per call.")
flags.DEFINE_integer("calls", 8, "Timed calls per batch size (after two untimed ones).")
flags.DEFINE_float("width", 0.25, "Decoder width multiplier.")
flags.DEFINE_integer("image_size", 0, "Crop side (0: each representation's default).")
FLAGS = flags.FLAGS


def sample_photos(count: int, height: int, width: int) -> np.ndarray:
    """`count` bundled photos as uint8 `[count, height, width, 3]` (cycled, resized)."""
    photos = []
    for index in range(count):
        photo = read_image(sample_path(SAMPLE_PHOTOS[index % len(SAMPLE_PHOTOS)]))
        photo = tf.image.resize(photo, [height, width], method="area")
        photos.append(tf.cast(tf.round(tf.clip_by_value(photo, 0, 255)), tf.uint8).numpy())
    return np.stack(photos)


def call_seconds(function, batch, calls: int) -> list[float]:
    """Seconds of `calls` calls of `function(batch)`, after two untimed ones."""
    function(batch)
    function(batch)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        function(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def _paths(name: str, image_size: int, directory: str):
    """The export's `serving_default` and the Keras reconstruction of the same decoder."""
    spec = registry.get(name)
    decoder = spec.build_decoder(image_size, width=FLAGS.width)
    path = export.export_saved_model(decoder, name, directory, image_size=image_size)
    serving = tf.saved_model.load(path)
    signature = serving.signatures["serving_default"]
    encode = spec.batch_encoder()

    def served(photos):
        return signature(images=photos)["reconstruction"].numpy()

    def in_keras(photos):
        features = encode(prepare(photos, image_size))
        return decoder(features, training=False).numpy()

    paths = {"export (serving_default)": served, "Keras (prepare, encoder, decoder)": in_keras}
    return paths, serving


def main(argv):
    del argv
    height, width = (int(side) for side in FLAGS.photo_size.split("x"))
    batch_sizes = [int(size) for size in FLAGS.batch_sizes]
    photos = tf.constant(sample_photos(max(batch_sizes), height, width))
    print(
        f"\nuint8 photos {height}x{width} -> reconstruction; decoders at width {FLAGS.width}, "
        f"untrained; {os.cpu_count()} CPU cores, TF {tf.__version__}; "
        f"median of {FLAGS.calls} calls"
    )
    print("| representation (crop side) | path | batch | images/s | median ms | p90 ms |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        for index, name in enumerate(FLAGS.representations):
            image_size = registry.get(name).image_size(FLAGS.image_size)
            paths, _serving = _paths(name, image_size, os.path.join(directory, str(index)))
            for path, function in paths.items():
                for batch_size in batch_sizes:
                    batch = photos[:batch_size]
                    seconds = call_seconds(function, batch, FLAGS.calls)
                    median, p90 = np.median(seconds), np.percentile(seconds, 90)
                    print(
                        f"| {name} ({image_size}) | {path} | {batch_size} | "
                        f"{batch_size / median:.1f} | {1000 * median:.1f} | {1000 * p90:.1f} |"
                    )


if __name__ == "__main__":
    app.run(main)
