"""Shared test set-up: quiet TensorFlow logs, fixed seeds, real sample photos."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    import keras

    # Seeds Python, NumPy's legacy global generator and the backend.
    keras.utils.set_random_seed(1234)


@pytest.fixture(scope="session")
def real_photos():
    """A few real colour photographs (uint8 RGB) shipped inside scikit-image."""
    import skimage.data

    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "rocket": skimage.data.rocket(),
    }
