"""The Papermill pipeline: validation before work, the smoke study end to end, skipping, resuming."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

from broken_data import corrupt_imagenet
from xai_utils import pipeline
from xai_utils.pipeline import executors
from xai_utils.pipeline.notebooks import RunKernel
from xai_utils.settings import ConfigError, RunConfig, load_profile, stage_hash
from xai_utils.study.objectives import foreign_settings
from xai_utils.stages.evaluate import evaluate_run
from xai_utils.stages.fingerprint import cpu_model
from xai_utils.stages.files import save_json

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "xai_utils.pipeline", "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _in_process(capfd, *args) -> subprocess.CompletedProcess:
    """The command line run in this process (``pipeline.main``, without an interpreter's
    start-up): its exit status and what it wrote, as :func:`_cli` returns them."""
    capfd.readouterr()
    try:
        status = pipeline.main(["--no-progress", *args])
    except SystemExit as e:                      # argparse's own errors exit
        status = e.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(list(args), status, out, err)


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*")] if root.exists() else []


@pytest.mark.parametrize("args, needle", [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "smoke", "--set", "epochs=abc"], "'epochs' must be an int"),
    (["--profile", "smoke", "--set", "no_such_key=1"], "unknown key 'no_such_key'"),
    (["--profile", "smoke", "--only", "cifar10"], "matches no run"),
    (["--profile", "smoke", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_bad_arguments_fail_with_one_line_and_write_nothing(tmp_path, capfd, args, needle):
    roots = ["--set", f"results_root={tmp_path / 'r'}", "--set", f"figures_root={tmp_path / 'f'}"]
    # the first case through `python -m xai_utils.pipeline` itself, the others in this process
    res = _cli(*args, *roots) if needle.startswith("unknown profile") else _in_process(capfd, *args, *roots)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert _files(tmp_path) == []


def test_validation_checks_notebook_parameters(tmp_path):
    prof = load_profile("smoke", results_root=str(tmp_path))
    p = pipeline.plan(prof)
    pipeline.validate(p)                       # the generated parameters fit every notebook
    assert [j.stage for j in p.jobs][-1] == "figures"
    # per run: train, then attribute + evaluate under each protocol; then the figures
    assert len(p.jobs) == sum(1 + 2 * len(prof.evaluations(r)) for r in prof.runs()) + 1
    p.jobs[0].params["epochz"] = 3
    with pytest.raises(ConfigError, match="unknown parameter 'epochz'"):
        pipeline.validate(p)
    p.jobs[0].params.pop("epochz")
    p.jobs[0].params["seed"] = "zero"
    with pytest.raises(ConfigError, match="parameter 'seed' must be int"):
        pipeline.validate(p)
    assert _files(tmp_path) == []
    # the figures job carries each protocol's NaN pairing, the study's setting where it gives one
    assert p.jobs[-1].params["nan_pairing"] == {"corrected": "pairs", "official": "per_model"}
    per_model = pipeline.plan(load_profile("smoke", results_root=str(tmp_path), nan_pairing="per_model"))
    assert per_model.jobs[-1].params["nan_pairing"] == {"corrected": "per_model", "official": "per_model"}


def test_only_selects_runs():
    prof = load_profile("smoke")
    prof = load_profile("smoke", seeds=[0, 1])
    p = pipeline.plan(prof, stages=("train",), only="shapes/scl/1")
    assert [j.run_id for j in p.jobs] == ["shapes/scl/seed1"]
    p = pipeline.plan(prof, stages=("train", "attribute"), only="shapes/*/seed0")
    assert {j.group for j in p.jobs} == {"shapes/ce/seed0", "shapes/scl/seed0", "shapes/tl/seed0"}
    assert len(p.jobs) == 9                   # per run: train, attribute, attribute under "official"
    assert {j.run_id for j in p.jobs if j.group == "shapes/ce/seed0"} == {"shapes/ce/seed0", "shapes/ce/seed0@official"}


def test_smoke_study_end_to_end(tmp_path, capfd):
    """Train only (an 'interrupted' study), then the rest continues from attribution, then all skip.
    CE and SCL (the claim's pair) on a quarter of the smoke training set, the corrected protocol:
    what is tested is the pipeline around the notebooks (test_train checks that the smoke runs
    learn; test_rehearsal runs both protocols, the stage functions inline)."""
    common = ["--profile", "smoke", "--set", f"results_root={tmp_path / 'results'}",
              "--set", f"figures_root={tmp_path / 'figures'}", "--set", "objectives=[ce, scl]",
              "--set", "train_subset=512", "--set", "protocols=[corrected]"]
    start = time.perf_counter()
    first = _cli(*common, "--stage", "train")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _cli(*common, "--jobs", "2")      # the two runs on two workers
    elapsed = time.perf_counter() - start
    assert second.returncode == 0, second.stdout + second.stderr
    # speed targets live in benchmarks, not in timed tests: the time is printed for the record
    print(f"smoke study end to end: {elapsed:.0f} s")
    # the second invocation skipped training and ran everything after it
    # 2 trainings skipped; per run attribute + evaluate, and the figures
    assert "2 skipped" in second.stdout and "5 done" in second.stdout, second.stdout

    study = tmp_path / "results" / "smoke"
    for objective in ("ce", "scl"):
        for seed in (0,):
            run = study / "shapes" / objective / f"seed{seed}"
            for nb in ("01_train", "02_attribute", "03_evaluate"):
                assert (run / "notebooks" / f"{nb}.ipynb").is_file()
            df = pd.read_csv(run / "results.csv", dtype={"pair": str}, keep_default_na=False)
            single, pairs = df[df["pair"] == ""], df[df["pair"] != ""]
            assert set(single["method"]) == {"gradcam", "eigencam"}
            assert {"pixel_flipping", "pixel_flipping_calibrated", "pointing_game",
                    "continuity[sigma=0.05]"} <= set(single["metric"])
            # the pair analysis: 4 pairs of each kind, ids "index1-index2", the kind in the metric name
            assert set(pairs["method"]) == {"pair_gradcam", "conditional_occlusion"}
            assert {"pair_deletion[view]", "pair_insertion[same,conditional]", "pair_max_sensitivity[different]",
                    "pair_average_drop[view]"} <= set(pairs["metric"])
            assert pairs.groupby(["method", "metric"]).size().eq(4).all()
            assert all(p.split("-")[0] == str(i) for p, i in zip(pairs["pair"], pairs["sample_index"]))
            assert (run / "pairs" / "pair_gradcam.npz").is_file()
            assert (run / "calibration.json").is_file()
            assert not (run / "protocols").exists()
    assert (study / "notebooks" / "04_figures.ipynb").is_file()
    # a run's notebooks share its kernel (namespace cleared between them): the evaluation made
    # there after the attribution equals one made alone, in this process
    run = study / "shapes" / "ce" / "seed0"
    shared = (run / "results.csv").read_bytes()
    evaluate_run(run)
    assert (run / "results.csv").read_bytes() == shared
    figs = tmp_path / "figures" / "smoke"
    for stem in ("table_accuracy", "table_attribution_metrics", "table_significance", "paper_vs_reproduced",
                 "table_claim_robustness", "table_pair_metrics", "table_pair_significance"):
        for ext in ("csv", "md", "tex"):
            assert (figs / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    for stem in ("fig_saliency_grid", "fig_metric_distributions", "fig_pixel_flipping_curves", "fig_embeddings",
                 "fig_claim_robustness", "fig_pair_grid"):
        for ext in ("pdf", "png"):
            assert (figs / f"{stem}.{ext}").is_file(), f"{stem}.{ext}"
    # where the numbers were made: each stage's fingerprint in the run folder, the machines in coverage.json
    coverage = json.loads((figs / "coverage.json").read_text())
    for objective in ("ce", "scl"):
        entries = json.loads((study / "shapes" / objective / "seed0" / "fingerprint.json").read_text())
        assert set(entries) == {"train", "attribute", "evaluate"}
        assert {e["cpu"] for e in entries.values()} == {cpu_model()}
        made_on = coverage["made_on"][f"shapes/{objective}/seed0"]
        assert {s: coverage["fingerprints"][k] for s, k in made_on.items()} == entries

    start = time.perf_counter()
    third = _in_process(capfd, *common)
    assert third.returncode == 0 and "7 skipped" in third.stdout, third.stdout
    print(f"rerun with every stage done: {time.perf_counter() - start:.1f} s")
    _brought_back_scores_equal(tmp_path, study, capfd)


# the scores of every image that depend on the image alone (the random draws of continuity,
# consistency and contrastivity are keyed by an image's index in its split, which an image
# folder renumbers; the calibrated score's temperature is fitted on other images)
BROUGHT_METRICS = ["pixel_flipping", "pixel_flipping_normalised", "pixel_flipping_logit", "complexity", "sparseness",
                   "pointing_game", "attribution_localisation"]


def _brought_back_scores_equal(tmp_path: Path, study: Path, capfd) -> None:
    """The trained CE and SCL runs exported as safetensors and their evaluation images written
    as an image folder (with masks), brought back through a profile: the same per-image scores."""
    from PIL import Image
    from safetensors.torch import save_file
    from xai_utils.study.data import SHAPE_CLASSES, SHAPES_MEAN, SHAPES_STD, load_dataset

    own = tmp_path / "own"
    own.mkdir()
    models = {}
    for objective in ("ce", "scl"):
        state = torch.load(study / "shapes" / objective / "seed0" / "model.pt", weights_only=True)
        save_file({k: v for k, v in state["state_dict"].items() if k not in ("mean", "std")},
                  str(own / f"{objective}.safetensors"))
        models[objective] = {"arch": "resnet18", "widths": [16, 32, 64, 128], "checkpoint": f"{objective}.safetensors",
                             "num_classes": 10, "mean": list(SHAPES_MEAN), "std": list(SHAPES_STD),
                             "normalize_features": objective == "scl"}
    indices = np.load(study / "shapes" / "ce" / "seed0" / "attributions" / "gradcam.npz")["indices"]
    test = load_dataset("shapes", "test")
    assert set(test.labels[indices].tolist()) == set(range(10))      # every class has an image
    for pos, idx in enumerate(indices.tolist()):
        folder = f"{int(test.labels[idx]):02d}_{SHAPE_CLASSES[int(test.labels[idx])]}"
        for kind, array in (("images/test", test.images[idx].permute(1, 2, 0).numpy()),
                            ("images/masks/test", test.masks[idx, 0].numpy().astype(np.uint8) * 255)):
            (own / kind / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(own / kind / folder / f"{pos:03d}.png")
    settings = {"methods": ["gradcam", "eigencam"], "metrics": BROUGHT_METRICS, "target": "true",
                "eval_samples": len(indices), "features_in_step": 32}
    (own / "brought.yaml").write_text(json.dumps({
        "models": models, "reference": "ce", "datasets": ["mine"],
        "data": {"mine": {"kind": "imagefolder", "root": "images", "image_size": 32}},
        "settings": {"default": settings}}))
    res = _in_process(capfd, "--profile", str(own / "brought.yaml"), "--executor", "inline",
                      "--set", f"results_root={own / 'results'}", "--set", f"figures_root={own / 'figures'}")
    assert res.returncode == 0, res.stdout + res.stderr
    # image k of the folder (class by class, then by name) is the evaluation image at position pos
    order = sorted(range(len(indices)), key=lambda p: (int(test.labels[indices[p]]), p))
    folder_index = {int(indices[pos]): k for k, pos in enumerate(order)}
    for objective in ("ce", "scl"):
        trained = pd.read_csv(study / "shapes" / objective / "seed0" / "results.csv", dtype={"pair": str},
                              keep_default_na=False)
        trained = trained[(trained["pair"] == "") & trained["metric"].isin(BROUGHT_METRICS)].copy()
        trained["value"] = trained["value"].replace("", "nan").astype(float)
        trained["image"] = trained["sample_index"].map(folder_index)
        brought = pd.read_csv(own / "results" / "brought" / "mine" / objective / "seed0" / "results.csv")
        both = trained.merge(brought, left_on=["image", "method", "metric"],
                             right_on=["sample_index", "method", "metric"], suffixes=("_trained", "_brought"))
        assert len(both) == len(trained) == len(brought) == len(indices) * 2 * len(BROUGHT_METRICS)
        np.testing.assert_allclose(both["value_brought"], both["value_trained"], rtol=0, atol=1e-6)
        assert (both["true_trained"] == both["true_brought"]).all()


def _notebook(path: Path, source: str) -> Path:
    cell = nbformat.v4.new_code_cell("tag = 'default'")
    cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_the_notebooks_of_a_run_share_one_kernel_with_a_cleared_namespace(tmp_path):
    first = _notebook(tmp_path / "first.ipynb", f"import os\nx = 1\nopen({str(tmp_path / 'first.txt')!r}, 'w')"
                                                f".write(f'{{os.getpid()}} {{tag}}')")
    second = _notebook(tmp_path / "second.ipynb", f"import os\nopen({str(tmp_path / 'second.txt')!r}, 'w')"
                                                  f".write(f'{{os.getpid()}} {{tag}} {{\"x\" in globals()}}')")
    with RunKernel() as kernel:
        kernel.execute(first, tmp_path / "first.out.ipynb", {"tag": "one"})
        kernel.execute(second, tmp_path / "second.out.ipynb", {"tag": "two"})
        pid = kernel.km.provisioner.process.pid
    assert kernel.km is None                              # shut down on leaving the block
    pid1, tag1 = (tmp_path / "first.txt").read_text().split()
    pid2, tag2, x_seen = (tmp_path / "second.txt").read_text().split()
    assert pid1 == pid2 == str(pid) and (tag1, tag2) == ("one", "two")
    assert x_seen == "False"                              # the first notebook's variables are gone
    assert (tmp_path / "second.out.ipynb").is_file()
    with pytest.raises(ProcessLookupError):               # the kernel process has ended
        os.kill(pid, 0)


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
             data_root: {corrupt_imagenet(tmp_path / 'corrupt-imagenet')}, num_workers: 0}}
  imagenet_s50: {{train_subset: 4, batch_size: 2, eval_samples: 4}}   # its 4 files per split
""")
    # a marker of another stage of the failing run, left by an earlier invocation
    other = tmp_path / "results" / "mixed" / "imagenet_s50" / "ce" / "seed0" / "stages" / "attribute.json"
    save_json(other, {"hash": "earlier", "stage": "attribute"})
    res = _cli("--profile", str(prof), "--stage", "train", "--jobs", "2")
    assert res.returncode == 1
    assert "FAILED imagenet_s50/ce/seed0:train" in res.stdout
    assert json.loads(other.read_text())["hash"] == "earlier"      # a failure deletes no marker
    assert "1 done" in res.stdout and "1 failed" in res.stdout
    nb_dir = tmp_path / "results" / "mixed" / "imagenet_s50" / "ce" / "seed0" / "notebooks"
    failed_nb = nb_dir / "01_train.failed.ipynb"
    assert str(failed_nb) in res.stdout and failed_nb.is_file()
    assert not (nb_dir / "01_train.ipynb").exists()          # only a success takes the notebook's name
    assert (tmp_path / "results" / "mixed" / "shapes" / "ce" / "seed0" / "model.pt").is_file()
    assert "Kernel is running over TCP" not in res.stderr


