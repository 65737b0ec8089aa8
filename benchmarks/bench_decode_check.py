"""Cost of the decode check that `build_dataset` runs on every listed photo.

    python -m benchmarks.bench_decode_check [--num_photos=400] [--repeats=3]

Each listed file of a `samples` or `folder:` source is decoded once per
process before the stream's positions are fixed (`pipelines.decode_check`).
Prints the seconds of a cold check (the remembered answers cleared) for the
29 bundled photos and for a temporary folder of 500x375 JPEGs cut from them
(about the size of ImageNet photos), and of a warm one.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines import decode_check, sources  # noqa: E402

flags.DEFINE_integer("num_photos", 400, "JPEGs in the temporary folder.")
flags.DEFINE_integer("repeats", 3, "Cold checks per source (all are printed).")
FLAGS = flags.FLAGS


def _write_jpegs(folder: str, count: int) -> None:
    photos = [np.asarray(Image.open(path).convert("RGB")) for path in _sample_files()]
    photos = [photo for photo in photos if photo.shape[0] >= 375 and photo.shape[1] >= 500]
    rng = np.random.default_rng(0)
    for index in range(count):
        photo = photos[index % len(photos)]
        y = rng.integers(0, photo.shape[0] - 375 + 1)
        x = rng.integers(0, photo.shape[1] - 500 + 1)
        crop = Image.fromarray(photo[y : y + 375, x : x + 500])
        crop.save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)


def _sample_files() -> list[str]:
    splits = ("train", "test")
    return [path for split in splits for path in sources.list_source_files("samples", split)]


def _seconds(specs) -> float:
    start = time.perf_counter()
    for spec in specs:
        decode_check.decodable(spec)
    return time.perf_counter() - start


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as folder:
        _write_jpegs(folder, FLAGS.num_photos)
        cases = {
            "bundled photos (samples)": "samples",
            f"{FLAGS.num_photos} JPEGs of 500x375": f"folder:{folder}",
        }
        print(f"\n{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
        print("| source | files | cold check, s (each run) | ms per file (best) | warm, ms |")
        print("|---|---|---|---|---|")
        for name, source in cases.items():
            specs = [sources.resolve(source, split) for split in ("train", "test")]
            count = sum(len(spec.files) for spec in specs)
            cold = []
            for _ in range(FLAGS.repeats):
                decode_check._CHECKED.clear()
                cold.append(_seconds(specs))
            warm = _seconds(specs)
            print(
                f"| {name} | {count} | {', '.join(f'{s:.2f}' for s in cold)} | "
                f"{1000 * min(cold) / count:.1f} | {1000 * warm:.1f} |"
            )


if __name__ == "__main__":
    app.run(main)
