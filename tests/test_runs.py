"""Starting or resuming a run in a work dir: the config it trains with, its feature cache."""

import os
import re

import pytest

from keras_invert import building, presets, runs
from keras_invert import config as config_lib


def test_a_new_run_starts_from_the_preset_of_its_representation(tmp_path):
    run = runs.resolve_config(str(tmp_path), {"representation": "lbp", "steps": 7})
    assert run == config_lib.replace(presets.preset("lbp"), steps=7)
    demo = runs.resolve_config(str(tmp_path), {"width": 0.5}, preset="demo")
    assert demo == config_lib.replace(presets.preset("demo"), width=0.5)
    # A representation without a preset starts from the defaults.
    plain = runs.resolve_config(str(tmp_path), {"representation": "alexnet/conv5"})
    assert plain == config_lib.TrainConfig(representation="alexnet/conv5")
    # A preset named wrongly is refused, not replaced by the defaults.
    with pytest.raises(ValueError, match=r"Unknown preset.*Received: name='dmeo'"):
        runs.resolve_config(str(tmp_path), {}, preset="dmeo")


def test_a_stored_run_resumes_and_refuses_a_different_config(tmp_path):
    stored = config_lib.replace(presets.preset("demo"), steps=10)
    config_lib.save(stored, str(tmp_path))
    # The stored config wins over its preset; how the run runs may change.
    resumed = runs.resolve_config(str(tmp_path), {"steps": 20, "jit_compile": True}, "demo")
    assert resumed == config_lib.replace(stored, steps=20, jit_compile=True)
    # A preset of another representation is a mistake, unless a flag names the stored one.
    with pytest.raises(ValueError, match=r"holds a run of efficientnet-lite0/stage2; preset 'hog'"):
        runs.resolve_config(str(tmp_path), {"steps": 20}, "hog")
    same = {"representation": stored.representation}
    assert runs.resolve_config(str(tmp_path), same, "demo_hog") == stored
    assert runs.resolve_config(str(tmp_path), {"width": 0.25}) == stored  # The stored value.
    with pytest.raises(ValueError, match=r"different config \(\{'width': \(0\.25, 0\.5\)\}"):
        runs.resolve_config(str(tmp_path), {"width": 0.5, "steps": 20})


def test_the_feature_cache_folder(tmp_path):
    work_dir = str(tmp_path)
    run = config_lib.TrainConfig(cache_dir="cache")
    assert runs.cache_dir(config_lib.TrainConfig(), work_dir) is None
    assert runs.cache_dir(run, work_dir) == os.path.join(work_dir, "cache")
    # The service's workers compute the features: a local cache would bypass them.
    served = config_lib.replace(run, data_service="grpc://localhost:5050")
    assert runs.cache_dir(served, work_dir) is None
    # Only the chief writes into the work dir; another worker caches privately.
    private = runs.cache_dir(run, work_dir, chief=False)
    assert os.path.isdir(private) and not private.startswith(work_dir)
    shared = config_lib.replace(run, cache_dir=str(tmp_path / "shared"))
    assert runs.cache_dir(shared, work_dir, chief=False) == shared.cache_dir


def test_a_work_dir_or_cache_that_cannot_be_a_folder_is_refused_before_anything_runs(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    run = config_lib.TrainConfig(representation="hog", image_size=64, width=0.0625)
    cases = {
        (
            str(notes),
            None,
        ): f"work_dir to be a folder or a new path. Received: work_dir={str(notes)!r}, a file",
        (str(notes / "run"), None): f"Received: work_dir={str(notes / 'run')!r}, under the file",
        (str(tmp_path / "run"), str(notes)): f"Received: cache_dir={str(notes)!r}, a file",
    }
    for (work_dir, cache_dir), expected in cases.items():
        with pytest.raises(ValueError, match=re.escape(expected)):
            runs.check_start(config_lib.replace(run, cache_dir=cache_dir), work_dir)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]  # Nothing written.


def test_a_new_run_is_refused_in_a_folder_of_other_things(tmp_path):
    run = config_lib.TrainConfig(
        representation="hog", image_size=64, width=0.0625, cache_dir="cache"
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"jpeg")
    export_base = tmp_path / "exports"
    (export_base / "1").mkdir(parents=True)
    for folder, entry in ((photos, "'a.jpg'"), (export_base, "'1'")):
        with pytest.raises(ValueError, match=f"which holds 1 other entries \\({entry}\\)"):
            runs.check_start(run, str(folder))
    # What a run itself writes before its config (a cache filled beforehand) is no obstacle.
    started = tmp_path / "started"
    (started / "cache" / "built").mkdir(parents=True)
    (started / "tensorboard").mkdir()
    (started / ".partial-config.json").write_text("")
    runs.check_start(run, str(started))


def test_averaging_too_long_for_the_run_is_warned_of_at_its_start(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(runs.logging, "warning", lambda *args: warnings.append(args[0] % args[1:]))
    tiny = dict(representation="hog", image_size=64, width=0.125, summary_images=0)
    run = config_lib.TrainConfig(**tiny, steps=1500, ema_momentum=0.999)
    runs.check_start(run, str(tmp_path / "short"))
    assert warnings == [
        "ema_momentum=0.999 over 1500 steps: the final model's averaged weights would still "
        "hold 22% of the first steps' (barely trained) weights. Train at least 5000 steps, or "
        "average with ema_momentum <= 0.9967."
    ]
    warnings.clear()
    for fine in (dict(steps=5000, ema_momentum=0.999), dict(steps=1500, ema_momentum=0.99)):
        runs.check_start(config_lib.TrainConfig(**tiny, **fine), str(tmp_path / "fine"))
    assert warnings == []


def test_a_batch_beyond_the_free_memory_is_refused_and_one_near_it_warned_of(tmp_path, monkeypatch):
    # The machine's free memory is the input here: 1 GiB.
    monkeypatch.setattr(runs, "_available_memory", lambda: 2**30)
    warnings = []
    monkeypatch.setattr(runs.logging, "warning", lambda *args: warnings.append(args[0] % args[1:]))
    tiny = dict(representation="hog", image_size=64, width=0.125, summary_images=0)
    per_example = building.activation_bytes(building.build_model(config_lib.TrainConfig(**tiny)))
    assert 64 * 64 * 3 * 4 < per_example < 10**6  # At least the output image, in float32.
    fits = 2**29 // per_example  # Under half: nothing said.
    runs.check_start(config_lib.TrainConfig(**tiny, batch_size=fits), str(tmp_path / "a"))
    assert warnings == []
    near = 2**30 // per_example  # Half to all of it: a warning.
    runs.check_start(config_lib.TrainConfig(**tiny, batch_size=near), str(tmp_path / "b"))
    assert len(warnings) == 1 and warnings[0].startswith(f"batch_size={near}: the decoder's")
    beyond = near * 2  # A typo's batch: refused before the first step, the folder untouched.
    with pytest.raises(ValueError, match=rf"alone take 2.0 GiB.*Received: batch_size={beyond}$"):
        runs.check_start(config_lib.TrainConfig(**tiny, batch_size=beyond), str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()
    assert runs._available_memory() is None or runs._available_memory() > 0
