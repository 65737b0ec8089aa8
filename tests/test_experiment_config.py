"""What one experiment runs (keras_invert.experiments.ExperimentConfig) and its checks."""

import re

import pytest

from keras_invert import experiments

PHOTOS = ["a.png", "b.png", "c.png"]


def test_settings_are_every_field_but_what_ran_on_what():
    config = experiments.ExperimentConfig("layers", models=["runs/hog"], photos=PHOTOS)
    settings = config.settings()
    assert not {"name", "models", "photos", "out"} & set(settings)
    assert settings["pair"] == (0, 1) and settings["retrain_steps"] == 0
    assert config.compared == []  # compare is autoencoder_vs_fixed's alone.
    pair = experiments.ExperimentConfig("autoencoder_vs_fixed", models=["f", "a"], photos=PHOTOS)
    assert pair.compared == list(experiments.COMPARED)


@pytest.mark.parametrize(
    "name, fields, message",
    [
        ("noise", {}, "name='noise'"),
        ("autoencoder_vs_fixed", {"compare": ["layers"]}, "compare=['layers']"),
        ("layers", {"retrain_steps": 2}, "retrain_steps=2"),
        ("autoencoder_vs_fixed", {"compare": [], "retrain_steps": 2}, "retrain_steps"),
        ("layers", {"photos": PHOTOS[:1]}, "at least two photos"),
        ("interpolation", {"pair": (0, 3)}, "indices below 3. Received: pair=(0, 3)"),
        ("interpolation", {"pair": (1, 1)}, "two different photo indices below 3"),
    ],
)
def test_a_config_that_cannot_run_is_refused(name, fields, message):
    fields = {"models": ["runs/hog"], "photos": PHOTOS, **fields}
    with pytest.raises(ValueError, match=re.escape(message)):
        experiments.ExperimentConfig(name, **fields)
