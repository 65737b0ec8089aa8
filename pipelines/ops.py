"""Per-example tf.data ops: read, decode, crop, resize, flip and make the target.

Every op used in `Dataset.map` takes an example dict and returns a new one, so
the builder reads as a list of steps. Keys:

- "path": file name (string scalar), set by the file sources;
- "bytes": the encoded image (string scalar), set by `read` or by TFDS;
- "seed": `[2]` integer key of the stateless random ops of this example;
- "image": float32 `[H, W, 3]` in 0..255 (after `decode`), `[S, S, 3]` after a crop;
- "target": float32 `[T, T, 3]` in 0..1, the decoder's training target.

Decoding (choice): `tf.io.decode_image` at 16 bits per channel, divided by 257,
so 8-bit files give their exact integer values and 16-bit PNGs are scaled to
0..255. Grayscale is repeated to 3 channels; the alpha channel of gray+alpha
and RGBA images is dropped (not composited). Animated GIFs give their first frame.

Crops are square with a side taken from the image's short side, then resized
to `image_size` with antialiased bilinear filtering, so images of any size
(even 1 pixel) work: small images are upscaled.

Example:
    >>> example = decode(read({"path": tf.constant("photo.jpg")}))
    >>> example = center_crop(example, image_size=128)   # example["image"]: [128, 128, 3]
"""

from __future__ import annotations

import tensorflow as tf

# For 1, 2, 3, 4 decoded channels: which to keep, as RGB.
_UINT16_PER_UINT8 = 257.0  # 65535 / 255: decode_image widens 8-bit values by x * 257.


def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """`[H, W, C]` with C in 1..4 and any integer/float dtype -> float32 RGB.

    Integer images keep their value range (uint8 stays 0..255; uint16 is
    divided by 257 to 0..255). Gray is repeated, alpha is dropped.
    """
    image = tf.convert_to_tensor(image)
    scale = _UINT16_PER_UINT8 if image.dtype == tf.uint16 else 1.0
    channels = tf.shape(image)[-1]
    tf.debugging.assert_less_equal(channels, 4, message="Expected at most 4 image channels")
    # A slice, not tf.gather on the channel axis, and the cast after it: the
    # gather cost ~8 ms per decoded photo on a CPU core, half of the streaming
    # pipeline's CPU time (`python -m launch.benchmark`).
    rgb = tf.cond(
        channels >= 3,
        lambda: image[..., :3],  # RGB, RGBA: alpha dropped.
        lambda: tf.concat([image[..., :1]] * 3, axis=-1),  # Gray, gray + alpha.
    )
    return tf.ensure_shape(tf.cast(rgb, tf.float32) / scale, [None, None, 3])


def decode_image(contents: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> float32 `[H, W, 3]` in 0..255.

    Raises `tf.errors.InvalidArgumentError` for data that does not decode
    (corrupt, truncated, empty); the builder drops such examples.
    """
    image = tf.io.decode_image(contents, channels=0, dtype=tf.uint16, expand_animations=False)
    return to_rgb(image)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Square resize with antialiased bilinear filtering, values clipped to 0..255."""
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)


def read(example: dict) -> dict:
    """Adds "bytes": the contents of the file at "path"."""
    return {**example, "bytes": tf.io.read_file(example["path"])}


def decode(example: dict) -> dict:
    """Replaces "bytes" by "image", float32 `[H, W, 3]` in 0..255."""
    example = dict(example)
    example["image"] = decode_image(example.pop("bytes"))
    return example


def center_crop(example: dict, image_size: int) -> dict:
    """The centre square of the full short side, resized to `image_size` (evaluation)."""
    image = example["image"]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[top : top + side, left : left + side]
    return {**example, "image": resize(crop, image_size)}


def random_crop(example: dict, image_size: int, min_crop_scale: float, flip: bool = True) -> dict:
    """A random square crop, resized to `image_size`, randomly flipped (training).

    Side = uniform(min_crop_scale, 1) x short side, at a uniform position;
    horizontal flip with probability 1/2. All draws are stateless, keyed by
    `example["seed"]`, so the crop is a pure function of the image and the key.
    """
    image = example["image"]
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    draws = tf.random.stateless_uniform([4], seed=example["seed"])
    short = tf.minimum(height, width)
    scale = min_crop_scale + (1.0 - min_crop_scale) * draws[0]
    side = tf.cast(tf.round(scale * tf.cast(short, tf.float32)), tf.int32)
    side = tf.clip_by_value(side, 1, short)

    def offset(extent, draw):
        room = extent - side
        return tf.minimum(tf.cast(draw * tf.cast(room + 1, tf.float32), tf.int32), room)

    top, left = offset(height, draws[1]), offset(width, draws[2])
    crop = resize(image[top : top + side, left : left + side], image_size)
    if flip:
        crop = tf.cond(draws[3] < 0.5, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    return {**example, "image": crop}


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
    """Adds "target": the (cropped) image resized to `target_size`, in 0..1.

    Downsampling uses area averaging, upsampling bilinear; equal sizes copy.
    """
    image = example["image"]
    if image.shape[0] != target_size:
        method = "area" if image.shape[0] > target_size else "bilinear"
        image = tf.image.resize(image, [target_size, target_size], method=method)
    target = tf.clip_by_value(image / 255.0, 0.0, 1.0)
    return {**example, "target": target}
