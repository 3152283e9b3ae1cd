"""The SLURM path on a real one-node cluster from Debian's packages (`make slurm-local`; `make test`
installs them with `make cluster-packages`): munge, slurmctld, slurmd, and slurmdbd with MariaDB,
so `squeue` and `sacct` answer as on a real cluster. One cluster serves the module; stopping it
at the end leaves none of its daemons running.

The study's jobs are submitted by the pipeline's command line (`--executor slurm --slurm-partition
local`, GPUs per run left to the runs' device), run their notebooks on the node, and are judged
by what the scheduler itself says of them."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from broken_data import broken_profile
from xai_utils import pipeline
from xai_utils.errors import ConfigError
from xai_utils.pipeline import local_cluster as lc
from xai_utils.pipeline.locks import RunLock
from xai_utils.stages.artefacts import load_json

# the smoke study's CE run, small: fewer images, one method, two metrics
SMALL = ["--profile", "smoke", "--no-progress", "--only", "shapes/ce/0", "--set", "protocols=[corrected]",
         "--set", "epochs=1", "--set", "train_subset=512", "--set", "eval_samples=8",
         "--set", "methods=[gradcam]", "--set", "metrics=[pixel_flipping,complexity]",
         "--set", "pair_methods=[]", "--set", "pair_metrics=[]"]
ON_CLUSTER = ["--executor", "slurm", "--slurm-partition", lc.PARTITION]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")


def _roots(tmp: Path) -> list[str]:
    return ["--set", f"results_root={tmp / 'results'}", "--set", f"figures_root={tmp / 'figures'}"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, started once for the module; stopped at its end, and nothing of it left running."""
    folder = tmp_path_factory.mktemp("slurm")
    conf = lc.start(folder, log=lambda _: None)
    pids = lc.running(folder)
    yield conf
    stopped = lc.stop(folder, log=lambda _: None)
    assert stopped == list(reversed(lc.DAEMONS)) and set(pids) == set(lc.DAEMONS)
    assert all(_gone(pid) for pid in pids.values()) and lc.running(folder) == {}


