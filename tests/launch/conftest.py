"""Fixtures of the launch tests: a launch script run in this process, as `common.run` runs it."""

import contextlib
import importlib
import io
import logging
import subprocess
import sys

import pytest
from absl import flags
from absl import logging as absl_logging

from launch import common

FLAGS = flags.FLAGS


@contextlib.contextmanager
def _alone(module_name):
    """Imports `module_name` with its flags alone among the launch scripts' flags.

    Every launch script defines its flags on absl's global FLAGS, several under
    the same names (--data, --image_size, ...), and absl validates every
    defined flag on each parse. So the flags that launch modules imported
    before had defined are taken away while the script runs and put back
    after, and the script is imported afresh.
    """
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
    (`common.parse_flags`, then `common.guard(main)`); stdout, stderr and the
    lines the script logs from INFO up (as `app.run` shows them, unless not
    `logs`) are captured. A
    subprocess would pay for TensorFlow's import again (about 10 s a run on
    2 cores); the command itself runs in `test_scripts.py`, `test_resume.py`,
    `test_multi_worker.py` and `test_user_errors.py`. With `check`, a non-zero
    status is an AssertionError that shows the output.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    absl_logger = absl_logging.get_absl_logger()
    level = absl_logger.level
    if logs:
        absl_logger.addHandler(handler)
    try:
        with (
            _alone(f"launch.{script}") as module,
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
        ["launch." + script, *arguments], status, stdout.getvalue(), stderr.getvalue()
    )
    if check and status != 0:
        raise AssertionError(
            f"launch.{script} failed ({status}):\n{result.stdout}\n{result.stderr}"
        )
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
