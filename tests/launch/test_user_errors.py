"""A user's mistake in a launch script: one line on stderr, exit status 2, no traceback."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app, logging

from launch import common

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _one_line(status, stderr):
    """The single `ERROR: ...` line of a run stopped by a user's mistake."""
    lines = stderr.splitlines()
    assert status == common.USER_ERROR_STATUS, stderr
    assert len(lines) == 1 and lines[0].startswith("ERROR: "), stderr
    return lines[0]


def _jpeg(seed):
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _photos(folder, count, truncated=False, first=0):
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(first, first + count):
        data = _jpeg(index)
        (folder / f"{'bad' if truncated else 'good'}{index}.jpg").write_bytes(
            data[: len(data) // 2] if truncated else data
        )
    return folder


@pytest.mark.parametrize(
    "script, arguments, expected",
    [
        ("train", ["--batch_size=0"], "--batch_size must be a positive integer. Received: 0"),
        ("train", ["--width=0.01"], "--width must be >= 1/32. Received: 0.01"),
        ("train", ["--image_size=7.5"], "--image_size must be a positive integer. Received: 7.5"),
        ("train", ["--max_minutes=-1"], "--max_minutes must be >= 0. Received: -1.0"),
        ("train", ["--min_crop_scale=1.5"], "--min_crop_scale must be in (0, 1]. Received: 1.5"),
        ("train", ["--strategy=gpu"], "--strategy must be one of default, mirrored, multi_worker"),
        ("train", ["--width=0", "--learning_rate=0"], "Received: 0.0; --learning_rate must be"),
        ("train", ["--batch"], "Unknown command line flag 'batch'"),
        ("export", ["--work_dir=x"], "--export_dir is required."),
        ("evaluate", ["--num_images=1"], "--num_images must be an integer >= 2. Received: 1"),
        ("experiment", ["--name=layers", "--model=x", "--dropout_rate=1"], "must be in [0, 1)"),
        ("experiment", ["--name=layers", "--model=x", "--pair=0"], "--pair must be two indices"),
        ("data_service", ["--role=dispatcher", "--port=-5"], "--port must be an integer in the"),
        ("benchmark", ["--batch_size=0"], "Received: batch_size=0"),
        (
            "convert_weights",
            ["--in=missing.caffemodel", "--out=x.weights.h5"],
            "Expected in to be an existing file. Received: in='missing.caffemodel', not found",
        ),
        (
            "convert_weights",
            ["--in=/dev/null", "--out=x.weights.h5", "--variant=caffe"],
            "Received: in='/dev/null', not a regular file (a device, pipe or socket)",
        ),
        ("evaluate", ["--model="], "--model must be one or more work dirs or export dirs"),
        ("reconstruct", ["--model=missing", "--images=a.jpg,b.jpg"], "Received: model='missing'"),
        ("reconstruct", ["--model=x", "--images="], "--images must be one or more image files"),
        ("evaluate", ["--model=x", "--images="], "--images must be one or more image files"),
        ("evaluate", ["--model=x", "--images=a.jpg,b.jpg", "--data=samples"], "not both"),
        ("reconstruct", ["--model=x", "--images=a.jpg", "--data=samples"], "not both"),
        # An empty path would be the current folder: refused like a missing one.
        ("train", ["--work_dir="], "--work_dir must be a path (given empty, it would be the"),
        ("export", ["--work_dir=x", "--export_dir="], "--export_dir must be a path"),
        ("evaluate", ["--model=x", "--out_dir="], "--out_dir must be a path"),
        ("experiment", ["--name=layers", "--model=x", "--out="], "--out must be a path"),
        ("reproduce", ["--out_dir="], "--out_dir must be a path"),
        ("reconstruct", ["--model=x", "--metrics_out="], "--metrics_out must be a path"),
        # What a file would be, and what it would overwrite, before any work.
        ("reconstruct", ["--model=x", "--out=grid.jpg"], "--out must be a path ending in .png"),
        ("reconstruct", ["--model=x", "--images=a.png", "--out=a.png"], "overwrite one of the"),
        ("reconstruct", ["--model=x", "--out=g.png", "--metrics_out=g.png"], "overwrite --out"),
        # Values that can only diverge, hang or mean nothing.
        ("train", ["--learning_rate=1e300"], "Expected learning_rate in (0, 1]. Received: "),
        ("train", ["--seed=-1"], "Expected seed None or a whole number in [0, 2**32). Received"),
        ("train", ["--image_size=100000"], "image_size None or a whole number in [1, 4096]"),
        ("reproduce", ["--out_dir=o", "--seed=-3"], "--seed must be in [0, 2**32). Received: -3"),
        ("reproduce", ["--out_dir=o", "--shallow_image_size=8"], "shallow_image_size"),
        (
            "evaluate",
            ["--method=optimization", "--representation=hog", "--tv_weight=inf"],
            "--tv_weight must be finite. Received: inf",
        ),
        ("experiment", ["--name=single_neuron", "--model=x", "--units="], "one or more unit"),
        ("experiment", ["--name=single_neuron", "--model=x", "--percentile=nan"], "in [0, 100]"),
        ("experiment", ["--name=interpolation", "--model=x", "--steps=100000"], "[2, 64]"),
        ("data_service", ["--role=worker", "--dispatcher=bogus"], "--dispatcher must be HOST:PORT"),
    ],
)
def test_bad_flag_values_are_one_line(run_script, tmp_path, script, arguments, expected):
    if script == "train":
        arguments = [f"--work_dir={tmp_path / 'run'}", *arguments]
    assert expected in _one_line(*run_script(script, *arguments))


def test_data_source_mistakes_are_one_line_naming_the_source(run_script, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    few = _photos(tmp_path / "few", 3)  # By the path hash, all three are "train".
    split_folders = _photos(tmp_path / "split_folders" / "train", 2).parent
    (split_folders / "test").mkdir()
    cases = {
        f"folder:{tmp_path / 'missing'}": "Expected an existing folder",
        f"folder:{empty}": "Expected photos (.jpg, .jpeg, .png, .bmp, .gif, .webp) in",
        f"folder:{few}": "its 3 photos are all in the other split",
        f"folder:{split_folders}": f"in {split_folders / 'test'}; it has none",
        "folders:photos": "Expected a source 'samples', 'folder:PATH' or 'tfds:NAME",
        "tfds:no_such_dataset_here": "Expected the name of a TFDS dataset",
    }
    for index, (data, expected) in enumerate(cases.items()):
        work_dir = f"--work_dir={tmp_path / f'run{index}'}"
        line = _one_line(*run_script("train", work_dir, f"--data={data}", "--image_size=64"))
        assert expected in line and "Received:" in line, line


def test_train_on_undecodable_photos_stops_with_one_line(run_script, tmp_path):
    folder = _photos(tmp_path / "photos" / "test", 2, truncated=True).parent
    _photos(folder / "train", 1, truncated=True, first=2)
    line = _one_line(
        *run_script("train", f"--work_dir={tmp_path / 'run'}", f"--data=folder:{folder}")
    )
    assert "none of the 2 files of split 'test'" in line
    assert "bad0.jpg" in line and "bad1.jpg" in line


def test_a_file_where_a_folder_is_expected_and_the_reverse_name_the_flag(run_script, tmp_path):
    """Each path flag given the wrong kind of path: one line that names the flag and the path.

    The output paths are checked before the work (a model is not loaded yet).
    """
    file, folder = tmp_path / "notes.txt", tmp_path / "folder"
    file.write_text("not a folder")
    folder.mkdir()
    png_folder = folder / "grid.png"  # A folder named like the PNG --out must be.
    png_folder.mkdir()
    run, images = f"--work_dir={tmp_path / 'run'}", f"--images={folder},{folder}"
    small = ["--preset=demo_hog", "--image_size=64", "--width=0.0625"]
    cases = [
        ("train", [f"--work_dir={file}"], "work_dir", file),
        ("train", [run, *small, f"--init_from={file}"], "init_from", file),
        ("train", [run, f"--encoder_weights={folder}"], "encoder_weights", folder),
        ("export", [f"--work_dir={file}", f"--export_dir={tmp_path / 'new'}"], "work_dir", file),
        ("export", [f"--work_dir={tmp_path}", f"--export_dir={file}"], "export_dir", file),
        ("reconstruct", [f"--model={file}", f"--images={file}"], "model", file),
        ("reconstruct", ["--model=missing", f"--out={png_folder}"], "out", png_folder),
        ("reconstruct", ["--model=missing", f"--metrics_out={folder}"], "metrics_out", folder),
        ("evaluate", ["--model=missing", f"--out_dir={file}"], "out_dir", file),
        ("evaluate", [images, "--representation=hog", "--image_size=64"], "images", folder),
        ("experiment", ["--name=interpolation", "--model=missing", f"--out={file}"], "out", file),
        ("convert_weights", [f"--in={folder}", "--out=x.weights.h5"], "in", folder),
        ("convert_weights", [f"--in={file}", f"--out={folder}"], "out", folder),
        ("benchmark", [f"--json={folder}"], "json", folder),
        ("benchmark", [f"--cache_dir={file}"], "cache_dir", file),
        ("data_service", ["--role=dispatcher", f"--work_dir={file}"], "work_dir", file),
        ("reproduce", [f"--out_dir={file}"], "out_dir", file),
    ]
    for script, arguments, flag, path in cases:
        line = _one_line(*run_script(script, *arguments))
        assert line.startswith("ERROR: Expected ") and f"Received: {flag}='{path}'" in line, line
    assert sorted(os.listdir(tmp_path)) == ["folder", "notes.txt"]  # Nothing written.


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("random.caffemodel", None, "Expected a Caffe .caffemodel"),
        ("random.pth", None, "Expected a PyTorch state dict"),
        ("random.weights.h5", None, "Expected a Keras .weights.h5 file"),
        ("weights.txt", b"weights", "path ending in one of"),
    ],
)
def test_weights_files_that_are_not_what_they_say(tmp_path, name, content, expected):
    from keras_invert.encoders import alexnet

    path = tmp_path / name
    path.write_bytes(content or np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError) as error:
        alexnet("caffe", weights=str(path), input_size=67, outputs=["conv1"])
    message = common.user_error_message(error.value)
    assert expected in message and repr(str(path)) in message, message


