"""Shared fixtures for the weight importers: random AlexNet weights in Caffe/PyTorch
layout and an independent NumPy forward pass to compare imported models against."""

import types

import numpy as np
import pytest

# Caffe's and torchvision's AlexNet in their own layout: (name, OIHW / [out, in]
# weight shape, stride, pad, groups). Written out here rather than taken from the
# library, so the test checks the library against an independent description.
CAFFE_LAYERS = (
    ("conv1", (96, 3, 11, 11), 4, 0, 1),
    ("conv2", (256, 48, 5, 5), 1, 2, 2),
    ("conv3", (384, 256, 3, 3), 1, 1, 1),
    ("conv4", (384, 192, 3, 3), 1, 1, 2),
    ("conv5", (256, 192, 3, 3), 1, 1, 2),
    ("fc6", (4096, 9216), None, None, None),
    ("fc7", (4096, 4096), None, None, None),
    ("fc8", (1000, 4096), None, None, None),
)
TORCHVISION_LAYERS = (
    ("conv1", (64, 3, 11, 11), 4, 2, 1),
    ("conv2", (192, 64, 5, 5), 1, 2, 1),
    ("conv3", (384, 192, 3, 3), 1, 1, 1),
    ("conv4", (256, 384, 3, 3), 1, 1, 1),
    ("conv5", (256, 256, 3, 3), 1, 1, 1),
    ("fc6", (4096, 9216), None, None, None),
    ("fc7", (4096, 4096), None, None, None),
    ("fc8", (1000, 4096), None, None, None),
)
CAFFE_BGR_MEAN = np.array([104.00698793, 116.66876762, 122.67891434])
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])


def random_parameters(layers, seed):
    """He-scaled random weights, so activations keep a realistic size and LRN matters."""
    rng = np.random.default_rng(seed)
    parameters = {}
    for name, shape, *_ in layers:
        fan_in = int(np.prod(shape[1:]))
        weight = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        bias = rng.standard_normal(shape[0], dtype=np.float32) * np.float32(0.1)
        parameters[name] = (weight, bias)
    return parameters


def conv(x, weight, bias, stride, pad, groups):
    """x [H, W, C]; weight [O, C / groups, kh, kw] (Caffe/PyTorch layout)."""
    x = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out_channels, group_channels, kh, kw = weight.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(0, 1))[
        ::stride, ::stride
    ]  # [oh, ow, C, kh, kw]
    outputs = []
    per_group = out_channels // groups
    for group in range(groups):
        patch = windows[..., group * group_channels : (group + 1) * group_channels, :, :]
        kernel = weight[group * per_group : (group + 1) * per_group]
        outputs.append(np.tensordot(patch, kernel, axes=([2, 3, 4], [1, 2, 3])))
    return np.concatenate(outputs, axis=-1) + bias


def max_pool(x, size=3, stride=2, ceil_mode=True):
    """Caffe rounds the output size up (padding with -inf); PyTorch's default rounds down."""
    height, width, _ = x.shape
    rounding = np.ceil if ceil_mode else np.floor
    out_h = int(rounding((height - size) / stride)) + 1
    out_w = int(rounding((width - size) / stride)) + 1
    pad_h = max(0, (out_h - 1) * stride + size - height)
    pad_w = max(0, (out_w - 1) * stride + size - width)
    x = np.pad(x, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(0, 1))
    return windows[::stride, ::stride].max(axis=(-2, -1))[:out_h, :out_w]


def caffe_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe LRN across channels: alpha is divided by the window size; zero padding."""
    half = size // 2
    padded = np.pad(np.square(x), ((0, 0), (0, 0), (half, half)))
    window_sum = sum(padded[..., i : i + x.shape[-1]] for i in range(size))
    return x / (k + alpha / size * window_sum) ** beta


def relu(x):
    return np.maximum(x, 0)


def reference_forward(image, parameters, variant):
    """The eight representations of one RGB uint8 image at the network's size, in float64."""
    p = {name: tuple(a.astype(np.float64) for a in arrays) for name, arrays in parameters.items()}
    image = image.astype(np.float64)
    if variant == "caffe":
        layers = CAFFE_LAYERS
        x = image[..., ::-1] - CAFFE_BGR_MEAN
    else:
        layers = TORCHVISION_LAYERS
        x = (image / 255.0 - TORCHVISION_MEAN) / TORCHVISION_STD
    caffe = variant == "caffe"
    taps = {}
    for name, _, stride, pad, groups in layers[:5]:
        x = relu(conv(x, *p[name], stride, pad, groups))
        if name in ("conv1", "conv2", "conv5"):
            x = max_pool(x, ceil_mode=caffe)
        if caffe and name in ("conv1", "conv2"):
            x = caffe_lrn(x)
        taps[name] = x
    # Caffe and PyTorch flatten channel-major (C, H, W).
    x = x.transpose(2, 0, 1).reshape(-1)
    for name in ("fc6", "fc7"):
        x = relu(p[name][0] @ x + p[name][1])
        taps[name] = x
    taps["fc8"] = p["fc8"][0] @ x + p["fc8"][1]
    return taps


def max_relative_error(actual, expected):
    """max |actual - expected| / max |expected|: relative to the representation's scale."""
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


@pytest.fixture(scope="session")
def caffe_parameters():
    return random_parameters(CAFFE_LAYERS, seed=0)


@pytest.fixture(scope="session")
def torchvision_parameters():
    return random_parameters(TORCHVISION_LAYERS, seed=1)


@pytest.fixture(scope="session")
def test_image(real_photos):
    """A real photo, centre-cropped to 227 x 227 without resampling (uint8 RGB)."""
    photo = real_photos["astronaut"]  # 512 x 512
    top = (photo.shape[0] - 227) // 2
    return photo[top : top + 227, top : top + 227]


@pytest.fixture(scope="session")
def numpy_alexnet():
    """The NumPy reference, for test modules (which cannot import this conftest)."""
    return types.SimpleNamespace(
        forward=reference_forward,
        max_relative_error=max_relative_error,
        conv=conv,
        max_pool=max_pool,
        caffe_lrn=caffe_lrn,
        caffe_layers=CAFFE_LAYERS,
        torchvision_layers=TORCHVISION_LAYERS,
    )


@pytest.fixture(scope="session")
def caffe_reference(test_image, caffe_parameters):
    return reference_forward(test_image, caffe_parameters, "caffe")


@pytest.fixture(scope="session")
def torchvision_reference(test_image, torchvision_parameters):
    return reference_forward(test_image[:224, :224], torchvision_parameters, "torchvision")
