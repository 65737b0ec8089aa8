"""Labelled image grids as PNG files: the one place that draws a figure and writes it.

Almost every picture the project writes is a grid of images in [0, 1] with
short labels: the experiments' figures (a row per photo or per model, a
column per variant, row labels on the left) and `launch.reconstruct`'s rows
of `original | reconstruction`. `figure` draws the grid as a uint8 array;
`line_chart` draws values over named steps (a reproduction's error over
depth); `save_png` writes either atomically (`keras_invert.files.atomic_path`).

Example:
    >>> rows = [[original, reconstruction] for original, reconstruction in pairs]
    >>> grid = figure(rows, column_labels=["original", "reconstruction"])
    >>> save_png("figs/grid.png", grid)
"""

from __future__ import annotations

import os

import numpy as np

from keras_invert.files import atomic_path

HEADER_HEIGHT = 18
"""Default height in pixels of the band above the grid that holds the column labels."""


def figure(
    rows,
    *,
    column_labels=None,
    row_labels=None,
    cell_size: int | None = None,
    spacing: int = 2,
    header_height: int = HEADER_HEIGHT,
) -> np.ndarray:
    """A labelled grid of images as a uint8 `[H, W, 3]` array (white background).

    Args:
        rows: a list of rows, each a list of images `[h, w, 3]` in [0, 1]
            (sizes may differ: each is resized to `cell_size`).
        column_labels: one short label per column, drawn in a band of
            `header_height` pixels above the grid (no band without labels).
        row_labels: one label per row, drawn on the left.
        cell_size: side of each cell; default the largest image side.
        spacing: white pixels after each cell, across and down (0: images
            touch, as in `launch.reconstruct`'s grid).
        header_height: height of the column labels' band.

    Returns:
        `[header + rows * (cell_size + spacing), left + columns * (cell_size + spacing), 3]`
        uint8, `left` being the width of the row labels (0 without them).
    """
    import cv2

    if not any(len(row) for row in rows):
        raise ValueError(f"Expected at least one image. Received: rows={rows!r}")
    if spacing < 0 or header_height < 0:
        raise ValueError(
            "Expected a spacing and a header height of 0 or more. "
            f"Received: spacing={spacing!r}, header_height={header_height!r}"
        )
    columns = max(len(row) for row in rows)
    if cell_size is None:
        cell_size = max(max(image.shape[:2]) for row in rows for image in row)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    step = cell_size + spacing

    def text_width(text):
        return cv2.getTextSize(text, font, scale, 1)[0][0]

    left = 8 + max((text_width(label) for label in row_labels or []), default=-8)
    top = header_height if column_labels else 0
    canvas = np.full((top + len(rows) * step, left + columns * step, 3), 255, np.uint8)
    for column, label in enumerate(column_labels or []):
        # Shrink a label that would run into the next column.
        fitted = min(scale, scale * (cell_size - 4) / max(text_width(label), 1))
        x = left + column * step + 2
        cv2.putText(canvas, label, (x, top - 5), font, fitted, (0, 0, 0), 1)
    for index, row in enumerate(rows):
        y = top + index * step
        if row_labels:
            middle = y + cell_size // 2 + 4
            cv2.putText(canvas, row_labels[index], (4, middle), font, scale, (0, 0, 0), 1)
        for column, image in enumerate(row):
            image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            if image.shape[:2] != (cell_size, cell_size):
                shrink = max(image.shape[:2]) > cell_size
                method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                image = cv2.resize(image, (cell_size, cell_size), interpolation=method)
            x = left + column * step
            canvas[y : y + cell_size, x : x + cell_size] = np.round(image * 255).astype(np.uint8)
    return canvas


_CHART_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14))


