"""Exports a trained decoder for TF Serving.

    python -m launch.export --work_dir=DIR --export_dir=EXPORT

writes `EXPORT/<version>/` (a SavedModel with `serving_default`,
`serve_float` and `from_features` signatures), renamed into place only when
complete. With `--mirror_average` (HOG, LBP) every signature averages each
decoding with that of the mirrored features.
"""

from __future__ import annotations

from absl import app, flags

from launch import common  # Also quiets TensorFlow's C++ logs.

FLAGS = flags.FLAGS
flags.DEFINE_string("work_dir", None, "Training run directory.", required=True)
flags.DEFINE_string("export_dir", None, "Base directory that TF Serving watches.", required=True)
common.validate_path("work_dir")
common.validate_path("export_dir")
flags.DEFINE_integer("version", None, "Version number (default: next free).")
flags.DEFINE_bool("mirror_average", False, "Average with the decoded mirror (HOG, LBP).")


def main(argv):
    del argv

    from keras_invert import config as config_lib
    from keras_invert import export, files, loading

    # TF Serving watches the folder for version folders.
    files.check_folder(FLAGS.export_dir, "export_dir")
    run = config_lib.load(FLAGS.work_dir)
    if run is None:
        raise app.UsageError(
            "Expected work_dir to be a training work dir (with a config.json). "
            f"Received: work_dir={FLAGS.work_dir!r}"
        )
    decoder = loading.load_model(FLAGS.work_dir)
    path = export.export_saved_model(
        decoder,
        run.representation,
        FLAGS.export_dir,
        image_size=run.image_size,
        encoder_options=config_lib.encoder_options(run),
        version=FLAGS.version,
        mirror_average=FLAGS.mirror_average,
    )
    print(f"Exported {run.representation} model to {path}")


if __name__ == "__main__":
    common.run(main)
