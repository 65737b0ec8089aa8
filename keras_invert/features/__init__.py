"""Image representations computed as TensorFlow ops (SPEC.md section 1)."""

from keras_invert.features.hog import HOG, hog, hog_num_channels, hog_output_size

__all__ = ["HOG", "hog", "hog_num_channels", "hog_output_size"]