# ----------------------------------------------------------------------------- validation before work

def _fake_finished_study(tmp_path: Path, name: str = "smoke") -> tuple[list[str], dict[Path, bytes]]:
    """Stage markers of a finished smoke study (no real work): the common arguments and a
    snapshot of every file, to check that an invocation leaves it as it was."""
    common = ["--profile", name, "--set", f"results_root={tmp_path / 'results'}",
              "--set", f"figures_root={tmp_path / 'figures'}"]
    prof = load_profile(name, results_root=str(tmp_path / "results"), figures_root=str(tmp_path / "figures"))
    p = pipeline.plan(prof)
    for job in p.jobs:
        save_json(job.marker, {"hash": job.digest, "stage": job.stage})
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text("{}")
    return common, {f: f.read_bytes() for f in _files(tmp_path) if f.is_file()}


@pytest.mark.parametrize("setting, key", [
    ("methods=[foo]", "methods"), ("metrics=[bar]", "metrics"), ("epochs=-1", "epochs"),
    ("batch_size=0", "batch_size"), ("features_in_step=0", "features_in_step"),
    ("eval_samples=0", "eval_samples"), ("method_options.eigencam.sign=nope", "method_options.eigencam"),
    ("pixel_flipping_baseline=grey", "pixel_flipping_baseline"), ("metrics=[contrastivity]", "metrics"),
])
def test_bad_values_are_rejected_before_any_work(tmp_path, capfd, setting, key):
    common, before = _fake_finished_study(tmp_path)
    extra = ["--set", "methods=[eigencam]"] if setting == "metrics=[contrastivity]" else []
    res = _in_process(capfd, *common, "--set", setting, *extra)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{key}'" in lines[0], res.stderr
    assert res.stdout == ""
    after = {f: f.read_bytes() for f in _files(tmp_path) if f.is_file()}
    assert after == before                       # no file written, no marker touched


