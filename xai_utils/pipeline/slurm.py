"""The runs of a study as SLURM jobs, through submitit (``--executor slurm``).

Each run whose stages are not all finished becomes one task of a job array; the task runs
the run's remaining notebooks exactly as a local run would (:func:`run_remote`), into the same
results tree. The figures come after all of them: a job that depends on the array
(``afterany``), or, with ``--wait``, this process waits, reports every job that did not
complete (its id, state, log and the command that reruns it) and makes the figures itself.

* **GPUs per run** follow the runs' ``device`` unless ``--slurm-gpus-per-run`` says otherwise:
  none for ``cpu``, one for ``cuda``, and for ``auto`` one where the partition's nodes have
  GPUs (``sinfo``'s GRES), none where they have none (:func:`gpus_per_run`).
* **Refused submissions** (an unknown partition, GRES the cluster does not have, an account
  it refuses) are one line naming sbatch's message (:class:`SubmissionRefused`), and nothing
  stays submitted: the figures job refused after the array cancels the array.
* **Resubmission.** Finished stages are skipped before submission (their markers), so
  rerunning the same command submits only what is not finished; a run whose last job is
  still pending or running is not submitted again (:func:`active_submissions`); a run whose
  last job ended without completing is said in one line and submitted again, and resumes from
  its checkpoints.
* ``--executor submitit-local`` sends the same submission through submitit's
  ``LocalExecutor``, as processes on this machine, to rehearse a cluster submission.
"""
from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import submitit

from ..errors import ConfigError
from ..settings.layout import Stage
from ..stages.artefacts import load_json
from ..stages.files import save_json
from .jobs import Job, Plan, failed_notebook, run_group, run_groups
from .notebooks import in_notebook_dir

KINDS = ("slurm", "submitit-local")
QUERY_TIMEOUT_S = 60
# states of a job that still holds (or waits for) its allocation: `squeue` JOB STATE CODES
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"})
COMPLETED = "COMPLETED"


class SubmissionRefused(ConfigError):
    """sbatch refused the submission; the message is its reason, in one line."""


class RunFailed(RuntimeError):
    """A stage of a submitted run failed: raised at the end of the job, so that the scheduler
    records the job as FAILED (the stage's error is in the job's log and failed notebook)."""


@dataclass
class SlurmOptions:
    """What each submitted run asks the scheduler for."""

    partition: Optional[str] = None
    gpus_per_run: Optional[int] = None     # None: from the runs' device (gpus_per_run)
    time: str = "24:00:00"                 # sbatch --time
    cpus_per_run: Optional[int] = None
    extra: dict[str, str] = field(default_factory=dict)   # other sbatch options, passed through

    def __post_init__(self) -> None:
        slurm_minutes(self.time)             # a time SLURM would refuse is refused here, before any work
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise ConfigError(f"--slurm-gpus-per-run must be at least 0, got {self.gpus_per_run}")


def parse_slurm_options(items: Sequence[str]) -> dict[str, str]:
    """``--slurm-option KEY=VALUE`` items -> sbatch options (``account=abc``, ``qos=high``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-option expects KEY=VALUE (an sbatch option), got '{item}'")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


# sbatch --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS
_SLURM_TIME = re.compile(r"(?:(\d+)-(\d+)(?::(\d+)(?::(\d+))?)?|(\d+)(?::(\d+)(?::(\d+))?)?)")


def slurm_minutes(text: str) -> int:
    """sbatch's ``--time`` in whole minutes, read as SLURM reads it (``MM``, ``MM:SS``,
    ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``; leftover seconds round up); anything
    else is a ConfigError."""
    m = _SLURM_TIME.fullmatch(str(text).strip())
    if m is None:
        raise ConfigError(f"--slurm-time {text!r} is not a SLURM time: use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM "
                          "or D-HH:MM:SS")
    days, hours, minutes, seconds, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is None:                                   # no day: MM, MM:SS or HH:MM:SS
        days, (hours, minutes, seconds) = 0, ((a, b, c) if c is not None else (0, a, b or 0))
    return days * 24 * 60 + hours * 60 + (minutes or 0) + (1 if seconds else 0)


# ----------------------------------------------------------------------------- the scheduler's answers

def _ask(command: list[str]) -> Optional[subprocess.CompletedProcess]:
    """One SLURM client call; None when the command is not on PATH or times out."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None


def job_states(command: list[str]) -> Optional[dict[str, str]]:
    """job id -> state from one ``squeue``/``sacct`` call (lines ``ID STATE`` or ``ID|STATE``);
    None when the command is not on PATH, times out or fails. squeue's "Invalid job id"
    (exit 1 when none of the ids is known any more) is an answer: nothing queued."""
    r = _ask(command)
    if r is None:
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        parts = line.replace("|", " ").split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1].rstrip("+")       # sacct: 'CANCELLED by 123', 'RUNNING+'
    return out