@pytest.fixture
def slurm_conf(cluster, monkeypatch):
    """SLURM's clients (sbatch, squeue, sacct, submitit's calls) talk to the module's cluster."""
    monkeypatch.setenv("SLURM_CONF", str(cluster))
    return cluster


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or waiting to be)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _slurm(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sacct(*ids: str, fields: str = "JobID,State") -> dict[str, list[str]]:
    """What the accounting says of each job: id -> the fields after the id."""
    out = _slurm("sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", fields)
    rows = [line.split("|") for line in out.splitlines() if line]
    return {row[0]: [row[1].split()[0], *row[2:]] for row in rows}


def _until_ended(*ids: str, seconds: float = 300) -> dict[str, list[str]]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rows = _sacct(*ids, fields="JobID,State,Start,End")
        if len(rows) == len(ids) and all(r[0] in ENDED for r in rows.values()):
            return rows
        time.sleep(1)
    raise AssertionError(f"jobs {ids} did not end within {seconds:.0f} s: {_sacct(*ids)}")


def test_the_cluster_runs_a_job_that_sacct_reports_completed(slurm_conf, tmp_path):
    folder = slurm_conf.parent
    assert lc.node_state(folder) == "idle" and set(lc.running(folder)) == set(lc.DAEMONS)
    out = tmp_path / "job.out"
    job = _slurm("sbatch", "--parsable", "-p", lc.PARTITION, "-o", str(out),
                 "--wrap", "echo ran on $SLURM_JOB_PARTITION").strip().split(";")[0]
    assert _until_ended(job, seconds=60)[job][0] == "COMPLETED"
    assert out.read_text().strip() == "ran on local"
    pids = lc.running(folder)
    lines: list[str] = []
    lc.start(folder, log=lines.append)                 # running already: left as it is
    assert lc.running(folder) == pids and lines == [f"local SLURM cluster already running in {folder}"]


def test_where_it_cannot_start_it_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(lc.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="needs root"):
        lc.check_machine()
    monkeypatch.setattr(lc.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lc.shutil, "which", lambda name: None)
    monkeypatch.setattr(lc, "PROGRAMS", ("no-such-daemon",))
    with pytest.raises(ConfigError, match="no-such-daemon not found; install Debian's"):
        lc.check_machine()


def test_a_smoke_slice_on_slurm_equals_the_inline_run(slurm_conf, tmp_path, capsys):
    """The run's job and the figures job are in squeue, a second invocation (even with --force)
    submits nothing while they are, both end COMPLETED in sacct, the figures job starts after
    the run's job ended, and the results equal those of the same run made in this process."""
    sub, inline = tmp_path / "slurm", tmp_path / "inline"
    assert pipeline.main(SMALL + _roots(sub) + ON_CLUSTER) == 0
    out = capsys.readouterr().out
    assert "(0 GPU(s) per run: device auto; partition 'local' has no GPU)" in out     # a CPU node: no GPU asked
    run_dir = sub / "results" / "smoke" / "shapes" / "ce" / "seed0"
    run_job = load_json(run_dir / "stages" / "submitted.json")["job_id"]
    fig_job = re.search(r"figures: job (\d+), after job\(s\) (\d+) end", out)
    assert fig_job and fig_job[2] == run_job.split("_")[0]
    queued = dict(line.split() for line in _slurm("squeue", "-h", "-r", "-o", "%i %T").splitlines())
    assert {run_job, fig_job[1]} <= set(queued) and queued[fig_job[1]] == "PENDING"

    assert pipeline.main(SMALL + _roots(sub) + ON_CLUSTER + ["--force"]) == 0
    again = capsys.readouterr().out
    assert re.search(rf"shapes/ce/seed0: job {run_job} is (PENDING|RUNNING); not submitted again "
                     rf"\(not even with --force\)", again), again
    assert "nothing new to submit: 1 run(s) still queued" in again
    assert load_json(run_dir / "stages" / "submitted.json")["job_id"] == run_job
    assert set(dict(line.split() for line in _slurm("squeue", "-h", "-r", "-o", "%i %T").splitlines())) <= set(queued)

    assert pipeline.main(SMALL + _roots(inline) + ["--executor", "inline", "--stage", "train", "--stage", "attribute",
                                                   "--stage", "evaluate"]) == 0
    ended = _until_ended(run_job, fig_job[1])
    assert ended[run_job][0] == ended[fig_job[1]][0] == "COMPLETED", ended
    assert ended[fig_job[1]][1] >= ended[run_job][2]            # the figures started after the run's job ended
    run = Path("smoke") / "shapes" / "ce" / "seed0"
    pd.testing.assert_frame_equal(pd.read_csv(inline / "results" / run / "results.csv"),
                                  pd.read_csv(sub / "results" / run / "results.csv"))
    assert (sub / "figures" / "smoke-partial" / "table_accuracy.csv").is_file()


def _parts(line: str) -> tuple[dict[str, str], str]:
    """``STATE job ID (RUN): log PATH[; notebook PATH]; rerun: COMMAND`` -> the paths by name, the command."""
    where, _, rerun = line.split(": ", 1)[1].partition("; rerun: ")
    return dict(part.split(" ", 1) for part in where.split("; ")), rerun


def _epochs(run_dir: Path) -> tuple[list[int], list[int]]:
    """The epochs of a run's training log, and the epochs it resumed from."""
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    return ([r["epoch"] for r in records if "epoch" in r and r.get("stage") != "probe"],
            [r["from_epoch"] for r in records if r.get("event") == "resumed"])


def test_a_cancelled_and_a_timed_out_job_say_so_and_their_runs_resume(slurm_conf, tmp_path, capsys):
    """Two training jobs with --slurm-time 1 and --wait. The SCL run's job is cancelled with
    scancel once its first checkpoint exists; the CE run's job waits for its run's lock (held
    here, as by another invocation) past its time limit. The command names each job's id,
    state, log and the rerun command; the rerun (given more time) resumes SCL from its
    checkpoint, so no epoch is trained twice, and trains CE."""
    args = (SMALL + _roots(tmp_path) + ON_CLUSTER
            + ["--only", "shapes", "--set", "objectives=[ce,scl]", "--stage", "train", "--set", "epochs=8",
               "--set", "probe_epochs=5", "--slurm-time", "1", "--wait"])
    study = tmp_path / "results" / "smoke" / "shapes"
    ce, scl = study / "ce" / "seed0", study / "scl" / "seed0"
    lock = RunLock(ce)
    assert lock.acquire(wait=False)
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(rc=pipeline.main(args)))
    worker.start()
    try:
        end = time.monotonic() + 180
        while not (scl / "checkpoint.pt").is_file() and time.monotonic() < end:
            time.sleep(0.2)
        _slurm("scancel", load_json(scl / "stages" / "submitted.json")["job_id"])
        worker.join(timeout=240)
    finally:
        lock.release()
    assert not worker.is_alive() and first["rc"] == 1
    out = capsys.readouterr().out.splitlines()
    jobs = {run: load_json(study / run / "seed0" / "stages" / "submitted.json") for run in ("ce", "scl")}
    assert _sacct(*(j["job_id"] for j in jobs.values())) == {jobs["ce"]["job_id"]: ["TIMEOUT"],
                                                            jobs["scl"]["job_id"]: ["CANCELLED"]}
    lines = {}
    for run, state in (("ce", "TIMEOUT"), ("scl", "CANCELLED")):
        job = jobs[run]["job_id"]
        line = next(x for x in out if x.startswith(f"{state} job {job} (shapes/{run}/seed0): log "))
        where, rerun = _parts(line)
        assert Path(where["log"]).is_file() and where["log"] == jobs[run]["log"]
        lines[run] = rerun
    assert lines["ce"] == lines["scl"] == shlex.join(["python", "-m", "xai_utils.pipeline", *args])
    done, resumed = _epochs(scl)
    assert resumed == [] and 1 <= len(done) < 8
    checkpointed = len(done)

    assert pipeline.main(shlex.split(lines["ce"])[3:] + ["--slurm-time", "10"]) == 0
    again = capsys.readouterr().out
    for run, state in (("ce", "TIMEOUT"), ("scl", "CANCELLED")):
        assert (f"shapes/{run}/seed0: job {jobs[run]['job_id']} ended {state} (log: {jobs[run]['log']}); "
                f"submitted again, resuming from its checkpoints") in again
    assert _epochs(scl)[1] == [checkpointed]                     # resumed where the cancelled job left it
    assert _epochs(scl)[0] == _epochs(ce)[0] == list(range(1, 9))   # every epoch once
    assert _epochs(ce)[1] == []


