"""Reconstructs photos with a trained decoder and reports the paper's error.

    python -m launch.reconstruct --model=WORK_OR_EXPORT_DIR --images=a.jpg,b.png --out=grid.png
    python -m launch.reconstruct --model=WORK_DIR --data=samples --split=test --out=grid.png

Writes a PNG grid (one row per image: original | reconstruction) and prints
the normalised reconstruction error (SPEC.md section 4), luma correlation,
SSIM and PSNR, beside two mean-image baselines: the mean training photo
(with --data: what a constant predictor could learn) and the mean of the
evaluated photos themselves (an oracle, hard to beat).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Training work dir or SavedModel export dir.", required=True)
flags.DEFINE_list("images", [], "Image files to reconstruct.")
flags.DEFINE_string("data", None, "A pipeline source instead of --images, e.g. 'samples'.")
flags.DEFINE_string("split", "test", "Split of --data.")
flags.DEFINE_string("out", "reconstructions.png", "Output PNG grid.")
flags.DEFINE_string("metrics_out", None, "Optional JSON file for the figures.")


def write_grid(path: str, originals, reconstructions, labels=("original", "reconstruction")):
    """Writes rows of `original | reconstruction` (floats in [0, 1]) as a PNG."""
    import cv2
    import numpy as np

    size = originals.shape[1]
    header = np.full((24, 2 * size, 3), 255, np.uint8)
    for column, label in enumerate(labels):
        cv2.putText(
            header, label, (column * size + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
    rows = [np.concatenate([o, r], axis=1) for o, r in zip(originals, reconstructions, strict=True)]
    grid = np.concatenate(
        [header, (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)], axis=0
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"Could not write the PNG. Received: out={path!r}")


def warn_if_upsampled(paths, image_size: int) -> None:
    """Warns about images whose short side is below `image_size`.

    The centre crop of such an image is upsampled before encoding (as the
    export's image signatures do), so a photo smaller than one feature cell
    is not an error here: its features describe the interpolated image.
    """
    import tensorflow as tf

    from pipelines import ops

    for path in paths:
        try:
            height, width = ops.decode_image(tf.io.read_file(path)).shape[:2]
        except (tf.errors.OpError, ValueError):
            continue  # pipelines.load_images names the file in its error.
        if min(height, width) < image_size:
            logging.warning(
                "%s is %dx%d pixels: its centre crop is upsampled to %dx%d before encoding.",
                path, height, width, image_size, image_size,
            )  # fmt: skip


def format_table(rows: dict[str, dict[str, float]]) -> str:
    columns = ["normalized_error", "luma_correlation", "ssim", "psnr"]
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    import pipelines
    from keras_invert import metrics

    reconstruct, representation, image_size, _ = common.load_trained(FLAGS.model)
    if FLAGS.images and FLAGS.data:
        raise app.UsageError("Give either --images or --data, not both.")
    paths = FLAGS.images or pipelines.list_source_files(FLAGS.data or "samples", FLAGS.split)
    if len(paths) < 2:
        raise app.UsageError("The normalised error needs at least two images.")
    if FLAGS.images:
        warn_if_upsampled(paths, image_size)
    images = pipelines.load_images(paths, image_size)
    reconstructions = np.concatenate(
        [reconstruct(images[i : i + 8]) for i in range(0, len(images), 8)], axis=0
    )
    size = reconstructions.shape[1]
    originals = tf.image.resize(images, [size, size], method="area", antialias=True).numpy() / 255.0
    originals = np.clip(originals, 0.0, 1.0)
    write_grid(FLAGS.out, originals, reconstructions)
    rows = {f"{representation} decoder": metrics.summarize(originals, reconstructions)}
    if FLAGS.data:
        # The constant prediction a model could learn: the mean training photo.
        train_paths = pipelines.list_source_files(FLAGS.data, "train")
        train = pipelines.load_images(train_paths, size) / 255.0
        rows["mean training image"] = metrics.mean_image_baseline(originals, train.mean(axis=0))
    # It has seen the evaluated photos themselves: a deliberately strong baseline.
    rows["mean image (of these photos)"] = metrics.mean_image_baseline(originals)
    print(f"\n{len(paths)} images, {representation}, reconstructions {size}x{size}: {FLAGS.out}\n")
    print(format_table(rows))
    if FLAGS.metrics_out:
        with open(FLAGS.metrics_out, "w") as file:
            json.dump({"images": paths, "results": rows}, file, indent=2)


if __name__ == "__main__":
    common.run(main)
