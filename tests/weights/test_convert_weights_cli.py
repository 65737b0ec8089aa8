"""The command line of launch/convert_weights.py (the conversion itself is tested in test_caffe)."""

import os
import subprocess
import sys

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "arguments, message",
    [([], "Both --in and --out are required"), (["--variant=vgg"], "variant")],
)
def test_usage_errors(arguments, message):
    result = subprocess.run(
        [sys.executable, "-m", "launch.convert_weights", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr
