"""Image representations: HOG and LBP as TensorFlow ops, SIFT maps (docs/reference.md)."""

from keras_invert.features.hog import HOG, hog, hog_num_channels, hog_output_size
from keras_invert.features.lbp import LBP, LBP_NUM_BINS, lbp, lbp_output_size
from keras_invert.features.sift import (
    SIFT_NUM_CHANNELS,
    sift,
    sift_batch,
    sift_keypoints,
    sift_output_size,
    sift_tf,
)

__all__ = [
    "HOG",
    "LBP",
    "LBP_NUM_BINS",
    "SIFT_NUM_CHANNELS",
    "hog",
    "hog_num_channels",
    "hog_output_size",
    "lbp",
    "lbp_output_size",
    "sift",
    "sift_batch",
    "sift_keypoints",
    "sift_output_size",
    "sift_tf",
]
