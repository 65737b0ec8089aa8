"""pipelines.baselines: the mean training image, sampled evenly on a large split."""

import numpy as np
from PIL import Image

from pipelines import baselines


def test_a_large_split_is_sampled_evenly_along_its_sorted_list(tmp_path, monkeypatch):
    train = tmp_path / "photos" / "train"
    train.mkdir(parents=True)
    (tmp_path / "photos" / "test").mkdir()
    for index, level in enumerate((0, 50, 100, 150, 200, 250)):
        pixels = np.full((20, 20, 3), level, np.uint8)
        Image.fromarray(pixels).save(train / f"photo{index}.png")
    source = f"folder:{tmp_path / 'photos'}"
    baselines.mean_target.cache_clear()
    mean, description = baselines.mean_target(source, "train", 8, 4)
    np.testing.assert_allclose(mean, 125 / 255, atol=1e-6)  # All six.
    assert description.endswith("split train)")
    monkeypatch.setattr(baselines, "MAX_MEAN_PHOTOS", 3)
    baselines.mean_target.cache_clear()
    mean, description = baselines.mean_target(source, "train", 8, 4)
    np.testing.assert_allclose(mean, 100 / 255, atol=1e-6)  # photo0, photo2, photo4.
    assert description.endswith("1 in 2 of 6")
    baselines.mean_target.cache_clear()
