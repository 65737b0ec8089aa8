"""The labelled image grid and its PNG (keras_invert.figures)."""

import os

import numpy as np
import pytest

from keras_invert import figures


def test_figure_without_spacing_draws_rows_of_original_and_reconstruction():
    # launch.reconstruct's grid: cells touching, a 24 px band of column labels.
    rng = np.random.default_rng(0)
    originals, reconstructions = rng.random((2, 3, 16, 16, 3))
    rows = [[o, r] for o, r in zip(originals, reconstructions, strict=True)]
    grid = figures.figure(
        rows, column_labels=["original", "reconstruction"], spacing=0, header_height=24
    )
    assert grid.shape == (24 + 3 * 16, 2 * 16, 3) and grid.dtype == np.uint8
    assert grid[:24].min() < 255  # Label text drawn in the band.
    expected = np.round(np.concatenate([originals[2], reconstructions[2]], axis=1) * 255)
    np.testing.assert_array_equal(grid[24 + 2 * 16 :], expected.astype(np.uint8))


def test_figure_refuses_nothing_to_draw():
    with pytest.raises(ValueError, match="at least one image"):
        figures.figure([[]])


def test_save_png_writes_the_rgb_image_and_nothing_else(tmp_path):
    import cv2

    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0] = 200  # Red: a channel order mistake would show as blue.
    path = figures.save_png(str(tmp_path / "sub" / "grid.png"), image)
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB), image)
    assert os.listdir(tmp_path / "sub") == ["grid.png"]


def test_save_png_refuses_a_folder_or_a_path_without_a_png_writer(tmp_path):
    image = np.zeros((4, 5, 3), np.uint8)
    cases = [
        (tmp_path, "not a folder"),
        (tmp_path / "grid", "ending in .png"),
        (tmp_path / "grid.jpg", "ending in .png"),  # OpenCV would write a lossy JPEG.
    ]
    for path, expected in cases:
        with pytest.raises(ValueError, match=f"{expected}. Received: path={str(path)!r}"):
            figures.save_png(str(path), image)
    assert os.listdir(tmp_path) == []


def test_line_chart_draws_each_series_in_its_colour_and_points_where_values_are_missing():
    chart = figures.line_chart(
        {"decoder": [0.1, 0.4, 0.9], "optimisation": [None, 0.6, None]},
        x_labels=["stem", "stage4", "logits"],
        y_label="error",
        size=(300, 200),
    )
    assert chart.shape == (200, 300, 3) and chart.dtype == np.uint8
    colours = {tuple(pixel) for pixel in chart.reshape(-1, 3)}
    assert figures._CHART_COLOURS[0] in colours and figures._CHART_COLOURS[1] in colours
    # The decoder's line rises from left to right: its colour is lower down on the left.
    decoder = np.all(chart == figures._CHART_COLOURS[0], axis=-1)
    rows, columns = np.nonzero(decoder[60:])  # Below the legend in the top-left corner.
    assert rows[columns < 100].mean() > rows[columns > 200].mean()


def test_line_chart_refuses_a_series_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"Expected 3 values per series.*'decoder' with 2"):
        figures.line_chart({"decoder": [0.1, 0.2]}, x_labels=["a", "b", "c"], y_label="error")


def test_save_png_keeps_an_identical_file_and_replaces_a_different_one(tmp_path):
    path = str(tmp_path / "chart.png")
    image = np.zeros((4, 5, 3), np.uint8)
    figures.save_png(path, image)
    os.utime(path, (1, 1))
    figures.save_png(path, image, keep_identical=True)
    assert os.path.getmtime(path) == 1
    figures.save_png(path, image + 1, keep_identical=True)
    assert os.path.getmtime(path) > 1
