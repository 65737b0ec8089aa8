"""The reproduction: its plan, the verdict rules, and one tiny end-to-end run that resumes."""

import dataclasses
import json
import os

import numpy as np
import pytest

from keras_invert import reproduction
from keras_invert.reproduction import findings
from keras_invert.reproduction.plan import Job, ReproduceConfig, jobs

HOLDS, FAILS, MISSING = findings.HOLDS, findings.DOES_NOT_HOLD, findings.NOT_MEASURED


def test_the_cpu_plan_trains_every_feature_and_tap_in_depth_order():
    planned = jobs(ReproduceConfig(out_dir="out"))
    names = [job.name for job in planned]
    assert names[:3] == ["hog", "sift", "lbp"]
    taps = [job.representation.split("/")[1] for job in planned if job.group == "tap"]
    assert taps == ["stem", *(f"stage{i}" for i in range(1, 8)), "head", "logits"]
    assert names[-1] == "efficientnet-lite0-stage4-autoencoder"
    autoencoder = planned[-1].changes
    assert autoencoder["autoencoder"] and not autoencoder["cache_features"]
    assert all(job.changes["max_minutes"] is None for job in planned)
    assert all(job.changes["cache_features"] for job in planned if job.group == "tap")


def test_each_tap_trains_at_its_rate_and_the_autoencoder_at_its_taps():
    planned = jobs(ReproduceConfig(out_dir="o"))
    rates = {job.name: job.changes["learning_rate"] for job in planned if job.group != "shallow"}
    assert rates["efficientnet-lite0-stem"] == rates["efficientnet-lite0-stage3"] == 2.4e-3
    assert rates["efficientnet-lite0-stage4"] == rates["efficientnet-lite0-logits"] == 1.2e-3
    assert rates["efficientnet-lite0-stage4-autoencoder"] == 1.2e-3
    full = jobs(ReproduceConfig(out_dir="o", scale="full", alexnet_weights="/w.h5"))
    assert {job.changes["learning_rate"] for job in full if job.group != "shallow"} == {1e-3}


def test_the_full_plan_caches_nothing_and_the_cpu_plan_caches_every_job():
    from keras_invert import config as config_lib
    from keras_invert import presets

    def run_config(job):
        base = presets.preset(job.preset) if job.preset else config_lib.TrainConfig()
        return config_lib.replace(base, **job.changes)

    full = jobs(ReproduceConfig(out_dir="o", scale="full", alexnet_weights="/w.h5"))
    assert {job.group for job in full} == {"shallow", "tap", "autoencoder", "alexnet"}
    for run in map(run_config, full):  # The "sift" preset's cache included.
        assert run.cache_dir is None and not run.cache_features, run.representation
    for run in map(run_config, jobs(ReproduceConfig(out_dir="o", alexnet_weights="/w.h5"))):
        assert run.cache_dir == "cache", run.representation


def test_every_job_trains_under_the_reproductions_strategy():
    planned = jobs(ReproduceConfig(out_dir="o", strategy="mirrored", alexnet_weights="/w.h5"))
    assert {job.changes["strategy"] for job in planned} == {"mirrored"}
    with pytest.raises(ValueError, match=r"strategy in \('default', 'mirrored'\)"):
        ReproduceConfig(out_dir="o", strategy="multi_worker")


def test_alexnet_layers_join_with_weights_and_steps_scale():
    planned = jobs(ReproduceConfig(out_dir="o", alexnet_weights="/w.h5", step_scale=0.5))
    alexnet = [job for job in planned if job.group == "alexnet"]
    assert [job.representation for job in alexnet] == [
        f"alexnet/{layer}" for layer in ("conv1", "conv2", "conv3", "conv4", "conv5")
    ] + ["alexnet/fc6", "alexnet/fc7", "alexnet/fc8"]
    assert {job.changes["encoder_weights"] for job in alexnet} == {"/w.h5"}
    assert planned[0].changes["steps"] == 2500


