"""Scale-out: one GPU per concurrent run (fake device names on the CPU); the SLURM submission
through submitit's LocalExecutor; and, with fake SLURM clients, the cases the one-node cluster of
tests/test_slurm.py cannot show (a scheduler that does not answer, a partition with GPUs, sbatch
refusing the figures job after accepting the runs)."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from broken_data import broken_profile
from xai_utils import pipeline
from xai_utils.pipeline import executors, slurm
from xai_utils.settings import load_profile
from xai_utils.settings import ConfigError
from xai_utils.pipeline.jobs import run_groups
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
    assert slurm.slurm_minutes(text) == minutes


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


def test_a_failed_job_is_reported_with_its_log(tmp_path, capsys):
    """submitit's local executor: a run whose training fails inside its job (ImageNet files that
    are not images) is reported failed, with the job's log and the failed notebook."""
    prof = broken_profile(tmp_path)
    assert pipeline.main(["--profile", str(prof), "--no-progress", "--stage", "train",
                          "--executor", "submitit-local"]) == 1
    out = capsys.readouterr().out
    assert "FAILED imagenet_s50/ce/seed0:train: job " in out
    line = next(line for line in out.splitlines() if re.match(r"\S+ job \d+ \(imagenet_s50/ce/seed0\): log ", line))
    log, notebook = (part.partition(" ")[2] for part in line.split(": ", 1)[1].split("; ")[:2])
    assert Path(log).is_file() and notebook.endswith("01_train.failed.ipynb") and Path(notebook).is_file()


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
            save_json(slurm.submitted_path(g), {"job_id": job_id, "executor": kind, "log": "x.err",
                                                    "stages": [j.stage for j in g], "submitted": "2025-01-01T00:00:00"})
    return p


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
    jobs = slurm.submit(p, "slurm", slurm.SlurmOptions())
    assert {j.status for j in jobs if j.stage != "figures"} == {"submitted"}
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "could not be asked" in line] == [
        "shapes/ce/seed0: the state of job 4242_0 could not be asked (squeue and sacct did not answer); submitted again"]
    assert [c.split()[0] for c in log.read_text().splitlines()] == ([] if missing else ["squeue", "sacct"]) + ["sbatch"] * 2


def test_gpus_per_run_follow_the_runs_device_and_the_partition(tmp_path, monkeypatch):
    """cpu: none; cuda: one; auto: one where sinfo lists GPUs (GRES) for the partition (the
    default one, marked *, when none is named), none where it lists none, one where sinfo does
    not answer; a partition sinfo does not list is refused; --slurm-gpus-per-run overrides all."""
    _fake_slurm(tmp_path, monkeypatch)
    sinfo = tmp_path / "bin" / "sinfo"
    sinfo.write_text("#!/bin/sh\nprintf '%s\\n' 'gpu*|gpu:a100:4(S:0-1)' 'cpu|(null)' 'cpu|(null)'\n")
    sinfo.chmod(0o755)
    cases = [(["cpu", "cpu"], None, None, 0), (["cpu", "cuda:0"], "cpu", None, 1), (["auto"], None, None, 1),
             (["auto"], "gpu", None, 1), (["auto"], "cpu", None, 0), (["cpu"], "cpu", 2, 2)]
    for devices, partition, given, gpus in cases:
        assert slurm.gpus_per_run(devices, slurm.SlurmOptions(partition, given))[0] == gpus, (devices, partition)
    assert slurm.gpus_per_run(["auto"], slurm.SlurmOptions("cpu"))[1] == "device auto; partition 'cpu' has no GPU"
    with pytest.raises(slurm.SubmissionRefused, match=r"^--slurm-partition: 'elsewhere' is not a partition of this "
                                                     r"cluster \(its partitions: cpu, gpu\)$"):
        slurm.gpus_per_run(["auto"], slurm.SlurmOptions("elsewhere"))
    sinfo.unlink()
    assert slurm.gpus_per_run(["auto"], slurm.SlurmOptions("cpu"))[0] == 1


def test_a_refused_figures_job_cancels_the_runs_array(tmp_path, monkeypatch):
    """sbatch accepts the runs' array, then refuses the figures job: the array is cancelled,
    no run records a submission, and the refusal is one line."""
    log = _fake_slurm(tmp_path, monkeypatch, answer=False)
    counter = tmp_path / "count"
    (tmp_path / "bin" / "sbatch").write_text(
        f"#!/bin/sh\necho \"sbatch $*\" >> '{log}'\n"
        f"if [ -e '{counter}' ]; then echo 'sbatch: error: Batch job submission failed: Job dependency problem' >&2; "
        f"exit 1; fi\n: > '{counter}'\necho 'Submitted batch job 5000'\n")
    for name in ("scancel", "sinfo"):
        (tmp_path / "bin" / name).write_text(f"#!/bin/sh\necho \"{name} $*\" >> '{log}'\nexit 1\n")
        (tmp_path / "bin" / name).chmod(0o755)
    p = _smoke_plan_with_records(tmp_path, {})
    with pytest.raises(slurm.SubmissionRefused) as refused:
        slurm.submit(p, "slurm", slurm.SlurmOptions())
    assert str(refused.value) == ("sbatch refused the figures job: sbatch: error: Batch job submission failed: "
                                  "Job dependency problem; the runs' job array 5000 was cancelled, nothing is submitted")
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["sinfo", "sbatch", "sbatch", "scancel"]
    assert "scancel 5000" in log.read_text().splitlines()
    assert not list(tmp_path.rglob("submitted.json"))