def line_chart(
    series: dict,
    *,
    x_labels,
    y_label: str,
    size: tuple[int, int] = (760, 380),
) -> np.ndarray:
    """Values over named steps as a uint8 `[H, W, 3]` line chart (white background).

    Args:
        series: `{label: values}`, one value (or None where there is none) per
            entry of `x_labels`. A series with a single value repeated
            everywhere reads best as a reference line (e.g. a mean image's
            error); a series with gaps is drawn as points only.
        x_labels: the steps' names, drawn under the axis.
        y_label: what the values are, drawn above the axis.
        size: `(width, height)` in pixels.

    Returns:
        The chart, `[height, width, 3]` uint8, the y axis from 0 to just above
        the largest value, with a legend in the top-left corner.
    """
    import cv2

    width, height = size
    count = len(x_labels)
    present = [v for values in series.values() for v in values if v is not None]
    if count < 2 or not present:
        raise ValueError(
            "Expected at least two steps and one value. "
            f"Received: x_labels={list(x_labels)!r}, series={series!r}"
        )
    for label, values in series.items():
        if len(values) != count:
            raise ValueError(
                f"Expected {count} values per series, one per step. "
                f"Received: {label!r} with {len(values)}"
            )
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    left, right, top, bottom = 48, 16, 28, 40
    top_value = max(0.2, float(np.ceil(max(present) * 10 + 0.5)) / 10)
    canvas = np.full((height, width, 3), 255, np.uint8)

    def point(index, value):
        x = left + index * (width - left - right) / (count - 1)
        y = height - bottom - value / top_value * (height - top - bottom)
        return int(round(x)), int(round(y))

    grey, black = (200, 200, 200), (0, 0, 0)
    for tick in np.arange(0.0, top_value + 1e-9, 0.2 if top_value > 0.6 else 0.1):
        _, y = point(0, tick)
        cv2.line(canvas, (left, y), (width - right, y), grey, 1)
        cv2.putText(canvas, f"{tick:.1f}", (8, y + 4), font, scale, black, 1)
    cv2.putText(canvas, y_label, (8, 16), font, scale, black, 1)
    for index, label in enumerate(x_labels):
        x, y = point(index, 0.0)
        text = cv2.getTextSize(label, font, scale, 1)[0][0]
        # Alternate rows keep long neighbouring names apart.
        cv2.putText(
            canvas, label, (x - text // 2, y + 16 + 12 * (index % 2)), font, scale, black, 1
        )
    for number, (label, values) in enumerate(series.items()):
        colour = _CHART_COLOURS[number % len(_CHART_COLOURS)]
        points = [point(i, v) for i, v in enumerate(values) if v is not None]
        if all(v is not None for v in values):
            cv2.polylines(canvas, [np.array(points, np.int32)], False, colour, 2, cv2.LINE_AA)
        for x, y in points:
            cv2.circle(canvas, (x, y), 4, colour, -1, cv2.LINE_AA)
        legend_y = top + 6 + 16 * number
        cv2.line(canvas, (left + 10, legend_y), (left + 34, legend_y), colour, 2)
        cv2.putText(canvas, label, (left + 40, legend_y + 4), font, scale, black, 1)
    return canvas


def save_png(path: str, image, *, keep_identical: bool = False) -> str:
    """Writes an RGB uint8 image as a PNG atomically (parent folders created); returns `path`.

    With `keep_identical`, a PNG already at `path` with exactly these pixels
    is left alone (its time stamp too, which tells a rerun it is finished).
    """
    import cv2

    if os.path.isdir(path):
        raise ValueError(f"Expected a PNG file's path, not a folder. Received: path={path!r}")
    if not os.fspath(path).lower().endswith(".png"):
        # OpenCV picks the format from the suffix: ".jpg" would write a lossy JPEG.
        raise ValueError(f"Expected a path ending in .png. Received: path={path!r}")
    bgr = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    if keep_identical and os.path.exists(path):
        stored = cv2.imread(path, cv2.IMREAD_COLOR)
        if stored is not None and np.array_equal(stored, bgr):
            return path
    with atomic_path(path) as temporary:
        # The temporary name ends with `path`'s, so OpenCV still sees ".png".
        try:
            written = cv2.imwrite(temporary, bgr)
        except cv2.error:  # No writer for the path's extension.
            written = False
        if not written:
            raise ValueError(
                f"Could not write the PNG of {bgr.shape[1]}x{bgr.shape[0]} pixels: OpenCV "
                f"refused it (too large for PNG?). Received: path={path!r}"
            )
    return path