def test_the_shallow_image_size_sets_the_shallow_jobs_crops_only(tmp_path):
    from keras_invert import runs

    def sizes(config):
        planned = jobs(config)
        return {
            job.group: runs.resolve_config(str(tmp_path), dict(job.changes), job.preset).image_size
            for job in planned
            if job.group in ("shallow", "tap")
        }

    assert sizes(ReproduceConfig(out_dir="o", taps=("stage2",))) == {"shallow": 128, "tap": None}
    larger = ReproduceConfig(out_dir="o", taps=("stage2",), shallow_image_size=256)
    assert sizes(larger) == {"shallow": 256, "tap": None}
    assert (
        sizes(dataclasses.replace(larger, scale="full", shallow_image_size=None))["shallow"] == 256
    )
    for bad in (0, 12.5, "256"):
        with pytest.raises(ValueError, match="shallow_image_size a positive integer"):
            ReproduceConfig(out_dir="o", shallow_image_size=bad)
    # Refused with the config, before any job: the shallow decoders' own rule.
    with pytest.raises(ValueError, match=r"multiple of 64. Received: shallow_image_size=96$"):
        ReproduceConfig(out_dir="o", shallow_image_size=96)


def test_default_experiment_taps_drop_out_when_not_trained_and_bad_choices_are_refused():
    config = ReproduceConfig(out_dir="o", taps=("stage6", "logits"))
    assert config.autoencoder_tap is None and config.binarise_tap is None
    assert config.dark_knowledge_tap == "logits" and config.optimization_taps == ("logits",)
    with pytest.raises(ValueError, match="autoencoder_tap"):
        ReproduceConfig(out_dir="o", taps=("stage6",), autoencoder_tap="stage2")
    with pytest.raises(ValueError, match="scale"):
        ReproduceConfig(out_dir="o", scale="tpu")
    with pytest.raises(ValueError, match="shallow"):
        ReproduceConfig(out_dir="o", shallow=("hog", "surf"))


def _numbers(errors, *, optimisation=None, coarse=(0.3, 0.5), dark=(0.6, 0.5), binarised=0.5,
             autoencoder=(0.4, 0.2)):  # fmt: skip
    """`reproduce`'s numbers for jobs with the given decoder errors (name -> error)."""
    oracle = {"method": findings.ORACLE, "normalized_error": 0.64}
    evaluations = {
        name: {
            "decoder": {"normalized_error": error, "seconds_per_image": 0.01},
            "means": [oracle],
            "coarse_error": {"decoder": coarse[0], findings.ORACLE: coarse[1]},
        }
        for name, error in errors.items()
    }
    optimizations = {
        name: {"optimization": {"normalized_error": error, "seconds_per_image": 5.0}}
        for name, error in (optimisation or {}).items()
    }
    experiments = {
        "dark_knowledge": {"k": 5, "errors": {
            "all": {"normalized_error": 0.5}, "top 5 only": {"normalized_error": dark[0]},
            "all but top 5": {"normalized_error": dark[1]},
        }},
        "binarised_and_dropped": {"dropout_rate": 0.5, "oracle_error": 0.64, "errors": {
            "features": {"normalized_error": 0.4}, "binarised": {"normalized_error": binarised},
            "dropout": {"normalized_error": 0.5},
        }},
        "fixed_vs_autoencoder": {"models": {
            "fixed": {"normalized_error": autoencoder[0]},
            "autoencoder": {"normalized_error": autoencoder[1]},
        }},
    }  # fmt: skip
    return {"evaluations": evaluations, "optimizations": optimizations, "experiments": experiments}


def _plan(names):
    shallow = [Job(n, "shallow", None, {"representation": n, "steps": 1}) for n in names[:3]]
    taps = [
        Job(n, "tap", None, {"representation": f"efficientnet-lite0/{n}", "steps": 1})
        for n in names[3:]
    ]
    return shallow + taps


def _verdicts(errors, **options):
    config = ReproduceConfig(out_dir="o")
    return [
        f.verdict for f in findings.assess(config, _plan(list(errors)), _numbers(errors, **options))
    ]


def test_every_finding_holds_on_numbers_like_the_papers():
    errors = {"hog": 0.3, "sift": 0.4, "lbp": 0.5, "stage2": 0.1, "stage5": 0.3, "logits": 0.6}
    verdicts = _verdicts(errors, optimisation={"hog": 0.6, "stage5": 0.5})
    assert verdicts == [HOLDS] * 6


def test_each_finding_fails_on_numbers_against_it():
    errors = {"hog": 0.5, "sift": 0.4, "lbp": 0.3, "stage2": 0.6, "stage5": 0.3, "logits": 0.1}
    verdicts = _verdicts(
        errors, optimisation={"hog": 0.4}, coarse=(0.7, 0.5), dark=(0.4, 0.5), binarised=0.7,
        autoencoder=(0.2, 0.4),
    )  # fmt: skip
    assert verdicts == [FAILS] * 6


