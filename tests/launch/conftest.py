"""Fixtures of the launch tests: a launch script run in this process, as `common.run` runs it."""

import contextlib
import importlib
import sys

import pytest
from absl import flags

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


@pytest.fixture
def run_script(capsys):
    """`(script, *flags) -> (exit status, stderr)` of `python -m launch.<script> flags...`.

    The flags are parsed and `main` is called as `common.run` does
    (`common.parse_flags`, then `common.guard(main)`), in this process.
    """

    def run(script, *arguments):
        with _alone(f"launch.{script}") as module:
            FLAGS.unparse_flags()
            capsys.readouterr()
            try:
                common.guard(module.main)(common.parse_flags([script, *arguments]))
            except SystemExit as exit:
                status = exit.code
            else:
                status = 0
        return status, capsys.readouterr().err

    return run
