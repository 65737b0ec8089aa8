"""Image preparation: the one definition that training, serving and evaluation share.

Every path from a photo to an encoder's input or a decoder's target goes
through these functions: the training pipelines (`pipelines.ops`), the
export's image signatures, `launch.reconstruct`, `launch.evaluate` and
`keras_invert.experiments`. So a photo served to an export is cropped and
resized exactly as the evaluation pipeline crops it, and every target is made
the same way.

- `decode`: encoded JPEG/PNG/GIF/BMP/WebP bytes -> float32 `[H, W, 3]` in
  0..255. Decoded at 16 bits per channel and divided by 257, so 8-bit files
  give their exact integer values and 16-bit PNGs are scaled to 0..255.
  Grayscale is repeated to 3 channels; the alpha channel of gray+alpha and
  RGBA images is dropped (not composited). Animated GIFs give their first frame.
- `center_crop`: the centre square of the full short side, resized (evaluation,
  serving); `random_crop`: a random square at a random scale, resized and
  randomly flipped (training); `decode_random_crop`: the same crop of encoded
  bytes, decoding only its window of a JPEG.
- `resize`: antialiased bilinear, clipped to 0..255: the one filter of the
  crops, downscaling and upscaling alike (images of any size, even 1 pixel,
  work: small ones are upscaled).
- `target`: crops at a decoder's output side, in [0, 1]: the area average
  when the side is smaller (the photo at the decoder's resolution), else
  `resize`.
- `prepare`: a batch as an export's image signatures take it (uint8 or float
  0..255, 1, 3 or 4 channels, any size) -> centre crops; `map_prepared`
  applies a function to them, handing it the raw centre squares where it
  prepares them itself (`prepared_pixels`).

What a caller's arrays must be is checked by `keras_invert.image_checks`:
`prepare` checks the batch's dtype and shape (`check_photos`), and the crops
refuse NaN and Inf in their input (`check_finite`), so every path above
refuses them. (XLA drops assertions: the pipelines check the crops before
their compiled feature ops.)

Example:
    >>> from keras_invert import images
    >>> photo = images.decode(tf.io.read_file("photo.jpg"))  # [H, W, 3] 0..255
    >>> crop = images.center_crop(photo, 128)                 # [128, 128, 3]
    >>> target = images.target(crop, 64)                      # [64, 64, 3] in [0, 1]
"""

from __future__ import annotations

import tensorflow as tf

from keras_invert.image_checks import PIXEL_MAX, check_finite, check_photos

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
"""Photo files by name (any case): what `decode` reads, and folder sources list."""

_UINT16_PER_UINT8 = 257.0  # 65535 / 255: decode widens 8-bit values by x * 257.


def _clip_pixels(values: tf.Tensor) -> tf.Tensor:
    """Float pixels clipped to 0..255, the range of every crop."""
    return tf.clip_by_value(values, 0.0, PIXEL_MAX)


def prepared_pixels(squares) -> tf.Tensor:
    """A raw centre square's pixels (uint8 or float32) -> float32 as `prepare` makes them.

    For an encoder that prepares the squares `map_prepared` hands it inside
    its own compiled step (`Representation.prepares_crops`), where the
    conversion fuses with its first pass: uint8 is converted to float32;
    float is clipped to 0..255, channel by channel, with NaN where a value is
    NaN or Inf. XLA drops assertions and the clip would turn Inf into 255,
    so the NaN carries a bad pixel into every value computed from it, and a
    `check_finite` of those values after the compiled step refuses the photo
    as `prepare` does.
    """
    squares = tf.convert_to_tensor(squares)
    pixels = tf.cast(squares, tf.float32)
    if squares.dtype == tf.uint8:
        return pixels
    nan = tf.constant(float("nan"), tf.float32)
    return tf.where(tf.math.is_finite(pixels), _clip_pixels(pixels), nan)


def _rgb_channels(images: tf.Tensor) -> tf.Tensor:
    """`[..., H, W, C]` with C in 1..4 -> its RGB channels in the same dtype.

    Gray is repeated, alpha is dropped. A slice, not tf.gather on the
    channel axis, and before any cast: the gather cost ~8 ms per decoded
    photo on a CPU core, half of the streaming pipeline's CPU time
    (`python -m launch.benchmark`).
    """
    channels = tf.shape(images)[-1]
    tf.debugging.assert_less_equal(channels, 4, message="Expected at most 4 image channels")
    rgb = tf.cond(
        channels >= 3,
        lambda: images[..., :3],  # RGB, RGBA: alpha dropped.
        lambda: tf.concat([images[..., :1]] * 3, axis=-1),  # Gray, gray + alpha.
    )
    return tf.ensure_shape(rgb, [None] * (images.shape.rank - 1) + [3])