def test_internal_errors_keep_their_traceback():
    assert common.user_error_message(RuntimeError("a bug")) is None
    assert common.user_error_message(KeyError("a bug")) is None
    assert common.user_error_message(OSError()) is None
    assert common.user_error_message(OSError("Could not read. Received: path='a'")) == (
        "Could not read. Received: path='a'"
    )
    assert common.user_error_message(ValueError("")) is None
    assert (
        common.user_error_message(FileNotFoundError(2, "No such file or directory", "a.jpg"))
        == "No such file or directory: 'a.jpg'"
    )
    assert common.user_error_message(ValueError("\nFirst line.\nDetails.")) == "First line."
    assert common.user_error_message(app.UsageError("Give --x.")) == "Give --x."


def test_verbosity_1_shows_the_traceback(run_script, tmp_path):
    # The error itself propagates (a traceback), not the one line.
    with pytest.raises((ValueError, app.UsageError), match="Expected an existing folder"):
        run_script(
            "train",
            f"--work_dir={tmp_path / 'run'}",
            f"--data=folder:{tmp_path / 'missing'}",
            "--verbosity=1",
        )


def test_the_command_line_prints_one_line_and_exits_2(tmp_path):
    """`python -m launch.train` itself: the flag is refused before TensorFlow is imported."""
    result = subprocess.run(
        [sys.executable, "-m", "launch.train", f"--work_dir={tmp_path}", "--batch_size=0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == "ERROR: --batch_size must be a positive integer. Received: 0\n"


def test_image_paths_that_are_missing_a_folder_or_not_an_image_are_one_line_each(tmp_path):
    """What `launch.reconstruct --images=...` prints for each kind of bad path."""
    import pipelines

    (tmp_path / "notes.jpg").write_text("not an image")
    import cv2

    cv2.imwrite(str(tmp_path / "scan.tif"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "folder.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")  # Reading it would block.
    cases = {
        "missing.jpg": "Expected an existing image file",
        "folder.jpg": "not a folder",
        "notes.jpg": "does not decode",
        "scan.tif": "another format (TIFF, HEIC, ...: convert it)",
        "pipe.jpg": "not a pipe or device",
    }
    for name, expected in cases.items():
        path = str(tmp_path / name)
        with pytest.raises((OSError, ValueError)) as error:
            pipelines.load_images([path], 32)
        message = common.user_error_message(error.value)
        assert message is not None and "\n" not in message, name
        assert expected in message and repr(path) in message, message


def test_a_reproduction_job_that_diverges_is_one_line_with_a_way_out(
    run_script, tmp_path, monkeypatch
):
    from keras_invert import callbacks, runs

    def diverge(run, *args, **kwargs):
        # What the divergence guard raises inside training.
        raise callbacks.DivergenceError(
            "Training diverged at step 3: the loss is nan.", "Lower --learning_rate."
        )

    monkeypatch.setattr(runs, "run", diverge)
    line = _one_line(
        *run_script("reproduce", f"--out_dir={tmp_path / 'out'}", "--shallow=hog", "--taps=")
    )
    # The job, what happened, and a way out the command has (it has no rate flag).
    assert line == (
        "ERROR: hog: Training diverged at step 3: the loss is nan. The reproduction trains "
        "it at Adam 0.0006; start again with another --seed and a new --out_dir."
    )


def test_convert_weights_names_its_flags_for_the_file_names_it_refuses(run_script, tmp_path):
    weights = tmp_path / "alexnet.bin"
    weights.write_bytes(b"not read: the names are checked first")
    out = tmp_path / "alexnet.h5"
    line = _one_line(*run_script("convert_weights", f"--in={weights}", f"--out={out}"))
    assert line == f"ERROR: Expected out to end in .weights.h5. Received: out='{out}'"
    line = _one_line(
        *run_script("convert_weights", f"--in={weights}", f"--out={tmp_path / 'a.weights.h5'}")
    )
    assert line == (
        "ERROR: Expected a file name ending in .caffemodel, .pth or .pt, or a variant. "
        f"Received: in='{weights}'"
    )
    assert sorted(os.listdir(tmp_path)) == ["alexnet.bin"]


def test_reproduce_reads_its_alexnet_weights_before_any_work(run_script, tmp_path):
    out = f"--out_dir={tmp_path / 'results'}"
    missing = str(tmp_path / "missing.weights.h5")
    line = _one_line(*run_script("reproduce", out, f"--alexnet_weights={missing}"))
    assert f"Received: alexnet_weights={missing!r}" in line
    text = tmp_path / "notes.weights.h5"
    text.write_text("not weights")
    line = _one_line(*run_script("reproduce", out, f"--alexnet_weights={text}"))
    assert line.startswith("ERROR: --alexnet_weights: ") and str(text) in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("role", ["dispatcher", "worker"])
def test_a_data_service_port_in_use_is_one_line(run_script, role, monkeypatch):
    import socket

    from pipelines import service

    # A worker waits for its dispatcher before it listens; a taken port is refused before that.
    waits = []
    monkeypatch.setattr(service, "check_reachable", lambda *args: waits.append(args))
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ["--dispatcher=localhost:1"] if role == "worker" else []
        line = _one_line(*run_script("data_service", f"--role={role}", f"--port={port}", *extra))
    assert line.startswith(f"ERROR: Expected a free port for the tf.data service {role}")
    assert line.endswith(f"Received: port={port}")
    assert waits == []


def test_a_worker_whose_dispatcher_does_not_answer_says_so_and_keeps_trying(
    run_script, monkeypatch
):
    import socket

    from pipelines import service

    with socket.socket() as closed:  # A port that nothing listens at.
        closed.bind(("localhost", 0))
        port = closed.getsockname()[1]
    started = []

    class Worker:  # Stands in for the gRPC server, whose join() serves forever.
        def join(self):
            started.append(True)

    warnings = []
    monkeypatch.setattr(service, "start_worker", lambda *args: Worker())
    monkeypatch.setattr(service, "DISPATCHER_WAIT_SECONDS", 0.5)
    monkeypatch.setattr(logging, "warning", lambda *args: warnings.append(args[0] % args[1:]))
    status, _ = run_script("data_service", "--role=worker", f"--dispatcher=localhost:{port}")
    assert status == 0 and started == [True] and len(warnings) == 1
    assert warnings[0].startswith(f"Expected a tf.data service dispatcher at localhost:{port}; ")
    assert warnings[0].endswith(
        f"Received: dispatcher='localhost:{port}' This worker keeps trying to reach it."
    )
