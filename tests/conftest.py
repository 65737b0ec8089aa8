"""Shared test set-up: quiet TensorFlow logs, fixed seeds, real sample photos, scripts run here."""

import contextlib
import importlib
import os
import sys

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


@contextlib.contextmanager
def _alone(module_name):
    """Imports `module_name` with its flags alone among the launch scripts' flags.

    Every launch script defines its flags on absl's global FLAGS, several under
    the same names (--data, --image_size, ...), and absl validates every
    defined flag on each parse. So the flags that launch modules imported
    before had defined are taken away while the script runs and put back
    after, and the script is imported afresh.
    """
    from absl import flags

    FLAGS = flags.FLAGS
    saved = [
        (module, flag)
        for module, module_flags in FLAGS.flags_by_module_dict().items()
        if module.startswith("launch.")
        for flag in module_flags
    ]
    for _, flag in saved:
        delattr(FLAGS, flag.name)
    previous = sys.modules.pop(module_name, None)
    try:
        yield importlib.import_module(module_name)
    finally:
        for flag in FLAGS.get_flags_for_module(module_name):
            delattr(FLAGS, flag.name)
        sys.modules.pop(module_name, None)
        if previous is not None:
            sys.modules[module_name] = previous
        for module, flag in saved:
            FLAGS[flag.name] = flag
            FLAGS.register_flag_by_module(module, flag)
        FLAGS.unparse_flags()


def _launch(script, *arguments, check=True, logs=True):
    """`subprocess.CompletedProcess` of `python -m launch.<script> arguments`, run in this process.

    The flags are parsed and `main` is called as `common.run` does
    (`common.parse_flags`, then `common.guard(main)`); stdout, stderr and, with
    `logs`, the lines the script logs from INFO up (as `app.run` shows them)
    are captured. A subprocess would pay for TensorFlow's import again (about
    10 s of CPU a run on a slow 2-core machine); the commands themselves run in
    `tests/launch/test_scripts.py`, `test_resume.py`, `test_multi_worker.py`,
    `test_evaluate.py`, `test_user_errors.py` and `tests/test_experiments.py`.
    With `check`, a non-zero status is an AssertionError that shows the output.
    """
    import io
    import logging
    import subprocess

    from absl import flags
    from absl import logging as absl_logging

    from launch import common

    FLAGS = flags.FLAGS
    module_name = f"launch.{script}"
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    absl_logger = absl_logging.get_absl_logger()
    level = absl_logger.level
    if logs:
        absl_logger.addHandler(handler)
    try:
        with (
            _alone(module_name) as module,
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            FLAGS.unparse_flags()
            try:
                argv = common.parse_flags([script, *arguments])
                if logs:  # After parsing: --verbosity's default sets the level when parsed.
                    absl_logger.setLevel(logging.INFO)
                returned = common.guard(module.main)(argv)
            except SystemExit as exit:
                status = exit.code
            else:
                status = returned if isinstance(returned, int) else 0
    finally:
        absl_logger.removeHandler(handler)
        absl_logger.setLevel(level)
    result = subprocess.CompletedProcess(
        [module_name, *arguments], status, stdout.getvalue(), stderr.getvalue()
    )
    if check and status != 0:
        raise AssertionError(f"{module_name} failed ({status}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def launch_script():
    """`(script, *flags, check=True) -> CompletedProcess`: a launch script run in this process."""
    return _launch


@pytest.fixture
def run_script():
    """`(script, *flags) -> (exit status, stderr)` of a launch script run in this process.

    The stderr is what the script prints itself, without its log lines: the
    one line a user's mistake ends in.
    """

    def run(script, *arguments):
        result = _launch(script, *arguments, check=False, logs=False)
        return result.returncode, result.stderr

    return run
