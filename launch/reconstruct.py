"""Reconstructs photos with a trained decoder and reports the paper's error.

    python -m launch.reconstruct --model=WORK_OR_EXPORT_DIR --images=a.jpg,b.png --out=grid.png
    python -m launch.reconstruct --model=WORK_DIR --images=photo.jpg --out=one.png
    python -m launch.reconstruct --model=WORK_DIR --data=samples --split=test --out=grid.png
    python -m launch.reconstruct --model=WORK_DIR --data=tfds:imagenette --split=validation \\
        --num_images=8 --out=grid.png

Writes a PNG grid (one row per image: original | reconstruction) and prints
the normalised reconstruction error (docs/reference.md, Evaluation; it needs
two photos or more), luma correlation, SSIM and PSNR, beside the mean-image
baselines: the mean training photo (a work dir's own training data, from its
`config.json`: what a constant predictor could learn) and, for two photos or
more, the mean of the evaluated photos themselves (an oracle, hard to beat).
Photos are centre cropped and made targets as in training
(`keras_invert.images`). A path that is missing, a folder or not an image
is refused with an error that says which. `--mirror_average` averages each
decoding with that of the mirrored features (HOG, LBP).
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Training work dir or SavedModel export dir.", required=True)
flags.DEFINE_list("images", None, "Image files to reconstruct (one or more).")
# Given empty (`--images=`), it would silently fall back to --data.
common.validate("images", bool, "one or more image files")
flags.DEFINE_string(
    "data", None, "A source instead of --images: samples (the default), folder:PATH, tfds:NAME."
)
flags.DEFINE_string("split", "test", "Split of --data.")
flags.DEFINE_integer(
    "num_images",
    None,
    "Only the first N photos (default: all; a TFDS split's first 100).",
    lower_bound=1,
)
flags.DEFINE_string("out", "reconstructions.png", "Output PNG grid.")
flags.DEFINE_string("metrics_out", None, "Optional JSON file for the figures.")
common.validate("out", lambda path: path.lower().endswith(".png"), "a path ending in .png")
common.validate_path("metrics_out")
flags.DEFINE_bool("mirror_average", False, "Average with the decoded mirror (HOG, LBP).")


def warn_if_upsampled(paths, image_size: int) -> None:
    """Warns about images whose short side is below `image_size`.

    The centre crop of such an image is upsampled before encoding (as the
    export's image signatures do), so a photo smaller than one feature cell
    is not an error here: its features describe the interpolated image.
    """
    import pipelines

    for path in paths:
        height, width = pipelines.read_image(path).shape[:2]
        if min(height, width) < image_size:
            logging.warning(
                "%s is %dx%d pixels: its centre crop is upsampled to %dx%d before encoding.",
                path, height, width, image_size, image_size,
            )  # fmt: skip


def main(argv):
    del argv
    import numpy as np

    import keras_invert
    import pipelines
    from keras_invert import evaluation, figures, files, images, metrics, mirror_averaging
    from pipelines import baselines

    if FLAGS.images and FLAGS["data"].present:
        raise app.UsageError("Give either --images or --data, not both.")
    inputs = {os.path.realpath(path) for path in FLAGS.images or ()}
    if os.path.realpath(FLAGS.out) in inputs:
        raise app.UsageError(f"--out would overwrite one of the --images. Received: {FLAGS.out!r}")
    if FLAGS.metrics_out and os.path.realpath(FLAGS.metrics_out) in {
        os.path.realpath(FLAGS.out),
        *inputs,
    }:
        raise app.UsageError(
            "--metrics_out would overwrite --out or one of the --images. "
            f"Received: {FLAGS.metrics_out!r}"
        )
    # Before the work, not when they are written.
    files.check_file(FLAGS.out, "out")
    if FLAGS.metrics_out:
        files.check_file(FLAGS.metrics_out, "metrics_out")
    model = keras_invert.load(FLAGS.model, mirror_average=FLAGS.mirror_average)
    representation, image_size = model.representation, model.image_size
    photos = pipelines.chosen_photos(FLAGS.images, FLAGS.data, FLAGS.split, FLAGS.num_images)
    if not photos.labels:
        raise app.UsageError("No images to reconstruct.")
    crops = photos.crops(image_size)
    if FLAGS.images:
        warn_if_upsampled(photos.labels, image_size)
    reconstructions = model.reconstruct(crops)
    size = reconstructions.shape[1]
    originals = np.asarray(images.target(crops, size))
    pairs = [list(pair) for pair in zip(originals, reconstructions, strict=True)]
    labels = ["original", "reconstruction"]
    grid = figures.figure(pairs, column_labels=labels, spacing=0, header_height=24)
    figures.save_png(FLAGS.out, grid)
    training_mean = baselines.training_mean_image(FLAGS.model, image_size, size)
    name = f"{representation} decoder" + (
        f", {mirror_averaging.LABEL}" if model.mirror_average else ""
    )
    rows = evaluation.reconstruction_rows(name, originals, reconstructions, training_mean)
    print(f"\n{len(photos)} images, {representation}, reconstructions {size}x{size}: {FLAGS.out}\n")
    table = [{"": name, **values} for name, values in rows.items()]
    print(evaluation.format_table(table, ["", *metrics.MEASURES]))
    if FLAGS.metrics_out:
        files.write_json(FLAGS.metrics_out, {"images": list(photos.labels), "results": rows})


if __name__ == "__main__":
    common.run(main)
