"""Writes a reproduction's `results.md`: the paper's tables, the six findings, the figures.

The tables take the paper's form: the shallow features side by side
(decoder, optimisation, mean images), then the error per layer of the
network, each with the structure measures (luma correlation, SSIM) beside
the normalised error. Figures are linked relative to `results.md`, so the
folder can move (e.g. into the repository's docs).
"""

from __future__ import annotations

import os
import platform

from keras_invert import files
from keras_invert.reproduction.findings import DIVERGED, ORACLE, SEEN, Finding, figure
from keras_invert.reproduction.plan import ReproduceConfig

_FIGURE_TITLES = {
    "layers": "Reconstructions from every representation (test photos, never trained on)",
    "depth": "Error over depth: where the image is lost",
    "dark_knowledge": "Dark knowledge: the logits, their top 5 only, all but their top 5",
    "binarised_and_dropped": "Binarised and dropped-out features",
    "fixed_vs_autoencoder": "Fixed encoder against autoencoder",
}


def write(out_dir, config: ReproduceConfig, planned, numbers, found: list[Finding], figures):
    """Writes `results.md` into `out_dir` (atomically) and returns its path."""
    lines = [
        "# Inverting visual representations: reproduction",
        "",
        f"Photos: `{config.data}`, trained on split `{config.train_split}`, measured on the "
        f"{len(numbers['test_photos'])} photos of split `{config.test_split}` "
        f"({', '.join(numbers['test_photos'])}), which no decoder saw in training. "
        f"Scale `{config.scale}` (step scale {config.step_scale:g}); "
        f"{os.cpu_count()} CPU cores ({platform.machine()}); training took "
        f"{_minutes(sum(numbers['training_minutes'].values()))} in all, the last invocation "
        f"{_minutes(numbers['minutes'])} (a rerun reuses finished parts).",
        "",
        "Normalised error: mean ||x - x_hat|| over the photos, divided by the mean distance "
        "between two test photos (lower is better; a constant mean image scores about 0.7). "
        "Luma correlation and SSIM measure structure (higher is better). The mean image of "
        "the test photos themselves has seen them: a deliberately strong constant baseline.",
        "",
        *_seen_note(planned, numbers),
        "## Findings",
        "",
    ]
    for finding in found:
        lines += [
            f"{finding.number}. **{finding.title}: {finding.verdict}.** {finding.claim}",
            f"   Ours: {finding.ours or '-'}." + (f" Why: {finding.why}." if finding.why else ""),
        ]
    lines += ["", "## Shallow features", ""]
    lines += _shallow_table(planned, numbers)
    lines += ["", "## Error per layer", ""]
    lines += _layer_table(planned, numbers)
    lines += ["", "## Figures", ""]
    for path in figures:
        stem = os.path.splitext(os.path.basename(path))[0]
        relative = os.path.relpath(path, out_dir)
        lines += [f"### {_FIGURE_TITLES.get(stem, stem)}", "", f"![{stem}]({relative})", ""]
    lines += _experiment_notes(numbers)
    path = os.path.join(out_dir, "results.md")
    with files.atomic_path(path) as temporary:
        with open(temporary, "w") as file:
            file.write("\n".join(lines).rstrip() + "\n")
    return path


def _minutes(value: float) -> str:
    if value < 0.5:
        return "under a minute"
    return "1 minute" if round(value) == 1 else f"{value:.0f} minutes"


def _measures(row) -> list[str]:
    return [figure(row.get("normalized_error")), figure(row.get("luma_correlation")),
            figure(row.get("ssim"))]  # fmt: skip


