"""Labelled image grids as PNG files: the one place that draws a figure and writes it.

Every picture the project writes is a grid of images in [0, 1] with short
labels: the experiments' figures (a row per photo or per model, a column per
variant, row labels on the left) and `launch.reconstruct`'s rows of
`original | reconstruction`. `figure` draws the grid as a uint8 array;
`save_png` writes it atomically (`keras_invert.files.atomic_path`).

Example:
    >>> rows = [[original, reconstruction] for original, reconstruction in pairs]
    >>> grid = figure(rows, column_labels=["original", "reconstruction"])
    >>> save_png("figs/grid.png", grid)
"""

from __future__ import annotations

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


def save_png(path: str, image) -> str:
    """Writes an RGB uint8 image as a PNG atomically (parent folders created); returns `path`."""
    import cv2

    bgr = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR)
    with atomic_path(path) as temporary:
        # The temporary name ends with `path`'s, so OpenCV still sees ".png".
        if not cv2.imwrite(temporary, bgr):
            raise ValueError(f"Could not write the PNG. Received: path={path!r}")
    return path
