"""The optimiser of a run: learning-rate schedules, weight averaging and their config fields."""

import numpy as np
import pytest

from keras_invert import config as config_lib
from keras_invert import optimizers


def _rates(config, steps):
    schedule = optimizers.learning_rate_schedule(config)
    return [float(schedule(step)) for step in steps]


def test_cosine_schedule_warms_up_from_zero_then_decays_to_zero():
    run = config_lib.TrainConfig(steps=120, learning_rate=1e-3, schedule="cosine", warmup_steps=20)
    # Warm-up 0 -> 1e-3 over steps 0..20, then half a cosine over the 100 steps left.
    got = _rates(run, [0, 10, 20, 70, 120, 500])
    np.testing.assert_allclose(got, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    without_warmup = config_lib.replace(run, warmup_steps=0)
    np.testing.assert_allclose(
        _rates(without_warmup, [0, 30, 60, 90, 120]),
        1e-3 * 0.5 * (1 + np.cos(np.pi * np.array([0, 30, 60, 90, 120]) / 120)),
        atol=1e-9,
    )


def test_optimizer_averages_the_weights_only_when_asked():
    run = config_lib.TrainConfig(steps=10, ema_momentum=0.999)
    assert optimizers.build_optimizer(run).use_ema
    assert optimizers.build_optimizer(run).ema_momentum == 0.999
    assert not optimizers.build_optimizer(run, average=False).use_ema
    assert not optimizers.build_optimizer(config_lib.TrainConfig(steps=10)).use_ema


@pytest.mark.parametrize(
    "changes, match",
    [
        (dict(schedule="linear"), "schedule in"),
        (dict(schedule="cosine", warmup_steps=10), r"warmup_steps a whole number in \[0, steps\)"),
        (dict(schedule="cosine", warmup_steps=-1), "warmup_steps"),
        (dict(schedule="cosine", warmup_steps=2.5), "warmup_steps"),
        (dict(warmup_steps=3), "warmup_steps belongs to schedule='cosine'"),
        (dict(ema_momentum=1.0), r"ema_momentum in \(0, 1\)"),
        (dict(ema_momentum=0.0), "ema_momentum"),
        (dict(discriminator_pause_ratio=-0.1), "discriminator_pause_ratio >= 0"),
        (dict(discriminator_pause_ratio=float("nan")), "discriminator_pause_ratio"),
    ],
)
def test_schedule_and_averaging_fields_are_validated(changes, match):
    with pytest.raises(ValueError, match=match):
        config_lib.TrainConfig(steps=10, **changes)
