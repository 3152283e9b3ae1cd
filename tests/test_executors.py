"""Scale-out: one GPU per concurrent run (fake device names on the CPU), and the SLURM path
through submitit's LocalExecutor (no SLURM here) with the smoke study's CE run."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from xai_utils import pipeline
from xai_utils.pipeline import executors
from xai_utils.settings import load_profile
from xai_utils.settings import ConfigError
from xai_utils.pipeline.jobs import run_groups, summary
from xai_utils.stages.artefacts import load_json
from xai_utils.stages.files import save_json

# one small run: the smoke profile's CE run, fewer images, one method and two metrics
SMALL = ["--profile", "smoke", "--no-progress", "--only", "shapes/ce/0", "--set", "protocols=[corrected]",
         "--set", "epochs=1", "--set", "train_subset=512", "--set", "eval_samples=8",
         "--set", "methods=[gradcam]", "--set", "metrics=[pixel_flipping,complexity]",
         "--set", "pair_methods=[]", "--set", "pair_metrics=[]"]


def _roots(tmp: Path) -> list[str]:
    return ["--set", f"results_root={tmp / 'results'}", "--set", f"figures_root={tmp / 'figures'}"]


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(executors, "available_gpus", lambda: 4)


def test_device_names(four_gpus):
    assert executors.parse_devices("cuda:0,cuda:2") == ["0", "2"]
    assert executors.parse_devices("1, 3") == ["1", "3"]
    assert executors.parse_devices("all") == ["0", "1", "2", "3"]
    assert executors.parse_devices(None) == []
    for bad, needle in (("cuda:4", "does not exist"), ("gpu0", "not a CUDA device"), ("cuda:1,cuda:1", "twice")):
        with pytest.raises(ConfigError, match=needle):
            executors.parse_devices(bad)


@pytest.mark.parametrize("args, needle", [
    (["--executor", "kubernetes"], "unknown executor 'kubernetes'"),
    (["--devices", "cuda:7"], "cuda:7 does not exist"),
    (["--devices", "cuda:0,cuda:1", "--jobs", "3"], "--jobs 3 is larger than the 2 GPU(s)"),
    (["--executor", "slurm", "--devices", "cuda:0"], "--devices is for local runs"),
    (["--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
    (["--executor", "slurm", "--slurm-option", "account"], "--slurm-option expects KEY=VALUE"),
    (["--executor", "slurm", "--slurm-time", "abc", "--dry-run"], "--slurm-time 'abc' is not a SLURM time"),
    (["--executor", "slurm", "--slurm-time", "1-2-3"], "--slurm-time '1-2-3' is not a SLURM time"),
])
def test_bad_scale_out_values_fail_in_one_line_before_any_work(tmp_path, four_gpus, capsys, args, needle):
    assert pipeline.main(SMALL + _roots(tmp_path) + args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not tmp_path.joinpath("results").exists()


@pytest.mark.parametrize("text, minutes", [
    ("90", 90), ("90:00", 90), ("90:01", 91), ("2:30:00", 150), ("24:00:00", 1440),
    ("2-12", 2 * 1440 + 12 * 60), ("2-12:30", 2 * 1440 + 750), ("1-00:00:30", 1441), ("0-01", 60)])
def test_slurm_times_are_read_as_slurm_reads_them(text, minutes):
    """SLURM's --time formats (sbatch(1)): MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS;
    leftover seconds count as a whole minute."""
    assert executors.slurm_minutes(text) == minutes


def test_concurrent_runs_never_share_a_gpu():
    pool, lock, spans = executors.DevicePool(["0", "1"]), threading.Lock(), []

    def work(i: int) -> None:
        with pool.lease() as env:
            start = time.perf_counter()
            time.sleep(0.02 * (1 + i % 3))
            with lock:
                spans.append((env["CUDA_VISIBLE_DEVICES"], start, time.perf_counter()))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {d for d, _, _ in spans} == {"0", "1"} and len(spans) == 8
    for d in ("0", "1"):
        own = sorted((s, e) for dev, s, e in spans if dev == d)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(own, own[1:]))      # one run at a time
    with executors.DevicePool([]).lease() as env:
        assert env == {}


def test_each_kernel_sees_only_its_device(tmp_path, four_gpus):
    """Two runs at once on 'cuda:2,cuda:3' (fake names on a CPU): each run's kernels start
    with CUDA_VISIBLE_DEVICES set to its own device (recorded by the training notebook)."""
    args = SMALL[:4] + ["shapes/ce"] + SMALL[5:] + _roots(tmp_path) + [
        "--set", "seeds=[0,1]", "--stage", "train", "--devices", "cuda:2,cuda:3"]
    assert pipeline.main(args) == 0
    seen = [load_json(tmp_path / "results" / "smoke" / "shapes" / "ce" / f"seed{s}" / "train_summary.json")
            ["cuda_visible_devices"] for s in (0, 1)]
    assert sorted(seen) == ["2", "3"]          # --jobs defaults to one run per device: both at once


def test_slurm_path_through_submitit_local(tmp_path):
    """The run submitted as a job (submitit's LocalExecutor, through the notebooks) gives the
    results of the same run made in this process (inline), in the same tree layout; a second
    submission submits nothing."""
    local, sub = tmp_path / "local", tmp_path / "submitit"
    assert pipeline.main(SMALL + _roots(local) + ["--executor", "inline", "--stage", "train", "--stage", "attribute",
                                                  "--stage", "evaluate"]) == 0
    assert pipeline.main(SMALL + _roots(sub) + ["--executor", "submitit-local"]) == 0
    run = Path("smoke") / "shapes" / "ce" / "seed0"
    a = pd.read_csv(local / "results" / run / "results.csv")
    b = pd.read_csv(sub / "results" / run / "results.csv")
    pd.testing.assert_frame_equal(a, b)
    acc = [load_json(r / "results" / run / "train_summary.json")["test_accuracy"] for r in (local, sub)]
    assert acc[0] == acc[1]
    assert (sub / "figures" / "smoke-partial" / "table_accuracy.csv").is_file()
    record = load_json(sub / "results" / run / "stages" / "submitted.json")
    assert record["stages"] == ["train", "attribute", "evaluate"] and Path(record["log"]).is_file()
    before = sorted(p.name for p in (sub / "results" / "smoke" / "slurm").iterdir())
    jobs = executors.submit(pipeline.plan(load_profile(
        "smoke", results_root=str(sub / "results"), figures_root=str(sub / "figures"),
        **pipeline.parse_set([SMALL[i + 1] for i, a in enumerate(SMALL) if a == "--set"])),
        only="shapes/ce/0"), "submitit-local", executors.SlurmOptions())
    assert all(j.status == "skipped" for j in jobs)
    assert sorted(p.name for p in (sub / "results" / "smoke" / "slurm").iterdir()) == before   # no new job


def test_a_failed_job_is_reported_with_its_log(tmp_path, capsys):
    """A run whose training fails inside its job (ImageNet files that are not images): its
    stages are reported failed, with the job's log and the failed notebook."""
    from xai_utils.study.data import imagenet_s50_classes
    root = tmp_path / "corrupt"
    for split in ("train", "val"):
        d = root / split / imagenet_s50_classes()[0][0]
        d.mkdir(parents=True)
        for i in range(4):
            (d / f"img{i}.JPEG").write_bytes(b"not a jpeg")
    prof = tmp_path / "broken.yaml"
    prof.write_text(f"""
datasets: [imagenet_s50]
objectives: [ce]
seeds: [0]
results_root: {tmp_path / 'results'}
figures_root: {tmp_path / 'figures'}
settings:
  default: {{arch: resnet18, widths: [8, 8, 16, 16], epochs: 1, train_subset: 4, batch_size: 2, eval_samples: 4,
             data_root: {root}, num_workers: 0}}
""")
    assert pipeline.main(["--profile", str(prof), "--no-progress", "--stage", "train",
                          "--executor", "submitit-local"]) == 1
    out = capsys.readouterr().out
    assert "FAILED imagenet_s50/ce/seed0:train" in out
    log = next(line for line in out.splitlines() if line.startswith("log: "))
    assert Path(log.split("; ")[0][5:]).is_file() and "01_train.failed.ipynb" in log


# ----------------------------------------------------------------------------- resubmission guard

def _fake_slurm(tmp: Path, monkeypatch, squeue: str = "", sacct: str = "", answer: bool = True) -> Path:
    """Fake ``sbatch``/``srun`` (what submitit's SlurmExecutor calls) and, with ``answer``,
    ``squeue``/``sacct`` printing the given lines, in a folder that becomes the whole PATH
    (so a real SLURM client cannot answer; the scripts use shell built-ins only). Every call
    appends its arguments to calls.log."""
    bin_, log = tmp / "bin", tmp / "calls.log"
    bin_.mkdir()
    scripts = {"sbatch": "echo 'Submitted batch job 5000'", "srun": "exit 0"}
    if answer:
        scripts.update({name: "printf '%s\\n' " + " ".join(f"'{line}'" for line in text.splitlines())
                        for name, text in (("squeue", squeue), ("sacct", sacct))})
    for name, body in scripts.items():
        path = bin_ / name
        path.write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{log}'\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_))
    return log


def _smoke_plan_with_records(tmp: Path, records: dict[str, tuple[str, str]]):
    """The smoke study's plan (three runs, nothing finished) under ``tmp``, with a hand-written
    submitted.json (job id, executor) for the runs named in ``records``."""
    p = pipeline.plan(load_profile("smoke", results_root=str(tmp / "results"), figures_root=str(tmp / "figures")))
    for g in run_groups(p.jobs):
        if g[0].group in records:
            job_id, kind = records[g[0].group]
            save_json(executors.submitted_path(g), {"job_id": job_id, "executor": kind, "log": "x.err",
                                                    "stages": [j.stage for j in g], "submitted": "2025-01-01T00:00:00"})
    return p


def _status(jobs, run: str) -> set[str]:
    return {j.status for j in jobs if j.group == run}


@pytest.mark.parametrize("force", [False, True])
def test_a_run_whose_job_is_queued_or_running_is_not_submitted_again(tmp_path, monkeypatch, capsys, force):
    """RUNNING and PENDING (squeue) stay; one squeue does not list, sacct calls COMPLETED: submitted
    again, as is a run with a submitit-local record (never asked about). One call of each."""
    log = _fake_slurm(tmp_path, monkeypatch, squeue="4242_0 RUNNING\n4242_1 PENDING", sacct="4242_2|COMPLETED")
    p = _smoke_plan_with_records(tmp_path, {"shapes/ce/seed0": ("4242_0", "slurm"),
                                            "shapes/scl/seed0": ("4242_1", "slurm"),
                                            "shapes/tl/seed0": ("4242_2", "slurm")})
    jobs = executors.submit(p, "slurm", executors.SlurmOptions(), force=force)
    assert _status(jobs, "shapes/ce/seed0") == _status(jobs, "shapes/scl/seed0") == {"queued"}
    assert _status(jobs, "shapes/tl/seed0") == {"submitted"}
    text = summary(jobs)
    assert text.startswith("5 submitted, 10 queued")
    forced = " (not even with --force)" if force else ""
    assert (f"shapes/ce/seed0: job 4242_0 is RUNNING; not submitted again{forced} (scancel 4242_0 to replace it)"
            in text.splitlines())
    assert f"shapes/scl/seed0: job 4242_1 is PENDING; not submitted again{forced}" in text
    calls = log.read_text().splitlines()
    assert calls[:2] == ["squeue -h -r -j 4242_0,4242_1,4242_2 -o %i %T", "sacct -n -P -X -j 4242_2 -o JobID,State"]
    assert [c.split()[0] for c in calls[2:]] == ["sbatch", "sbatch"]           # the run, then the figures
    records = {g[0].group: load_json(executors.submitted_path(g))["job_id"] for g in run_groups(jobs)[:3]}
    assert records == {"shapes/ce/seed0": "4242_0", "shapes/scl/seed0": "4242_1", "shapes/tl/seed0": "5000"}
    assert "after job(s) 5000, 4242_0, 4242_1 end" in capsys.readouterr().out   # figures wait for all


def test_a_run_whose_job_ended_is_submitted_again(tmp_path, monkeypatch):
    """squeue lists none of the jobs (exit 1, 'Invalid job id', as it does for ids it no longer
    knows); sacct calls them FAILED / CANCELLED: both runs submitted; the submitit-local record
    is not asked about."""
    log = _fake_slurm(tmp_path, monkeypatch, sacct="4242_0|FAILED\n4243|CANCELLED by 1000")
    (tmp_path / "bin" / "squeue").write_text(
        f"#!/bin/sh\necho \"squeue $*\" >> '{log}'\necho 'slurm_load_jobs error: Invalid job id specified' >&2\nexit 1\n")
    p = _smoke_plan_with_records(tmp_path, {"shapes/ce/seed0": ("4242_0", "slurm"),
                                            "shapes/scl/seed0": ("4243", "slurm"),
                                            "shapes/tl/seed0": ("777", "submitit-local")})
    jobs = executors.submit(p, "slurm", executors.SlurmOptions())
    assert {j.status for j in jobs if j.stage != "figures"} == {"submitted"}
    assert "queued" not in summary(jobs)
    calls = log.read_text().splitlines()
    assert calls[:2] == ["squeue -h -r -j 4242_0,4243 -o %i %T", "sacct -n -P -X -j 4242_0,4243 -o JobID,State"]
    assert [c.split()[0] for c in calls[2:]] == ["sbatch", "sbatch"]


@pytest.mark.parametrize("missing", [True, False])
def test_without_an_answer_from_the_scheduler_the_run_is_submitted_again(tmp_path, monkeypatch, capsys, missing):
    """squeue and sacct not on PATH, or both failing: each recorded run is submitted again,
    with one line saying its job's state could not be asked."""
    log = _fake_slurm(tmp_path, monkeypatch, answer=False)
    if not missing:
        for name in ("squeue", "sacct"):
            path = tmp_path / "bin" / name
            path.write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{log}'\n"
                            f"echo '{name}: error: Unable to contact slurm controller' >&2\nexit 1\n")
            path.chmod(0o755)
    p = _smoke_plan_with_records(tmp_path, {"shapes/ce/seed0": ("4242_0", "slurm")})
    jobs = executors.submit(p, "slurm", executors.SlurmOptions())
    assert {j.status for j in jobs if j.stage != "figures"} == {"submitted"}
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "could not be asked" in line] == [
        "shapes/ce/seed0: the state of job 4242_0 could not be asked (squeue and sacct did not answer); submitted again"]
    assert [c.split()[0] for c in log.read_text().splitlines()] == ([] if missing else ["squeue", "sacct"]) + ["sbatch"] * 2
