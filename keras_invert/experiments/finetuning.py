"""Decoders fine-tuned on perturbed features: the paper's decoder "retrained on perturbed features".

The robustness test (paper section 5.4) decodes binarised and dropped-out
features with the original decoder and with one retrained on features
perturbed that way. `finetune_decoders` trains copies of a decoder further on
perturbed training features; `image_decoder` turns such a copy into the
`decode` function the runners take.

Example:
    >>> tuned = finetune_decoders(decoder, iter(dataset), ["binarised"], steps=500)
    >>> model, losses = tuned["binarised"]
    >>> images = image_decoder(model)(binarize(test_features))
"""

from __future__ import annotations

import numpy as np

from keras_invert import loading
from keras_invert.experiments.perturbations import PERTURBATIONS, perturb


def finetune_decoders(
    decoder,
    batches,
    perturbations=PERTURBATIONS,
    *,
    steps: int,
    learning_rate: float = 1e-4,
    dropout_rate: float = 0.5,
    keep_norm: bool = True,
    seed: int | None = 0,
) -> dict:
    """Copies of `decoder` trained further on perturbed features, one per perturbation.

    The paper decodes perturbed features with the original decoder and with
    one "retrained on perturbed features" (section 5.4). Here each such
    decoder starts from the original's weights (fine-tuning, choice) and
    takes `steps` Adam steps on the training loss (mean squared pixel error),
    all of them on the same batches, each batch's features perturbed afresh:
    batch `i`'s dropout mask comes from the seed `[seed, 1, i]`, never the
    test mask's `seed`. `decoder` itself is left untouched.

    Args:
        decoder: a Keras model, features -> images (targets in [0, 1]).
        batches: an iterable of `(features, targets)` batches (NumPy or
            tensors) of unperturbed features, as the encoder gives them, and
            their target images; at least `steps` of them.
        perturbations: names from `PERTURBATIONS`.
        steps: optimiser steps of each copy.
        learning_rate: Adam's step size (the paper's is not known; 1e-4 is
            the rate found safe on small data: docs/reference.md, Training).
        dropout_rate, keep_norm: the "dropout" perturbation's arguments.
        seed: seeds the dropout masks; None: random.

    Returns:
        perturbation -> `(finetuned, losses)`: the compiled copy and its
        loss at every step.

    Example:
        >>> tuned = finetune_decoders(decoder, iter(dataset), ["binarised"], steps=500)
        >>> model, losses = tuned["binarised"]
        >>> images = image_decoder(model)(binarize(test_features))
    """
    import keras

    perturbations = list(perturbations)
    unknown = [name for name in perturbations if name not in PERTURBATIONS]
    if unknown or not perturbations:
        raise ValueError(
            f"Expected perturbations from {PERTURBATIONS}. "
            f"Received: perturbations={perturbations!r}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"Expected a positive number of steps. Received: steps={steps!r}")
    tuned = {}
    for name in perturbations:
        copy = keras.models.clone_model(decoder)
        copy.set_weights(decoder.get_weights())
        copy.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="mean_squared_error",
            jit_compile=False,
        )
        tuned[name] = (copy, [])
    iterator = iter(batches)
    for step in range(steps):
        try:
            features, images = next(iterator)
        except StopIteration:
            raise ValueError(
                f"The batches ran out after {step} steps. Received: steps={steps!r}"
            ) from None
        features, images = np.asarray(features), np.asarray(images, np.float32)
        for name, (copy, losses) in tuned.items():
            changed = perturb(
                features,
                name,
                dropout_rate=dropout_rate,
                keep_norm=keep_norm,
                seed=None if seed is None else [seed, 1, step],
            )
            loss = copy.train_on_batch(changed, images)
            losses.append(float(np.asarray(loss).reshape(-1)[0]))
    return tuned


def image_decoder(model, batch_size: int = 16):
    """`features -> [N, T, T, 3]` in [0, 1] with a Keras decoder (what runners call `decode`).

    Calls the model on batches directly (`loading.batched`).
    """

    def decode(features):
        features = np.asarray(features, np.float32)
        outputs = loading.batched(lambda batch: model(batch, training=False), features, batch_size)
        return np.clip(outputs, 0.0, 1.0)

    return decode
