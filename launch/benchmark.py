"""Input pipeline and decoder training throughput, against the machine's matmul rate.

    python -m launch.benchmark --representation=hog,lbp,sift --image_size=256 --width=1.0 \\
        --batch_size=8 --steps=2 --rounds=4 --json=runs/benchmark.json

For each representation: the input pipeline alone, training fed by it and on
one batch held in memory (their ratio: near 1 means the pipeline keeps up),
the training step's FLOP/s against a float32 matmul, and the CPU cores of
this pipeline one accelerator needs to keep up; for HOG and LBP also
training with the features computed inside the model (`--features_in_model`).
The measurement is `benchmarks.throughput.run_benchmark`'s; its docstring
says how each figure is taken.
"""

from __future__ import annotations

from absl import app, flags

from benchmarks import throughput
from keras_invert import files
from launch import common

FLAGS = flags.FLAGS
_DEFAULTS = throughput.BenchmarkSettings()
flags.DEFINE_list("representation", list(_DEFAULTS.representations), "Representations.")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Input image side (multiple of 64).")
flags.DEFINE_float("width", _DEFAULTS.width, "Decoder width (1.0 = the paper's network).")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Batch size.")
flags.DEFINE_integer("steps", _DEFAULTS.steps, "Timed training steps per feed and round.")
flags.DEFINE_integer("rounds", _DEFAULTS.rounds, "Rounds of pipeline-fed/in-memory segments.")
flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps, "Untimed steps per feed first.")
flags.DEFINE_integer(
    "pipeline_batches", _DEFAULTS.pipeline_batches, "Batches timed for the pipeline alone."
)
flags.DEFINE_string("data", _DEFAULTS.data, "Pipeline source.")
flags.DEFINE_integer("matmul_size", _DEFAULTS.matmul_size, "Side of the timed float32 matmul.")
flags.DEFINE_float(
    "accelerator_rate",
    _DEFAULTS.accelerator_rate,
    "Training images/s of one accelerator, for the CPU cores per accelerator row; 0: the "
    "rates measured on one H200 for full-width decoders at 256 px.",
)
flags.DEFINE_string(
    "cache_dir",
    None,
    "Feature cache of the representations whose preset caches (SIFT), reused when "
    "present; default: a temporary folder, removed at the end.",
)
flags.DEFINE_bool(
    "features_in_model",
    _DEFAULTS.features_in_model,
    "Also time HOG and LBP with the features computed inside the training model.",
)
flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")


def main(argv):
    del argv
    flag_values = FLAGS
    if flag_values.json:  # Named as the flag, before run_benchmark checks it as json_path.
        files.check_file(flag_values.json, "json")
    try:
        settings = throughput.BenchmarkSettings(
            representations=tuple(flag_values.representation),
            image_size=flag_values.image_size,
            width=flag_values.width,
            batch_size=flag_values.batch_size,
            steps=flag_values.steps,
            rounds=flag_values.rounds,
            warmup_steps=flag_values.warmup_steps,
            pipeline_batches=flag_values.pipeline_batches,
            data=flag_values.data,
            matmul_size=flag_values.matmul_size,
            accelerator_rate=flag_values.accelerator_rate,
            features_in_model=flag_values.features_in_model,
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    throughput.run_benchmark(settings, cache_dir=flag_values.cache_dir, json_path=flag_values.json)


if __name__ == "__main__":
    common.run(main)