def test_a_top_decoder_worse_than_the_mean_training_image_is_called_memorised():
    errors = {"hog": 0.3, "sift": 0.4, "lbp": 0.5, "stage2": 0.1, "stage5": 0.3, "logits": 0.8}
    numbers = _numbers(errors, coarse=(0.7, 0.5))
    plan = _plan(list(errors))
    top = numbers["evaluations"]["logits"]["means"]
    top.append({"method": findings.TRAINING_MEAN, "normalized_error": 0.7})
    depth = findings.assess(ReproduceConfig(out_dir="o"), plan, numbers)[2]
    assert depth.verdict == FAILS
    assert "(0.800) is worse than even the mean training image (0.700):" in depth.why
    numbers["evaluations"]["logits"][findings.SEEN] = {"normalized_error": 0.35}
    depth = findings.assess(ReproduceConfig(out_dir="o"), plan, numbers)[2]
    assert "(0.700) but scores 0.350 on its training photos: trained on few" in depth.why
    top[-1]["normalized_error"] = 0.9
    depth = findings.assess(ReproduceConfig(out_dir="o"), plan, numbers)[2]
    assert depth.verdict == FAILS and "mean training image" not in depth.why


def test_a_decoder_behind_optimisation_cites_its_error_on_its_training_photos():
    errors = {"hog": 0.7, "sift": 0.8, "lbp": 0.9, "stage2": 0.1, "stage5": 0.3, "logits": 0.6}
    numbers = _numbers(errors, optimisation={"hog": 0.6})
    plan = _plan(list(errors))
    first = findings.assess(ReproduceConfig(out_dir="o"), plan, numbers)[0]
    assert first.verdict == FAILS and first.why.endswith("own features")
    numbers["evaluations"]["hog"][findings.SEEN] = {"normalized_error": 0.3}
    first = findings.assess(ReproduceConfig(out_dir="o"), plan, numbers)[0]
    assert first.why.endswith("own features (its error on its training photos: hog 0.300)")


def test_a_diverging_optimisation_is_recorded_and_reported_not_raised(monkeypatch):
    import types

    from keras_invert import inversion
    from keras_invert.reproduction import measurements, report

    rate = dict(inversion.paper_settings("hog"), learning_rate=1e30)
    monkeypatch.setattr(inversion, "paper_settings", lambda name: dict(rate))
    photos = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    data = types.SimpleNamespace(crops=lambda size: photos[:, :size, :size])
    model = types.SimpleNamespace(image_size=32, encoder_options={})
    job = _plan(["hog"])[0]
    config = ReproduceConfig(out_dir="o", optimization_steps=4)
    stored = measurements.evaluate_optimization(config, job, model, data)
    assert list(stored["optimization"]) == [findings.DIVERGED]
    assert "diverged at step" in stored["optimization"][findings.DIVERGED]

    errors = {"hog": 0.3, "sift": 0.4, "lbp": 0.5, "stage2": 0.1, "logits": 0.6}
    numbers = _numbers(errors, optimisation={"logits": 0.7})
    numbers["optimizations"]["hog"] = stored
    plan = _plan(list(errors))
    first = findings.assess(config, plan, numbers)[0]
    assert first.verdict == HOLDS
    assert first.ours.endswith("; hog: the optimisation diverged (not compared)")
    del numbers["optimizations"]["logits"]
    first = findings.assess(config, plan, numbers)[0]
    assert (first.verdict, first.why) == (
        MISSING,
        "every optimisation diverged at the plan's settings",
    )
    numbers["optimizations"]["logits"] = stored
    numbers["training_minutes"] = dict.fromkeys(errors, 1.0)
    shallow = report._shallow_table(plan, numbers)
    assert (
        "| optimisation (Mahendran & Vedaldi) | diverged | no gradient | no gradient |" in shallow
    )
    (logits,) = [line for line in report._layer_table(plan, numbers) if "/logits" in line]
    assert "| diverged |" in logits


