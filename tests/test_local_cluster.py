"""The one-node SLURM cluster from Debian's packages (`make slurm-local`): it starts, runs a job
that `sacct` reports COMPLETED (accounting by slurmdbd and MariaDB, as on a real cluster), and
stops every daemon it started. `make test` installs the packages (`make cluster-packages`)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from xai_utils.errors import ConfigError
from xai_utils.pipeline import local_cluster as lc


def _slurm(conf, *args: str) -> str:
    done = subprocess.run(list(args), env={**os.environ, "SLURM_CONF": str(conf)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cluster_runs_a_job_that_sacct_reports_and_stops_what_it_started(tmp_path):
    folder = tmp_path / "slurm"
    lines: list[str] = []
    conf = lc.start(folder, log=lines.append)
    try:
        assert any(f"export SLURM_CONF={conf}" in line for line in lines)
        pids = lc.running(folder)
        assert lc.node_state(folder) == "idle" and set(pids) == set(lc.DAEMONS)
        out = tmp_path / "job.out"
        job_id = _slurm(conf, "sbatch", "--parsable", "-p", lc.PARTITION, "-o", str(out),
                        "--wrap", "echo ran on $SLURM_JOB_PARTITION").strip().split(";")[0]
        state, end = "", time.monotonic() + 60
        while time.monotonic() < end and state not in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            time.sleep(0.5)
            state = _slurm(conf, "sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State").strip()
        assert state == "COMPLETED" and out.read_text().strip() == "ran on local"
        lc.start(folder, log=lambda _: None)              # running already: left as it is
        assert lc.running(folder) == pids
    finally:
        stopped = lc.stop(folder, log=lambda _: None)
    assert stopped == list(reversed(lc.DAEMONS))
    assert all(_gone(pid) for pid in pids.values())
    assert lc.running(folder) == {}


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or waiting to be)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_where_it_cannot_start_it_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr(lc.os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match="needs root"):
        lc.check_machine()
    monkeypatch.setattr(lc.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lc.shutil, "which", lambda name: None)
    monkeypatch.setattr(lc, "PROGRAMS", ("no-such-daemon",))
    with pytest.raises(ConfigError, match="no-such-daemon not found; install Debian's"):
        lc.check_machine()
