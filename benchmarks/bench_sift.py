"""SIFT keypoint-map throughput per backend (VLFeat through ctypes, OpenCV).

    python -m benchmarks.bench_sift [--num_images=32] [--image_size=256] [--repeats=3]

Each backend computes the `(H/4, W/4, 133)` map of the same 256x256 crops of
the bundled photos, one image at a time on the host (as `sift_batch` and the
`tf.data` wrapper do). Prints maps/s, keypoints per image and the agreement of
the OpenCV maps with the VLFeat ones.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.common import best_time, photo_crops  # noqa: E402
from keras_invert import vlfeat  # noqa: E402
from keras_invert.features.sift import sift_batch  # noqa: E402

flags.DEFINE_integer("num_images", 32, "Images per timed run.")
flags.DEFINE_integer("image_size", 256, "Square image side.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions (best is reported).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    images = photo_crops(FLAGS.num_images, FLAGS.image_size)
    backends = ["vlfeat", "opencv"] if vlfeat.is_available() else ["opencv"]
    maps, rows = {}, []
    for backend in backends:
        seconds = best_time(lambda b=backend: sift_batch(images, b), FLAGS.repeats)
        maps[backend] = sift_batch(images, backend)
        occupied = np.any(maps[backend] != 0, axis=-1)
        rows.append((backend, FLAGS.num_images / seconds, occupied.sum() / FLAGS.num_images))
    print(
        f"\nSIFT maps, {FLAGS.image_size}x{FLAGS.image_size}, {FLAGS.num_images} images, "
        f"{os.cpu_count()} CPU cores"
    )
    print("| backend | maps/s | ms/map | occupied cells/map |")
    print("|---|---|---|---|")
    for name, rate, cells in rows:
        print(f"| {name} | {rate:.1f} | {1000 / rate:.2f} | {cells:.0f} |")
    if len(maps) == 2:
        reference, other = maps["vlfeat"], maps["opencv"]
        occupied_reference = np.any(reference != 0, axis=-1)
        both = occupied_reference & np.any(other != 0, axis=-1)
        distance = np.linalg.norm(reference[both][:, :128] - other[both][:, :128], axis=1)
        angle = np.abs(
            np.angle(
                np.exp(
                    1j
                    * (
                        np.arctan2(reference[both][:, 128], reference[both][:, 129])
                        - np.arctan2(other[both][:, 128], other[both][:, 129])
                    )
                )
            )
        )
        print(
            f"\nOpenCV vs VLFeat: {both.sum() / occupied_reference.sum():.1%} of VLFeat's cells "
            f"also hold an OpenCV keypoint; matched cells: descriptor L2 mean "
            f"{distance.mean():.3f} (median {np.median(distance):.3f}), angle difference "
            f"median {np.median(angle):.3f} rad (mean {angle.mean():.3f})"
        )


if __name__ == "__main__":
    app.run(main)
