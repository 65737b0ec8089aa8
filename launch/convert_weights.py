"""Converts AlexNet weights from Caffe or torchvision files into a Keras `.weights.h5`.

Reads a `.caffemodel` (Caffe) or `.pth` (torchvision) file once, without
Caffe or PyTorch, loads it into `keras_invert.encoders.alexnet(variant)` and
saves the weights, so later runs need only
`alexnet(variant, weights="FILE.weights.h5")`. The output appears atomically
(temporary file in the same folder, then rename).

Usage:
    python -m launch.convert_weights --in=bvlc_reference_caffenet.caffemodel \
        --out=caffenet.weights.h5
    python -m launch.convert_weights --in=alexnet-owt-7be5be79.pth \
        --out=alexnet_torchvision.weights.h5 --variant=torchvision
"""

from absl import app, flags, logging

from keras_invert import files
from launch import common  # Also quiets TensorFlow's C++ logs.

# Not `required=True`: absl validates required flags on every parse in the
# process, which would break other scripts' flag parsing in a shared test run.
flags.DEFINE_string("in", None, "Caffe .caffemodel or torchvision .pth file to read.")
flags.DEFINE_string("out", None, "Keras weights file to write; must end in .weights.h5.")
flags.DEFINE_enum(
    "variant",
    None,
    ["caffe", "torchvision"],
    "AlexNet variant; by default caffe for .caffemodel, torchvision for .pth/.pt.",
)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    input_path, output_path = FLAGS["in"].value, FLAGS["out"].value
    if not input_path or not output_path:
        raise app.UsageError("Both --in and --out are required.")
    files.check_existing_file(input_path, "in")
    files.check_file(output_path, "out")
    # Imported after flag checks so usage errors answer without loading TensorFlow.
    from keras_invert.encoders import convert_alexnet_weights

    variant = convert_alexnet_weights(input_path, output_path, FLAGS.variant, names=("in", "out"))
    logging.info("Wrote %s (AlexNet %s) from %s", output_path, variant, input_path)


if __name__ == "__main__":
    common.run(main)
