"""`--mirror_average` of launch.reconstruct, launch.evaluate and launch.export."""

import json

from keras_invert import building, config, export
from keras_invert.checkpoints import FINAL_MODEL


def _work_dir(folder, representation, **options):
    run = config.TrainConfig(
        representation=representation, image_size=64, width=0.125, summary_images=0, **options
    )
    config.save(run, str(folder))
    building.build_model(run).save(str(folder / FINAL_MODEL))
    return str(folder)


def test_the_scripts_average_with_the_mirror_or_say_in_one_line_why_not(run_script, tmp_path):
    hog = _work_dir(tmp_path / "hog", "hog")
    metrics = tmp_path / "metrics.json"
    status, stderr = run_script(
        "reconstruct", f"--model={hog}", "--data=samples", "--num_images=2",
        f"--out={tmp_path / 'grid.png'}", f"--metrics_out={metrics}", "--mirror_average",
    )  # fmt: skip
    assert status == 0, stderr
    assert "hog decoder, mirror-averaged" in json.loads(metrics.read_text())["results"]

    status, stderr = run_script(
        "export", f"--work_dir={hog}", f"--export_dir={tmp_path / 'exports'}", "--mirror_average"
    )
    assert status == 0, stderr
    version = export.latest_version_dir(str(tmp_path / "exports"))
    assert export.read_metadata(version)["mirror_average"] is True

    status, stderr = run_script(
        "evaluate", f"--model={tmp_path / 'exports'}", "--mirror_average", "--num_images=2",
        f"--out_dir={tmp_path / 'evaluation'}",
    )  # fmt: skip
    assert status == 0, stderr
    rows = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert "mirror-averaged" in json.dumps(rows)

    sift = _work_dir(tmp_path / "sift", "sift", encoder_options={"backend": "opencv"})
    status, stderr = run_script(
        "evaluate", f"--model={sift}", "--mirror_average", f"--out_dir={tmp_path / 'other'}"
    )
    lines = stderr.splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("ERROR: "), stderr
    assert "representation='sift'" in lines[0]
