"""A run's optimiser: Adam on its learning-rate schedule, with optional weight averaging.

Implements docs/reference.md, Learning rate. Needs Keras and the config
alone (no TensorFlow), so a decoder trains with the run's exact optimiser on
any Keras backend: `keras_invert.building` compiles the training models with
it, and the benchmarks that run on an accelerator machine without TensorFlow
(JAX) use it too.

Example:
    >>> from keras_invert import config, optimizers
    >>> run = config.TrainConfig(steps=1000, learning_rate=1e-3, learning_rate_drops=(0.7,))
    >>> float(optimizers.learning_rate_schedule(run)(800))
    0.0001
"""

from __future__ import annotations

import keras

from keras_invert.config import TrainConfig


def build_optimizer(config: TrainConfig, average: bool = True) -> keras.optimizers.Optimizer:
    """Adam on the run's learning-rate schedule, averaging the weights when `ema_momentum` is set.

    Args:
        config: the run's configuration.
        average: keep the weights' moving average (`config.ema_momentum`);
            False for the "deepsim" discriminator, which nothing uses after training.
    """
    momentum = config.ema_momentum if average else None
    return keras.optimizers.Adam(
        learning_rate_schedule(config),
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        use_ema=momentum is not None,
        ema_momentum=momentum or 0.99,  # Keras's default; unused without EMA.
    )


def learning_rate_schedule(config: TrainConfig):
    """The rate as a function of the optimiser's step (docs/reference.md, Learning rate).

    "step": `learning_rate` divided by 10 after each fraction in
    `learning_rate_drops`. "cosine": from 0 linearly up to `learning_rate`
    over `warmup_steps`, then half a cosine down to 0 at `steps`. A function
    of the step alone, saved with the optimiser: a resumed run continues it
    exactly.
    """
    schedules = keras.optimizers.schedules
    if config.schedule == "cosine":
        decay_steps = config.steps - config.warmup_steps
        if not config.warmup_steps:
            return schedules.CosineDecay(config.learning_rate, decay_steps)
        return schedules.CosineDecay(
            0.0,
            decay_steps,
            warmup_target=config.learning_rate,
            warmup_steps=config.warmup_steps,
        )
    boundaries = sorted({max(1, int(f * config.steps)) for f in config.learning_rate_drops})
    if not boundaries:
        return config.learning_rate
    values = [config.learning_rate / 10**i for i in range(len(boundaries) + 1)]
    return schedules.PiecewiseConstantDecay(boundaries, values)
