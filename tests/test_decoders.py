"""Decoders against the paper's supplementary Tables 2-6 and the generic decoder rule.

The rows below are transcribed from the tables (layer, input, K, S, input size,
output size) independently of the library's own table data.
"""

import keras
import numpy as np
import pytest

from keras_invert import decoders, registry

# (name, inputs, K, S, in_shape, out_shape); K=0 for fully connected / reshape.
TABLE_2_HOG = [
    ("convA1", "HOG", 5, 2, (32, 32, 31), (16, 16, 256)),
    ("convA2", "convA1", 5, 2, (16, 16, 256), (8, 8, 512)),
    ("convA3", "convA2", 3, 2, (8, 8, 512), (4, 4, 1024)),
    ("upconvA1", "convA3", 4, 2, (4, 4, 1024), (8, 8, 512)),
    ("upconvA2", "upconvA1", 4, 2, (8, 8, 512), (16, 16, 256)),
    ("upconvA3", "upconvA2", 4, 2, (16, 16, 256), (32, 32, 128)),
    ("convB1", "HOG", 5, 1, (32, 32, 31), (32, 32, 128)),
    ("convB2", "convB1", 3, 1, (32, 32, 128), (32, 32, 128)),
    ("convJ1", "J", 3, 1, (32, 32, 256), (32, 32, 256)),
    ("convJ2", "convJ1", 3, 1, (32, 32, 256), (32, 32, 128)),
    ("upconvJ4", "convJ2", 4, 2, (32, 32, 128), (64, 64, 64)),
    ("upconvJ5", "upconvJ4", 4, 2, (64, 64, 64), (128, 128, 32)),
    ("upconvJ6", "upconvJ5", 4, 2, (128, 128, 32), (256, 256, 3)),
]
TABLE_3_SIFT = [
    ("conv1", "SIFT", 5, 2, (64, 64, 133), (32, 32, 256)),
    ("conv2", "conv1", 3, 2, (32, 32, 256), (16, 16, 512)),
    ("conv3", "conv2", 3, 2, (16, 16, 512), (8, 8, 1024)),
    ("conv4", "conv3", 3, 2, (8, 8, 1024), (4, 4, 2048)),
    ("conv5", "conv4", 3, 1, (4, 4, 2048), (4, 4, 2048)),
    ("conv6", "conv5", 3, 1, (4, 4, 2048), (4, 4, 1024)),
    ("upconv1", "conv6", 4, 2, (4, 4, 1024), (8, 8, 512)),
    ("upconv2", "upconv1", 4, 2, (8, 8, 512), (16, 16, 256)),
    ("upconv3", "upconv2", 4, 2, (16, 16, 256), (32, 32, 128)),
    ("upconv4", "upconv3", 4, 2, (32, 32, 128), (64, 64, 64)),
    ("upconv5", "upconv4", 4, 2, (64, 64, 64), (128, 128, 32)),
    ("upconv6", "upconv5", 4, 2, (128, 128, 32), (256, 256, 3)),
]
TABLE_4_LBP = [
    ("convA1", "LBP", 5, 2, (16, 16, 58), (8, 8, 256)),
    ("convA2", "convA1", 5, 2, (8, 8, 256), (4, 4, 512)),
    ("convA3", "convA2", 3, 1, (4, 4, 512), (4, 4, 1024)),
    ("upconvA1", "convA3", 4, 2, (4, 4, 1024), (8, 8, 512)),
    ("upconvA2", "upconvA1", 4, 2, (8, 8, 512), (16, 16, 256)),
    ("convB1", "LBP", 5, 1, (16, 16, 58), (16, 16, 128)),
    ("convB2", "convB1", 3, 1, (16, 16, 128), (16, 16, 128)),
    ("convJ1", "J", 3, 1, (16, 16, 384), (16, 16, 256)),
    ("convJ2", "convJ1", 3, 1, (16, 16, 256), (16, 16, 128)),
    ("upconvJ3", "convJ2", 4, 2, (16, 16, 128), (32, 32, 128)),
    ("upconvJ4", "upconvJ3", 4, 2, (32, 32, 128), (64, 64, 64)),
    ("upconvJ5", "upconvJ4", 4, 2, (64, 64, 64), (128, 128, 32)),
    ("upconvJ6", "upconvJ5", 4, 2, (128, 128, 32), (256, 256, 3)),
]
TABLE_5_CONV5 = [
    ("conv1", "CONV5", 3, 1, (6, 6, 256), (6, 6, 256)),
    ("conv2", "conv1", 3, 1, (6, 6, 256), (6, 6, 256)),
    ("conv3", "conv2", 3, 1, (6, 6, 256), (6, 6, 256)),
    ("upconv1", "conv3", 5, 2, (6, 6, 256), (12, 12, 256)),
    ("upconv2", "upconv1", 5, 2, (12, 12, 256), (24, 24, 128)),
    ("upconv3", "upconv2", 5, 2, (24, 24, 128), (48, 48, 64)),
    ("upconv4", "upconv3", 5, 2, (48, 48, 64), (96, 96, 32)),
    ("upconv5", "upconv4", 5, 2, (96, 96, 32), (192, 192, 3)),
]
TABLE_6_FC8 = [
    ("fc1", "FC8", 0, 0, (1000,), (4096,)),
    ("fc2", "fc1", 0, 0, (4096,), (4096,)),
    ("fc3", "fc2", 0, 0, (4096,), (4096,)),
    ("reshape", "fc3", 0, 0, (4096,), (4, 4, 256)),
    ("upconv1", "reshape", 5, 2, (4, 4, 256), (8, 8, 256)),
    ("upconv2", "upconv1", 5, 2, (8, 8, 256), (16, 16, 128)),
    ("upconv3", "upconv2", 5, 2, (16, 16, 128), (32, 32, 64)),
    ("upconv4", "upconv3", 5, 2, (32, 32, 64), (64, 64, 32)),
    ("upconv5", "upconv4", 5, 2, (64, 64, 32), (128, 128, 3)),
]