def ended_states(ids: Sequence[str], seconds: float = 60) -> dict[str, str]:
    """The accounting's final state of each job (``sacct -X``), asked again until none is
    active (a job's result file is written just before the job ends) or ``seconds`` pass; {}
    when sacct does not answer."""
    end = time.monotonic() + seconds
    while ids:
        states = job_states(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State"]) or {}
        if time.monotonic() > end or not any(states.get(i, "PENDING") in ACTIVE_STATES for i in ids):
            return states
        time.sleep(1)
    return {}


def partition_has_gpus(partition: Optional[str]) -> Optional[bool]:
    """Whether the nodes of ``partition`` (the cluster's default partition when None) have GPUs
    (``sinfo``'s GRES); None when sinfo does not answer. A partition sinfo does not list (hidden
    ones included) is a :class:`SubmissionRefused` naming those it lists."""
    r = _ask(["sinfo", "-a", "-h", "-o", "%P|%G"])
    if r is None or r.returncode != 0:
        return None
    rows = [(name.rstrip("*"), name.endswith("*"), gres)
            for name, _, gres in (line.partition("|") for line in r.stdout.splitlines())]
    gres = [g for name, default, g in rows if (name == partition if partition else default)]
    if not gres:
        names = ", ".join(sorted({name for name, _, _ in rows})) or "none"
        what = (f"'{partition}' is not a partition of this cluster" if partition
                else "this cluster has no default partition")
        raise SubmissionRefused(f"--slurm-partition: {what} (its partitions: {names})")
    return any("gpu" in g for g in gres)


def gpus_per_run(devices: Sequence[str], options: SlurmOptions) -> tuple[int, str]:
    """GPUs each run's job asks for, and why (for the submission's line): the
    ``--slurm-gpus-per-run`` given; else none when every run's device is ``cpu``, one when a run
    names ``cuda``; for ``auto``, one where the partition's nodes have GPUs and none where they
    have none (one when sinfo cannot tell)."""
    if options.gpus_per_run is not None:
        return options.gpus_per_run, "--slurm-gpus-per-run"
    kinds = {d.split(":")[0] for d in devices}
    if kinds <= {"cpu"}:
        return 0, "device cpu"
    if "cuda" in kinds:
        return 1, "device cuda"
    where = f"partition '{options.partition}'" if options.partition else "the default partition"
    has = partition_has_gpus(options.partition)
    if has is None:
        return 1, f"device auto; sinfo did not say whether {where} has GPUs"
    return (1, f"device auto; {where} has GPUs") if has else (0, f"device auto; {where} has no GPU")


# ----------------------------------------------------------------------------- the job

def make_executor(kind: str, folder: Path, options: SlurmOptions, gpus: int, name: str = "xai"):
    """A submitit executor writing its logs under ``folder`` (``%j`` = the job id)."""
    if kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=str(folder / "%j"))
        ex.update_parameters(timeout_min=slurm_minutes(options.time))
        return ex
    if kind != "slurm":
        raise ConfigError(f"unknown executor '{kind}'; valid: {', '.join(KINDS)}")
    ex = submitit.SlurmExecutor(folder=str(folder / "%j"))
    params: dict[str, Any] = {"time": options.time, "gpus_per_node": gpus, "job_name": name,
                              "additional_parameters": dict(options.extra)}
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_run:
        params["cpus_per_task"] = options.cpus_per_run
    ex.update_parameters(**params)
    return ex


