"""The Papermill pipeline: validation before work, the smoke study end to end, skipping, resuming."""
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from xai_utils import pipeline
from xai_utils.config import ConfigError, load_profile

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "xai_utils.pipeline", "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


@pytest.mark.parametrize("args, needle", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "smoke", "--set", "epochs=abc"], "'epochs' must be an int"),
    (["--profile", "smoke", "--set", "no_such_key=1"], "unknown key 'no_such_key'"),
    (["--profile", "smoke", "--only", "cifar10"], "matches no run"),
    (["--profile", "smoke", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_bad_arguments_fail_with_one_line_and_write_nothing(tmp_path, args, needle):
    res = _cli(*args, "--set", f"results_root={tmp_path / 'r'}", "--set", f"figures_root={tmp_path / 'f'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert _files(tmp_path) == []


def test_validation_checks_notebook_parameters(tmp_path):
    prof = load_profile("smoke", results_root=str(tmp_path))
    p = pipeline.plan(prof)
    pipeline.validate(p)                       # the generated parameters fit every notebook
    assert [j.stage for j in p.jobs][-1] == "figures"
    assert len(p.jobs) == 3 * len(list(prof.runs())) + 1
    p.jobs[0].params["epochz"] = 3
    with pytest.raises(ConfigError, match="unknown parameter 'epochz'"):
        pipeline.validate(p)
    p.jobs[0].params.pop("epochz")
    p.jobs[0].params["seed"] = "zero"
    with pytest.raises(ConfigError, match="parameter 'seed' must be int"):
        pipeline.validate(p)
    assert _files(tmp_path) == []


def test_only_selects_runs():
    prof = load_profile("smoke")
    prof = load_profile("smoke", seeds=[0, 1])
    p = pipeline.plan(prof, stages=("train",), only="shapes/scl/1")
    assert [j.run_id for j in p.jobs] == ["shapes/scl/seed1"]
    p = pipeline.plan(prof, stages=("train", "attribute"), only="shapes/*/seed0")
    assert {j.run_id for j in p.jobs} == {"shapes/ce/seed0", "shapes/scl/seed0", "shapes/tl/seed0"}
    assert len(p.jobs) == 6


def test_smoke_study_end_to_end(tmp_path):
    """Train only (an 'interrupted' study), then the rest continues from attribution, then all skip."""
    common = ["--profile", "smoke", "--set", f"results_root={tmp_path / 'results'}",
              "--set", f"figures_root={tmp_path / 'figures'}"]
    start = time.perf_counter()
    first = _cli(*common, "--stage", "train")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _cli(*common, "--jobs", "2")      # the three runs on two workers
    elapsed = time.perf_counter() - start
    assert second.returncode == 0, second.stdout + second.stderr
    # speed targets live in benchmarks, not in timed tests: the time is printed for the record
    print(f"smoke study end to end: {elapsed:.0f} s")
    # the second invocation skipped training and ran everything after it
    assert "3 skipped" in second.stdout and "7 done" in second.stdout, second.stdout

    study = tmp_path / "results" / "smoke"
    for objective in ("ce", "scl", "tl"):
        for seed in (0,):
            run = study / "shapes" / objective / f"seed{seed}"
            for nb in ("01_train", "02_attribute", "03_evaluate"):
                assert (run / "notebooks" / f"{nb}.ipynb").is_file()
            df = pd.read_csv(run / "results.csv")
            assert set(df["method"]) == {"gradcam", "eigencam"}
            assert {"pixel_flipping", "pointing_game"} <= set(df["metric"])
    assert (study / "notebooks" / "04_figures.ipynb").is_file()
    figs = tmp_path / "figures" / "smoke"
    for stem in ("table_accuracy", "table_attribution_metrics", "table_significance", "paper_vs_reproduced"):
        for ext in ("csv", "md", "tex"):
            assert (figs / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    for stem in ("fig_saliency_grid", "fig_metric_distributions", "fig_pixel_flipping_curves", "fig_embeddings"):
        for ext in ("pdf", "png"):
            assert (figs / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"

    start = time.perf_counter()
    third = _cli(*common)
    assert third.returncode == 0 and "10 skipped" in third.stdout, third.stdout
    print(f"rerun with every stage done: {time.perf_counter() - start:.1f} s")


def test_failed_run_does_not_stop_the_others(tmp_path):
    prof = tmp_path / "mixed.yaml"
    prof.write_text(f"""
datasets: [imagenet_s50, shapes]
objectives: [ce]
seeds: [0]
results_root: {tmp_path / 'results'}
figures_root: {tmp_path / 'figures'}
settings:
  default: {{arch: resnet18, widths: [8, 8, 16, 16], epochs: 1, train_subset: 64, batch_size: 32,
             data_root: {tmp_path / 'no-imagenet-here'}}}
""")
    res = _cli("--profile", str(prof), "--stage", "train", "--jobs", "2")
    assert res.returncode == 1
    assert "FAILED imagenet_s50/ce/seed0:train" in res.stdout
    assert "1 done" in res.stdout and "1 failed" in res.stdout
    failed_nb = tmp_path / "results" / "mixed" / "imagenet_s50" / "ce" / "seed0" / "notebooks" / "01_train.ipynb"
    assert str(failed_nb) in res.stdout and failed_nb.is_file()
    assert (tmp_path / "results" / "mixed" / "shapes" / "ce" / "seed0" / "model.pt").is_file()


def test_parallel_kernels_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 8)
    with pipeline._threads_per_kernel(3):
        assert pipeline.os.environ["OMP_NUM_THREADS"] == "2"
        assert pipeline.os.environ["MKL_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in pipeline.os.environ
    with pipeline._threads_per_kernel(16):             # never below one thread
        assert pipeline.os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")         # the user's choice wins
    with pipeline._threads_per_kernel(2):
        assert pipeline.os.environ["OMP_NUM_THREADS"] == "5"
    assert pipeline.os.environ["OMP_NUM_THREADS"] == "5"
    with pipeline._threads_per_kernel(1):              # one worker: nothing changes
        assert pipeline.os.environ["OMP_NUM_THREADS"] == "5"
