"""Input pipeline and decoder training throughput, against the machine's matmul rate.

    python -m launch.benchmark --representation=hog,lbp,sift --image_size=256 --width=1.0 \
        --batch_size=8 --steps=2 --rounds=4 --json=runs/benchmark.json

For each representation this prints a Markdown table with:

- the input pipeline alone, images/s: `pipelines.build_dataset` on the
  bundled sample photos (read, decode, random crop, features), as the
  representation's preset trains: streaming for HOG and LBP, from the on-disk
  feature cache for SIFT (its preset caches), plus SIFT's uncached
  (streaming) figure;
- training images/s fed by that pipeline, and on one batch of it held in
  memory, and their ratio: near 1 means the pipeline keeps up with training
  and takes (almost) no CPU from it;
- the same ratio in CPU time per image (this process's, all threads):
  in memory / pipeline-fed. On a machine whose cores the training step keeps
  busy it equals the images/s ratio, and it stays meaningful when other
  processes load the machine, which makes the wall-clock figures noisy;
- the achieved FLOP/s of the training step against a float32 matmul.

Both training feeds run the step `model.fit` runs (`model.train_function`,
traced by a warm-up `fit`) on persistent iterators, alternated in one process
round by round (the order flips every round), so that load from other
processes and drift hit both alike; the ratio is the pipeline-fed rate over
the in-memory rate of the same round, and the table gives the median and the
range over rounds. The pipeline is much faster than training, so its prefetch
buffer is full whenever a pipeline-fed segment starts and stays full: each
pipeline-fed step still costs one batch of pipeline work, and the buffer
gives no head start.

FLOPs are counted analytically from the decoder's layers (see
`training_flops_per_image`); the matmul rate is the median of timed
`size x size` float32 products. A final table has one row per
representation; `--json` writes every figure, the per-round values and the
load average.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402
from keras import layers, ops  # noqa: E402

from launch import common  # noqa: E402

# Share of the matmul rate a training step is assumed to reach, for the
# up-front run-time estimate only (the full-width decoders reach 30-65%).
_ASSUMED_EFFICIENCY = 0.4
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


def _summary(values) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": list(values),
    }


@dataclasses.dataclass(frozen=True)
class BenchmarkSettings:
    """What `run_benchmark` measures (the script's flags).

    Args:
        representations: registered feature representations ("hog", "lbp", "sift").
        image_size: input image side (a multiple of 64).
        width: decoder width multiplier (1.0 = the paper's network).
        batch_size: batch size of the pipeline and of training.
        steps: timed training steps per feed and round.
        rounds: rounds of (pipeline-fed, in-memory) segments; an even number
            gives both orders equally often.
        warmup_steps: untimed training steps per feed before the rounds (>= 1).
        pipeline_batches: batches timed for the pipeline alone (in 3 chunks).
        data: pipeline source.
        matmul_size: side of the float32 matmul that gives the machine's rate.

    Example:
        >>> settings = BenchmarkSettings(representations=("hog",), width=0.25, steps=4)
    """

    representations: tuple = ("hog", "lbp", "sift")
    image_size: int = 256
    width: float = 1.0
    batch_size: int = 8
    steps: int = 2
    rounds: int = 4
    warmup_steps: int = 1
    pipeline_batches: int = 12
    data: str = "samples"
    matmul_size: int = 2048

    def __post_init__(self):
        from keras_invert import registry

        positive = ("image_size", "batch_size", "steps", "rounds", "warmup_steps",
                    "pipeline_batches", "matmul_size")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")
        if not self.representations:
            raise ValueError("Expected at least one representation. Received: representations=()")
        for name in self.representations:
            if registry.get(name).encode_in_model:
                raise ValueError(
                    "Expected a feature representation (hog, lbp, sift): network encoders run "
                    f"inside the training model. Received: representation={name!r}"
                )


def _uses_cache(name: str) -> bool:
    """True when the representation's preset trains from the on-disk feature cache."""
    from keras_invert import config as config_lib

    return name in config_lib.preset_names() and config_lib.preset(name).cache_dir is not None


def benchmark_representation(
    name: str, settings: BenchmarkSettings, matmul: dict, cache_dir: str
) -> dict:
    """All figures of one representation (see the module docstring)."""
    import pipelines
    from keras_invert import building
    from keras_invert import config as config_lib

    load_before = os.getloadavg()
    batch_size = settings.batch_size
    cached = _uses_cache(name)

    def dataset(cache):
        return pipelines.build_dataset(
            settings.data,
            "train",
            representation=name,
            image_size=settings.image_size,
            batch_size=batch_size,
            training=True,
            seed=0,
            cache_dir=cache,
        )

    result = {"representation": name, "cached": cached}
    if cached:
        # The uncached (streaming) pipeline: the feature cost a cache saves.
        rates, cpu = pipeline_rates(dataset(None), batch_size, settings.pipeline_batches)
        result["pipeline_uncached"] = _summary(rates)
        result["pipeline_uncached_cpu"] = _summary(cpu)
        start = time.perf_counter()
        pipeline = dataset(cache_dir)
        result["cache_seconds"] = time.perf_counter() - start  # built, or found and reused
    else:
        pipeline = dataset(None)
    rates, cpu = pipeline_rates(pipeline, batch_size, settings.pipeline_batches)
    result["pipeline"], result["pipeline_cpu"] = _summary(rates), _summary(cpu)

    run = config_lib.TrainConfig(
        representation=name,
        image_size=settings.image_size,
        width=settings.width,
        batch_size=batch_size,
        steps=1_000_000,  # no learning-rate drop inside the benchmark
        learning_rate=1e-4,
    )
    model = building.build_model(run)
    result["parameters"] = int(model.count_params())
    flops = training_flops_per_image(model)
    result["flops_per_image"] = flops
    figures = training_rates(
        model,
        pipeline,
        pipeline.take(1).cache().repeat(),  # the first batch, held in memory
        batch_size=batch_size,
        steps=settings.steps,
        rounds=settings.rounds,
        warmup_steps=settings.warmup_steps,
    )
    fed, memory = figures["pipeline"], figures["memory"]
    result["train_pipeline"] = _summary(fed["rates"])
    result["train_memory"] = _summary(memory["rates"])
    result["train_pipeline_cpu"] = _summary(fed["cpu"])
    result["train_memory_cpu"] = _summary(memory["cpu"])
    pairs = list(zip(fed["rates"], memory["rates"], strict=True))
    result["ratio"] = _summary([f / m for f, m in pairs])
    # CPU seconds per image in memory / pipeline-fed: what the ratio is on a
    # machine whose cores training keeps busy, even when others load it.
    result["cpu_ratio"] = _summary([m / f for f, m in zip(fed["cpu"], memory["cpu"], strict=True)])
    achieved = [flops["training"] * rate for rate in memory["rates"]]
    result["achieved_flops"] = _summary(achieved)
    result["matmul_fraction"] = _summary([a / matmul["median"] for a in achieved])
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


def _spread(summary: dict, digits: int = 1, scale: float = 1.0) -> str:
    return f"{summary['min'] * scale:.{digits}f}-{summary['max'] * scale:.{digits}f}"


def format_table(result: dict, settings: BenchmarkSettings, matmul: dict) -> str:
    """The Markdown table of one representation."""
    source = f"{settings.data}, " + ("on-disk cache" if result["cached"] else "streaming")
    rows = [(f"pipeline alone ({source}, features included)", "pipeline", 1)]
    if result["cached"]:
        rows.append(("pipeline alone, uncached (streaming)", "pipeline_uncached", 1))
    rows += [
        ("training, fed by the pipeline", "train_pipeline", 2),
        ("training, one batch in memory", "train_memory", 2),
    ]
    lines = [
        f"{result['representation']}: width {settings.width:g}, image {settings.image_size}, "
        f"batch {settings.batch_size}, {result['parameters']:,} parameters, "
        f"{settings.rounds} rounds of {settings.steps} steps per feed, load average "
        f"{result['load_average']['before'][0]:.1f} -> {result['load_average']['after'][0]:.1f}",
        "",
        "| measure | median | range | CPU ms per image (median) |",
        "|---|---|---|---|",
    ]
    for label, key, digits in rows:
        summary, cpu = result[key], result[f"{key}_cpu"]["median"]
        lines.append(
            f"| {label}, images/s | {summary['median']:.{digits}f} | "
            f"{_spread(summary, digits)} | {1000 * cpu:.1f} |"
        )
    flops, achieved, fraction = (
        result["flops_per_image"], result["achieved_flops"], result["matmul_fraction"]
    )  # fmt: skip
    lines += [
        f"| ratio pipeline-fed / in memory, images/s | {result['ratio']['median']:.3f} | "
        f"{_spread(result['ratio'], 3)} | |",
        f"| ratio in memory / pipeline-fed, CPU per image | {result['cpu_ratio']['median']:.3f} | "
        f"{_spread(result['cpu_ratio'], 3)} | |",
        f"| training GFLOP per image (forward {flops['forward'] / 1e9:.2f}) | "
        f"{flops['training'] / 1e9:.2f} | | |",
        f"| achieved GFLOP/s (in memory) | {achieved['median'] / 1e9:.1f} | "
        f"{_spread(achieved, 1, 1e-9)} | |",
        f"| share of the {matmul['size']}^2 matmul rate ({matmul['median'] / 1e9:.1f} GFLOP/s) | "
        f"{100 * fraction['median']:.0f}% | {_spread(fraction, 0, 100)}% | |",
    ]
    return "\n".join(lines)


def format_summary(results: list, matmul: dict) -> str:
    """One row per representation (medians; the ratio's range over rounds)."""
    lines = [
        "| representation | pipeline images/s | training images/s, pipeline-fed | in memory | "
        "ratio (range) | CPU ratio | training GFLOP/image | achieved GFLOP/s | "
        f"of matmul ({matmul['median'] / 1e9:.1f} GFLOP/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        pipeline = f"{result['pipeline']['median']:.1f}"
        if result["cached"]:
            pipeline += f" cached ({result['pipeline_uncached']['median']:.1f} uncached)"
        lines.append(
            f"| {result['representation']} | {pipeline} | "
            f"{result['train_pipeline']['median']:.2f} | {result['train_memory']['median']:.2f} | "
            f"{result['ratio']['median']:.3f} ({_spread(result['ratio'], 3)}) | "
            f"{result['cpu_ratio']['median']:.3f} | "
            f"{result['flops_per_image']['training'] / 1e9:.2f} | "
            f"{result['achieved_flops']['median'] / 1e9:.1f} | "
            f"{100 * result['matmul_fraction']['median']:.0f}% |"
        )
    return "\n".join(lines)


def estimate_seconds(settings: BenchmarkSettings, matmul: dict) -> float:
    """Rough run time: every training step at the assumed share of the matmul rate."""
    from keras_invert import registry

    steps = 2 * (settings.rounds * settings.steps + settings.warmup_steps) + 1
    total = 0.0
    for name in settings.representations:
        decoder = registry.get(name).build_decoder(settings.image_size, width=settings.width)
        flops = training_flops_per_image(decoder)["training"] * settings.batch_size
        # + model building, tracing and the pipelines alone (SIFT's uncached one
        # and its cache build dominate that at full size).
        overhead = 40.0 if _uses_cache(name) else 20.0
        total += steps * flops / (_ASSUMED_EFFICIENCY * matmul["median"]) + overhead
    return total


def run_benchmark(
    settings: BenchmarkSettings, cache_dir: str | None = None, json_path: str | None = None
) -> dict:
    """Measures every representation, prints the tables, optionally writes JSON.

    Args:
        settings: what to measure.
        cache_dir: feature cache of the representations whose preset caches
            (SIFT); reused when a cache is there. None: a temporary folder,
            removed at the end.
        json_path: write the report here as JSON.

    Returns:
        The report: settings, machine, matmul rate and one result per representation.

    Example:
        >>> report = run_benchmark(BenchmarkSettings(representations=("hog",), width=0.05,
        ...                                          image_size=64, steps=1, rounds=2))
        >>> report["representations"][0]["ratio"]["median"]
    """
    temporary = cache_dir is None
    cache_dir = tempfile.mkdtemp(prefix="keras_invert_benchmark_") if temporary else cache_dir
    try:
        matmul = matmul_flops_per_second(settings.matmul_size)
        print(
            f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f}; float32 "
            f"{settings.matmul_size}^2 matmul: {matmul['median'] / 1e9:.1f} GFLOP/s "
            f"(best {matmul['best'] / 1e9:.1f})",
            flush=True,
        )
        print(
            f"Estimated run time: about {estimate_seconds(settings, matmul) / 60:.1f} min",
            flush=True,
        )
        start = time.perf_counter()
        results = []
        for name in settings.representations:
            started = time.perf_counter()
            result = benchmark_representation(name, settings, matmul, cache_dir)
            result["seconds"] = time.perf_counter() - started
            results.append(result)
            print(f"\n{format_table(result, settings, matmul)}\n", flush=True)
        print(format_summary(results, matmul))
        print(f"\nTotal {time.perf_counter() - start:.0f} s.", flush=True)
    finally:
        if temporary:
            shutil.rmtree(cache_dir, ignore_errors=True)
    report = {
        "settings": dataclasses.asdict(settings),
        "cpu_count": os.cpu_count(),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "matmul": matmul,
        "representations": results,
    }
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as file:
            json.dump(report, file, indent=2)
        print(f"Wrote {json_path}")
    return report


def _define_flags():
    # Defined only when run as a script, so that other scripts (benchmarks.bench_train)
    # and tests can import this module beside their own flags of the same names.
    defaults = BenchmarkSettings()
    flags.DEFINE_list("representation", list(defaults.representations), "Representations.")
    flags.DEFINE_integer("image_size", defaults.image_size, "Input image side (multiple of 64).")
    flags.DEFINE_float("width", defaults.width, "Decoder width (1.0 = the paper's network).")
    flags.DEFINE_integer("batch_size", defaults.batch_size, "Batch size.")
    flags.DEFINE_integer("steps", defaults.steps, "Timed training steps per feed and round.")
    flags.DEFINE_integer("rounds", defaults.rounds, "Rounds of pipeline-fed/in-memory segments.")
    flags.DEFINE_integer("warmup_steps", defaults.warmup_steps, "Untimed steps per feed first.")
    flags.DEFINE_integer(
        "pipeline_batches", defaults.pipeline_batches, "Batches timed for the pipeline alone."
    )
    flags.DEFINE_string("data", defaults.data, "Pipeline source.")
    flags.DEFINE_integer("matmul_size", defaults.matmul_size, "Side of the timed float32 matmul.")
    flags.DEFINE_string(
        "cache_dir",
        None,
        "Feature cache of the representations whose preset caches (SIFT), reused when "
        "present; default: a temporary folder, removed at the end.",
    )
    flags.DEFINE_string("json", None, "Also write every figure to this JSON file.")


def main(argv):
    del argv
    flag_values = flags.FLAGS
    try:
        settings = BenchmarkSettings(
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
        )
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    run_benchmark(settings, cache_dir=flag_values.cache_dir, json_path=flag_values.json)


if __name__ == "__main__":
    _define_flags()
    common.run(main)
