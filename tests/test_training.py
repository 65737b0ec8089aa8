"""Training: checkpoints, resumption after an interruption, divergence detection."""

import json
import os
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_invert import building, decoders, distribute, optimizers, presets, runs, training
from keras_invert import config as config_lib
from keras_invert.callbacks import DivergenceError, DivergenceGuard
from keras_invert.checkpoints import Checkpoints, optimizer_step, save_final
from keras_invert.features import hog


def _tiny_config(**changes):
    values = dict(
        representation="hog", image_size=64, width=0.125, batch_size=4, steps=20,
        steps_per_epoch=5, learning_rate=1e-3, summary_images=0,
    )  # fmt: skip
    values.update(changes)
    return config_lib.TrainConfig(**values)


def _dataset(real_photos, seed=0):
    rng = np.random.default_rng(seed)
    photos = [
        real_photos[n][:192, :192].astype(np.float32) for n in ("astronaut", "coffee", "chelsea")
    ]
    crops = []
    for _ in range(16):
        photo = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, 128, size=2)
        crops.append(photo[y : y + 64, x : x + 64])
    images = np.stack(crops)
    features = hog(images).numpy()
    return tf.data.Dataset.from_tensor_slices((features, images / 255.0)).repeat().batch(4)


class _StopAfter(keras.callbacks.Callback):
    """Simulates a kill: raises after a given number of steps."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations) >= self.step:
            raise KeyboardInterrupt


def test_train_writes_checkpoints_and_final_model(tmp_path, real_photos):
    run = _tiny_config(steps=10)
    model = training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    assert int(model.optimizer.iterations) == 10
    assert os.path.exists(tmp_path / "model.keras")
    assert Checkpoints(str(tmp_path / "checkpoints")).steps() == [5, 10]
    assert any(
        name.startswith("events")
        for _, _, files in os.walk(tmp_path / "tensorboard")
        for name in files
    )


def test_interrupted_run_resumes_step_and_loss(tmp_path, real_photos):
    run = _tiny_config(steps=20)
    with pytest.raises(KeyboardInterrupt):
        training.train(
            run, _dataset(real_photos), str(tmp_path), callbacks=[_StopAfter(13)], verbose=0
        )
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    assert checkpoints.steps() == [5, 10]
    restored = checkpoints.restore_latest()
    assert int(restored.optimizer.iterations) == 10
    # The optimiser state came back too: Adam's moments are not zero.
    assert any(np.abs(v.numpy()).sum() > 0 for v in restored.optimizer.variables[2:])
    features, targets = next(iter(_dataset(real_photos, seed=1)))
    fresh = building.build_model(run)
    assert restored.evaluate(features, targets, verbose=0) < fresh.evaluate(
        features, targets, verbose=0
    )

    model = training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    assert int(model.optimizer.iterations) == 20
    assert checkpoints.steps() == [15, 20]


def test_half_written_checkpoint_is_skipped(tmp_path, real_photos):
    run = _tiny_config(steps=10)
    training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    newest = checkpoints.path(10)
    with open(newest, "r+b") as file:
        file.truncate(os.path.getsize(newest) // 2)
    with open(os.path.join(checkpoints.directory, ".partial-1-15.keras"), "wb") as file:
        file.write(b"half")
    restored = checkpoints.restore_latest()
    assert int(restored.optimizer.iterations) == 5
    assert not any(n.startswith(".partial") for n in os.listdir(checkpoints.directory))


def test_divergence_stops_with_clear_error(tmp_path, real_photos):
    run = _tiny_config(steps=10, learning_rate=1.0)
    with pytest.raises(DivergenceError, match="learning_rate"):
        training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)


def test_divergence_guard_detects_explosion():
    guard = DivergenceGuard(factor=10)
    guard.set_model(building.build_model(_tiny_config()))
    guard.on_epoch_end(0, {"loss": 0.01})
    guard.on_train_batch_end(0, {"loss": 0.05})
    # Both say the way out that works: a resume with another rate is refused.
    with pytest.raises(DivergenceError, match="10 times.*new --work_dir"):
        guard.on_train_batch_end(1, {"loss": 45.0})
    with pytest.raises(DivergenceError, match="nan.*new --work_dir"):
        guard.on_train_batch_end(2, {"loss": float("nan")})
    assert "learning_rate" not in config_lib.RESUMABLE_CHANGES


def test_learning_rate_is_lowered_towards_the_end():
    optimizer = optimizers.build_optimizer(_tiny_config(steps=100, learning_rate_drops=(0.5, 0.9)))
    schedule = (
        optimizer.learning_rate if callable(optimizer.learning_rate) else optimizer._learning_rate
    )
    rates = [float(schedule(step)) for step in (0, 49, 51, 89, 91)]
    np.testing.assert_allclose(rates, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-6)


def test_config_round_trips_and_validates(tmp_path):
    run = config_lib.replace(presets.preset("demo_hog"), steps=7, encoder_options={"cell_size": 8})
    config_lib.save(run, str(tmp_path))
    assert config_lib.load(str(tmp_path)) == run
    assert config_lib.load(str(tmp_path / "missing")) is None
    for edited in ({"representation": "hog", "steps": "ten"}, ["hog"], {"width": 0}):
        (tmp_path / "config.json").write_text(json.dumps(edited))
        with pytest.raises(ValueError, match="Expected the run config as an object"):
            config_lib.load(str(tmp_path))
    with pytest.raises(ValueError, match="batch_size"):
        config_lib.replace(run, batch_size=0)
    for width in (float("inf"), 1e-9):  # Narrower than 1/32, the 32-channel layers keep none.
        with pytest.raises(ValueError, match=rf"in \[1/32, inf\).* Received: width={width}$"):
            config_lib.replace(run, width=width)
    for rate in (float("inf"), 1.5):  # Adam moves a weight by about the rate a step.
        with pytest.raises(ValueError, match=r"Expected learning_rate in \(0, 1\]. Received"):
            config_lib.replace(run, learning_rate=rate)
    assert config_lib.replace(run, learning_rate=1.0).learning_rate == 1.0
    for name, value in (("beta_1", 2.0), ("beta_2", -1.0), ("negative_slope", 1e9)):
        with pytest.raises(
            ValueError, match=rf"Expected {name} in \[0, 1\)\. Received: {name}={value}"
        ):
            config_lib.replace(run, **{name: value})
    with pytest.raises(ValueError, match="Unknown preset"):
        presets.preset("nope")
    with pytest.raises(
        ValueError, match="Expected mean_colour True, False or None. Received: mean_colour=1"
    ):
        config_lib.replace(run, mean_colour=1)


def test_a_run_from_before_the_mean_colour_option_resumes_with_its_own_decoder(
    tmp_path, real_photos
):
    # Such runs trained the table's decoder alone; their config.json has no mean_colour.
    run = _tiny_config(steps=5, mean_colour=False)
    training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    stored = json.loads((Path(config_lib.save(run, str(tmp_path)))).read_text())
    del stored["mean_colour"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    old = config_lib.load(str(tmp_path))
    assert old.mean_colour is False
    model = training.train(
        config_lib.replace(old, steps=10), _dataset(real_photos), str(tmp_path), verbose=0
    )
    assert int(model.optimizer.iterations) == 10
    assert decoders.MEAN_COLOUR_LAYER not in [layer.name for layer in model.layers]
    # Edited to the new default, it would name a layer the model lacks.
    edited = config_lib.replace(old, mean_colour=None, steps=15)
    with pytest.raises(ValueError, match="config.json edited.*'mean_colour'"):
        training.train(edited, _dataset(real_photos), str(tmp_path), verbose=0)
    assert Checkpoints(str(tmp_path / "checkpoints")).steps() == [5, 10]


def test_a_resume_whose_config_gives_other_shapes_is_refused_before_a_step(tmp_path, real_photos):
    run = _tiny_config(steps=5)
    training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    # config.json edited by hand: 96 px crops give 12x12 HOG maps, the decoder takes 8x8.
    edited = config_lib.replace(run, image_size=96, steps=10)
    with pytest.raises(ValueError, match=r"config.json edited.*\(12, 12, 31\).*\(8, 8, 31\)"):
        training.train(edited, _dataset(real_photos), str(tmp_path), verbose=0)
    # Edited to another width or slope, the checkpoints' network would resume under a
    # config that misstates it.
    wider = config_lib.replace(run, width=run.width * 2, steps=10)
    first = decoders.scaled_units(256, run.width)
    with pytest.raises(
        ValueError, match=rf"width={wider.width}, .*'convA1'.*{2 * first}\).*{first}\)"
    ):
        training.train(wider, _dataset(real_photos), str(tmp_path), verbose=0)
    steeper = config_lib.replace(run, negative_slope=0.1, steps=10)
    slope = r"negative_slope=0.1: its layer 'convA1_lrelu'.*has negative_slope 0.2$"
    with pytest.raises(ValueError, match=slope):
        training.train(steeper, _dataset(real_photos), str(tmp_path), verbose=0)
    assert Checkpoints(str(tmp_path / "checkpoints")).steps() == [5]


def test_time_budget_stops_at_an_epoch_boundary_and_resumes(tmp_path, real_photos):
    run = _tiny_config(steps=20, max_minutes=0.0)
    model = training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    assert int(model.optimizer.iterations) == 5
    assert Checkpoints(str(tmp_path / "checkpoints")).steps() == [5]
    run = config_lib.replace(run, max_minutes=None)
    assert (
        int(
            training.train(
                run, _dataset(real_photos), str(tmp_path), verbose=0
            ).optimizer.iterations
        )
        == 20
    )


def _dataset_function(real_photos, shards):
    """A dataset function with the pipelines' contract: batch `start_step` onwards."""
    features, images = next(iter(_dataset(real_photos).unbatch().batch(16)))

    def dataset_function(shard):
        shards.append(shard)
        first = shard.start_step * shard.batch_size * shard.num_shards
        data = tf.data.Dataset.from_tensor_slices((features, images)).repeat().skip(first)
        return data.shard(shard.num_shards, shard.shard_index).batch(shard.batch_size)

    return dataset_function


