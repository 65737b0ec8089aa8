"""tf.data input pipelines of keras_invert: sources, per-example ops, one builder.

- `build_dataset`: a source split -> `(features, target)` batches for `model.fit`
  (see `pipelines.builder` for the step order and randomness, and the modules
  of its parts: `dataset_config`, `decode_check`, `stream`, `examples`, `ops`,
  `cache`). The stream is a function of element position, so `start_step`
  (resume), `num_shards`/`shard_index` (one pipeline per tf.distribute worker)
  are exact and cheap, and `data_service` runs the work on a tf.data service
  (`launch.data_service`).
- `DatasetConfig`: `build_dataset`'s arguments, validated, defaults resolved.
- `training_dataset`: a run's training stream for one input shard, from its
  `TrainConfig` (what `keras_invert.training.train` takes), and
  `sample_batch`, the fixed test batch whose reconstructions it logs.
- `load_images`: centre crops of image files as a numpy batch, for the
  reconstruct and evaluate scripts; `read_image`: one file decoded, with an
  error that says whether it is missing, a folder or not an image.
- `chosen_photos`: the photos a script's `--images` or `--data`/`--split`
  name, TFDS splits included, as `Photos` (labels, names, crops at any size).
- `list_source_files`: the photos of a "samples" or "folder:PATH" split.
- `SAMPLE_PHOTOS`, `SAMPLE_TEST_PHOTOS`: the bundled photos and the fixed
  held-out ones (see `pipelines.sources`).

Example:
    >>> from pipelines import build_dataset
    >>> dataset = build_dataset("samples", "train", representation="hog",
    ...                         image_size=128, batch_size=8, seed=0)
"""

from pipelines.builder import build_dataset
from pipelines.dataset_config import DatasetConfig
from pipelines.photos import Photos, chosen_photos, load_images, read_image
from pipelines.sources import SAMPLE_PHOTOS, SAMPLE_TEST_PHOTOS, list_source_files
from pipelines.training_data import sample_batch, training_dataset

__all__ = [
    "SAMPLE_PHOTOS",
    "SAMPLE_TEST_PHOTOS",
    "DatasetConfig",
    "Photos",
    "build_dataset",
    "chosen_photos",
    "list_source_files",
    "load_images",
    "read_image",
    "sample_batch",
    "training_dataset",
]