def test_the_shallow_table_gives_the_error_given_the_mean_colour_where_it_was_measured():
    from keras_invert.reproduction import report

    errors = {"hog": 0.3, "sift": 0.4, "lbp": 0.5}
    numbers = _numbers(errors)
    given = "| decoder, error given each photo's mean colour |"
    # Results from before the measure: no row of dashes.
    assert not [
        line for line in report._shallow_table(_plan(list(errors)), numbers) if given in line
    ]
    for name, value in {"hog": 0.25, "sift": 0.375}.items():
        numbers["evaluations"][name]["decoder"]["error_given_mean_colour"] = value
    lines = report._shallow_table(_plan(list(errors)), numbers)
    assert f"{given} 0.250 | 0.375 | - |" in lines


def test_a_finding_without_its_measurement_says_so():
    errors = {"hog": 0.3, "sift": 0.4, "lbp": 0.5, "logits": 0.6}
    numbers = _numbers(errors)
    numbers["experiments"] = {}
    found = findings.assess(ReproduceConfig(out_dir="o"), _plan(list(errors)), numbers)
    assert [f.verdict for f in found] == [MISSING, HOLDS, MISSING, MISSING, MISSING, MISSING]


def test_figures_are_written_with_a_dash_where_undefined():
    assert [findings.figure(value) for value in (0.12345, None, float("nan"), np.inf)] == [
        "0.123", "-", "-", "-",
    ]  # fmt: skip
    assert findings.figure(2.25, 1) == "2.2"


def test_the_autoencoder_note_writes_a_dash_where_its_distances_are_undefined():
    from keras_invert.reproduction import report

    def note(relative_distance, cosine_similarity):
        features = dict(relative_distance=relative_distance, cosine_similarity=cosine_similarity)
        numbers = {"experiments": {"fixed_vs_autoencoder": {"features": features}}}
        (text,) = report._experiment_notes(numbers)[2:]
        return text

    assert "differ by 0.42 of their norm (cosine similarity 0.91)." in note(0.4213, 0.9087)
    # NaN features (a diverged autoencoder) are written to JSON as null.
    assert "differ by - of their norm (cosine similarity -)." in note(None, float("nan"))


def test_findings_on_undefined_errors_are_not_measured_and_say_why():
    # Test photos all the same image: every normalised error is None.
    errors = {
        "hog": None,
        "sift": None,
        "lbp": None,
        "stage2": None,
        "stage5": None,
        "logits": None,
    }
    numbers = _numbers(
        errors, optimisation={"hog": None}, coarse=(None, None), dark=(None, None),
        binarised=None, autoencoder=(None, None),
    )  # fmt: skip
    numbers["experiments"]["binarised_and_dropped"]["oracle_error"] = None
    found = findings.assess(ReproduceConfig(out_dir="o"), _plan(list(errors)), numbers)
    assert [(f.verdict, f.why) for f in found] == [(MISSING, findings.UNDEFINED)] * 6
    assert found[0].ours == "hog: decoder - vs optimisation - (0.010 s vs 5.0 s per image)"
    assert found[5].ours == "fixed -; autoencoder -"


@pytest.fixture(scope="module")
def tiny_reproduction(tmp_path_factory):
    """One shallow feature and two taps (one also as an autoencoder), a few steps each."""
    from pipelines.reproduction_data import reproduction_data

    config = ReproduceConfig(
        out_dir=str(tmp_path_factory.mktemp("reproduction")),
        shallow=("hog",),
        # The autoencoder's train step at the first tap compiles in seconds (at stage6, 40).
        taps=("stem", "logits"),
        autoencoder_tap="stem",
        binarise_tap="stem",
        step_scale=0.0005,
        crops_per_image=1,
        shallow_crops_per_image=1,
        optimization_steps=2,
        num_test_images=3,
    )
    data = reproduction_data(config)
    return config, data, reproduction.reproduce(config, data)


