"""The prepared GPU check (benchmarks/gpu_check.py) at toy size on the CPU, and what a bare GPU
image lacks: Jupyter (the inline executor must not need it). In their own module, so that
they run beside the rehearsals (tests/test_rehearsal.py) rather than after them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_inline_pipeline_needs_no_jupyter(tmp_path):
    """A bare GPU image has no Jupyter: the pipeline imports and plans an inline study without it."""
    code = ("import sys\n"
            "for m in ('jupyter_core', 'jupyter_client', 'papermill', 'nbformat', 'nbclient', 'ipykernel'):\n"
            "    sys.modules[m] = None\n"                      # any import of these now fails
            "from xai_utils.pipeline import main\n"
            f"sys.exit(main(['--profile', 'quick', '--dry-run', '--executor', 'inline', "
            f"'--set', 'results_root={tmp_path}']))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shapes/ce/seed0:train" in done.stdout and "would run" in done.stdout


def test_the_gpu_check_runs_at_toy_size(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check
    report = gpu_check.main(["--small", "--out", str(tmp_path), "--device", "cpu", "--skip", "rehearsal_imagenet_s50"])
    assert {name: s["status"] for name, s in report["sections"].items()} == {
        "training": "ok", "pixel_flipping": "ok", "rehearsal_cifar10": "ok", "rehearsal_imagenet_s50": "skipped",
        "first_seed": "ok", "grid_hours": "ok", "evaluation_224": "ok", "loader": "ok", "training_compiled": "ok"}
    sections = report["sections"]
    assert sections["rehearsal_cifar10"]["result"]["exit_status"] == 0
    assert sections["rehearsal_cifar10"]["result"]["figures"] > 0
    objectives = {r["objective"] for r in sections["training"]["result"]["rows"]}
    assert objectives == {"ce", "scl", "tl", "excon", "exconb", "cgc"}
    assert all(r["images_per_s"] > 0 for r in sections["training"]["result"]["rows"])
    assert sections["pixel_flipping"]["result"]["max_abs_diff_auc"] < 1e-5
    # the first seed's slices ran the real training stage to its end (three epochs at toy size)
    for row in sections["first_seed"]["result"]["rows"]:
        assert row["stopped"] == "ended by itself (exit status 0)", row
        assert row["epochs_done"] == 3 and row["train_images"] == 256, row
        assert row["images_per_s"] == pytest.approx(256 / row["seconds_per_epoch"], rel=1e-2)
    hours = sections["grid_hours"]["result"]
    assert set(hours["total_gpu_hours"]) == {"cifar10", "cifar10_extensions", "imagenet_s50"}
    ce = next(r for r in hours["rows"] if r["profile"] == "cifar10" and r["objective"] == "ce")
    assert ce["from"] == "training step"            # a toy slice's 256 images are not CIFAR-10's 50,000
    assert ce["gpu_hours"] == pytest.approx(5 * 200 * 50_000 / ce["images_per_s"] / 3600, rel=1e-2)
    assert report["command"].startswith("python benchmarks/gpu_check.py --small")
    saved = json.loads(next(tmp_path.glob("gpu_check-*-small.json")).read_text())
    assert saved["sections"].keys() == report["sections"].keys()
    assert next(tmp_path.glob("gpu_check-*-small.md")).read_text().startswith("# GPU check")
