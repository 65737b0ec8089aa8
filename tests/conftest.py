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


@pytest.fixture(scope="session")
def saved_network(tmp_path_factory):
    """`(network, path)`: a small Keras classifier of 32x32 images in 0..1, saved as `.keras`.

    Layers `conv1` (16x16x8), `conv2` (8x8x16), `pool` and `scores` (10
    values); random weights (seed 3). The cheapest `keras:PATH#LAYER`
    representation: a network inside the model, whose pipeline yields crops.
    """
    import keras

    keras.utils.set_random_seed(3)
    images = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, 2, padding="same", activation="relu", name="conv1")(images)
    x = keras.layers.Conv2D(16, 3, 2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    network = keras.Model(images, keras.layers.Dense(10, name="scores")(x), name="tiny")
    path = tmp_path_factory.mktemp("networks") / "tiny.keras"
    network.save(path)
    return network, str(path)


class ResultScript:
    """A Python script run in a subprocess, answering with a `RESULT <json>` line.

    Multi-device tests need a fresh process: TensorFlow splits the CPU into
    logical devices only before it initialises. The script starts at once
    (several can run side by side); `result()` waits for its answer.
    """

    _REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def __init__(self, path, *arguments, timeout=600):
        import subprocess
        import sys

        # The script imports this checkout's packages, not another checkout installed editable.
        python_path = os.pathsep.join(filter(None, [self._REPO, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=python_path)
        env.pop("TF_CONFIG", None)
        self.timeout = timeout
        self.process = subprocess.Popen(
            [sys.executable, str(path), *map(str, arguments)],
            cwd=self._REPO, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def result(self):
        import json

        stdout, stderr = self.process.communicate(timeout=self.timeout)
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
        assert self.process.returncode == 0 and lines, stderr[-3000:]
        return json.loads(lines[0][len("RESULT ") :])


@pytest.fixture(scope="session")
def result_script():
    """`(script_text, folder, *arguments, timeout=600) -> ResultScript`, started.

    The (dedented) text is written to `folder/<name>.py`, `name="script"` unless given.
    """
    import textwrap

    def start(text, folder, *arguments, name="script", timeout=600):
        path = os.path.join(str(folder), f"{name}.py")
        with open(path, "w") as file:
            file.write(textwrap.dedent(text))
        return ResultScript(path, *arguments, timeout=timeout)

    return start
