"""Shared pieces of the benchmark scripts: the same photo crops, best-of-N timing."""

from __future__ import annotations

import time

import numpy as np


def photo_crops(count: int, size: int) -> np.ndarray:
    """`count` seeded `size`x`size` crops of four skimage photos, float32 0..255."""
    import skimage.data

    from keras_invert import images

    photos = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.rocket(),
    ]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - size + 1) if photo.shape[0] > size else 0
        x = rng.integers(0, photo.shape[1] - size + 1) if photo.shape[1] > size else 0
        crop = photo[y : y + size, x : x + size]
        if crop.shape[:2] != (size, size):
            crop = images.resize(crop.astype(np.float32), size).numpy()
        crops.append(crop)
    return np.stack(crops).astype(np.float32)


def best_time(function, repeats: int) -> float:
    """Seconds of the fastest of `repeats` calls, after one warm-up call."""
    function()  # warm-up (tracing, compilation, allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
