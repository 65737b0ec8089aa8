"""The paper's six findings, each judged on a reproduction's numbers with a plain verdict.

A `Finding` states the paper's claim, our numbers and a verdict: "holds",
"does not hold at this scale" (with the likely reason), or "not measured"
(the reproduction did not train what the finding needs, or an error it
compares is undefined: None when the test photos are all the same image).
Figures are written with `figure`, "-" where undefined. The rules are
deliberately simple and written out here, so a reader can check a verdict
by hand from `results.json`:

1. Decoder against optimisation: the HOG decoder's normalised error is below
   the optimisation's (and, for each network tap inverted both ways, the
   decoder's is below the optimisation's).
2. HOG < SIFT < LBP: the decoders' errors are in this order.
3. Depth: the error grows with depth (Spearman rank correlation of error and
   depth >= 0.7), while colour and rough layout survive at the top: the top
   tap's error on 8x8 block averages is below the mean image's.
4. Dark knowledge: the logits without their 5 largest values reconstruct
   better than the 5 largest values alone.
5. Binarised features still reconstruct: their error stays below the mean
   image's (of the test photos themselves).
6. Fixed encoder against autoencoder: the autoencoder, whose encoder learnt
   to keep the image, reconstructs better than the fixed encoder's decoder.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_invert.reproduction.plan import ReproduceConfig

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold at this scale"
NOT_MEASURED = "not measured"
DIVERGED = "diverged"
"""Key of an optimisation row that diverged (its value: the reason); such a row has no numbers."""
ORACLE = "mean image (of these photos)"
TRAINING_MEAN = "mean training image"
DEPTH_CORRELATION = 0.7
"""The Spearman correlation of error and depth above which the error 'grows with depth'."""
SEEN = "training_photos"
"""An evaluation's measures on photos the decoder trained on, beside the test photos'."""
SEEN_MEASURES = ("normalized_error", "luma_correlation", "ssim")
UNDEFINED = (
    "an error it compares is undefined (-): the normalised error is None when the test "
    "photos are all the same image, with no distance between them to normalise by"
)
"""Why a finding whose numbers hold None is not measured."""


def figure(value, digits: int = 3) -> str:
    """`value` with `digits` decimals; "-" for None, NaN or Inf (an undefined measure).

    Example:
        >>> figure(0.12345), figure(None), figure(2.5, 1)
        ('0.123', '-', '2.5')
    """
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _undefined(*values) -> bool:
    return any(value is None or not np.isfinite(value) for value in values)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One finding: the paper's claim, our numbers in words, the verdict and why."""

    number: int
    title: str
    claim: str
    ours: str
    verdict: str
    why: str = ""


def assess(config: ReproduceConfig, planned, numbers: dict) -> list[Finding]:
    """The six findings (module docstring) from `reproduce`'s numbers."""
    errors = {
        job.name: numbers["evaluations"][job.name]["decoder"]["normalized_error"] for job in planned
    }
    return [
        _decoder_against_optimisation(planned, numbers, errors),
        _shallow_order(errors),
        _depth(config, planned, numbers, errors),
        _dark_knowledge(numbers),
        _binarised(numbers),
        _autoencoder(numbers),
    ]


def oracle_error(evaluation: dict) -> float:
    """The error of the test photos' own mean image, from one evaluation."""
    return next(row["normalized_error"] for row in evaluation["means"] if row["method"] == ORACLE)