def _shallow_table(planned, numbers) -> list[str]:
    shallow = [job for job in planned if job.group == "shallow"]
    if not shallow:
        return ["Not trained in this reproduction."]
    lines = [
        "| method | "
        + " | ".join(f"{job.name.upper()} error / luma / SSIM" for job in shallow)
        + " |",
        "|---|" + "---|" * len(shallow),
    ]
    decoder = [numbers["evaluations"][job.name]["decoder"] for job in shallow]
    lines.append("| decoder | " + " | ".join(" / ".join(_measures(row)) for row in decoder) + " |")
    # These features do not hold the mean colour: the error that is not it.
    given = [figure(row.get("error_given_mean_colour")) for row in decoder]
    if any(cell != "-" for cell in given):
        lines.append(
            "| decoder, error given each photo's mean colour | " + " | ".join(given) + " |"
        )
    seen = [numbers["evaluations"][job.name].get(SEEN) for job in shallow]
    if any(seen):
        cells = [" / ".join(_measures(row)) if row else "-" for row in seen]
        lines.append("| decoder, on its training photos | " + " | ".join(cells) + " |")
    optimisation = []
    for job in shallow:
        found = numbers["optimizations"].get(job.name)
        row = found["optimization"] if found else {}
        if DIVERGED in row:
            cells = [DIVERGED]
        else:
            cells = _measures(row) if row.get("normalized_error") is not None else ["no gradient"]
        optimisation.append(" / ".join(cells))
    lines.append("| optimisation (Mahendran & Vedaldi) | " + " | ".join(optimisation) + " |")
    for method in _mean_methods(numbers["evaluations"][shallow[0].name]):
        cells = []
        for job in shallow:
            row = _mean_row(numbers["evaluations"][job.name], method)
            cells.append(" / ".join(_measures(row)) if row else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _layer_table(planned, numbers) -> list[str]:
    layers = [job for job in planned if job.group in ("tap", "alexnet", "autoencoder")]
    if not layers:
        return ["Not trained in this reproduction."]
    lines = [
        "| layer | decoder error | luma | SSIM | error on training photos "
        "| 8x8 colour/layout error | optimisation error | mean image error (8x8) | steps "
        "| minutes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for job in layers:
        evaluation = numbers["evaluations"][job.name]
        row = evaluation["decoder"]
        found = numbers["optimizations"].get(job.name)
        optimisation = figure(found["optimization"].get("normalized_error") if found else None)
        if found and DIVERGED in found["optimization"]:
            optimisation = DIVERGED
        oracle = _mean_row(evaluation, ORACLE) or {}
        label = job.representation + (" (autoencoder)" if job.group == "autoencoder" else "")
        seen = evaluation.get(SEEN) or {}
        lines.append(
            f"| {label} | {' | '.join(_measures(row))} | {figure(seen.get('normalized_error'))} "
            f"| {figure(evaluation['coarse_error']['decoder'])} | {optimisation} "
            f"| {figure(oracle.get('normalized_error'))} "
            f"({figure(evaluation['coarse_error'][ORACLE])}) | {job.changes['steps']} "
            f"| {numbers['training_minutes'][job.name]:.1f} |"
        )
    return lines


def _seen_note(planned, numbers) -> list[str]:
    """What the measures on training photos say, where they were taken."""
    seen = [numbers["evaluations"][job.name].get(SEEN) for job in planned]
    seen = [row for row in seen if row]
    if not seen:
        return []
    return [
        f"The decoders were also measured on {seen[0]['photos']} of their training photos "
        "(centre crops; training saw other crops of them), normalised among themselves. "
        "Where that error is close to the test photos', a decoder is held back by its "
        "training (steps, width) and would gain from more of it; where it is far below, "
        "the decoder learnt its training photos rather than the representation, and more "
        "photos are the lever.",
        "",
    ]


def _mean_methods(evaluation) -> list[str]:
    return [row["method"] for row in evaluation["means"]]


def _mean_row(evaluation, method):
    return next((row for row in evaluation["means"] if row["method"] == method), None)


def _experiment_notes(numbers) -> list[str]:
    notes = []
    autoencoder = numbers["experiments"].get("fixed_vs_autoencoder", {}).get("features")
    if autoencoder and "relative_distance" in autoencoder:
        notes.append(
            "The autoencoder's encoder moved away from the fixed network's: its features of "
            f"the test photos differ by {figure(autoencoder['relative_distance'], 2)} of their "
            f"norm (cosine similarity {figure(autoencoder.get('cosine_similarity'), 2)})."
        )
    perturbed = numbers["experiments"].get("binarised_and_dropped")
    if perturbed:
        notes.append(
            f"Binarising keeps which of the features are non-zero "
            f"({perturbed['fraction_nonzero']:.0%} of them here) and their norm; dropout sets "
            f"{perturbed['fraction_dropped']:.0%} of them to zero."
        )
    return ["## Notes", "", *notes] if notes else []
