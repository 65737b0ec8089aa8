"""HOG and LBP images/s where users run them: the pipelines, the SavedModel, against VLFeat.

    python -m benchmarks.bench_served_features [--batch_size=64] [--image_size=256] [--repeats=5]
        [--rounds=1] [--photo_size=480x640]

For each representation, on the same crops of the bundled photos:
- the pipelines: the encoder function the builder maps over batches (`pipelines.examples`);
- served: the image signatures of an export (`keras_invert.export`) loaded with
  `tf.saved_model.load`, whose decoder passes the features through, so the time
  is the signature's centre crop plus the features (sizes unknown when traced;
  `--photo_size` sends larger photos, which the signature crops and resizes);
- the signature's centre crop alone (`keras_invert.images.prepare`; a photo
  already at the crop size is not resampled), to tell the features' share
  (LBP's signatures skip it for such photos, uint8 or float: its compiled
  gray step converts and clips them, `keras_invert.images.map_prepared`);
- VLFeat's C code, one image at a time on one core (its API is per image).
Prints images/s, the ratio to VLFeat measured in the same run, and the largest
difference of the served features to VLFeat on 0..255 and on 0..1 pixels.
`--rounds=N` times every row and VLFeat in turn N times and gives the median
of the N ratios: fair when other jobs load the cores on and off.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import best_time, photo_crops  # noqa: E402
from keras_invert import export, registry, vlfeat  # noqa: E402
from keras_invert.images import prepare  # noqa: E402

flags.DEFINE_integer("batch_size", 64, "Images per TF call.")
flags.DEFINE_integer("image_size", 256, "Square image side.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions per round (best is reported).")
flags.DEFINE_integer(
    "rounds",
    1,
    "Rounds in which every row and VLFeat are timed in turn: images/s is the best round's, "
    "x VLFeat the median of the rounds' ratios (several rounds for a loaded machine).",
)
flags.DEFINE_list("representations", ["hog", "lbp"], "Representations to measure.")
flags.DEFINE_string(
    "photo_size",
    None,
    "HEIGHTxWIDTH of the photos sent to the served rows (the crops resized to it; the "
    "signature crops and resizes them back); default: the crops themselves.",
)
FLAGS = flags.FLAGS
VLFEAT_ROW = "VLFeat C, per image (1 core)"


def _vlfeat(name: str):
    """VLFeat's feature of one image, and the input it takes (LBP: the gray image)."""
    if name == "hog":
        return vlfeat.hog, lambda batch: batch
    return (
        lambda gray: vlfeat.lbp(gray, 16),
        lambda batch: tf.image.rgb_to_grayscale(batch)[..., 0].numpy(),
    )


def _served(name: str, image_size: int, directory: str):
    """The image signatures of an export whose decoder returns the features themselves."""
    inputs = keras.Input(registry.get(name).feature_shape(image_size))
    identity = keras.Model(inputs, keras.layers.Identity()(inputs))
    path = export.export_saved_model(identity, name, directory, image_size=image_size)
    return tf.saved_model.load(path).signatures


def _interleaved(functions: dict) -> dict:
    """Row -> `[rounds]` best-of-`repeats` seconds, the rows timed in turn in every round."""
    seconds = {row: [] for row in functions}
    for _ in range(FLAGS.rounds):
        for row, function in functions.items():
            seconds[row].append(best_time(function, FLAGS.repeats))
    return {row: np.array(times) for row, times in seconds.items()}


def _rows(name: str, images: np.ndarray, directory: str):
    spec = registry.get(name)
    encode = spec.batch_encoder()
    # The graph function tf.data maps (timed outside tf.data, whose prefetching
    # would hide it from a best-of-N timing).
    pipeline = tf.function(encode)
    batch = tf.constant(images)
    signatures = _served(name, FLAGS.image_size, directory)
    photos = images
    if FLAGS.photo_size:
        height, width = (int(side) for side in FLAGS.photo_size.split("x"))
        photos = np.round(tf.image.resize(images, [height, width]).numpy().clip(0, 255))
    as_uint8 = tf.constant(photos.astype(np.uint8))
    as_float = tf.constant(photos)

    def serve(signature, batch):
        return signatures[signature](images=batch)["reconstruction"].numpy()

    crop = tf.function(
        lambda batch: prepare(batch, FLAGS.image_size),
        input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)],
    )
    timed = {
        "pipelines (the builder's batch encoder)": lambda: pipeline(batch).numpy(),
        "served crop alone (images.prepare, uint8)": lambda: crop(as_uint8).numpy(),
        "served, serving_default (uint8)": lambda: serve("serving_default", as_uint8),
        "served, serve_float": lambda: serve("serve_float", as_float),
    }
    reference, vlfeat_input = _vlfeat(name)
    if not vlfeat.is_available():
        return _interleaved(timed), None, "VLFeat not installed"
    # Timed on its own input (LBP's gray conversion is not counted).
    inputs = vlfeat_input(images)
    timed[VLFEAT_ROW] = lambda: [reference(image) for image in inputs]
    seconds = _interleaved(timed)
    vlfeat_seconds = seconds.pop(VLFEAT_ROW)
    differences = []
    for batch in (images, images / np.float32(255)):
        expected = np.stack([reference(image) for image in vlfeat_input(batch)])
        differences.append(np.abs(serve("serve_float", tf.constant(batch)) - expected).max())
    parity = f"served max abs diff: 0..255 {differences[0]:.1e}, 0..1 {differences[1]:.1e}"
    return seconds, vlfeat_seconds, parity


def main(argv):
    del argv
    images = np.round(photo_crops(FLAGS.batch_size, FLAGS.image_size))
    served = f"; served photos {FLAGS.photo_size}" if FLAGS.photo_size else ""
    print(
        f"\n{FLAGS.image_size}x{FLAGS.image_size}{served}, batch {FLAGS.batch_size}, "
        f"{os.cpu_count()} CPU cores, TF {tf.__version__}"
    )
    with tempfile.TemporaryDirectory() as directory:
        for name in FLAGS.representations:
            seconds, vlfeat_seconds, parity = _rows(name, images, os.path.join(directory, name))
            print(f"\n{name.upper()}: {parity}")
            print("| implementation | images/s | ms/image | x VLFeat |")
            print("|---|---|---|---|")
            if vlfeat_seconds is not None:
                seconds[VLFEAT_ROW] = vlfeat_seconds
            for row, times in seconds.items():
                rate = FLAGS.batch_size / times.min()
                # The ratio of each round, so that load that comes and goes counts for both.
                ratio = "" if vlfeat_seconds is None else f"{np.median(vlfeat_seconds / times):.2f}"
                print(f"| {row} | {rate:.0f} | {1000 / rate:.2f} | {ratio} |")


if __name__ == "__main__":
    app.run(main)
