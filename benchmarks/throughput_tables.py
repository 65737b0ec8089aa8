"""The Markdown tables of a throughput report: one per representation, and a summary.

Each reads a result dict as `benchmarks.throughput.benchmark_representation`
returns it (medians, ranges over rounds, CPU time per image, FLOPs) and the
`BenchmarkSettings` it was measured with.

Example:
    >>> from benchmarks import throughput_tables
    >>> print(throughput_tables.format_summary(results, matmul, settings))
"""

from __future__ import annotations

# The accelerator whose training rate `throughput.ACCELERATOR_RATES` holds.
ACCELERATOR = "one H200, full-width decoder at 256 px, bf16, batch 64"


def _accelerator(settings) -> str:
    if settings.accelerator_rate:
        return f"an accelerator training {settings.accelerator_rate:g} images/s"
    return ACCELERATOR


def _spread(summary: dict, digits: int = 1, scale: float = 1.0) -> str:
    return f"{summary['min'] * scale:.{digits}f}-{summary['max'] * scale:.{digits}f}"


def format_table(result: dict, settings, matmul: dict) -> str:
    """The Markdown table of one representation."""
    source = f"{settings.data}, " + ("on-disk cache" if result["cached"] else "streaming")
    rows = [(f"pipeline alone ({source}, features included)", "pipeline", 1)]
    if result["cached"]:
        rows.append(("pipeline alone, uncached (streaming)", "pipeline_uncached", 1))
    rows += [
        ("training, fed by the pipeline", "train_pipeline", 2),
        ("training, one batch in memory", "train_memory", 2),
    ]
    if result["features_in_model"]:
        rows += [
            ("pipeline alone, crops (features in the model)", "crops_pipeline", 1),
            ("training, features in the model, fed by the crops pipeline", "in_model_pipeline", 2),
            ("training, features in the model, one batch of crops in memory",
             "in_model_memory", 2),
        ]  # fmt: skip
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
        f"| CPU cores per accelerator ({_accelerator(settings)}: "
        f"{result['accelerator_rate']:,.0f} images/s) | {_cores(result)} | | |",
    ]
    return "\n".join(lines)


def _cores(result: dict) -> str:
    cores = f"{result['cores_per_accelerator']:.1f}"
    if result["cached"]:
        cores += f" cached ({result['cores_per_accelerator_uncached']:.1f} uncached)"
    if result["features_in_model"]:
        cores += f" ({result['cores_per_accelerator_in_model']:.1f} features in the model)"
    return cores


def _in_model(result: dict) -> str:
    """The summary's cell of training with the features in the model, pipeline-fed."""
    if not result["features_in_model"]:
        return "-"
    return f"{result['in_model_pipeline']['median']:.2f}"


def format_summary(results: list, matmul: dict, settings) -> str:
    """One row per representation (medians; the ratio's range over rounds)."""
    lines = [
        "| representation | pipeline images/s | training images/s, pipeline-fed | in memory | "
        "features in the model, pipeline-fed | ratio (range) | CPU ratio | "
        "training GFLOP/image | achieved GFLOP/s | "
        f"of matmul ({matmul['median'] / 1e9:.1f} GFLOP/s) | "
        f"CPU cores per accelerator ({_accelerator(settings)}) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        pipeline = f"{result['pipeline']['median']:.1f}"
        if result["cached"]:
            pipeline += f" cached ({result['pipeline_uncached']['median']:.1f} uncached)"
        lines.append(
            f"| {result['representation']} | {pipeline} | "
            f"{result['train_pipeline']['median']:.2f} | {result['train_memory']['median']:.2f} | "
            f"{_in_model(result)} | "
            f"{result['ratio']['median']:.3f} ({_spread(result['ratio'], 3)}) | "
            f"{result['cpu_ratio']['median']:.3f} | "
            f"{result['flops_per_image']['training'] / 1e9:.2f} | "
            f"{result['achieved_flops']['median'] / 1e9:.1f} | "
            f"{100 * result['matmul_fraction']['median']:.0f}% | {_cores(result)} |"
        )
    return "\n".join(lines)
