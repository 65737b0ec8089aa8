"""Custom Keras layers that the CNN encoders need beyond Keras' own.

* `LocalResponseNormalization`: Caffe's cross-channel LRN (AlexNet's `norm1`,
  `norm2`; supplementary Table 1).
* `ImagePreprocessing`: turns user images (RGB, 0..255, any size) into what a
  pretrained network was trained on (resize and centre crop, channel order,
  mean and scale), inside the model, so the same model serves in `tf.data`,
  in a SavedModel and for gradient-based inversion.

Both are written with `keras.ops` only, so they run on any Keras backend.

Example:
    >>> from keras_invert.encoders.layers import LocalResponseNormalization
    >>> norm = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, k=1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_invert")
class LocalResponseNormalization(layers.Layer):
    """Caffe's `LRN` layer in `ACROSS_CHANNELS` mode, channels last.

    Computes `x / (k + alpha / size * sum_{window} x^2) ** beta`, where the
    window holds `size` channels centred on each channel and is zero-padded at
    the ends. Caffe divides `alpha` by the window size (TensorFlow's
    `tf.nn.local_response_normalization` does not), so the AlexNet
    prototxt's `alpha: 0.0001` is passed here unchanged.

    Args:
        size: number of channels in the window, odd and positive.
        alpha: Caffe's scale parameter (before the division by `size`).
        beta: exponent.
        k: additive constant (Caffe's `k`, TensorFlow's `bias`).
        **kwargs: standard `keras.layers.Layer` arguments (`name`, ...).

    Example:
        >>> norm = LocalResponseNormalization(size=5, name="norm1")
        >>> norm(np.ones((1, 27, 27, 96), "float32")).shape
        TensorShape([1, 27, 27, 96])
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"`size` must be a positive odd integer. Received: size={size!r}")
        self.size = size
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                "LocalResponseNormalization needs a known channel count. "
                f"Received: input_shape={input_shape!r}"
            )
        # A banded 0/1 matrix sums each channel's window in one matmul. It is
        # exact (no cumulative-sum cancellation) and cheap at AlexNet's widths
        # (96 and 256 channels).
        index = np.arange(channels)
        band = (np.abs(index[:, None] - index[None, :]) <= self.size // 2).astype("float32")
        self._window_sum = band
        self.built = True

    def call(self, inputs):
        # float32 even under mixed precision: squared conv1 activations of a
        # trained AlexNet (hundreds) would overflow float16.
        x = ops.cast(inputs, "float32")
        square_sum = ops.matmul(ops.square(x), ops.convert_to_tensor(self._window_sum))
        scale = self.k + (self.alpha / self.size) * square_sum
        return ops.cast(x * ops.power(scale, -self.beta), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k})
        return config


@keras.saving.register_keras_serializable(package="keras_invert")
class ImagePreprocessing(layers.Layer):
    """Maps RGB images in 0..255 to a pretrained network's input convention.

    Steps, in order: cast to float32; if the image is not already
    `image_size` x `image_size`, centre-crop it to a square and resize
    (bilinear, antialiased) to `image_size` (the crop-then-resize form of
    "resize the shorter side, then centre crop"); multiply by `scale`;
    reverse the channel order if `reverse_channels` (RGB -> BGR for Caffe);
    subtract `mean` and divide by `std`, both given in the network's channel
    order. An input that is already `image_size` x `image_size` is not
    resampled, so values pass through exactly.

    Args:
        image_size: side of the square image the network takes (227 for
            Caffe's AlexNet, 224 for torchvision's).
        mean: three per-channel values subtracted after scaling and channel
            reversal.
        std: three per-channel divisors, or `None` for none.
        scale: factor applied to the 0..255 input first (`1/255` for
            torchvision models).
        reverse_channels: whether the network expects BGR.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
        >>> caffe = ImagePreprocessing(227, mean=(104.0, 116.7, 122.7), reverse_channels=True)
        >>> caffe(np.zeros((2, 256, 320, 3), "uint8")).shape
        TensorShape([2, 227, 227, 3])
    """

    def __init__(
        self,
        image_size,
        mean=(0.0, 0.0, 0.0),
        std=None,
        scale=1.0,
        reverse_channels=False,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(
                f"`image_size` must be a positive integer. Received: image_size={image_size!r}"
            )
        self.image_size = image_size
        self.mean = _three_floats("mean", mean)
        self.std = None if std is None else _three_floats("std", std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"`std` must be positive. Received: std={std!r}")
        self.scale = float(scale)
        self.reverse_channels = bool(reverse_channels)

    def call(self, inputs):
        images = ops.cast(inputs, "float32")
        height, width = images.shape[1], images.shape[2]
        # Skipping the resize when the static size already matches keeps the
        # values bit-exact and the graph free of a no-op resample; an unknown
        # size is resampled, which is also exact when it happens to match.
        if (height, width) != (self.image_size, self.image_size):
            # The centre square in integer arithmetic. (Keras 3.15's
            # `crop_to_aspect_ratio=True` computes the crop side as
            # `float32(w * T) / T`; in a graph with an unknown batch size,
            # where TensorFlow rewrites the division as a multiplication by
            # 1/T, a 64-pixel side became 63, and a SavedModel's
            # reconstructions differed from eager ones.)
            shape = ops.shape(images)
            height, width = shape[1], shape[2]
            side = ops.minimum(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            images = images[:, top : top + side, left : left + side, :]
            images = ops.image.resize(
                images,
                (self.image_size, self.image_size),
                interpolation="bilinear",
                antialias=True,
            )
        if self.scale != 1.0:
            images = images * self.scale
        if self.reverse_channels:
            images = ops.flip(images, axis=-1)
        images = images - ops.convert_to_tensor(np.asarray(self.mean, "float32"))
        if self.std is not None:
            images = images / ops.convert_to_tensor(np.asarray(self.std, "float32"))
        return images

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "image_size": self.image_size,
                "mean": list(self.mean),
                "std": None if self.std is None else list(self.std),
                "scale": self.scale,
                "reverse_channels": self.reverse_channels,
            }
        )
        return config


def _three_floats(name: str, value) -> tuple[float, float, float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        raise ValueError(f"`{name}` must be three numbers. Received: {name}={value!r}")
    return tuple(float(v) for v in value)
