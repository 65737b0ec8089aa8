"""The reproduction's tap feature caches: built one by one (each tap's run) vs in one pass.

    python -m benchmarks.bench_tap_caches [--taps=stem,...,logits] [--crops_per_image=32]

Builds the network feature caches of the reproduction's EfficientNet-Lite0
tap jobs (`keras_invert.reproduction.plan.jobs`, their resolved run
configs) into temporary folders, twice: one by one, as each tap's run
builds its own (`pipelines.training_dataset`), then all together in one
pass over the crops (`pipelines.training_data.fill_feature_caches`, what
`launch.reproduce` does before the taps train). Prints the seconds of each
way, network builds and weight hashing included, and checks that the
caches landed in the same folders (the same keys).
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from keras_invert.encoders import EFFICIENTNET_LITE0_TAPS  # noqa: E402

flags.DEFINE_list("taps", list(EFFICIENTNET_LITE0_TAPS), "EfficientNet-Lite0 taps.")
flags.DEFINE_integer("crops_per_image", 32, "Crops per photo (the reproduction's default).")
flags.DEFINE_string("data", "samples", "Photo source.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import keras

    from keras_invert import distribute, runs
    from keras_invert.reproduction import plan
    from pipelines.training_data import fill_feature_caches, training_dataset

    def tap_runs(out):
        config = plan.ReproduceConfig(
            out_dir=out, data=FLAGS.data, taps=tuple(FLAGS.taps),
            crops_per_image=FLAGS.crops_per_image, autoencoder_tap=None,
        )  # fmt: skip
        pairs = []
        for job in plan.jobs(config):
            if job.group == "tap":
                work_dir = os.path.join(out, "runs", job.name)
                run = runs.resolve_config(work_dir, dict(job.changes), job.preset)
                pairs.append((run, runs.cache_dir(run, work_dir)))
        return pairs

    with tempfile.TemporaryDirectory() as root:
        alone = tap_runs(os.path.join(root, "alone"))
        start = time.perf_counter()
        for run, cache_dir in alone:
            training_dataset(run, distribute.InputShard(run.batch_size), cache_dir=cache_dir)
            keras.backend.clear_session()  # As the reproduction does between jobs.
        one_by_one = time.perf_counter() - start

        together = tap_runs(os.path.join(root, "together"))
        start = time.perf_counter()
        folders = fill_feature_caches(together)
        one_pass = time.perf_counter() - start

        for (_, cache_dir), folder in zip(alone, folders, strict=True):
            if os.listdir(cache_dir) != [os.path.basename(folder)]:
                raise RuntimeError(f"Other cache keys: {os.listdir(cache_dir)} vs {folder}")
    print(f"{len(alone)} taps, {FLAGS.crops_per_image} crops per photo, {FLAGS.data}:")
    print("| way | seconds |")
    print("|---|---|")
    print(f"| one by one (each tap's run) | {one_by_one:.1f} |")
    print(f"| one pass (fill_feature_caches) | {one_pass:.1f} |")
    print(f"ratio: {one_by_one / one_pass:.2f}x")


if __name__ == "__main__":
    app.run(main)
