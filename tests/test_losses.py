"""Tests of the perceptual and DeepSiM losses (keras_invert.losses)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_invert
from keras_invert import building, loading, losses, registry, training
from keras_invert import config as config_lib
from keras_invert.checkpoints import CHECKPOINT_DIR, FINAL_MODEL, Checkpoints

FEATURE_SHAPE = (4, 4, 5)
IMAGE_SIZE = 16


def tiny_decoder(seed=0, feature_shape=FEATURE_SHAPE):
    """Features [N, 4, 4, 5] (or `feature_shape`, 4x4) -> images [N, 16, 16, 3]."""
    keras.utils.set_random_seed(seed)
    features = keras.Input(feature_shape)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(features)
    x = layers.UpSampling2D(4)(x)
    images = layers.Conv2D(3, 3, padding="same", dtype="float32")(x)
    return keras.Model(features, images, name="decoder")


def tiny_comparator(seed=1):
    """RGB 0..255 images -> a small feature map (random, fixed weights)."""
    keras.utils.set_random_seed(seed)
    images = keras.Input((None, None, 3))
    x = layers.Rescaling(1 / 255.0)(images)
    x = layers.Conv2D(6, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(images, x, name="tiny_comparator")


def batch(seed=0, size=4, feature_shape=FEATURE_SHAPE, image_size=IMAGE_SIZE):
    rng = np.random.default_rng(seed)
    features = rng.uniform(0, 1, (size, *feature_shape)).astype("float32")
    targets = rng.uniform(0, 1, (size, image_size, image_size, 3)).astype("float32")
    return features, targets


def make_model(
    weights=(1.0, 0.5, 0.1),
    learning_rate=1e-3,
    pause_ratio=0.1,
    discriminator_learning_rate=None,
    ema_momentum=None,
    decoder=None,
):
    model = building.build_perceptual_model(
        tiny_decoder() if decoder is None else decoder,
        tiny_comparator(),
        weights,
        width=0.05,
        pause_ratio=pause_ratio,
    )
    discriminator_optimizer = None
    if weights[2] > 0:
        discriminator_optimizer = keras.optimizers.Adam(
            learning_rate if discriminator_learning_rate is None else discriminator_learning_rate
        )
    averaging = dict(use_ema=True, ema_momentum=ema_momentum) if ema_momentum else {}
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, **averaging),
        discriminator_optimizer=discriminator_optimizer,
        jit_compile=False,
    )
    return model


def _values(variables):
    return [v.numpy() for v in variables]


def _changed(before, variables):
    return any(not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True))


def test_components_match_numpy():
    model = make_model()
    features, targets = batch()
    reconstructions = np.asarray(model.generator(features))
    target_features = np.asarray(model.comparator(targets * 255.0))
    computed = model.component_losses(
        features, targets, reconstructions, target_features, condition=features
    )
    recon_features = np.asarray(model.comparator(reconstructions * 255.0))
    logits = np.asarray(model.discriminator([reconstructions, features])).astype("float64")
    expected_pixel = np.mean((reconstructions - targets) ** 2)
    expected_feature = np.mean((recon_features - target_features) ** 2) / np.mean(
        target_features**2
    )
    expected_adversarial = np.mean(np.log1p(np.exp(-logits)))  # -log sigmoid(logit)
    np.testing.assert_allclose(float(computed["pixel"]), expected_pixel, rtol=1e-5)
    np.testing.assert_allclose(float(computed["feature"]), expected_feature, rtol=1e-4)
    np.testing.assert_allclose(float(computed["adversarial"]), expected_adversarial, rtol=1e-4)
    # The discriminator's loss: -log D(real) - log(1 - D(fake)).
    real = np.asarray(model.discriminator([targets, features])).astype("float64")
    expected_discriminator = np.mean(np.log1p(np.exp(-real))) + np.mean(np.log1p(np.exp(logits)))
    np.testing.assert_allclose(
        float(model.discriminator_loss(targets, reconstructions, features)),
        expected_discriminator,
        rtol=1e-4,
    )


def test_each_step_updates_only_its_network():
    model = make_model()
    features, targets = batch()
    networks = {
        "generator": model.generator.trainable_variables,
        "discriminator": model.discriminator.trainable_variables,
        "comparator": model.comparator.weights,
    }
    before = {name: _values(v) for name, v in networks.items()}
    reconstructions, _ = model.generator_step(features, targets, condition=features)
    changed = {name: _changed(before[name], v) for name, v in networks.items()}
    assert changed == {"generator": True, "discriminator": False, "comparator": False}

    before = {name: _values(v) for name, v in networks.items()}
    _, paused = model.discriminator_step(targets, reconstructions, features)
    assert float(paused) == 0.0
    changed = {name: _changed(before[name], v) for name, v in networks.items()}
    assert changed == {"generator": False, "discriminator": True, "comparator": False}
    assert int(model.optimizer.iterations) == 1
    assert int(model.discriminator_optimizer.iterations) == 1


def test_perceptual_fit_lowers_feature_loss_and_reports_components():
    model = make_model(weights=(1.0, 1.0, 0.0), learning_rate=3e-3)
    assert model.discriminator is None
    features, targets = batch(size=8)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(8).repeat()
    start = model.evaluate(features, targets, batch_size=8, verbose=0, return_dict=True)
    history = model.fit(dataset, steps_per_epoch=20, epochs=2, verbose=0)
    end = model.evaluate(features, targets, batch_size=8, verbose=0, return_dict=True)
    assert sorted(history.history) == ["feature", "loss", "pixel"]
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert end["feature"] < 0.8 * start["feature"]
    np.testing.assert_allclose(end["loss"], end["pixel"] + end["feature"], rtol=1e-5)
    assert model.predict(features, verbose=0).shape == (8, IMAGE_SIZE, IMAGE_SIZE, 3)


def test_deepsim_fit_reports_all_components():
    model = make_model()
    features, targets = batch(size=8)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(4).repeat()
    history = model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    assert sorted(history.history) == [
        "adversarial", "discriminator", "feature", "loss", "paused", "pixel"
    ]  # fmt: skip
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert history.history["paused"] == [0.0]  # An untrained discriminator is not ahead.
    # The reported loss is the weighted sum (1.0, 0.5, 0.1) of the reported terms.
    logged = {name: np.array(values) for name, values in history.history.items()}
    np.testing.assert_allclose(
        logged["loss"],
        logged["pixel"] + 0.5 * logged["feature"] + 0.1 * logged["adversarial"],
        rtol=1e-5,
    )
    # An untrained discriminator is near chance: -log D and -log D - log(1 - D) near
    # log 2 and 2 log 2.
    assert 0.3 < logged["adversarial"][0] < 1.5 and 0.6 < logged["discriminator"][0] < 3
    assert int(model.optimizer.iterations) == 3
    assert int(model.discriminator_optimizer.iterations) == 3


def test_discriminator_step_is_skipped_while_far_ahead():
    model = make_model()  # pause_ratio 0.1
    features, targets = batch()
    reconstructions = model.generator(features)
    loss = float(model.discriminator_loss(targets, reconstructions, features))
    weights = _values(model.discriminator.trainable_variables)
    # Its loss below 0.1 times the generator's adversarial loss: skipped.
    _, paused = model.discriminator_step(targets, reconstructions, features, 11.0 * loss)
    assert float(paused) == 1.0 and int(model.discriminator_optimizer.iterations) == 0
    assert not _changed(weights, model.discriminator.trainable_variables)
    _, paused = model.discriminator_step(targets, reconstructions, features, 9.0 * loss)
    assert float(paused) == 0.0 and int(model.discriminator_optimizer.iterations) == 1
    assert _changed(weights, model.discriminator.trainable_variables)


class _DiscriminatorSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.iterations = []

    def on_train_batch_end(self, batch, logs=None):
        self.iterations.append(int(self.model.discriminator_optimizer.iterations))


def test_discriminator_pauses_once_it_wins_and_trains_until_then():
    """A generator that does not learn: the discriminator wins, then stops training."""
    features, targets = batch(size=8)
    dataset = tf.data.Dataset.from_tensors((features, targets)).repeat()
    steps = {}
    for ratio in (0.1, 0.0):
        model = make_model(learning_rate=0.0, discriminator_learning_rate=1e-2, pause_ratio=ratio)
        record = _DiscriminatorSteps()
        history = model.fit(
            dataset, steps_per_epoch=40, epochs=1, callbacks=[record], verbose=0, shuffle=False
        )
        steps[ratio] = record.iterations, history.history["paused"][0]
    trained, paused = steps[0.1]
    # It trains at every step until it is far ahead, and is paused from then on.
    first = trained[-1]
    assert 0 < first < 40 and trained == list(range(1, first + 1)) + [first] * (40 - first)
    np.testing.assert_allclose(paused, (40 - first) / 40)
    assert steps[0.0] == (list(range(1, 41)), 0.0)


def test_pixel_weight_alone_trains_as_the_compiled_mse_model():
    features, targets = batch(size=8)
    plain = tiny_decoder()
    plain.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mean_squared_error")
    wrapped = losses.PerceptualModel(tiny_decoder(), tiny_comparator(), None, (1.0, 0.0, 0.0))
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-3))
    options = dict(batch_size=8, epochs=4, verbose=0, shuffle=False)
    expected = plain.fit(features, targets, **options).history["loss"]
    history = wrapped.fit(features, targets, **options).history
    np.testing.assert_allclose(history["pixel"], expected, rtol=1e-5)
    np.testing.assert_allclose(
        wrapped.predict(features, verbose=0), plain.predict(features, verbose=0), atol=1e-6
    )


def test_save_load_round_trip_keeps_outputs_and_both_optimisers(tmp_path):
    model = make_model()
    features, targets = batch(size=4)
    model.fit(features, targets, batch_size=4, epochs=2, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, losses.PerceptualModel)
    assert loaded.loss_weights == (1.0, 0.5, 0.1) and loaded.pause_ratio == 0.1
    np.testing.assert_allclose(
        loaded.predict(features, verbose=0), model.predict(features, verbose=0)
    )
    for name in ("optimizer", "discriminator_optimizer"):
        original, restored = getattr(model, name), getattr(loaded, name)
        assert int(restored.iterations) == int(original.iterations) == 2
        for a, b in zip(original.variables, restored.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not loaded.comparator.trainable
    for part in ("comparator", "discriminator"):
        saved, restored = getattr(model, part).weights, getattr(loaded, part).weights
        assert len(saved) == len(restored) > 0
        for a, b in zip(saved, restored, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    # One more step from the same state gives the same generator on both.
    model.fit(features, targets, batch_size=4, epochs=1, verbose=0)
    loaded.fit(features, targets, batch_size=4, epochs=1, verbose=0)
    for a, b in zip(model.generator.weights, loaded.generator.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    assert losses.unwrap(loaded) is loaded.generator


def test_invalid_arguments():
    with pytest.raises(ValueError, match="loss_weights"):
        losses.PerceptualModel(tiny_decoder(), tiny_comparator(), None, (1.0, -1.0, 0.0))
    with pytest.raises(ValueError, match="discriminator"):
        losses.PerceptualModel(tiny_decoder(), tiny_comparator(), None, (1.0, 1.0, 0.1))
    model = make_model(weights=(1.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="no discriminator"):
        model.compile(discriminator_optimizer="adam")
    with pytest.raises(ValueError, match="own losses"):
        model.compile(loss="mse")


def test_config_fields_are_validated():
    run = config_lib.replace(config_lib.TrainConfig(), loss="deepsim", loss_weights=[1, 2, 0.5])
    assert run.loss_weights == (1.0, 2.0, 0.5)
    assert config_lib.loss_weights(run) == (1.0, 2.0, 0.5)
    assert config_lib.from_dict(config_lib.to_dict(run)) == run
    assert (
        config_lib.loss_weights(config_lib.replace(run, loss_weights=None))
        == (config_lib.DEFAULT_LOSS_WEIGHTS["deepsim"])
    )
    bad = [
        dict(loss="gan"),
        dict(loss="pixel", loss_weights=(1.0, 1.0, 0.0)),
        dict(loss="pixel", comparator="alexnet/conv5"),
        dict(loss="pixel", comparator_weights="caffenet.weights.h5"),
        dict(loss="perceptual", loss_weights=(1.0, 1.0, 0.1)),
        dict(loss="perceptual", discriminator_learning_rate=1e-4),
        dict(loss="deepsim", loss_weights=(1.0, 1.0, 0.0)),
        dict(loss="deepsim", loss_weights=(1.0, 1.0)),
        dict(loss="deepsim", discriminator_learning_rate=0.0),
    ]
    for changes in bad:
        with pytest.raises(ValueError):
            config_lib.replace(config_lib.TrainConfig(), **changes)


def test_build_model_wires_the_configured_loss():
    run = config_lib.TrainConfig(
        representation="hog",
        image_size=64,
        width=0.05,
        learning_rate=1e-3,
        discriminator_learning_rate=2e-4,
        loss="deepsim",
        loss_weights=(1.0, 0.5, 0.2),
        discriminator_pause_ratio=0.3,
        comparator="alexnet/conv1",  # the cheapest network tap (random weights here)
    )
    model = building.build_model(run)
    assert isinstance(model, losses.PerceptualModel)
    assert model.loss_weights == (1.0, 0.5, 0.2) and model.pause_ratio == 0.3
    assert model.generator.input_shape[1:] == (8, 8, 31)
    assert model.discriminator.input_shape == [(None, 64, 64, 3), (None, 8, 8, 31)]
    assert not model.comparator.trainable and model.comparator.count_params() > 0
    rates = [float(o.learning_rate) for o in (model.optimizer, model.discriminator_optimizer)]
    np.testing.assert_allclose(rates, [1e-3, 2e-4])
    perceptual = building.build_model(
        config_lib.replace(
            run, loss="perceptual", loss_weights=None, discriminator_learning_rate=None
        )
    )
    assert perceptual.discriminator is None
    assert perceptual.loss_weights == config_lib.DEFAULT_LOSS_WEIGHTS["perceptual"]
    with pytest.raises(ValueError, match="network representation"):
        building.build_model(config_lib.replace(run, comparator="hog"))


def test_comparator_weights_come_from_the_given_file_and_survive_a_checkpoint(tmp_path):
    import keras

    from keras_invert.encoders import alexnet

    keras.utils.set_random_seed(11)
    path = str(tmp_path / "conv1.weights.h5")
    network = alexnet("caffe", outputs=["conv1"])
    network.save_weights(path)
    kernel = network.get_layer("conv1").kernel.numpy()
    run = config_lib.TrainConfig(
        representation="hog", image_size=64, width=0.05, loss="perceptual",
        comparator="alexnet/conv1", comparator_weights=path,
    )  # fmt: skip
    model = building.build_model(run)
    np.testing.assert_array_equal(model.comparator.layer.get_layer("conv1").kernel, kernel)
    model.save(str(tmp_path / "model.keras"))
    restored = keras.saving.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_array_equal(restored.comparator.layer.get_layer("conv1").kernel, kernel)
    random = building.build_model(config_lib.replace(run, comparator_weights=None))
    assert not np.array_equal(random.comparator.layer.get_layer("conv1").kernel, kernel)


def test_train_resumes_both_optimisers_from_a_checkpoint(tmp_path):
    """`training.train` restores a PerceptualModel checkpoint and continues its step count.

    The generator's optimiser averages its weights: the final model holds the averages.
    """
    work_dir = str(tmp_path / "work")
    # The generator is the decoder the run's config builds (a resume compares them).
    run = config_lib.TrainConfig(
        image_size=64, width=0.05, steps=4, steps_per_epoch=2, summary_images=0, loss="deepsim"
    )
    decoder = registry.get(run.representation).build_decoder(64, width=run.width)
    model = make_model(ema_momentum=0.5, decoder=decoder)
    features, targets = batch(size=4, feature_shape=(8, 8, 31), image_size=64)
    dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(4).repeat()
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)
    checkpoints = Checkpoints(os.path.join(work_dir, CHECKPOINT_DIR))
    checkpoints.save(model, 2)
    resumed = training.train(run, dataset, work_dir, verbose=0)
    assert isinstance(resumed, losses.PerceptualModel)
    assert int(resumed.optimizer.iterations) == 4
    assert int(resumed.discriminator_optimizer.iterations) == 4
    assert checkpoints.steps() == [2, 4]
    final = loading.load_model(work_dir)  # A work dir without config.json: its model alone.
    np.testing.assert_allclose(
        final.predict(features, verbose=0), resumed.predict(features, verbose=0)
    )
    averages = resumed.optimizer._model_variables_moving_average
    for weight, average in zip(resumed.generator.trainable_variables, averages, strict=True):
        np.testing.assert_array_equal(weight.numpy(), average.numpy())
    raw = checkpoints.restore_latest().generator
    assert not np.allclose(raw.trainable_variables[0].numpy(), averages[0].numpy())


# Fast variants: test_losses_distribute (DeepSiM runs built from their config,
# one stopped at its step-2 checkpoint and resumed) and the test above.
@pytest.mark.slow
def test_training_a_deepsim_run_end_to_end_and_resuming(tmp_path):
    """build_model wires the losses; a second `train` continues both optimisers."""
    run = config_lib.TrainConfig(
        representation="hog",
        image_size=64,
        width=0.05,
        batch_size=2,
        steps=4,
        steps_per_epoch=2,
        learning_rate=1e-3,
        summary_images=0,
        loss="deepsim",
        comparator="alexnet/conv1",  # the cheapest network tap (random weights)
    )
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    from keras_invert.features.hog import hog

    features = np.asarray(hog(images))
    dataset = tf.data.Dataset.from_tensors((features, images / 255.0)).repeat()
    work_dir = str(tmp_path / "work")
    halfway = config_lib.replace(run, steps=2)
    first = training.train(halfway, dataset, work_dir, verbose=0)
    assert isinstance(first, losses.PerceptualModel)
    assert int(first.discriminator_optimizer.iterations) == 2
    resumed = training.train(run, dataset, work_dir, verbose=0)
    assert int(resumed.optimizer.iterations) == 4
    assert int(resumed.discriminator_optimizer.iterations) == 4
    final = keras_invert.load(work_dir).model
    np.testing.assert_allclose(
        final.predict(features, verbose=0), resumed.predict(features, verbose=0)
    )
    assert os.path.exists(os.path.join(work_dir, FINAL_MODEL))


def test_evaluation_and_export_use_the_generator(tmp_path):
    from keras_invert import export, registry

    decoder = registry.get("hog").build_decoder(64, width=0.05)
    model = building.build_perceptual_model(decoder, tiny_comparator(), (1.0, 1.0, 0.0))
    model.compile(optimizer="adam", jit_compile=False)
    work_dir = tmp_path / "work"
    run = config_lib.TrainConfig(image_size=64, width=0.05, loss="perceptual")
    config_lib.save(run, str(work_dir))
    model.save(str(work_dir / FINAL_MODEL))
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.clip(decoder.predict(registry.get("hog").make_encoder()(images), verbose=0), 0, 1)
    parts = keras_invert.load(str(work_dir))
    assert parts.output_size == 64 and parts.encoder_source == "registry"
    np.testing.assert_allclose(parts.reconstruct(images), expected, atol=1e-5)
    path = export.export_saved_model(model, "hog", str(tmp_path / "export"), image_size=64)
    np.testing.assert_allclose(keras_invert.load(path).reconstruct(images), expected, atol=1e-5)
