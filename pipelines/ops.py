"""Per-example tf.data ops: read, decode, crop, flip, jitter and make the target.

Every op used in `Dataset.map` takes an example dict and returns a new one, so
the builder reads as a list of steps. Keys:

- "path": file name (string scalar), set by the file sources;
- "bytes": the encoded image (string scalar), set by `read` or by TFDS;
- "seed": `[2]` integer key of the stateless random ops of this example;
- "image": float32 `[H, W, 3]` in 0..255 (after `decode`), `[S, S, 3]` after a crop;
- "target": float32 `[T, T, 3]` in 0..1, the decoder's training target.

Decoding, crops, resizing and the target are `keras_invert.images`, the one
definition that serving and evaluation use as well; these ops only move
dict entries. A crop refuses an image with NaN or Inf values (an
`InvalidArgumentError` inside tf.data).

Example:
    >>> example = decode(read({"path": tf.constant("photo.jpg")}))
    >>> example = center_crop(example, image_size=128)   # example["image"]: [128, 128, 3]
"""

from __future__ import annotations

import tensorflow as tf

from keras_invert import images


def read(example: dict) -> dict:
    """Adds "bytes": the contents of the file at "path"."""
    return {**example, "bytes": tf.io.read_file(example["path"])}


def decode(example: dict) -> dict:
    """Replaces "bytes" by "image", float32 `[H, W, 3]` in 0..255 (`images.decode`)."""
    example = dict(example)
    example["image"] = images.decode(example.pop("bytes"))
    return example


def center_crop(example: dict, image_size: int) -> dict:
    """The centre square of the full short side, resized to `image_size` (evaluation)."""
    return {**example, "image": images.center_crop(example["image"], image_size)}


def random_crop(example: dict, image_size: int, min_crop_scale: float, flip: bool = True) -> dict:
    """A random crop keyed by `example["seed"]`, resized and flipped (`images.random_crop`)."""
    crop = images.random_crop(example["image"], image_size, example["seed"], min_crop_scale, flip)
    return {**example, "image": crop}


def decode_random_crop(
    example: dict, image_size: int, min_crop_scale: float, flip: bool = True
) -> dict:
    """Replaces "bytes" by `random_crop`'s "image", decoding only its window of a JPEG.

    The same crop as `random_crop(decode(example))` (`images.decode_random_crop`).
    """
    example = dict(example)
    contents = example.pop("bytes")
    example["image"] = images.decode_random_crop(
        contents, image_size, example["seed"], min_crop_scale, flip
    )
    return example


def color_jitter(example: dict, strength: float) -> dict:
    """Random photometric change of the crop (training), keyed by `example["seed"]`.

    Saturation x uniform(1 - 0.6s, 1 + 0.6s), hue + uniform(-0.08s, 0.08s),
    contrast x uniform(1 - 0.4s, 1 + 0.4s), brightness + uniform(-0.15s, 0.15s)
    (s = `strength`, image in 0..1 while jittered). The features and the target
    are both computed from the jittered crop: HOG and LBP are nearly blind to
    colour and brightness, so with few photos this stops the decoder from
    memorising their palettes (docs/reference.md, Training).
    """
    image = example["image"] / 255.0
    draws = tf.random.stateless_uniform(
        [4], seed=tf.random.experimental.stateless_fold_in(example["seed"], 7), minval=-1.0
    )
    image = tf.image.adjust_saturation(image, 1.0 + 0.6 * strength * draws[0])
    image = tf.image.adjust_hue(image, 0.08 * strength * draws[1])
    mean = tf.reduce_mean(image)
    image = (image - mean) * (1.0 + 0.4 * strength * draws[2]) + mean
    image = image + 0.15 * strength * draws[3]
    return {**example, "image": tf.clip_by_value(image, 0.0, 1.0) * 255.0}


def add_target(example: dict, target_size: int) -> dict:
    """Adds "target": the (cropped) image at `target_size`, in 0..1 (`images.target`)."""
    return {**example, "target": images.target(example["image"], target_size)}