def to_rgb(images) -> tf.Tensor:
    """`[..., H, W, C]` with C in 1..4 and any integer/float dtype -> float32 RGB.

    Integer images keep their value range (uint8 stays 0..255; uint16 is
    divided by 257 to 0..255). Gray is repeated, alpha is dropped.
    """
    images = tf.convert_to_tensor(images)
    rgb = tf.cast(_rgb_channels(images), tf.float32)
    return rgb / _UINT16_PER_UINT8 if images.dtype == tf.uint16 else rgb


def decode(contents) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> float32 `[H, W, 3]` in 0..255.

    Raises `tf.errors.InvalidArgumentError` for data that does not decode
    (corrupt, truncated, empty); the pipelines drop such examples.
    """
    contents = tf.convert_to_tensor(contents, tf.string)

    def decoded(dtype):
        image = tf.io.decode_image(contents, channels=0, dtype=dtype, expand_animations=False)
        return to_rgb(image)

    # Only PNG holds 16-bit photos. The other formats are decoded at their 8
    # bits: widened to 16, TensorFlow scales them by 256 (not 257), which would
    # darken every value by up to one level against the same photo sent as
    # uint8 (and WebP at 16 bits is an error, not a widening).
    png = tf.strings.substr(contents, 0, 8) == b"\x89PNG\r\n\x1a\n"
    return tf.cond(png, lambda: decoded(tf.uint16), lambda: decoded(tf.uint8))


def resize(images, size: int, *, in_range: bool = False) -> tf.Tensor:
    """Square resize of `[H, W, 3]` or `[N, H, W, 3]` images: antialiased bilinear, 0..255.

    The antialiased filter widens with the downscaling factor (it averages
    like area resizing) and is plain bilinear when upscaling. At the same size
    it is an exact identity, so images already `size` x `size` are only
    clipped (the resize kernel costs ~1 ms per 256x256 image on a CPU core),
    and not even that when `in_range` says they are in 0..255 already
    (converted integer photos).
    """
    images = tf.convert_to_tensor(images)

    def same():
        return images if in_range else _clip_pixels(images)

    def resized():
        return _clip_pixels(
            tf.image.resize(images, [size, size], method="bilinear", antialias=True)
        )

    height, width = images.shape[-3], images.shape[-2]
    if height == size and width == size:
        return same()
    if height is not None and width is not None:
        return resized()
    shape = tf.shape(images)
    output = tf.cond(
        tf.logical_and(tf.equal(shape[-3], size), tf.equal(shape[-2], size)), same, resized
    )
    # The static side, as the resize alone gives it: the feature ops trace
    # their fast path for a known image size.
    output.set_shape(images.shape[:-3].concatenate([size, size]).concatenate(images.shape[-1:]))
    return output


def _center_square(images) -> tf.Tensor:
    """The centre square of the full short side of `[H, W, C]` or `[N, H, W, C]` images."""
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return images[..., top : top + side, left : left + side, :]


def center_crop(images, size: int) -> tf.Tensor:
    """The centre square of the full short side, resized to `size` (evaluation, serving).

    Args:
        images: float `[H, W, 3]` or `[N, H, W, 3]` in 0..255, finite.
        size: side of the output.
    """
    return resize(_center_square(check_finite(images)), size)


def _random_window(height, width, seed, min_crop_scale: float):
    """`random_crop`'s draws for an image of `height` x `width`: top, left, side, flipped."""
    draws = tf.random.stateless_uniform([4], seed=seed)
    short = tf.minimum(height, width)
    scale = min_crop_scale + (1.0 - min_crop_scale) * draws[0]
    side = tf.cast(tf.round(scale * tf.cast(short, tf.float32)), tf.int32)
    side = tf.clip_by_value(side, 1, short)

    def offset(extent, draw):
        room = extent - side
        return tf.minimum(tf.cast(draw * tf.cast(room + 1, tf.float32), tf.int32), room)

    return offset(height, draws[1]), offset(width, draws[2]), side, draws[3] < 0.5