def _decoder_against_optimisation(planned, numbers, errors) -> Finding:
    claim = (
        "A decoder trained to invert a representation reconstructs better than "
        "optimisation-based inversion (Mahendran & Vedaldi), and in a fraction of the time."
    )
    pairs, diverged = [], []
    for job in planned:
        found = numbers["optimizations"].get(job.name)
        if found is None:
            continue
        row = found["optimization"]
        if DIVERGED in row:
            diverged.append(job.name)
            continue
        decoder = numbers["evaluations"][job.name]["decoder"]
        pairs.append((job.name, errors[job.name], row["normalized_error"],
                      decoder["seconds_per_image"], row["seconds_per_image"]))  # fmt: skip
    ours = "; ".join(
        [
            f"{name}: decoder {figure(mine)} vs optimisation {figure(theirs)} "
            f"({figure(seconds)} s vs {figure(slow, 1)} s per image)"
            for name, mine, theirs, seconds, slow in pairs
        ]
        + [f"{name}: the optimisation diverged (not compared)" for name in diverged]
    )
    if not pairs:
        why = "every optimisation diverged at the plan's settings" if diverged else ""
        return Finding(1, "Decoder against optimisation", claim, ours, NOT_MEASURED, why)
    if _undefined(*(error for _, mine, theirs, *_ in pairs for error in (mine, theirs))):
        return Finding(1, "Decoder against optimisation", claim, ours, NOT_MEASURED, UNDEFINED)
    worse = [name for name, mine, theirs, *_ in pairs if mine >= theirs]
    if not worse:
        return Finding(1, "Decoder against optimisation", claim, ours, HOLDS)
    seen = [
        f"{name} {figure(numbers['evaluations'][name][SEEN]['normalized_error'])}"
        for name in worse
        if SEEN in numbers["evaluations"][name]
    ]
    why = (
        f"the decoder is not better for {', '.join(worse)}: it learnt from few training "
        "photos, while optimisation matches each test photo's own features"
        + (f" (its error on its training photos: {', '.join(seen)})" if seen else "")
    )
    return Finding(1, "Decoder against optimisation", claim, ours, DOES_NOT_HOLD, why)


def _shallow_order(errors) -> Finding:
    claim = "Of the shallow features, HOG keeps the most of the image, then SIFT, then LBP."
    order = [name for name in ("hog", "sift", "lbp") if name in errors]
    if len(order) < 2:
        return Finding(2, "HOG < SIFT < LBP", claim, "", NOT_MEASURED)
    if _undefined(*(errors[name] for name in order)):
        ours = ", ".join(f"{name.upper()} {figure(errors[name])}" for name in order)
        return Finding(2, "HOG < SIFT < LBP", claim, ours, NOT_MEASURED, UNDEFINED)
    ranked = sorted(order, key=errors.get)
    ours = " < ".join(f"{name.upper()} {figure(errors[name])}" for name in ranked)
    if ranked == order:
        return Finding(2, "HOG < SIFT < LBP", claim, ours, HOLDS)
    why = (
        "the measured order differs; with a few training photos and decoders at a quarter "
        "width the differences between the features are within what training noise moves"
    )
    return Finding(2, "HOG < SIFT < LBP", claim, ours, DOES_NOT_HOLD, why)


def _depth(config, planned, numbers, errors) -> Finding:
    claim = (
        "The reconstruction error grows with depth, yet even from the top layer the colours "
        "and the rough layout of the image come back."
    )
    taps = [job for job in planned if job.group == "tap"]
    if len(taps) < 3:
        return Finding(3, "Error over depth", claim, "", NOT_MEASURED)
    curve = [errors[job.name] for job in taps]
    top = numbers["evaluations"][taps[-1].name]
    coarse, coarse_oracle = top["coarse_error"]["decoder"], top["coarse_error"][ORACLE]
    undefined = _undefined(*curve, coarse, coarse_oracle)
    correlation = None if undefined else _spearman(np.arange(len(curve)), np.asarray(curve))
    ours = (
        f"error from {taps[0].representation.split('/')[-1]} to "
        f"{taps[-1].representation.split('/')[-1]}: "
        + ", ".join(figure(value) for value in curve)
        + f" (Spearman correlation with depth {figure(correlation, 2)}); at the top "
        f"({taps[-1].representation.split('/')[-1]}) the error of 8x8 block averages is "
        f"{figure(coarse)} against the mean image's {figure(coarse_oracle)}"
    )
    if undefined:
        return Finding(3, "Error over depth", claim, ours, NOT_MEASURED, UNDEFINED)
    grows, survives = correlation >= DEPTH_CORRELATION, coarse < coarse_oracle
    if grows and survives:
        return Finding(3, "Error over depth", claim, ours, HOLDS)
    reasons = []
    if not grows:
        steps = ", ".join(str(job.changes["steps"]) for job in taps)
        reasons.append(
            "the error does not grow steadily with depth at this training budget (steps per "
            f"tap: {steps}; the early taps' decoders, 224 px maps all the way up, cost the most "
            "per step and got the fewest)"
        )
    if not survives:
        reason = "the top layer's colours and layout are no better than the mean image's"
        training_mean = min(
            (row["normalized_error"] for row in top["means"]
             if row["method"].startswith(TRAINING_MEAN)
             and not _undefined(row["normalized_error"])),
            default=None,
        )  # fmt: skip
        if training_mean is not None and curve[-1] > training_mean:
            # Worse than a constant: the decoder memorised its photos rather than generalised.
            seen = top.get(SEEN, {}).get("normalized_error")
            reason += (
                f"; its decoder ({figure(curve[-1])}) is worse than even the mean training "
                f"image ({figure(training_mean)})"
                + (f" but scores {figure(seen)} on its training photos" if seen is not None else "")
                + ": trained on few photos, it paints their textures into new ones, and more "
                "training photos are the lever"
            )
        reasons.append(reason)
    return Finding(3, "Error over depth", claim, ours, DOES_NOT_HOLD, "; ".join(reasons))