def test_a_tiny_reproduction_writes_the_findings_tables_and_figures(tiny_reproduction):
    config, _, written = tiny_reproduction
    text = open(written["results"]).read()
    for number in range(1, 7):
        line = next(line for line in text.splitlines() if line.startswith(f"{number}. **"))
        assert any(verdict in line for verdict in (HOLDS, FAILS, MISSING)), line
    assert "| efficientnet-lite0/stem (autoencoder) |" in text
    assert "| decoder | " in text and "| optimisation (Mahendran & Vedaldi) |" in text
    stems = sorted(os.path.splitext(os.path.basename(p))[0] for p in written["figures"])
    assert stems == [
        "binarised_and_dropped", "dark_knowledge", "depth", "fixed_vs_autoencoder", "layers"
    ]  # fmt: skip
    for path in written["figures"]:
        assert f"]({os.path.relpath(path, config.out_dir)})" in text
    numbers = json.load(open(written["json"]))
    # A committed copy must not name the machine it ran on.
    assert config.out_dir not in open(written["json"]).read()
    assert numbers["config"]["scale"] == config.scale
    assert set(numbers["evaluations"]) == {job.name for job in jobs(config)}
    assert set(numbers["optimizations"]) == {"hog", "efficientnet-lite0-logits"}
    assert len(numbers["findings"]) == 6
    fixed = numbers["experiments"]["fixed_vs_autoencoder"]["models"]
    assert np.isfinite(fixed["autoencoder"]["normalized_error"])
    # Every decoder is measured on training photos too, and both tables show it.
    for evaluation in numbers["evaluations"].values():
        seen = evaluation[findings.SEEN]
        assert seen["photos"] == 3 and 0 < seen["normalized_error"] < 2
    assert "| decoder, on its training photos | " in text
    assert "| layer | decoder error | luma | SSIM | error on training photos |" in text
    assert "also measured on 3 of their training photos" in text


def test_a_rerun_reuses_every_finished_part(tiny_reproduction):
    config, data, written = tiny_reproduction
    out = config.out_dir
    kept = {
        path: os.path.getmtime(path)
        for folder in ("measurements", "figures")
        for path in (
            os.path.join(out, folder, name) for name in os.listdir(os.path.join(out, folder))
        )
    }
    models = {
        job.name: os.path.getmtime(os.path.join(out, "runs", job.name, "model.keras"))
        for job in jobs(config)
    }
    # Another strategy is how a run trains, not what: everything is reused.
    again = reproduction.reproduce(dataclasses.replace(config, strategy="mirrored"), data)
    assert again["figures"] == written["figures"]
    assert {path: os.path.getmtime(path) for path in kept} == kept
    assert {
        name: os.path.getmtime(os.path.join(out, "runs", name, "model.keras")) for name in models
    } == models


def test_a_rerun_with_another_plan_is_refused_before_any_work(tiny_reproduction):
    config, data, _ = tiny_reproduction
    out = config.out_dir
    before = {
        name: os.path.getmtime(os.path.join(out, "runs", name, "model.keras"))
        for name in os.listdir(os.path.join(out, "runs"))
    }
    other_seed = dataclasses.replace(config, seed=config.seed + 1)
    with pytest.raises(ValueError, match=r"another config \(\{'seed'"):
        reproduction.reproduce(other_seed, data)
    after = {
        name: os.path.getmtime(os.path.join(out, "runs", name, "model.keras")) for name in before
    }
    assert after == before


def test_a_stored_evaluation_without_the_training_photos_is_measured_again(tiny_reproduction):
    # As a reproduction measured before the training photos were: only that part is redone.
    config, data, _ = tiny_reproduction
    folder = os.path.join(config.out_dir, "measurements")
    old = os.path.join(folder, "evaluation-hog.json")
    stored = json.load(open(old))
    del stored[findings.SEEN]
    with open(old, "w") as file:
        json.dump(stored, file)
    before = {name: os.path.getmtime(os.path.join(folder, name)) for name in os.listdir(folder)}
    reproduction.reproduce(config, data)
    assert findings.SEEN in json.load(open(old))
    after = {name: os.path.getmtime(os.path.join(folder, name)) for name in before}
    assert [name for name in before if after[name] != before[name]] == ["evaluation-hog.json"]


@pytest.mark.slow
def test_a_tiny_reproduction_on_a_tfds_source(tmp_path):
    """The command a user runs on ImageNet (`--data=tfds:imagenet2012`), on faked TFDS data."""
    import tensorflow_datasets as tfds

    from pipelines.reproduction_data import reproduction_data

    config = ReproduceConfig(
        out_dir=str(tmp_path), data="tfds:cifar10", shallow=("hog",), taps=("stage6", "logits"),
        autoencoder_tap="stage6", step_scale=0.0005, crops_per_image=1,
        shallow_crops_per_image=1, optimization_steps=2, num_test_images=3,
    )  # fmt: skip
    with tfds.testing.mock_data(num_examples=12):
        written = reproduction.reproduce(config, reproduction_data(config))
    numbers = json.load(open(written["json"]))
    assert numbers["test_photos"] == ["test-0", "test-1", "test-2"]
    assert set(numbers["evaluations"]) == {job.name for job in jobs(config)}
