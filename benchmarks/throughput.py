"""Input pipeline and decoder training throughput, against the machine's matmul rate.

`run_benchmark` (`python -m launch.benchmark` runs it) prints, for each
representation, a Markdown table with:

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
- the achieved FLOP/s of the training step against a float32 matmul;
- for HOG and LBP (feature ops in TensorFlow, not networks;
  `features_in_model`): the same training figures with the features
  computed inside the training model (`TrainConfig.features_in_model`), fed
  by a pipeline that yields crops, and that pipeline alone, so a user can
  choose where the features are computed. Same width, image size and batch.
  On a CPU the two places compete for the same cores; on an accelerator the
  in-model features move the feature op's CPU time onto the device;
- CPU cores per accelerator: the cores of this input pipeline one
  accelerator needs to keep up, the pipeline's CPU seconds per image (this
  process, all threads; images/s per core is its inverse) times the
  accelerator's training images/s. That rate is `accelerator_rate` when given,
  else the one measured on one H200 for the representation's full-width
  decoder at 256 px (`ACCELERATOR_RATES`); the training step measured here
  runs on this machine's CPU and would never wait for its own pipeline.

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
`rates.training_flops_per_image`); the matmul rate is the median of timed
`size x size` float32 products. A final table has one row per
representation (the tables: `benchmarks.throughput_tables`); `json_path`
writes every figure, the per-round values and the load average.

Example:
    >>> from benchmarks import throughput
    >>> settings = throughput.BenchmarkSettings(representations=("hog",), width=0.25)
    >>> report = throughput.run_benchmark(settings)
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from benchmarks.rates import (  # noqa: E402
    matmul_flops_per_second,
    pipeline_rates,
    training_flops_per_image,
    training_rates,
)
from benchmarks.throughput_tables import format_summary, format_table  # noqa: E402

# Training images/s of the full-width decoders at 256 px on one NVIDIA H200,
# Keras on JAX in mixed bfloat16, batch 64, input free (BUILD.md, "Figures
# measured on an accelerator": `python -m benchmarks.bench_decoder_step`).
ACCELERATOR_RATES = {"hog": 2250.0, "lbp": 2187.0, "sift": 2003.0}

# Share of the matmul rate a training step is assumed to reach, for the
# up-front run-time estimate only (the full-width decoders reach 30-65%).
_ASSUMED_EFFICIENCY = 0.4


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
        accelerator_rate: training images/s of one accelerator for the cores
            per accelerator; 0: each representation's `ACCELERATOR_RATES`
            figure (measured for full-width decoders at 256 px only).
        features_in_model: also time HOG and LBP with their features computed
            inside the training model (the pipeline yields crops).

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
    accelerator_rate: float = 0.0
    features_in_model: bool = True

    def __post_init__(self):
        from keras_invert import registry

        positive = ("image_size", "batch_size", "steps", "rounds", "warmup_steps",
                    "pipeline_batches", "matmul_size")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected a positive integer {name}. Received: {name}={value!r}")
        rate = self.accelerator_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 0:
            raise ValueError(
                "Expected accelerator_rate >= 0 (images/s; 0: the measured H200 rates). "
                f"Received: accelerator_rate={rate!r}"
            )
        if not self.representations:
            raise ValueError("Expected at least one representation. Received: representations=()")
        for name in self.representations:
            if registry.get(name).encode_in_model:
                raise ValueError(
                    "Expected a feature representation (hog, lbp, sift): network encoders run "
                    f"inside the training model. Received: representation={name!r}"
                )
            if not rate and name not in ACCELERATOR_RATES:
                raise ValueError(
                    f"Expected accelerator_rate > 0 for {name!r}: no accelerator rate was "
                    f"measured for it (only {sorted(ACCELERATOR_RATES)}). "
                    f"Received: accelerator_rate={rate!r}"
                )
            # The decoder checks the image size and width: a mistake is refused
            # here, not after the matmul timing.
            registry.get(name).build_decoder(self.image_size, width=self.width)

    def accelerator_images_per_second(self, name: str) -> float:
        """The accelerator's training images/s the cores per accelerator are for."""
        return float(self.accelerator_rate or ACCELERATOR_RATES[name])