def _dark_knowledge(numbers) -> Finding:
    claim = (
        "The classifier's output without its 5 largest activations still reconstructs the "
        "image better than those 5 alone: the small values carry the image ('dark knowledge')."
    )
    found = numbers["experiments"].get("dark_knowledge")
    if found is None:
        return Finding(4, "Dark knowledge", claim, "", NOT_MEASURED)
    values = {name: value["normalized_error"] for name, value in found["errors"].items()}
    k = found["k"]
    top, rest = values[f"top {k} only"], values[f"all but top {k}"]
    ours = (
        f"all {figure(values['all'])}; top {k} only {figure(top)}; all but top {k} {figure(rest)}"
    )
    if _undefined(top, rest):
        return Finding(4, "Dark knowledge", claim, ours, NOT_MEASURED, UNDEFINED)
    if rest < top:
        return Finding(4, "Dark knowledge", claim, ours, HOLDS)
    why = "the top activations alone reconstruct at least as well at this scale"
    return Finding(4, "Dark knowledge", claim, ours, DOES_NOT_HOLD, why)


def _binarised(numbers) -> Finding:
    claim = (
        "Binarised features (which units are active, not how much) still reconstruct the "
        "image, and so do features with half their values dropped."
    )
    found = numbers["experiments"].get("binarised_and_dropped")
    if found is None:
        return Finding(5, "Binarised features", claim, "", NOT_MEASURED)
    values = {name: value["normalized_error"] for name, value in found["errors"].items()}
    oracle = found.get("oracle_error")
    ours = (
        f"features {figure(values['features'])}; binarised {figure(values['binarised'])}; "
        f"dropout {found['dropout_rate']:g} {figure(values['dropout'])}; "
        f"mean image {figure(oracle)}"
    )
    if _undefined(values["binarised"], oracle):
        return Finding(5, "Binarised features", claim, ours, NOT_MEASURED, UNDEFINED)
    if values["binarised"] < oracle:
        return Finding(5, "Binarised features", claim, ours, HOLDS)
    why = "the binarised features' reconstructions are no better than the mean image"
    return Finding(5, "Binarised features", claim, ours, DOES_NOT_HOLD, why)


def _autoencoder(numbers) -> Finding:
    claim = (
        "An encoder trained jointly with the decoder (an autoencoder) keeps far more of the "
        "image than the fixed classification network at the same layer."
    )
    found = numbers["experiments"].get("fixed_vs_autoencoder")
    if found is None:
        return Finding(6, "Fixed encoder against autoencoder", claim, "", NOT_MEASURED)
    fixed = found["models"]["fixed"]["normalized_error"]
    autoencoder = found["models"]["autoencoder"]["normalized_error"]
    ours = f"fixed {figure(fixed)}; autoencoder {figure(autoencoder)}"
    if _undefined(fixed, autoencoder):
        return Finding(6, "Fixed encoder against autoencoder", claim, ours, NOT_MEASURED, UNDEFINED)
    if autoencoder < fixed:
        return Finding(6, "Fixed encoder against autoencoder", claim, ours, HOLDS)
    why = "the autoencoder trained too few steps here to overtake the fixed encoder"
    return Finding(6, "Fixed encoder against autoencoder", claim, ours, DOES_NOT_HOLD, why)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected in measured errors)."""
    rank_x, rank_y = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if rank_x.std() == 0 or rank_y.std() == 0:
        return 0.0
    return float(np.corrcoef(rank_x, rank_y)[0, 1])
