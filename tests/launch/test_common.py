"""Helpers of the launch scripts that need no subprocess."""

import os

import pytest

from launch import common


def test_keras_model_paths_are_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = common.absolute_representation("keras:models/net.keras#block4?input_range=0,1")
    assert name == f"keras:{os.path.join(tmp_path, 'models/net.keras')}#block4?input_range=0,1"
    assert common.absolute_representation(name) == name


def test_other_representations_are_unchanged():
    assert common.absolute_representation("alexnet/conv5") == "alexnet/conv5"


def test_malformed_keras_names_are_refused():
    with pytest.raises(ValueError, match="keras:PATH.keras#LAYER"):
        common.absolute_representation("keras:net.keras")