def _resized_window(window, size: int, flipped, flip: bool) -> tf.Tensor:
    crop = resize(window, size)
    if flip:
        crop = tf.cond(flipped, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    return crop


def random_crop(image, size: int, seed, min_crop_scale: float, flip: bool = True) -> tf.Tensor:
    """A random square crop of `[H, W, 3]`, resized to `size`, randomly flipped (training).

    Side = uniform(min_crop_scale, 1) x short side, at a uniform position;
    horizontal flip with probability 1/2. All draws are stateless, keyed by
    `seed` (`[2]` integers), so the crop is a pure function of the image and the key.
    """
    image = check_finite(image)
    top, left, side, flipped = _random_window(
        tf.shape(image)[0], tf.shape(image)[1], seed, min_crop_scale
    )
    return _resized_window(image[top : top + side, left : left + side], size, flipped, flip)


def decode_random_crop(
    contents, size: int, seed, min_crop_scale: float, flip: bool = True
) -> tf.Tensor:
    """`random_crop(decode(contents), ...)`, decoding only the crop's window of a JPEG.

    A JPEG's size is read from its header, the window drawn as `random_crop`
    draws it, and only the window is decoded (`tf.io.decode_and_crop_jpeg`),
    bit-identical to decoding the whole photo and cropping it. Other formats
    are decoded whole. Raises `tf.errors.InvalidArgumentError` for data that
    does not decode.
    """
    contents = tf.convert_to_tensor(contents, tf.string)

    def jpeg():
        shape = tf.io.extract_jpeg_shape(contents)
        top, left, side, flipped = _random_window(shape[0], shape[1], seed, min_crop_scale)
        # One column more on each side where the photo has it: libjpeg upsamples
        # the chroma of a window's first and last columns as if they were the
        # photo's edge (off by up to ~20 levels), so those are decoded and dropped.
        first = tf.maximum(left - 1, 0)
        last = tf.minimum(left + side + 1, shape[1])
        window = tf.io.decode_and_crop_jpeg(contents, tf.stack([top, first, side, last - first]))
        window = window[:, left - first : left - first + side]
        return _resized_window(to_rgb(window), size, flipped, flip)

    def other():
        return random_crop(decode(contents), size, seed, min_crop_scale, flip)

    return tf.cond(tf.io.is_jpeg(contents), jpeg, other)


def target(crops, size: int) -> tf.Tensor:
    """Crops (0..255, `[S, S, 3]` or `[N, S, S, 3]`) as a decoder's target: side `size`, [0, 1].

    The training target, the evaluation original and the experiments'
    original are all this. A smaller target is the area average (each
    target pixel the mean of the crop pixels it covers), a larger one the
    crop `resize`d; equal sizes are not resampled.
    """
    crops = tf.convert_to_tensor(crops, tf.float32)
    side = crops.shape[-2]
    if side is not None and size < side:
        crops = tf.image.resize(crops, [size, size], method="area")
    elif side != size:
        crops = resize(crops, size)
    return tf.clip_by_value(crops / 255.0, 0.0, 1.0)


def prepare(images, size: int) -> tf.Tensor:
    """A batch as an export's image signatures take it -> float32 `[N, size, size, 3]` 0..255.

    Args:
        images: `[N, H, W, C]`, uint8 or float 0..255, C = 1 (gray), 3 (RGB)
            or 4 (RGBA: alpha dropped), any H and W.
        size: the training image size.

    The centre crop of each image, as `center_crop` makes the evaluation
    crops. Checked in the graph: the channel count, non-empty images, finite values.
    """
    return _centre_crops(check_photos(images), size)


def _centre_crops(images: tf.Tensor, size: int) -> tf.Tensor:
    # Cut the square first and convert only it: `center_crop(to_rgb(images))`
    # to the value, without casting and checking the pixels the crop drops
    # (the finiteness check still sees every pixel of a float image).
    square = to_rgb(_center_square(check_finite(images)))
    return resize(square, size, in_range=images.dtype in (tf.uint8, tf.uint16))


def _outside_square(images: tf.Tensor) -> tf.Tensor:
    """The pixels of `[N, H, W, C]` images that their centre square drops, flattened."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    margins = [
        images[:, :top],
        images[:, top + side :],
        images[:, :, :left],
        images[:, :, left + side :],
    ]
    return tf.concat([tf.reshape(margin, [-1]) for margin in margins], axis=0)


def map_prepared(images, size: int, function, *, prepares_crops: bool = False) -> tf.Tensor:
    """`function(prepare(images, size))`, or the raw centre squares where `function` takes them.

    The centre square of a photo whose short side is `size` needs no
    resampling: `prepare` only converts a uint8 square to float32, and checks
    and clips a float one. With `prepares_crops`, `function` (an encoder that
    does this itself with `prepared_pixels`, `Representation.prepares_crops`)
    gets the square as sent, uint8 or float32, so an XLA-compiled feature op
    prepares it in its first pass and the float crop is never written. The
    values it sees are the same. The pixels that the square drops are still
    checked here, so a photo with NaN or Inf anywhere is refused as `prepare`
    refuses it. Other photos and dtypes go through `prepare`.

    Args:
        images: as for `prepare`.
        size: the training image size.
        function: float32 `[N, size, size, 3]` 0..255 crops -> a tensor.
        prepares_crops: whether `function` also takes uint8 and raw float32
            `[N, size, size, 3]` centre squares and prepares them itself.
    """
    images = check_photos(images)
    if not prepares_crops or images.dtype not in (tf.uint8, tf.float32):
        return function(_centre_crops(images, size))
    shape = tf.shape(images)

    def as_sent():
        photos = images
        if images.dtype.is_floating:
            with tf.control_dependencies([check_finite(_outside_square(images))]):
                photos = tf.identity(images)
        square = _rgb_channels(_center_square(photos))
        return function(tf.ensure_shape(square, [None, size, size, 3]))

    return tf.cond(
        tf.equal(tf.minimum(shape[1], shape[2]), size),
        as_sent,
        lambda: function(_centre_crops(images, size)),
    )