def _generic_rule_table(in_shape, upconv_channels):
    """docs/reference.md, Generic decoder rule: 3 conv 3x3 with 256 channels, then 5x5 up-convs."""
    rows, shape = [], in_shape
    for i in (1, 2, 3):
        out = (shape[0], shape[1], 256)
        rows.append((f"conv{i}", "", 3, 1, shape, out))
        shape = out
    for i, channels in enumerate(upconv_channels, start=1):
        out = (shape[0] * 2, shape[1] * 2, channels)
        rows.append((f"upconv{i}", "", 5, 2, shape, out))
        shape = out
    return rows


def _expected_parameters(rows):
    total = 0
    for _, _, kernel, _, in_shape, out_shape in rows:
        if kernel:
            total += kernel * kernel * in_shape[-1] * out_shape[-1] + out_shape[-1]
        elif len(out_shape) == 1:
            total += in_shape[0] * out_shape[0] + out_shape[0]
    return total


def _check_against_table(model, rows):
    weighted = [layer for layer in model.layers if layer.weights]
    # Functional models list layers in a topological order, not the table's.
    assert sorted(layer.name for layer in weighted) == sorted(
        r[0] for r in rows if r[2] or len(r[5]) == 1
    )
    for name, _, kernel, stride, in_shape, out_shape in rows:
        layer = model.get_layer(name)
        assert tuple(layer.output.shape[1:]) == out_shape, name
        assert tuple(layer.input.shape[1:]) == in_shape, name
        if kernel:
            assert layer.kernel_size == (kernel, kernel), name
            assert layer.strides == (stride, stride), name
    assert model.count_params() == _expected_parameters(rows)
    # Leaky ReLU after every weighted layer but the last, which is linear.
    activations = {
        layer.name for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)
    }
    assert model.layers[-1].name == rows[-1][0]
    assert activations == {f"{layer.name}_lrelu" for layer in weighted if layer.name != rows[-1][0]}


@pytest.mark.parametrize(
    "build, rows",
    [
        (lambda: decoders.hog_decoder(256), TABLE_2_HOG),
        (lambda: decoders.sift_decoder(256), TABLE_3_SIFT),
        (lambda: decoders.lbp_decoder(256), TABLE_4_LBP),
        (lambda: decoders.alexnet_decoder("conv5", (6, 6, 256)), TABLE_5_CONV5),
        (lambda: decoders.alexnet_decoder("fc8", (1000,)), TABLE_6_FC8),
    ],
    ids=["table2_hog", "table3_sift", "table4_lbp", "table5_conv5", "table6_fc8"],
)
def test_decoder_matches_paper_table(build, rows):
    _check_against_table(build(), rows)


@pytest.mark.parametrize(
    "layer, in_shape, upconvs",
    [
        ("conv1", (27, 27, 96), (64, 32, 3)),
        ("conv2", (13, 13, 256), (128, 64, 32, 3)),
        ("conv3", (13, 13, 384), (128, 64, 32, 3)),
        ("conv4", (13, 13, 384), (128, 64, 32, 3)),
    ],
)
def test_conv_decoders_follow_generic_rule(layer, in_shape, upconvs):
    _check_against_table(
        decoders.alexnet_decoder(layer, in_shape), _generic_rule_table(in_shape, upconvs)
    )


