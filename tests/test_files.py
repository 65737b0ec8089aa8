"""Atomic writes: complete under the final name, or nothing but the old content."""

import json
import logging
import os

import numpy as np
import pytest

from keras_invert import files


def test_a_completed_block_renames_the_file_into_place(tmp_path):
    path = tmp_path / "sub" / "model.weights.h5"
    with files.atomic_path(str(path)) as temporary:
        assert os.path.basename(temporary).startswith(files.PARTIAL_PREFIX)
        assert temporary.endswith("model.weights.h5")
        assert not path.exists()
        with open(temporary, "w") as file:
            file.write("new")
    assert path.read_text() == "new"
    assert os.listdir(path.parent) == ["model.weights.h5"]


def test_a_failed_block_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_path(str(path)) as temporary:
            with open(temporary, "w") as file:
                file.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_folder_is_renamed_whole_and_removed_on_failure(tmp_path):
    final = tmp_path / "1"
    with files.atomic_path(str(final)) as temporary:
        os.makedirs(os.path.join(temporary, "variables"))
        open(os.path.join(temporary, "saved_model.pb"), "w").close()
    assert sorted(os.listdir(final)) == ["saved_model.pb", "variables"]
    with pytest.raises(ValueError):
        with files.atomic_path(str(tmp_path / "2")) as temporary:
            os.makedirs(temporary)
            raise ValueError("export failed")
    assert os.listdir(tmp_path) == ["1"]


def test_an_existing_folder_is_not_replaced(tmp_path):
    final = tmp_path / "cache"
    (final / "data").mkdir(parents=True)
    with pytest.raises(OSError) as error:
        with files.atomic_path(str(final)) as temporary:
            os.makedirs(os.path.join(temporary, "other"))
    assert error.value.filename == str(final)  # The caller's path, not the temporary one.
    assert os.listdir(final) == ["data"]
    assert os.listdir(tmp_path) == ["cache"]
    with pytest.raises(IsADirectoryError) as error:
        files.write_json(str(final), {})
    assert error.value.filename == str(final)
    assert os.listdir(tmp_path) == ["cache"]


def test_write_json_takes_numpy_values(tmp_path):
    path = files.write_json(
        str(tmp_path / "figures.json"), {"error": np.float32(0.25), "rows": np.arange(3), 1: (2,)}
    )
    assert json.loads(open(path).read()) == {"error": 0.25, "rows": [0, 1, 2], "1": [2]}


def test_write_json_writes_nan_and_inf_as_null_naming_their_keys(tmp_path, caplog):
    data = {"rows": [{"psnr": 30.0}, {"psnr": np.float32("nan")}], "rate": float("inf")}
    with caplog.at_level(logging.WARNING, logger="absl"):
        path = files.write_json(str(tmp_path / "results.json"), data)
    with open(path) as file:
        text = file.read()
    # Standard JSON: a strict reader (no NaN or Infinity constants) takes it.
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"wrote {name}"))
    assert strict == {"rows": [{"psnr": 30.0}, {"psnr": None}], "rate": None}
    assert "rows[1].psnr, rate" in caplog.text


def test_write_csv_writes_none_nan_and_inf_as_empty_fields_naming_their_keys(tmp_path, caplog):
    rows = [{"psnr": np.float32(30.5), "ssim": None}, {"psnr": float("inf"), "ssim": np.nan}]
    with caplog.at_level(logging.WARNING, logger="absl"):
        path = files.write_csv(str(tmp_path / "results.csv"), rows, ["psnr", "ssim"])
    with open(path) as file:
        assert file.read().splitlines() == ["psnr,ssim", "30.5,", ","]
    assert "rows[1].psnr, rows[1].ssim" in caplog.text


def test_check_folder_and_check_file_refuse_paths_they_could_not_write(tmp_path):
    files.check_folder(str(tmp_path / "new" / "run"), "work_dir")  # Created later.
    files.check_folder(str(tmp_path), "work_dir")
    with pytest.raises(ValueError, match="can write into. Received: work_dir='/proc/run'"):
        files.check_folder("/proc/run", "work_dir")
    assert os.listdir(tmp_path) == []  # The probe leaves nothing.
    files.check_file(str(tmp_path / "new" / "figures.json"), "json_path")
    with pytest.raises(ValueError) as error:
        files.check_file(str(tmp_path), "json_path")
    assert str(error.value) == (
        f"Expected json_path to be a file's path. Received: json_path={str(tmp_path)!r}, a folder"
    )
    notes = tmp_path / "notes.txt"
    notes.write_text("a file")
    files.check_file(str(notes), "json_path")  # Replaced when written.
    with pytest.raises(ValueError, match=f"Received: json_path='{notes}/figures.json', under the"):
        files.check_file(str(notes / "figures.json"), "json_path")
    with pytest.raises(ValueError, match=f"Received: out='{notes}', a file"):
        files.check_folder(str(notes), "out")


def test_an_unwritable_folder_is_named_with_the_real_reason():
    # /proc exists, yet creating an entry there fails with "No such file or directory".
    expected = {
        "/proc/x.png": "the folder '/proc' is not writable: it refuses new entries, as virtual "
        "file systems such as /proc do",
        "/proc/sub/x.png": "the folder '/proc/sub' cannot be created in '/proc': it refuses",
    }
    for path, problem in expected.items():
        with pytest.raises(ValueError) as error:
            files.check_file(path, "out")
        assert str(error.value).startswith(
            f"Expected out in a folder this process can write into. Received: out={path!r} "
            f"({problem}"
        )


def test_check_existing_file_refuses_a_folder_or_a_missing_path(tmp_path):
    (tmp_path / "weights.h5").write_text("weights")
    files.check_existing_file(str(tmp_path / "weights.h5"), "encoder_weights")
    for path, kind in [(tmp_path, "a folder"), (tmp_path / "missing.h5", "not found")]:
        with pytest.raises(ValueError) as error:
            files.check_existing_file(str(path), "encoder_weights")
        assert str(error.value) == (
            "Expected encoder_weights to be an existing file. "
            f"Received: encoder_weights={str(path)!r}, {kind}"
        )
