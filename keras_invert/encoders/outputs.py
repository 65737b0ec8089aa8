"""The named outputs of an encoder: choosing taps, checking tap lists and input sizes.

The encoders (`alexnet`, `efficientnet_lite0`, `from_keras`) return a dict of
named representations; these helpers are what they share about that dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras


def select_outputs(
    model: keras.Model, outputs: Sequence[str], name: str | None = None
) -> keras.Model:
    """Returns a model sharing `model`'s layers with only the named outputs.

    Layers no requested output depends on are left out, so
    `select_outputs(encoder, ["conv2"])` does not compute the fully connected
    layers. The new model shares weights with `model`.

    Args:
        model: a model with dict outputs, e.g. from `alexnet()` or `efficientnet_lite0()`.
        outputs: output names to keep, e.g. `["conv5"]`.
        name: name of the new model; defaults to `model.name` plus the taps.

    Example:
        >>> from keras_invert.encoders import alexnet
        >>> full = alexnet("caffe", weights="caffenet.weights.h5")
        >>> conv5 = select_outputs(full, ["conv5"])
    """
    available = model.output
    if not isinstance(available, Mapping):
        raise ValueError(f"`model` must have dict outputs. Received: model={model.name!r}")
    outputs = validate_outputs(outputs, tuple(available))
    return keras.Model(
        model.input,
        {output: available[output] for output in outputs},
        name=name or f"{model.name}_{'_'.join(outputs)}",
    )


def validate_outputs(outputs, available: tuple[str, ...]) -> list[str]:
    """`outputs` as a list, checked to be distinct names among `available`."""
    if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
        raise ValueError(
            f"`outputs` must be a non-empty list of names. Received: outputs={outputs!r}"
        )
    outputs = list(outputs)
    if any(output not in available for output in outputs):
        raise ValueError(
            f"`outputs` must name outputs among {available}. Received: outputs={outputs!r}"
        )
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"`outputs` has duplicates. Received: outputs={outputs!r}")
    return outputs


def static_input_size(input_size) -> tuple[int | None, int | None]:
    """`(height, width)` of an encoder's `input_size` argument; `(None, None)` for any size."""
    if input_size is None:
        return None, None
    if isinstance(input_size, int) and not isinstance(input_size, bool) and input_size > 0:
        return input_size, input_size
    if (
        isinstance(input_size, Sequence)
        and len(input_size) == 2
        and all(isinstance(side, int) and side > 0 for side in input_size)
    ):
        return tuple(input_size)
    raise ValueError(
        "`input_size` must be None, a positive int or (height, width). "
        f"Received: input_size={input_size!r}"
    )