def test_a_failing_run_is_a_failed_job_with_its_log_and_rerun(slurm_conf, tmp_path, capsys):
    """A run whose training fails in its notebook (ImageNet files that are not images): its
    job ends FAILED in sacct, and the command names the job, its log, the failed notebook and
    the rerun command."""
    prof = broken_profile(tmp_path)
    args = ["--profile", str(prof), "--no-progress", "--stage", "train", *ON_CLUSTER, "--wait"]
    assert pipeline.main(args) == 1
    out = capsys.readouterr().out.splitlines()
    record = load_json(tmp_path / "results" / "broken" / "imagenet_s50" / "ce" / "seed0" / "stages" / "submitted.json")
    assert _sacct(record["job_id"]) == {record["job_id"]: ["FAILED"]}
    line = next(x for x in out if x.startswith(f"FAILED job {record['job_id']} (imagenet_s50/ce/seed0): log "))
    where, rerun = _parts(line)
    assert where["log"] == record["log"] and Path(where["log"]).is_file()
    assert where["notebook"].endswith("01_train.failed.ipynb") and Path(where["notebook"]).is_file()
    assert rerun == shlex.join(["python", "-m", "xai_utils.pipeline", *args])
    assert "FAILED imagenet_s50/ce/seed0:train: job" in "\n".join(out)


@pytest.mark.parametrize("option, message", [
    (["--slurm-gpus-per-run", "1"], "sbatch refused the runs' job array: sbatch: error: Invalid generic resource (gres) "
                                    "specification"),
    (["--slurm-option", "mem=100000000"], "sbatch refused the runs' job array: sbatch: error: Batch job submission "
                                          "failed: Requested node configuration is not available"),
    (["--slurm-partition", "nowhere"], "--slurm-partition: 'nowhere' is not a partition of this cluster "
                                       "(its partitions: local)"),
])
def test_what_sbatch_refuses_is_one_line_and_nothing_is_submitted(slurm_conf, tmp_path, capsys, option, message):
    """GRES the node does not have, more memory than it has (sbatch's own words), a partition
    sinfo does not list: one line, exit 2, no job in the queue, no run recording a submission."""
    before = _slurm("squeue", "-h", "-o", "%i")
    assert pipeline.main(SMALL + _roots(tmp_path) + ON_CLUSTER + option) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not list(tmp_path.rglob("submitted.json")) and _slurm("squeue", "-h", "-o", "%i") == before