def run_remote(group: list[Job], force: bool, profile: Any = None) -> list[dict[str, Any]]:
    """The body of one submitted job: a run's stages in order (or the figures, which need the
    ``profile``), as :func:`~xai_utils.pipeline.jobs.run_group` runs them locally; returns what
    happened to each stage, and raises :class:`RunFailed` when a stage failed.

    submitit asks a job to requeue itself shortly before its time limit (SIGUSR2); a run
    resumes from its own checkpoints instead, so the signal is ignored (by the notebook kernels
    too, which inherit it): a job past its ``--slurm-time`` ends as SLURM's TIMEOUT, and the
    rerun command resumes its run."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    with in_notebook_dir():
        run_group(group, profile, force=force, log=lambda text: print(text, flush=True))
    outcome = [{"label": j.label, "status": j.status, "seconds": j.seconds, "error": j.error} for j in group]
    failed = [o for o in outcome if o["status"] == "failed"]
    if failed:
        raise RunFailed(f"{failed[0]['label']}: {failed[0]['error']}")
    return outcome


def submitted_path(group: list[Job]) -> Path:
    """Where a run records its last submission (the trained run's ``stages/`` folder)."""
    return group[0].marker.parent / "submitted.json"


# ----------------------------------------------------------------------------- submitting

def active_submissions(groups: Sequence[list[Job]], log: Callable[[str], None] = print
                       ) -> dict[str, tuple[str, str]]:
    """Runs whose last SLURM submission (``submitted.json``, executor ``slurm``) is still
    pending or running: run -> (job id, state), so that rerunning the command does not
    submit them twice (two jobs training into the same run folder). A run whose last job
    ended without completing (FAILED, TIMEOUT, CANCELLED, ...) is said in one line.

    One ``squeue -h -r -j IDS`` call for all runs (``-r``: array tasks one per line); the ids
    it does not list go to one ``sacct -X`` call. Only ``slurm`` records are asked about:
    ``submitit-local`` jobs are this machine's processes, which the submitting command waited
    for. When neither command answers (not on PATH, an error, a timeout), the run is
    submitted again with one line saying so: the scheduler is probably unreachable then
    anyway (sbatch would fail too), and refusing would block every resubmission from a
    machine where these commands fail, short of deleting the records by hand."""
    records: dict[str, dict[str, Any]] = {}
    for g in groups:
        path = submitted_path(g)
        record = load_json(path) if path.is_file() else {}
        if record.get("executor") == "slurm" and record.get("job_id"):
            records[g[0].group] = record
    if not records:
        return {}
    ids = sorted({str(r["job_id"]) for r in records.values()})
    queue_ = job_states(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"])
    states = dict(queue_ or {})
    rest = [i for i in ids if i not in states]
    acct = job_states(["sacct", "-n", "-P", "-X", "-j", ",".join(rest), "-o", "JobID,State"]) if rest else {}
    states.update(acct or {})
    for run, record in records.items():
        job, state = str(record["job_id"]), states.get(str(record["job_id"]))
        if acct is None and queue_ is None:
            log(f"{run}: the state of job {job} could not be asked (squeue and sacct did not answer); "
                f"submitted again")
        elif state and state not in ACTIVE_STATES and state != COMPLETED:
            log(f"{run}: job {job} ended {state} (log: {record.get('log', '?')}); submitted again, "
                f"resuming from its checkpoints")
    return {run: (str(r["job_id"]), states[str(r["job_id"])]) for run, r in records.items()
            if states.get(str(r["job_id"])) in ACTIVE_STATES}


def _refusal(error: BaseException) -> str:
    """sbatch's reason for refusing, in one line (its last line of output)."""
    cause = error.__cause__
    text = getattr(cause, "stderr", None) or str(error)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


@contextlib.contextmanager
def _refusals(what: str):
    """sbatch's refusal (or an absent sbatch) as :class:`SubmissionRefused`; submitit's own
    echo of sbatch's output is kept off the terminal (the one line says it)."""
    echo = io.StringIO()
    try:
        with contextlib.redirect_stderr(echo):
            yield
    except submitit.core.utils.FailedJobError as e:
        raise SubmissionRefused(f"sbatch refused {what}: {_refusal(e)}") from None
    except OSError as e:
        raise SubmissionRefused(f"{what} could not be submitted: {e} (is this a SLURM login node?)") from None


def _submit_jobs(ex, todo: list[list[Job]], figures: list[Job], after: list[str], force: bool, profile: Any,
                 wait: bool) -> tuple[list[Any], Optional[Any]]:
    """The array of runs, then (without ``wait``) the figures job after it and the ``after``
    jobs. Nothing stays submitted when sbatch refuses either."""
    with _refusals("the runs' job array"):
        with ex.batch():
            handles = [ex.submit(run_remote, g, force) for g in todo]
    if wait or not figures:
        return handles, None
    array = str(handles[0].job_id).split("_")[0]
    try:
        with _refusals("the figures job"):
            ex.update_parameters(dependency="afterany:" + ":".join([array, *after]), gpus_per_node=0)
            return handles, ex.submit(run_remote, figures, force, profile)
    except SubmissionRefused as e:
        subprocess.run(["scancel", array], capture_output=True, timeout=QUERY_TIMEOUT_S)
        raise SubmissionRefused(f"{e}; the runs' job array {array} was cancelled, nothing is submitted") from None


def _collect(todo: list[list[Job]], handles: list[Any], kind: str, rerun: str) -> None:
    """Wait for each run's job; the stages of a job that did not complete get their state from
    the run folder (finished stages done, the first unfinished one failed, the rest blocked)
    and one line with the job's id, state, log and the command that reruns it."""
    failed = []
    for g, h in zip(todo, handles):
        try:
            done = h.result()
        except Exception:                           # a stage failed, or the job was cancelled, killed, timed out
            failed.append((g, h))
            continue
        for j, d in zip(g, done):
            j.status, j.seconds, j.error = d["status"], d["seconds"], d["error"]
    states = ended_states([str(h.job_id) for _, h in failed]) if kind == "slurm" else {}
    for g, h in failed:
        state = states.get(str(h.job_id)) or str(h.state)
        first = True
        for j in g:
            if j.finished():
                j.status = "done"
            elif first:
                j.status, j.error, first = "failed", f"job {h.job_id} ended {state}", False
            else:
                j.status = "blocked"
        notebooks = [failed_notebook(j) for j in g if failed_notebook(j).is_file()]
        g[0].note = (f"{state} job {h.job_id} ({g[0].group}): log {h.paths.stderr}"
                     + (f"; notebook {notebooks[0]}" if notebooks else "") + (f"; rerun: {rerun}" if rerun else ""))


def submit(p: Plan, kind: str, options: SlurmOptions, force: bool = False, wait: bool = False,
           rerun: str = "") -> list[Job]:
    """Submit every run with unfinished stages as one task of a job array; then the figures.

    A run whose last SLURM job is still pending or running (:func:`active_submissions`) is
    not submitted again, even with ``force``: its jobs get status ``queued`` and a note
    naming the job. ``wait`` (always with ``submitit-local``): wait for the tasks, report
    each one that did not complete (``rerun``: the command to name), and make the figures
    here. Otherwise (SLURM) the figures are a job that starts after the array (and the queued
    jobs) have ended. With nothing to submit the figures are made here at once, unless runs
    are still queued. Returns the plan's jobs with their statuses where known."""
    wait = wait or kind == "submitit-local"
    by_run = run_groups(p.jobs)
    runs = [g for g in by_run if g[0].stage != Stage.FIGURES]
    figures = [j for g in by_run if g[0].stage == Stage.FIGURES for j in g]
    todo = [g for g in runs if force or not all(j.finished() for j in g)]
    active = active_submissions(todo) if kind == "slurm" else {}
    queued = [g for g in todo if g[0].group in active]
    todo = [g for g in todo if g[0].group not in active]
    _mark_unsubmitted(runs, todo, queued, active, force)
    if queued and figures and (wait or not todo):         # they would miss the queued runs' results
        figures[0].note = (f"figures: not made now, {len(queued)} run(s) still queued; "
                           f"rerun this command after their jobs end")
        figures = []
    if not todo:
        print(f"nothing new to submit: {len(queued)} run(s) still queued" if queued else
              "nothing to submit: every stage of every run is finished")
    else:
        folder = Path(p.profile.results_root).resolve() / p.profile.name / "slurm"
        gpus, why = (gpus_per_run([j.run.device for g in todo for j in g if j.run is not None], options)
                     if kind == "slurm" else (0, "submitit's local processes"))
        ex = make_executor(kind, folder, options, gpus, name=f"xai-{p.profile.name}")
        handles, fig_job = _submit_jobs(ex, todo, figures, [active[g[0].group][0] for g in queued], force,
                                        p.profile, wait)
        for g, h in zip(todo, handles):
            save_json(submitted_path(g), {"job_id": str(h.job_id), "executor": kind, "log": str(h.paths.stderr),
                                          "stages": [j.stage for j in g],
                                          "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(f"submitted {len(todo)} run(s) with {kind}"
              + (f" ({gpus} GPU(s) per run: {why})" if kind == "slurm" else "")
              + f": job(s) {', '.join(str(h.job_id) for h in handles)}; logs in {folder}")
        if fig_job is not None:
            after = [str(handles[0].job_id).split("_")[0], *(active[g[0].group][0] for g in queued)]
            print(f"figures: job {fig_job.job_id}, after job(s) {', '.join(after)} end")
        if not wait:
            for j in (j for g in todo for j in g):
                j.status, j.note = "submitted", ""
            return p.jobs
        _collect(todo, handles, kind, rerun)
    if figures:
        with in_notebook_dir():
            run_group(figures, p.profile, force=force, log=print)
    return p.jobs


def _mark_unsubmitted(runs: list[list[Job]], todo: list[list[Job]], queued: list[list[Job]],
                      active: dict[str, tuple[str, str]], force: bool) -> None:
    """Statuses of the runs not submitted now: finished (skipped) or still queued (a note each)."""
    for g in runs:
        if g not in todo and g not in queued:
            for j in g:
                j.status = "skipped"
    for g in queued:
        job, state = active[g[0].group]
        for j in g:
            j.status, j.note = "queued", ""
        g[0].note = (f"{g[0].group}: job {job} is {state}; not submitted again"
                     f"{' (not even with --force)' if force else ''} (scancel {job} to replace it)")