@pytest.mark.parametrize("layer, units", [("fc6", 4096), ("fc7", 4096)])
def test_fc6_fc7_decoders_are_table6_design(layer, units):
    rows = [("fc1", "", 0, 0, (units,), (4096,))] + TABLE_6_FC8[1:]
    _check_against_table(decoders.alexnet_decoder(layer, (units,)), rows)


def test_width_and_image_size_options():
    small = decoders.hog_decoder(128, width=0.5)
    assert small.input_shape == (None, 16, 16, 31)
    assert small.output_shape == (None, 128, 128, 3)
    assert small.get_layer("convA1").filters == 128
    assert small.get_layer("upconvJ6").filters == 3
    with pytest.raises(ValueError, match="multiple of 64"):
        decoders.hog_decoder(100)
    with pytest.raises(ValueError, match="width"):
        decoders.hog_decoder(128, width=0)
    with pytest.raises(ValueError, match="Received: width='0.5'"):  # A flag's text, unparsed.
        decoders.hog_decoder(128, width="0.5")
    assert decoders.hog_decoder(64, width=np.float32(0.125)).output_shape == (None, 64, 64, 3)


def test_feature_scale_divides_the_features_before_the_first_layer():
    plain = decoders.decoder_for_shape((7, 7, 8), 28, width=1 / 16)
    scaled = decoders.decoder_for_shape((7, 7, 8), 28, width=1 / 16, feature_scale=4.0)
    assert "feature_scale" not in [layer.name for layer in plain.layers]
    assert scaled.layers[1].name == "feature_scale"
    assert scaled.count_params() == plain.count_params()
    scaled.set_weights(plain.get_weights())
    features = np.random.default_rng(0).normal(0, 4, (2, 7, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(scaled(features), plain(features / 4.0), rtol=1e-5, atol=1e-6)
    # Both streams of a two-stream table read the scaled features.
    rows, shape = decoders.HOG_TABLE, (8, 8, 31)
    plain = decoders.build_from_table(rows, shape, width=1 / 16)
    scaled = decoders.build_from_table(rows, shape, width=1 / 16, feature_scale=2.0)
    scaled.set_weights(plain.get_weights())
    features = np.random.default_rng(1).uniform(0, 2, (2, *shape)).astype(np.float32)
    np.testing.assert_allclose(scaled(features), plain(features / 2.0), rtol=1e-5, atol=1e-6)
    for bad in (0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="feature scale"):
            decoders.decoder_for_shape((7, 7, 8), 28, feature_scale=bad)


def test_build_decoder_by_name_and_unknown_name():
    assert registry.build_decoder("hog", image_size=64, width=0.25).output_shape == (
        None,
        64,
        64,
        3,
    )
    with pytest.raises(ValueError, match="Unknown representation"):
        registry.build_decoder("no-such-feature")


def test_a_mean_colour_decoder_gives_every_image_its_learnt_mean_colour(tmp_path):
    plain = decoders.hog_decoder(64, width=0.125)
    decoder = decoders.hog_decoder(64, width=0.125, mean_colour=True)
    assert (
        decoder.layers[-1].name == decoders.MEAN_COLOUR_LAYER
        and decoder.count_params() == plain.count_params() + 3
    )
    colour = np.array([0.2, 0.5, 0.7], np.float32)
    decoder.set_weights([*plain.get_weights(), colour])
    features = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 31)).astype(np.float32)
    images = np.asarray(decoder(features))
    np.testing.assert_allclose(images.mean(axis=(1, 2)), np.tile(colour, (3, 1)), atol=1e-5)
    # The structure is the table's: the plain decoder's output less its own mean.
    structure = np.array(plain(features))
    structure -= structure.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(images - colour, structure, atol=1e-5)
    # Saved and loaded again without custom objects (the layer is registered).
    decoder.save(tmp_path / "decoder.keras")
    again = keras.saving.load_model(tmp_path / "decoder.keras")
    np.testing.assert_allclose(again(features), images, atol=1e-6)


def test_the_registry_gives_a_learnt_mean_colour_to_features_that_cannot_tell_it():
    for name in ("hog", "lbp", "sift"):
        decoder = registry.build_decoder(name, image_size=64, width=0.125)
        assert decoder.layers[-1].name == decoders.MEAN_COLOUR_LAYER, name
        plain = registry.build_decoder(name, image_size=64, width=0.125, mean_colour=False)
        assert decoders.MEAN_COLOUR_LAYER not in [layer.name for layer in plain.layers], name
    tap = registry.get("efficientnet-lite0/stem")
    assert not tap.mean_colour_invariant
    with pytest.raises(ValueError, match="features carry it. Received: mean_colour=True"):
        tap.build_decoder(width=0.125, mean_colour=True)


