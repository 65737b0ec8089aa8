"""Reproduces the paper's findings with one call: train, evaluate, run the experiments, report.

- `plan`: `ReproduceConfig` (the choices) and `jobs` (the decoders to train).
- `driver`: `reproduce(config, data)`, resumable stage by stage.
- `findings`: the six findings judged on the numbers, with plain verdicts.
- `report`: `results.md` with the paper's tables, the findings and the figures.

`launch.reproduce` is the command; docs/reference.md, Reproduction, says what
it trains and how each verdict is reached.
"""

from keras_invert.reproduction.driver import Data, reproduce
from keras_invert.reproduction.findings import Finding, assess
from keras_invert.reproduction.plan import Job, ReproduceConfig, jobs

__all__ = ["Data", "Finding", "Job", "ReproduceConfig", "assess", "jobs", "reproduce"]