def test_fit_calls_end_epochs_at_multiples_and_at_the_last_step():
    assert training.fit_calls(0, 3, 500) == [(0, 1, 3)]
    assert training.fit_calls(0, 20, 5) == [(0, 4, 5)]
    assert training.fit_calls(0, 23, 5) == [(0, 4, 5), (4, 5, 3)]
    assert training.fit_calls(10, 23, 5) == [(2, 4, 5), (4, 5, 3)]
    # Resumed from a final step 7 with a larger `steps`: 7 -> 10 first.
    assert training.fit_calls(7, 22, 5) == [(1, 2, 3), (2, 4, 5), (4, 5, 2)]
    assert training.fit_calls(23, 23, 5) == training.fit_calls(30, 23, 5) == []


def test_steps_smaller_than_an_epoch_or_not_a_multiple_are_exact(tmp_path, real_photos):
    shards = []
    dataset_function = _dataset_function(real_photos, shards)
    run = _tiny_config(steps=3, steps_per_epoch=5)
    model = training.train(run, dataset_function, str(tmp_path), verbose=0)
    assert optimizer_step(model) == 3
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    assert checkpoints.steps() == [3]
    # More steps on resume: the partial epoch 3 -> 5, one whole epoch, 10 -> 12.
    model = training.train(config_lib.replace(run, steps=12), dataset_function, str(tmp_path))
    assert optimizer_step(model) == 12
    assert checkpoints.steps() == [10, 12]
    assert [shard.start_step for shard in shards] == [0, 3, 5, 10]


