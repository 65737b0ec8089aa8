"""Reproduces the paper's findings with one call: train, evaluate, run the experiments, report.

- `plan`: `ReproduceConfig` (the choices) and `jobs` (the decoders to train).
- `driver`: `reproduce(config, data)`, resumable stage by stage.
- `measurements`: the decoders and the optimisation evaluated, stored and
  reused by a rerun.
- `findings`: the six findings judged on the numbers, with plain verdicts.
- `report`: `results.md` with the paper's tables, the findings and the figures.

`launch.reproduce` is the command; docs/reference.md, Reproduction, says what
it trains and how each verdict is reached.
"""

import importlib

__all__ = ["Data", "Finding", "Job", "ReproduceConfig", "assess", "jobs", "reproduce"]

_HOMES = {
    "Data": "driver",
    "reproduce": "driver",
    "Finding": "findings",
    "assess": "findings",
    "Job": "plan",
    "ReproduceConfig": "plan",
    "jobs": "plan",
}


def __getattr__(name):
    # Imported on first use: `plan` needs Keras alone, so a benchmark on an
    # accelerator machine without TensorFlow (JAX) reads the reproduction's
    # schedule from it; the driver needs TensorFlow.
    if name in _HOMES:
        return getattr(importlib.import_module(f"keras_invert.reproduction.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'keras_invert.reproduction' has no attribute {name!r}")
