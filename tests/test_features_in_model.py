"""HOG and LBP computed inside the training model (`TrainConfig.features_in_model`)."""

import numpy as np
import pytest

import keras_invert
import pipelines
from keras_invert import building, registry, training
from keras_invert import config as config_lib
from keras_invert.reconstructor import FeatureEncoder, Reconstructor
from pipelines import cache_files, sources
from pipelines.training_data import sample_batch, training_dataset


def _config(**changes):
    values = dict(
        representation="lbp", image_size=64, width=0.05, batch_size=2, steps=1,
        steps_per_epoch=1, summary_images=2, features_in_model=True, cache_dir="cache",
        crops_per_image=1,
    )  # fmt: skip
    values.update(changes)
    return config_lib.TrainConfig(**values)


@pytest.mark.parametrize("name", ["sift", "alexnet/conv5"])
def test_sift_and_networks_are_refused_in_one_line(name):
    expected = rf"Expected .* not a network .* Received: representation='{name}'$"
    with pytest.raises(ValueError, match=expected) as error:
        building.check_config(_config(representation=name))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=expected):
        pipelines.build_dataset("samples", representation=name, features_in_model=True)
    with pytest.raises(ValueError, match="Received: features_in_model=1"):
        _config(features_in_model=1)


def test_a_crops_cache_and_a_features_cache_never_share_a_key():
    source = sources.resolve("samples", "train")

    def key(name, crops):
        representation = registry.get(name)
        return cache_files.cache_key(representation, {}, 64, source, True, 2, 0.5, 0, crops=crops)

    assert key("hog", crops=True) != key("hog", crops=False)
    # Crops do not depend on the encoder, but each representation keeps its own.
    assert key("hog", crops=True) != key("lbp", crops=True)


def test_hog_in_the_model_equals_the_pipelines_hog():
    options = dict(representation="hog", image_size=64, batch_size=2, training=True, seed=0)
    features, targets = next(iter(pipelines.build_dataset("samples", **options)))
    crops, crop_targets = next(
        iter(pipelines.build_dataset("samples", features_in_model=True, **options))
    )
    assert crops.shape == (2, 64, 64, 3)
    np.testing.assert_array_equal(crop_targets, targets)
    in_model = FeatureEncoder("hog")(crops).numpy()
    assert np.abs(in_model - features.numpy()).max() == 0.0


def test_a_model_holding_its_encoder_refuses_a_config_of_another_image_size():
    model = building.build_model(_config())
    expected = "Received: image_size=96 in w/config.json, 64 in the model"
    with pytest.raises(ValueError, match=expected):
        building.check_shapes(model, _config(image_size=96), "w")


def test_an_lbp_run_trains_resumes_and_loads_with_the_features_in_the_model(tmp_path):
    run, work_dir = _config(), str(tmp_path)

    def dataset(shard):
        return training_dataset(run, shard, cache_dir=str(tmp_path / "cache"))

    crops, _ = samples = sample_batch(run)
    assert crops.shape == (2, 64, 64, 3)
    config_lib.save(run, work_dir)
    training.train(run, dataset, work_dir, sample_batch=samples, verbose=0)
    # The cache holds crops, under another key than a features cache.
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("lbp-train-64-crops-")
    run = config_lib.replace(run, steps=2)
    model = training.train(run, dataset, work_dir, verbose=0)  # resumes at step 1
    assert isinstance(model, Reconstructor) and int(model.optimizer.iterations) == 2
    with pytest.raises(ValueError, match="features_in_model=False"):
        building.check_restored(model, config_lib.replace(run, features_in_model=False), "w")

    # The pipeline's features of the same crops: what load's encoder gives.
    test = pipelines.build_dataset("samples", "test", representation="lbp", image_size=64)
    features, _ = next(iter(test.take(1)))
    features = features.numpy()[:2]
    loaded = keras_invert.load(work_dir)
    assert np.abs(loaded.encode(crops) - features).max() == 0.0
    expected = np.clip(model.decoder(features, training=False), 0.0, 1.0)
    np.testing.assert_allclose(loaded.reconstruct(crops), expected, atol=1e-6)