def test_run_killed_in_its_partial_last_epoch_resumes_to_the_same_weights(tmp_path, real_photos):
    run = _tiny_config(steps=8, steps_per_epoch=3)  # Epochs end at 3, 6 and 8.
    shards = []
    dataset_function = _dataset_function(real_photos, shards)
    whole = training.train(run, dataset_function, str(tmp_path / "whole"), verbose=0)
    assert optimizer_step(whole) == 8
    assert Checkpoints(str(tmp_path / "whole" / "checkpoints")).steps() == [6, 8]
    assert [shard.start_step for shard in shards] == [0, 6]
    with pytest.raises(KeyboardInterrupt):
        training.train(
            run, dataset_function, str(tmp_path / "cut"), callbacks=[_StopAfter(7)], verbose=0
        )
    assert Checkpoints(str(tmp_path / "cut" / "checkpoints")).steps() == [3, 6]
    resumed = training.train(run, dataset_function, str(tmp_path / "cut"), verbose=0)
    # The resumed run asked for its stream from its checkpoint's step.
    assert shards[-1] == distribute.InputShard(batch_size=4, start_step=6)
    for a, b in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)

    # A corrupt newest checkpoint: the run resumes from the one before, to the same weights.
    checkpoints = Checkpoints(str(tmp_path / "cut" / "checkpoints"))
    _truncate(checkpoints.path(8))
    again = training.train(run, dataset_function, str(tmp_path / "cut"), verbose=0)
    assert shards[-1] == distribute.InputShard(batch_size=4, start_step=6)
    for a, b in zip(again.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def _truncate(path):
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


class _CountSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1


def test_unreadable_checkpoints_resume_from_the_final_model_or_refuse(tmp_path, real_photos):
    run = _tiny_config(steps=4, steps_per_epoch=2)
    finished = training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    checkpoints = Checkpoints(str(tmp_path / "checkpoints"))
    for step in checkpoints.steps():
        _truncate(checkpoints.path(step))

    # The finished model holds step 4: nothing to train, nothing restarted from 0.
    counter = _CountSteps()
    model = training.train(run, _dataset(real_photos), str(tmp_path), callbacks=[counter])
    assert counter.count == 0 and optimizer_step(model) == 4
    for a, b in zip(model.get_weights(), finished.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model = training.train(
        config_lib.replace(run, steps=6), _dataset(real_photos), str(tmp_path),
        callbacks=[counter], verbose=0,
    )  # fmt: skip
    assert counter.count == 2 and optimizer_step(model) == 6

    # Nothing readable: refused, naming the files, which stay as they were.
    for step in checkpoints.steps():
        _truncate(checkpoints.path(step))
    _truncate(str(tmp_path / "model.keras"))
    size = os.path.getsize(tmp_path / "model.keras")
    with pytest.raises(ValueError, match=r"ckpt-000000006\.keras .*model\.keras"):
        training.train(run, _dataset(real_photos), str(tmp_path), callbacks=[counter])
    assert counter.count == 2 and os.path.getsize(tmp_path / "model.keras") == size


def _averages(model):
    """The optimiser's moving averages of the trained weights."""
    return [v.numpy() for v in model.optimizer._model_variables_moving_average]


def test_cosine_and_averaged_run_resumes_exactly_and_ends_on_the_averages(tmp_path, real_photos):
    dataset_function = _dataset_function(real_photos, [])
    plain = _tiny_config(steps=8, steps_per_epoch=3, schedule="cosine", warmup_steps=2)
    run = config_lib.replace(plain, ema_momentum=0.6)
    # Two `fit` calls (epochs end at 3, 6 and 8): the second must go on from raw weights.
    assert len(training.fit_calls(0, 8, 3)) == 2
    whole = training.train(run, dataset_function, str(tmp_path / "whole"), verbose=0)
    raw = Checkpoints(str(tmp_path / "whole" / "checkpoints")).restore_latest()
    assert optimizer_step(raw) == 8

    # Training itself runs on the raw weights: the same as without averaging.
    unaveraged = training.train(plain, dataset_function, str(tmp_path / "plain"), verbose=0)
    for a, b in zip(raw.get_weights(), unaveraged.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)

    # The final model holds the averages, which differ from the raw weights.
    for a, b in zip(whole.get_weights(), _averages(raw), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(whole.get_weights()[0], raw.get_weights()[0])

    # Killed at step 7 and resumed from its step-6 checkpoint: the same raw
    # weights, averages (in the optimiser state) and final model.
    with pytest.raises(KeyboardInterrupt):
        training.train(
            run, dataset_function, str(tmp_path / "cut"), callbacks=[_StopAfter(7)], verbose=0
        )
    resumed = training.train(run, dataset_function, str(tmp_path / "cut"), verbose=0)
    resumed_raw = Checkpoints(str(tmp_path / "cut" / "checkpoints")).restore_latest()
    for a, b in zip(resumed_raw.get_weights(), raw.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    for a, b in zip(resumed.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_loaded_decoder_uses_the_averaged_weights(tmp_path, real_photos):
    import keras_invert
    from keras_invert import loading

    run = _tiny_config(steps=4, steps_per_epoch=2, ema_momentum=0.5)
    config_lib.save(run, str(tmp_path))
    whole = training.train(run, _dataset(real_photos), str(tmp_path), verbose=0)
    features, _ = next(iter(_dataset(real_photos, seed=1)))
    expected = np.clip(whole.predict(features, verbose=0), 0, 1)
    np.testing.assert_allclose(keras_invert.load(str(tmp_path)).decode(features), expected)
    # A run without its final model yet: the newest checkpoint, with its averages applied.
    os.remove(tmp_path / "model.keras")
    loaded = loading.load_model(str(tmp_path))
    for a, b in zip(loaded.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


class _FirstWeights(keras.callbacks.Callback):
    """Records the model's weights when its first `fit` begins."""

    weights = None

    def on_train_begin(self, logs=None):
        if self.weights is None:
            self.weights = self.model.get_weights()


def test_init_from_starts_a_new_run_from_the_source_decoder_only_once(tmp_path, real_photos):
    source, tuned = str(tmp_path / "source"), str(tmp_path / "tuned")
    os.makedirs(source)
    # A finished source run: its config and final model (its weights drawn with another seed).
    config_lib.save(_tiny_config(seed=1), source)
    source_model = building.build_model(_tiny_config(seed=1))
    source_model.optimizer.build(source_model.trainable_variables)  # As a trained run saves it.
    save_final(source_model, source)
    source_weights = source_model.get_weights()
    run = _tiny_config(steps=1, steps_per_epoch=1, learning_rate=1e-4, init_from=source)
    # Another width's decoder is refused before anything is written, in one line.
    with pytest.raises(ValueError) as refused:
        runs.check_start(config_lib.replace(run, width=0.25), tuned)
    assert re.fullmatch(
        r"Expected init_from as a run of this decoder \(width=0\.25\)\. "
        r"Received: init_from='.*source' \(width=0\.125\)",
        str(refused.value),
    )
    assert not os.path.exists(tuned)

    runs.check_start(run, tuned)
    first = _FirstWeights()
    training.train(run, _dataset(real_photos), tuned, callbacks=[first], verbose=0)
    for started, trained in zip(first.weights, source_weights, strict=True):
        np.testing.assert_array_equal(started, trained)

    # A resumed run continues from its own checkpoint: the source is not read again.
    tuned_weights = keras.saving.load_model(os.path.join(tuned, "model.keras")).get_weights()
    shutil.rmtree(source)
    config_lib.save(run, tuned)
    longer = runs.resolve_config(tuned, {"steps": 2, "init_from": source})
    runs.check_start(longer, tuned)
    resumed = _FirstWeights()
    model = training.train(longer, _dataset(real_photos), tuned, callbacks=[resumed], verbose=0)
    assert int(model.optimizer.iterations) == 2
    for started, trained in zip(resumed.weights, tuned_weights, strict=True):
        np.testing.assert_array_equal(started, trained)