def test_missing_data_stops_before_a_kernel(tmp_path):
    empty = tmp_path / "no-cifar-here"
    empty.mkdir()
    env = {**os.environ, "XAI_UTILS_NO_DOWNLOAD": "1"}
    res = subprocess.run([sys.executable, "-m", "xai_utils.pipeline", "--no-progress", "--profile", "cifar10",
                          "--set", f"data_root={empty}", "--set", f"results_root={tmp_path / 'r'}",
                          "--set", f"figures_root={tmp_path / 'f'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("error: dataset 'cifar10' not found") and str(empty) in res.stderr
    assert "How to get it" in res.stderr and "Kernel" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-cifar-here"]


def test_dotted_set_keys_merge_into_mappings():
    parsed = pipeline.parse_set(["method_options.eigencam.sign=numpy", "epochs=2",
                                 "method_options.gradcam.scale=false"])
    assert parsed == {"method_options": {"eigencam": {"sign": "numpy"}, "gradcam": {"scale": False}}, "epochs": 2}
    prof = load_profile("smoke", **parsed)
    cfg = next(prof.runs())
    assert cfg.method_options == {"eigencam": {"sign": "numpy"}, "gradcam": {"scale": False}}


# ----------------------------------------------------------------------------- what a change re-runs

@pytest.mark.parametrize("setting, value, reruns", [
    ("lr", 1e-3, {"train", "attribute", "evaluate"}),
    ("mining", "semi-hard-hardest", {"train", "attribute", "evaluate"}),       # TL runs only
    ("temperature", 0.2, {"train", "attribute", "evaluate"}),                  # SCL runs only
    ("cgc_lambda", 1.0, set()),                                                 # no run of the smoke study
    ("method_options", {"eigencam": {"sign": "numpy"}}, {"attribute", "evaluate"}),
    ("method_options", {"gradcam": {"scale": False}}, {"attribute", "evaluate"}),
    ("eval_samples", 16, {"attribute", "evaluate"}),
    ("target", "pred", {"attribute", "evaluate"}),
    ("pixel_flipping_baseline", "white", {"evaluate"}),
    ("pixel_flipping_tie_break", "stable", {"evaluate"}),
    ("noise_space", "official", {"evaluate"}),
    ("continuity_sigma", 0.05, {"evaluate"}),
    ("metric_seed", 3, {"evaluate"}),
    ("features_in_step", 16, {"evaluate"}),
    ("max_sensitivity_samples", 5, {"evaluate"}),
    ("max_sensitivity_radius", 0.1, {"evaluate"}),
    ("faithfulness_correlation_subset", 64, {"evaluate"}),
    ("randomisation_similarity", "spearman", {"evaluate"}),
    ("continuity_sigmas", [0.1], {"evaluate"}),
    ("calibration_samples", 500, {"evaluate"}),
    ("explain_features", "raw", {"attribute", "evaluate"}),
    ("pair_samples", 3, {"attribute", "evaluate"}),          # the smoke study's pair analysis
    ("pair_space", "distance", {"attribute", "evaluate"}),
    ("pair_method_options", {"pair_gradcam": {"layer": "layer3"}}, {"attribute", "evaluate"}),
    ("pair_pixels_per_step", 64, {"evaluate"}),
    ("pair_blur_sigma", 1.0, {"evaluate"}),
    ("batch_size_eval", 7, set()),
    ("device", "cpu", set()),
])
def test_a_changed_setting_reruns_exactly_the_stages_it_affects(tmp_path, setting, value, reruns):
    _fake_finished_study(tmp_path)
    prof = load_profile("smoke", results_root=str(tmp_path / "results"), **{setting: value})
    from xai_utils.settings import PROTOCOLS
    imposed = set(PROTOCOLS["official"](RunConfig(dataset="shapes"))) - {"method_options"}
    for job in pipeline.plan(prof).jobs:
        if job.stage == "figures":
            assert job.finished() == (not reruns)
        elif "@official" in job.run_id and (setting in imposed or setting.startswith("pair_")
                                            or (setting == "method_options" and "eigencam" in value)):
            assert job.finished()                 # the protocol imposes this setting (no pair analysis there)
        else:
            # an objective's own setting (SCL's temperature, TL's mining, ...) redoes its runs only
            mine = reruns if setting not in foreign_settings(job.run.objective) else set()
            assert job.finished() == (job.stage not in mine), (job.label, setting)
    # and every such setting is written to the run's config.json by the stages that use it
    from xai_utils.settings import STAGE_KEYS, NO_RESULT_KEYS
    assert setting in {k for keys in STAGE_KEYS.values() for k in keys} | set(NO_RESULT_KEYS)


def test_a_new_evaluation_remakes_the_figures(tmp_path):
    """An evaluation re-run with the same settings (--force after a code change) leaves every
    other stage finished but makes the figures stale."""
    _fake_finished_study(tmp_path)
    prof = load_profile("smoke", results_root=str(tmp_path / "results"), figures_root=str(tmp_path / "figures"))
    jobs = pipeline.plan(prof).jobs
    assert all(j.finished() for j in jobs)
    ev = next(j for j in jobs if j.stage == "evaluate")
    save_json(ev.marker, {"hash": ev.digest, "stage": "evaluate", "finished": "2026-11-30T09:00:00"})
    again = pipeline.plan(prof).jobs
    assert [j.label for j in again if not j.finished()] == [again[-1].label] and again[-1].stage == "figures"


def test_figures_cover_what_is_evaluated(tmp_path):
    """No results: no figures folder. Some runs: the -partial folder. All: the study's folder."""
    prof = load_profile("smoke", results_root=str(tmp_path / "results"), figures_root=str(tmp_path / "figures"))
    assert pipeline.figures_output(prof) is None
    runs_ = list(prof.runs())
    for i, run in enumerate(runs_):
        for cfg, eval_dir in prof.evaluations(run):      # a run counts once every protocol is evaluated
            assert run.run_id not in pipeline.evaluated_runs(prof)[0]
            save_json(eval_dir / "stages" / "evaluate.json", {"hash": stage_hash(cfg, "evaluate")})
            (eval_dir / "results.csv").write_text("")
        done, missing = pipeline.evaluated_runs(prof)
        assert done == [r.run_id for r in runs_[:i + 1]]
        out = pipeline.figures_output(prof)
        if i + 1 < len(runs_):
            assert out.name == "smoke-partial" and missing == [r.run_id for r in runs_[i + 1:]]
        else:
            assert out == (tmp_path / "figures" / "smoke").resolve() and missing == []


def test_parallel_kernels_share_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with executors.threads_per_kernel(3):
        assert os.environ["OMP_NUM_THREADS"] == "2"
        assert os.environ["MKL_NUM_THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in os.environ
    with executors.threads_per_kernel(16):             # never below one thread
        assert os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "5")         # the user's choice wins
    with executors.threads_per_kernel(2):
        assert os.environ["OMP_NUM_THREADS"] == "5"
    assert os.environ["OMP_NUM_THREADS"] == "5"
    with executors.threads_per_kernel(1):              # one worker: nothing changes
        assert os.environ["OMP_NUM_THREADS"] == "5"