def _uses_cache(name: str) -> bool:
    """True when the representation's preset trains from the on-disk feature cache."""
    from keras_invert import presets

    return name in presets.preset_names() and presets.preset(name).cache_dir is not None


def _times_features_in_model(name: str, settings: BenchmarkSettings) -> bool:
    """True when `name`'s features can move into the model and the settings ask for it."""
    from keras_invert import feature_placement, registry

    return settings.features_in_model and feature_placement.features_can_move_into_model(
        registry.get(name)
    )


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

    def dataset(cache, features_in_model=False):
        return pipelines.build_dataset(
            settings.data,
            "train",
            representation=name,
            image_size=settings.image_size,
            batch_size=batch_size,
            training=True,
            seed=0,
            cache_dir=cache,
            features_in_model=features_in_model,
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

    def timed(model, pipeline, prefix):
        figures = training_rates(
            model,
            pipeline,
            pipeline.take(1).cache().repeat(),  # the first batch, held in memory
            batch_size=batch_size,
            steps=settings.steps,
            rounds=settings.rounds,
            warmup_steps=settings.warmup_steps,
        )
        for feed in ("pipeline", "memory"):
            result[f"{prefix}_{feed}"] = _summary(figures[feed]["rates"])
            result[f"{prefix}_{feed}_cpu"] = _summary(figures[feed]["cpu"])
        return figures

    figures = timed(model, pipeline, "train")
    fed, memory = figures["pipeline"], figures["memory"]
    pairs = list(zip(fed["rates"], memory["rates"], strict=True))
    result["ratio"] = _summary([f / m for f, m in pairs])
    # CPU seconds per image in memory / pipeline-fed: what the ratio is on a
    # machine whose cores training keeps busy, even when others load it.
    result["cpu_ratio"] = _summary([m / f for f, m in zip(fed["cpu"], memory["cpu"], strict=True)])
    achieved = [flops["training"] * rate for rate in memory["rates"]]
    result["achieved_flops"] = _summary(achieved)
    result["matmul_fraction"] = _summary([a / matmul["median"] for a in achieved])
    accelerator = settings.accelerator_images_per_second(name)
    result["accelerator_rate"] = accelerator
    result["cores_per_accelerator"] = result["pipeline_cpu"]["median"] * accelerator
    if cached:
        uncached = result["pipeline_uncached_cpu"]["median"] * accelerator
        result["cores_per_accelerator_uncached"] = uncached
    result["features_in_model"] = _times_features_in_model(name, settings)
    if result["features_in_model"]:
        crops = dataset(None, features_in_model=True)
        rates, cpu = pipeline_rates(crops, batch_size, settings.pipeline_batches)
        result["crops_pipeline"], result["crops_pipeline_cpu"] = _summary(rates), _summary(cpu)
        in_model = building.build_model(config_lib.replace(run, features_in_model=True))
        timed(in_model, crops, "in_model")
        # An upper bound: the accelerator's rate without the op, which then runs there too.
        result["cores_per_accelerator_in_model"] = (
            result["crops_pipeline_cpu"]["median"] * accelerator
        )
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


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
        # Training once more with the features in the model.
        runs = 2 if _times_features_in_model(name, settings) else 1
        total += runs * (steps * flops / (_ASSUMED_EFFICIENCY * matmul["median"]) + overhead)
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
    from keras_invert import files

    # Before the minutes of measuring.
    if json_path:
        files.check_file(json_path, "json_path")
    if cache_dir is not None:
        files.check_folder(cache_dir, "cache_dir")
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
        print(format_summary(results, matmul, settings))
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
        files.write_json(json_path, report)
        print(f"Wrote {json_path}")
    return report