def test_wrong_feature_shape_names_expected_shape():
    decoder = decoders.hog_decoder(64, width=0.125)
    with pytest.raises(ValueError, match=r"8, 8, 31"):
        decoder(np.zeros((1, 9, 9, 31), np.float32))


def test_decoder_round_trips_through_keras_file(tmp_path):
    decoder = decoders.hog_decoder(64, width=0.125, negative_slope=0.1)
    features = np.random.default_rng(0).uniform(0, 0.3, (2, 8, 8, 31)).astype(np.float32)
    path = tmp_path / "decoder.keras"
    decoder.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored(features), decoder(features), rtol=1e-5, atol=1e-6)
    assert restored.get_layer("convA1_lrelu").negative_slope == pytest.approx(0.1)


@pytest.mark.parametrize(
    "in_shape, rows",
    [
        ((6, 6, 256), TABLE_5_CONV5),
        ((1000,), TABLE_6_FC8),
        ((27, 27, 96), _generic_rule_table((27, 27, 96), (64, 32, 3))),
        ((13, 13, 384), _generic_rule_table((13, 13, 384), (128, 64, 32, 3))),
    ],
    ids=["table5_conv5", "table6_fc8", "conv1", "conv2_to_conv4"],
)
def test_generic_rule_gives_the_alexnet_tables(in_shape, rows):
    _check_against_table(decoders.decoder_for_shape(in_shape, 227), rows)
    tables = {6: decoders.CONV5_TABLE, 27: decoders.CONV1_TABLE, 13: decoders.CONV2_TO_CONV4_TABLE}
    assert decoders.generic_table(in_shape, 227)[0] == tables.get(in_shape[0], decoders.FC_TABLE)


# EfficientNet-Lite0's taps at 224: maps decode to 224, vectors to 128 (Table 6).
@pytest.mark.parametrize(
    "in_shape, upconvs, parameters",
    [
        ((112, 112, 32), (3,), 1_273_347),
        ((56, 56, 24), (32, 3), 1_442_947),
        ((28, 28, 40), (64, 32, 3), 1_735_875),
        ((14, 14, 80), (128, 64, 32, 3), 2_442_563),
        ((7, 7, 320), (256, 128, 64, 32, 3), 4_634_179),
    ],
)
def test_generic_rule_for_efficientnet_maps(in_shape, upconvs, parameters):
    rows = _generic_rule_table(in_shape, upconvs)
    decoder = decoders.decoder_for_shape(in_shape, 224)
    _check_against_table(decoder, rows)
    assert decoder.output_shape == (None, 224, 224, 3)
    assert decoder.count_params() == parameters


def test_generic_rule_for_vectors_small_images_and_large_maps():
    rows = [("fc1", "", 0, 0, (1280,), (4096,))] + TABLE_6_FC8[1:]
    _check_against_table(decoders.decoder_for_shape((1280,), 224), rows)
    # A 64-pixel network: the vector decodes to 64 (4 -> 64), not beyond its image.
    assert decoders.generic_table((10,), 64)[1] == 64
    # More than five doublings: channels are capped at 256.
    table, size = decoders.generic_table((2, 2, 8), 256)
    assert size == 256
    assert [row.filters for row in table[3:]] == [256, 256, 256, 128, 64, 32, 3]
    # A map already as large as the image: a fourth conv makes the image.
    table, size = decoders.generic_table((64, 64, 8), 64)
    assert size == 64 and table[-1] == decoders.LayerSpec("conv4", "conv", 3, 3, 1)
    assert decoders.decoder_for_shape((64, 64, 8), 64, width=0.1).output_shape == (
        None, 64, 64, 3,
    )  # fmt: skip
    with pytest.raises(ValueError, match="square feature map"):
        decoders.generic_table((6, 8, 256), 227)


def test_vector_decoders_reshape_at_any_width():
    # 4096 * 0.1 = 410 units do not make a 4x4 map of round(256 * 0.1) = 26 channels:
    # the layer before the reshape is sized from the map (4 * 4 * 26 = 416).
    decoder = decoders.decoder_for_shape((1000,), 227, width=0.1)
    assert decoder.get_layer("fc3").units == 416
    assert decoder.get_layer("reshape").output.shape[1:] == (4, 4, 26)
    assert decoders.alexnet_decoder("fc8", (1000,), width=0.1).output_shape == (None, 128, 128, 3)
