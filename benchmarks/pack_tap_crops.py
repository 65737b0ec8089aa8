"""The reproduction's tap training data, packed into one file for a machine without TensorFlow.

    python -m benchmarks.pack_tap_crops --out=tap_crops.npz

Writes what `benchmarks.bench_tap_training` trains and measures on, made by
the pipelines here (TensorFlow) so that the benchmark needs Keras alone (JAX
on an accelerator machine):

- the fixed training crops whose features the reproduction's EfficientNet-Lite0
  tap runs cache (`pipelines.examples.fixed_crops` of each run's cache
  config: 32 crops per training photo, the runs' seed), and their targets at
  the vector taps' smaller output side;
- the test photos' centre crops and their targets at every output side;
- the mean training target at every output side (the "mean training image"
  baseline).

The training crops and their small targets are stored as JPEG (quality 95, no
chroma subsampling): about 29 MB instead of 147 MB of raw pixels (the
script prints the pixels' RMS change). The benchmark's features and targets
are both made from the decoded pixels; the test crops are stored exactly,
their targets as float16. The file holds plain arrays only (no pickled
objects).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_invert.encoders import EFFICIENTNET_LITE0_TAPS  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The script's flags, defined when it runs (importing it defines none)."""
    flags.DEFINE_string("out", None, "The .npz file to write.", required=True)
    flags.DEFINE_string("data", "samples", "Photo source (as launch.reproduce --data).")
    flags.DEFINE_integer("crops_per_image", 32, "Crops per training photo (the reproduction's).")
    flags.DEFINE_integer("seed", 0, "The runs' seed (the reproduction's default).")


def pack(data: str, crops_per_image: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays of the packed file (module docstring)."""
    from benchmarks.bench_tap_training import JPEG_QUALITY, decode_jpeg, encode_jpeg, tap_runs
    from keras_invert import decoders, images
    from keras_invert.encoders import (
        EFFICIENTNET_LITE0_IMAGE_SIZE,
        EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    )
    from pipelines import baselines, cache_files, examples, sources
    from pipelines.photos import load_images
    from pipelines.training_data import cache_config

    # The taps' runs share their crops: the first one's are every tap's.
    run = tap_runs(["stem"], data=data, crops_per_image=crops_per_image, seed=seed)["stem"]
    config = cache_config(run, cache_dir="unused")
    crops = examples.fixed_crops(
        config, sources.resolve(config.source, config.split), cache_files.crop_seed(config)
    )
    train = np.stack([example["image"].numpy() for example in crops])
    train = np.round(np.clip(train, 0, 255)).astype(np.uint8)
    size = EFFICIENTNET_LITE0_IMAGE_SIZE
    sides = sorted(
        {
            decoders.generic_table(EFFICIENTNET_LITE0_OUTPUT_SHAPES[tap], size)[1]
            for tap in EFFICIENTNET_LITE0_TAPS
        }
    )
    photos = sources.list_source_files(data, run.test_split)
    test = load_images(photos, size)
    arrays = {"test_images": test.astype(np.float32)}
    arrays["train_jpeg"], arrays["train_offsets"] = encode_jpeg(train)
    decoded = decode_jpeg(arrays["train_jpeg"], arrays["train_offsets"]).astype(np.float32)
    rms = float(np.sqrt(np.mean((decoded - train) ** 2)))
    print(f"JPEG quality {JPEG_QUALITY}: training crops' pixels change by {rms:.2f} (RMS, 0..255)")
    for side in sides:
        # float16: 3e-4 at most from the float32 target, far below any figure reported.
        arrays[f"test_targets_{side}"] = images.target(test, side).numpy().astype(np.float16)
        mean, _ = baselines.mean_target(data, run.train_split, size, side)
        arrays[f"mean_target_{side}"] = np.asarray(mean)
        if side != size:
            small = np.round(images.target(train.astype(np.float32), side).numpy() * 255)
            jpeg, offsets = encode_jpeg(small.astype(np.uint8))
            arrays[f"train_targets_{side}_jpeg"], arrays[f"train_targets_{side}_offsets"] = (
                jpeg,
                offsets,
            )
    arrays["test_names"] = np.array([os.path.splitext(os.path.basename(p))[0] for p in photos])
    return arrays


def main(argv):
    del argv
    from keras_invert import files

    arrays = pack(FLAGS.data, FLAGS.crops_per_image, FLAGS.seed)
    with files.atomic_path(FLAGS.out) as path:
        with open(path, "wb") as stream:
            np.savez(stream, **arrays)
    count = len(arrays["train_offsets"]) - 1
    print(f"{FLAGS.out}: {count} training crops, {len(arrays['test_images'])} test photos, "
          f"{os.path.getsize(FLAGS.out) / 1e6:.1f} MB")  # fmt: skip


if __name__ == "__main__":
    define_flags()
    app.run(main)
