"""benchmarks.throughput (`launch.benchmark`): pipeline/training throughput, the FLOP count."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_flops_count_each_layer_kind_by_hand():
    import keras
    from keras import layers

    from benchmarks import rates

    features = keras.Input((8, 8, 4))
    x = layers.Conv2D(6, 3, strides=2, padding="same")(features)  # -> 4x4x6
    x = layers.Conv2DTranspose(5, 4, strides=2, padding="same")(x)  # 4x4x6 -> 8x8x5
    x = layers.Flatten()(x)
    x = layers.Dense(7)(x)  # 320 -> 7
    model = keras.Model(features, x)

    conv = 2 * 4 * 4 * 3 * 3 * 4 * 6
    upconv = 2 * 4 * 4 * 4 * 4 * 6 * 5
    dense = 2 * 320 * 7
    flops = rates.training_flops_per_image(model)
    assert flops["forward"] == conv + upconv + dense
    # The first layer reads the model input: no input gradient.
    assert flops["training"] == 2 * conv + 3 * (upconv + dense)


def test_settings_reject_network_encoders_and_bad_counts():
    from benchmarks import throughput

    with pytest.raises(ValueError, match="feature representation"):
        throughput.BenchmarkSettings(representations=("alexnet/conv5",))
    with pytest.raises(ValueError, match="rounds"):
        throughput.BenchmarkSettings(rounds=0)
    with pytest.raises(ValueError, match="accelerator_rate"):
        throughput.BenchmarkSettings(accelerator_rate=-1.0)
    # Checked by building the decoder, before any measuring.
    with pytest.raises(ValueError, match="multiple of 64. Received: image_size=13"):
        throughput.BenchmarkSettings(representations=("hog",), image_size=13)
    with pytest.raises(ValueError, match=r"width multiplier in \[1/32, inf\)"):
        throughput.BenchmarkSettings(representations=("lbp",), width=0.0)


def _summary_rows(printed):
    """The final table's rows by representation."""
    summary = printed[printed.index("| representation |") :].splitlines()
    return {line.split("|")[1].strip(): line for line in summary[2:] if line.startswith("| ")}


def _check_report(path, names):
    with open(path) as file:
        report = json.load(file)
    assert [r["representation"] for r in report["representations"]] == names
    assert report["matmul"]["median"] > 0
    for result in report["representations"]:
        for key in ("pipeline", "train_pipeline", "train_memory", "ratio", "cpu_ratio",
                    "achieved_flops", "matmul_fraction"):  # fmt: skip
            values = result[key]["values"]
            assert all(math.isfinite(v) and v > 0 for v in values), (key, values)
        # Two rounds of each feed, and the ratio of each round.
        assert len(result["train_pipeline"]["values"]) == len(result["ratio"]["values"]) == 2
        assert result["flops_per_image"]["training"] > result["flops_per_image"]["forward"] > 0
    return report


def test_streaming_and_cached_representations_tiny_run(tmp_path, capsys):
    from benchmarks import throughput

    settings = throughput.BenchmarkSettings(
        representations=("lbp", "sift"), image_size=64, width=0.05, batch_size=4, steps=2,
        rounds=2, pipeline_batches=3, matmul_size=256,
    )  # fmt: skip
    # A JSON path where no file can be written is refused before the measuring.
    with pytest.raises(ValueError, match="json_path to be a file's path. Received: "):
        throughput.run_benchmark(settings, json_path=str(tmp_path))
    assert "Estimated run time" not in capsys.readouterr().out
    path = tmp_path / "out" / "benchmark.json"
    throughput.run_benchmark(settings, cache_dir=str(tmp_path / "cache"), json_path=str(path))
    printed = capsys.readouterr().out
    assert "Estimated run time: about" in printed
    rows = _summary_rows(printed)
    assert sorted(rows) == ["lbp", "sift"]
    assert "cached" in rows["sift"] and "cached" not in rows["lbp"]

    lbp, sift = _check_report(path, ["lbp", "sift"])["representations"]
    assert not lbp["cached"] and "pipeline_uncached" not in lbp
    assert sift["cached"] and sift["pipeline_uncached"]["median"] > 0
    # Cores per accelerator: the pipeline's CPU seconds per image x the H200's images/s.
    assert lbp["accelerator_rate"] == throughput.ACCELERATOR_RATES["lbp"]
    assert lbp["cores_per_accelerator"] == pytest.approx(
        lbp["pipeline_cpu"]["median"] * throughput.ACCELERATOR_RATES["lbp"]
    )
    assert sift["cores_per_accelerator_uncached"] == pytest.approx(
        sift["pipeline_uncached_cpu"]["median"] * throughput.ACCELERATOR_RATES["sift"]
    )
    assert f"{lbp['cores_per_accelerator']:.1f} (" in rows["lbp"]
    # LBP trained once more with its features in the model, fed crops; SIFT cannot be.
    assert lbp["features_in_model"] and not sift["features_in_model"]
    for key in ("crops_pipeline", "in_model_pipeline", "in_model_memory"):
        assert len(lbp[key]["values"]) in (2, 3) and lbp[key]["median"] > 0, key
    assert f"| {lbp['in_model_pipeline']['median']:.2f} |" in rows["lbp"]
    assert " | - | " in rows["sift"] and "in_model_pipeline" not in sift
    assert lbp["cores_per_accelerator_in_model"] == pytest.approx(
        lbp["crops_pipeline_cpu"]["median"] * throughput.ACCELERATOR_RATES["lbp"]
    )
    # The SIFT cache stays in the given folder, to be reused.
    assert any((tmp_path / "cache").iterdir())


@pytest.mark.slow  # Fast variant: the in-process run above (run_benchmark, which main calls).
def test_script_all_three_representations(tmp_path):
    path = tmp_path / "benchmark.json"
    result = subprocess.run(
        [sys.executable, "-m", "launch.benchmark", "--representation=hog,lbp,sift",
         "--image_size=64", "--width=0.05", "--batch_size=4", "--steps=1", "--rounds=2",
         "--pipeline_batches=3", "--matmul_size=256", f"--json={path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Estimated run time" in result.stdout
    assert sorted(_summary_rows(result.stdout)) == ["hog", "lbp", "sift"]
    _check_report(path, ["hog", "lbp", "sift"])
