"""Rates the benchmarks measure: the machine's matmul FLOP/s, a decoder's FLOPs, images/s.

- `matmul_flops_per_second`: the float32 (or bfloat16) matrix-multiply rate,
  the ceiling a training step's achieved FLOP/s is set against.
- `training_flops_per_image`: FLOPs of one training example, counted from the
  decoder's layers.
- `pipeline_rates`: images/s and CPU time per image of a dataset alone.
- `training_rates`: training images/s fed by a pipeline and by one batch in
  memory, alternated round by round (the step `model.fit` runs).

Example:
    >>> from benchmarks import rates
    >>> rates.matmul_flops_per_second(512, repeats=3)["median"] > 0
    True
"""

from __future__ import annotations

import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

_PIPELINE_CHUNKS = 3


def matmul_flops_per_second(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> dict:
    """The machine's matrix-multiply rate, measured with the backend.

    Args:
        size: side of the square matrices (`2 size^3` FLOPs per product).
        repeats: timed products after one warm-up.
        dtype: of the matrices ("bfloat16" for an accelerator's mixed-precision ceiling).

    Returns:
        {"size", "median", "best"}: FLOP/s of the median and the fastest product.

    Example:
        >>> matmul_flops_per_second(512, repeats=3)["median"] > 0
        True
    """
    a = keras.random.normal((size, size), seed=0, dtype=dtype)
    b = keras.random.normal((size, size), seed=1, dtype=dtype)
    ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32"))  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32"))  # waits for it
        seconds.append(time.perf_counter() - start)
    flops = 2.0 * size**3
    median, best = flops / statistics.median(seconds), flops / min(seconds)
    return {"size": size, "median": median, "best": best}


def training_flops_per_image(model: keras.Model) -> dict:
    """FLOPs of one training example (a multiply-add is 2), counted from the layers.

    Conv2D: `2 H_out W_out K^2 C_in C_out`; Conv2DTranspose: `2 H_in W_in K^2
    C_in C_out` (every input pixel scatters a `K x K x C_out` patch); Dense:
    `2 C_in C_out`. The backward pass costs two forward passes (the input
    gradient and the weight gradient), except for the layers that read the
    model's input, whose input gradient nobody needs (TF prunes it): so a
    training example costs `3 x forward` FLOPs, minus one forward of those
    layers. Biases, activations, the loss and the Adam update are elementwise
    and left out (well under 1% for these decoders).

    Args:
        model: a functional model of Conv2D, Conv2DTranspose and Dense layers
            (others are counted as free).

    Returns:
        {"forward": FLOPs of one forward pass, "training": FLOPs of a training step}, per image.

    Example:
        >>> from keras_invert import decoders
        >>> training_flops_per_image(decoders.hog_decoder(64, width=0.1))["forward"] > 0
        True
    """
    model_inputs = {id(tensor) for tensor in model.inputs}
    forward = training = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            _, height, width, channels_in = layer.input.shape
            k_height, k_width, channels_out, _ = layer.kernel.shape
            flops = 2 * height * width * k_height * k_width * channels_in * channels_out
        elif isinstance(layer, layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            k_height, k_width, channels_in, _ = layer.kernel.shape
            flops = 2 * height * width * k_height * k_width * channels_in * channels_out
        elif isinstance(layer, layers.Dense):
            flops = 2 * math.prod(layer.kernel.shape)
        else:
            continue
        forward += flops
        training += (2 if id(layer.input) in model_inputs else 3) * flops
    return {"forward": int(forward), "training": int(training)}


def pipeline_rates(dataset, batch_size: int, batches: int, chunks: int = _PIPELINE_CHUNKS):
    """Images/s and CPU seconds per image of iterating `dataset` alone, per chunk.

    CPU time is this process's (all threads), so it stays meaningful when
    other processes load the machine, unlike the wall-clock rate.

    Args:
        dataset: an endless dataset of batches.
        batch_size: examples per batch.
        batches: batches timed, after `max(2, batches // 2)` untimed ones.
        chunks: the timed batches are split into this many measurements.

    Returns:
        (images/s per chunk, CPU seconds per image per chunk).

    Example:
        >>> rates, cpu = pipeline_rates(dataset, batch_size=8, batches=12)
    """
    iterator = iter(dataset)
    # Warm-up: tracing, XLA compilation, the first reads. The prefetch and
    # parallel-map buffers fill meanwhile; consuming a few batches at full
    # speed empties them, so that the timed batches are made, not buffered.
    for _ in range(max(2, batches // 2)):
        next(iterator)
    per_chunk = max(1, batches // chunks)
    rates, cpu = [], []
    for _ in range(chunks):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(per_chunk):
            next(iterator)
        rates.append(per_chunk * batch_size / (time.perf_counter() - start))
        cpu.append((time.process_time() - start_cpu) / (per_chunk * batch_size))
    return rates, cpu


def training_rates(model, pipeline, in_memory, *, batch_size, steps, rounds, warmup_steps=1):
    """Training images/s fed by `pipeline` and by `in_memory`, alternated round by round.

    Args:
        model: a compiled Keras model (TensorFlow backend).
        pipeline, in_memory: endless datasets of `(features, target)` batches.
        batch_size: examples per batch.
        steps: timed steps per feed and round.
        rounds: rounds; the first feed alternates between rounds.
        warmup_steps: untimed steps per feed first, at least 1 (a `fit` call
            traces the step).

    Returns:
        {"pipeline": ..., "memory": ...}, each {"rates": images/s per round,
        "cpu": this process's CPU seconds per image per round}.

    Example:
        >>> figures = training_rates(model, dataset, dataset.take(1).cache().repeat(),
        ...                          batch_size=8, steps=2, rounds=4)
        >>> figures["pipeline"]["rates"], figures["memory"]["rates"]  # 4 values each
    """
    # `fit` builds `model.train_function`, the step it runs on each batch; the
    # timed loop below calls that same function, as `fit` does.
    model.fit(pipeline, steps_per_epoch=max(1, warmup_steps), epochs=1, shuffle=False, verbose=0)
    feeds = {"pipeline": iter(pipeline), "memory": iter(in_memory)}

    def run(feed, count):
        logs = None
        for _ in range(count):
            logs = model.train_function(feeds[feed])
        # The step's outputs are ready only once the step has run.
        ops.convert_to_numpy(logs["loss"])

    for feed in feeds:
        run(feed, max(1, warmup_steps))
    figures = {feed: {"rates": [], "cpu": []} for feed in feeds}
    for index in range(rounds):
        order = ("pipeline", "memory") if index % 2 == 0 else ("memory", "pipeline")
        for feed in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            run(feed, steps)
            figures[feed]["rates"].append(steps * batch_size / (time.perf_counter() - start))
            figures[feed]["cpu"].append((time.process_time() - start_cpu) / (steps * batch_size))
    return figures
