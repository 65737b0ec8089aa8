"""The decoders' training step alone, on any Keras backend: images/s and model-FLOP use.

    python -m benchmarks.bench_decoder_step --decoders=hog,lbp,sift,conv5,fc8 \
        --precisions=float32,mixed_bfloat16 --batch_size=64 --steps=30

Builds each decoder at the paper's size (`--width=1.0`, 256 px for the
shallow features), feeds it one batch of random features and targets that is
already on the device, and times `train_on_batch` (Adam, squared error), so
the figure is what the accelerator can consume when the input pipeline is
free: the rate the pipeline must keep up with. The step's FLOPs are counted
from the layers (`benchmarks.rates.training_flops_per_image`) and set against
a square matrix product of the same dtype measured on the same device (the
"model-FLOP utilisation" of the step).

The decoders need Keras alone, so this runs under any backend:
`KERAS_BACKEND=jax` on an accelerator machine that has JAX and no
TensorFlow, or the default TensorFlow backend on the CPU.
"""

from __future__ import annotations

import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks.rates import matmul_flops_per_second, training_flops_per_image  # noqa: E402
from keras_invert import decoders  # noqa: E402
from keras_invert.encoders.alexnet import ALEXNET_OUTPUT_SHAPES  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """The script's flags, defined when it runs (importing it defines none)."""
    flags.DEFINE_list("decoders", ["hog", "lbp", "sift", "conv5", "fc8"], "Decoders to time.")
    flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies.")
    flags.DEFINE_integer("image_size", 256, "Image side of the shallow-feature decoders.")
    flags.DEFINE_float("width", 1.0, "Channel multiplier (1.0 = the paper's decoders).")
    flags.DEFINE_integer("batch_size", 64, "Batch size (the paper's: 64).")
    flags.DEFINE_integer("steps", 30, "Timed steps per decoder and precision (after 3 warm-ups).")
    flags.DEFINE_integer("matmul_size", 4096, "Side of the reference matrix product.")


# The Caffe AlexNet's taps: their decoders are built from the feature shapes.
_ALEXNET_TAPS = ALEXNET_OUTPUT_SHAPES["caffe"]
_SHALLOW = {"hog": decoders.hog_decoder, "lbp": decoders.lbp_decoder, "sift": decoders.sift_decoder}


def build(name: str, image_size: int, width: float) -> keras.Model:
    """The decoder called `name` ("hog", "lbp", "sift" or an AlexNet tap, e.g. "conv5")."""
    if name in _SHALLOW:
        return _SHALLOW[name](image_size, width=width)
    if name in _ALEXNET_TAPS:
        return decoders.alexnet_decoder(name, _ALEXNET_TAPS[name], width=width)
    raise ValueError(
        f"Expected one of {sorted(_SHALLOW) + sorted(_ALEXNET_TAPS)}. Received: decoder={name!r}"
    )


def time_steps(model: keras.Model, batch_size: int, steps: int) -> float:
    """Images/s of `steps` training steps on one batch held on the device."""
    rng = np.random.default_rng(0)
    features = rng.standard_normal((batch_size, *model.input_shape[1:]), np.float32)
    targets = rng.uniform(size=(batch_size, *model.output_shape[1:])).astype(np.float32)
    features, targets = keras.ops.convert_to_tensor(features), keras.ops.convert_to_tensor(targets)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    for _ in range(3):  # tracing, compilation, allocation
        model.train_on_batch(features, targets)
    start = time.perf_counter()
    for _ in range(steps):
        loss = model.train_on_batch(features, targets)  # returns host values: waits for the step
    seconds = time.perf_counter() - start
    if not np.isfinite(loss):
        raise RuntimeError(f"{model.name}: the loss is not finite ({loss}).")
    return batch_size * steps / seconds


def main(argv):
    del argv
    backend = keras.backend.backend()
    devices = keras.distribution.list_devices()
    print(
        f"Keras {keras.__version__} on {backend}, devices {devices}, {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()})"
    )
    print(
        f"\nbatch {FLAGS.batch_size}, width {FLAGS.width:g}, shallow decoders at "
        f"{FLAGS.image_size} px, {FLAGS.steps} timed steps\n"
    )
    print(
        "| decoder | precision | parameters | training GFLOP/image | images/s | "
        "achieved TFLOP/s | matmul TFLOP/s (same dtype) | model-FLOP use |"
    )
    print("|---|---|---|---|---|---|---|---|")
    matmul = {}
    for precision in FLAGS.precisions:
        dtype = "bfloat16" if "bfloat16" in precision else "float16" if "16" in precision else None
        dtype = dtype or "float32"
        matmul[precision] = matmul_flops_per_second(FLAGS.matmul_size, repeats=10, dtype=dtype)
    for name in FLAGS.decoders:
        for precision in FLAGS.precisions:
            keras.mixed_precision.set_dtype_policy(precision)
            model = build(name, FLAGS.image_size, FLAGS.width)
            flops = training_flops_per_image(model)["training"]
            rate = time_steps(model, FLAGS.batch_size, FLAGS.steps)
            achieved, peak = flops * rate, matmul[precision]["median"]
            print(
                f"| {name} | {precision} | {model.count_params():,} | {flops / 1e9:.2f} | "
                f"{rate:,.0f} | {achieved / 1e12:.2f} | {peak / 1e12:.1f} | "
                f"{100 * achieved / peak:.0f}% |",
                flush=True,
            )
            keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy("float32")


if __name__ == "__main__":
    define_flags()
    app.run(main)
