"""Flags made from a config dataclass: kinds, help, choices and bounds from the class."""

import dataclasses

import pytest
from absl import flags

from launch import config_flags


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Settings of a test run.

    Args:
        steps: total steps.
        rate, momentum: the optimiser's step size and
            momentum, on two lines (the second beginning
            like a field: it is not one).
        name: a label (None: none).
        drops: fractions of `steps`.
        loss: which loss.
        fast: compile the step.
        options: not a flag.
    """

    steps: int = 10
    rate: float = 0.1
    momentum: float | None = None
    name: str | None = None
    drops: tuple[float, ...] = (0.5,)
    loss: str = "pixel"
    fast: bool = False
    options: dict = dataclasses.field(default_factory=dict)


def test_config_flags_take_kind_help_choices_and_bounds_from_the_dataclass():
    values = flags.FlagValues()
    config_flags.define_config_flags(
        _Settings,
        choices={"loss": ("pixel", "perceptual")},
        bounds={"steps": {"lower_bound": 1}},
        skip=("options",),
        flag_values=values,
    )
    assert sorted(values) == ["drops", "fast", "loss", "momentum", "name", "rate", "steps"]
    assert values["momentum"].help == (
        "the optimiser's step size and momentum, on two lines (the second beginning "
        "like a field: it is not one)."
    )
    assert values["steps"].help == "total steps."
    values(["prog", "--steps=3", "--drops=0.5,0.9", "--loss=perceptual", "--fast"])
    assert (values.steps, values.drops, values.loss, values.fast) == (
        3,
        ["0.5", "0.9"],
        "perceptual",
        True,
    )
    assert values["rate"].value is None and not values["rate"].present
    with pytest.raises(flags.IllegalFlagValueError):
        values(["prog", "--steps=0"])
    with pytest.raises(flags.IllegalFlagValueError):
        values(["prog", "--loss=deepsim"])
