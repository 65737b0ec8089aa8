"""Fixtures of the pipeline tests: a numpy-path fake representation, image folders, cache builds."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from keras_invert import registry
from pipelines import build_dataset


class FakeNumpyRepresentation:
    """A `registry.Representation` whose encoder is numpy (in_graph=False), counting calls.

    Features are 4x4 block means, shape (S/4, S/4, 3); the target side is S/2,
    so the target resize path is exercised too.
    """

    def __init__(self, name="fake_numpy", fail_on_call=None):
        self.make_encoder_calls = 0
        self.encode_calls = 0
        self.fail_on_call = fail_on_call
        self.representation = registry.Representation(
            name=name,
            description="numpy block means (tests only)",
            make_encoder=self._make_encoder,
            decoder_builder=lambda size, **kwargs: None,
            feature_shape=lambda size: (size // 4, size // 4, 3),
            target_size=lambda size: size // 2,
            default_image_size=16,
            in_graph=False,
        )

    def _make_encoder(self, scale=1.0):
        self.make_encoder_calls += 1

        def encode(images):
            self.encode_calls += 1
            if self.fail_on_call is not None and self.encode_calls >= self.fail_on_call:
                raise RuntimeError("encoder killed (test)")
            images = np.asarray(images)
            n, size = images.shape[0], images.shape[1]
            blocks = images.reshape(n, size // 4, 4, size // 4, 4, 3)
            return blocks.mean(axis=(2, 4)) * scale

        return encode


@pytest.fixture
def fake_numpy():
    """A fresh FakeNumpyRepresentation."""
    return FakeNumpyRepresentation()


@pytest.fixture
def make_fake():
    """The FakeNumpyRepresentation class, for tests that need options."""
    return FakeNumpyRepresentation


def encode_image(array, image_format, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **kwargs)
    return buffer.getvalue()


@pytest.fixture(name="encode_image")
def encode_image_fixture():
    """`(array, format, **save_options) -> bytes`, encoded with Pillow."""
    return encode_image


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)


@pytest.fixture
def odd_folder(tmp_path):
    """train/: 5 valid images of odd kinds, a truncated JPEG and 4 files skipped at listing."""
    rng = np.random.default_rng(0)
    train = tmp_path / "train"
    rgb = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    write(train / "gray.png", encode_image(rgb[..., 0], "PNG"))
    write(train / "rgba.PNG", encode_image(np.dstack([rgb, rgb[..., :1]]), "PNG"))
    deep = rgb[..., 0].astype(np.uint16) * 257
    write(train / "deep" / "sixteen_bit.png", encode_image(deep, "PNG"))
    write(train / "deep" / "gray_alpha.png", encode_image(np.dstack([rgb[..., 0]] * 2), "PNG"))
    write(train / "tiny.jpg", encode_image(rgb[:5, :7], "JPEG"))
    jpeg = encode_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG", quality=95)
    write(train / "truncated.jpg", jpeg[: len(jpeg) * 6 // 10])
    write(train / "corrupt.jpg", b"\x00" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    write(train / "notes.png", b"not an image, just text\n")
    write(train / "empty.gif", b"")
    write(train / "README.txt", b"hello")
    write(tmp_path / "test" / "one.png", encode_image(rgb, "PNG"))
    return tmp_path


@pytest.fixture
def small_folder(tmp_path):
    """4 small RGB photos in train/ and 2 in test/."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 4), ("test", 2)):
        for index in range(count):
            array = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            write(tmp_path / "photos" / split / f"{index}.png", encode_image(array, "PNG"))
    return tmp_path / "photos"


def build_cached(folder, representation, cache_dir, **overrides):
    """`build_dataset` over `folder` at 16 px, 3 crops a photo, one pass, cached in `cache_dir`."""
    options = dict(
        representation=representation,
        image_size=16,
        batch_size=4,
        seed=3,
        cache_dir=None if cache_dir is None else str(cache_dir),
        crops_per_image=3,
        repeat=False,
    )
    split = overrides.pop("split", "train")
    return build_dataset(f"folder:{folder}", split, **{**options, **overrides})


def examples_of(dataset):
    """All `(features, target)` of `dataset`, concatenated."""
    batches = [(features.numpy(), target.numpy()) for features, target in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def cache_folders(cache_dir):
    """The names in `cache_dir`, sorted (none where it does not exist)."""
    return sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []


@pytest.fixture
def cache_dir(tmp_path):
    """A cache folder that does not exist yet."""
    return tmp_path / "cache"
