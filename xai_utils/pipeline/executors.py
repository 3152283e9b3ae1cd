"""Where the runs of a study execute: this machine (one GPU per concurrent run) or SLURM.

The runs of a study are independent, so scaling out means running several at once.

* **Local** (``--executor local``, the default). ``--jobs N`` runs N runs at once, each run's
  stages in order in its own Jupyter kernel (:class:`.notebooks.RunKernel`). A run takes a GPU
  from a pool (:class:`DevicePool`) for all of its stages, and its kernel starts with
  ``CUDA_VISIBLE_DEVICES`` set to that GPU alone. The run then sees one GPU, as
  ``cuda``/``cuda:0``, so a profile's ``device: auto`` works unchanged. The GPUs are those of
  ``--devices cuda:0,cuda:1,...`` (or ``all``), and every GPU of the machine when
  ``--devices`` is not given: one run per GPU, never two runs on one. ``--jobs auto`` (the
  default) runs one run per GPU, or two at a time on a machine without one; more jobs than
  GPUs is an error.
* **Inline** (``--executor inline``): the stage functions the notebooks call, in this process,
  one run after another, without kernels or executed notebooks (rehearsals, debugging, a
  machine without Jupyter).
* **SLURM** (``--executor slurm``). Each run whose stages are not all finished becomes one
  task of a job array, submitted through submitit. The task runs the run's remaining
  notebooks exactly as a local run would, into the same results tree. The figures come
  after all of them: a job that depends on the array (``afterany``), or, with ``--wait``,
  this process waits, reports every failed task with its log, and makes the figures itself.
  Finished stages are skipped before submission (their markers, as locally), so
  resubmitting the same command submits only what is not finished; a run whose last SLURM
  job is still pending or running is not submitted again (:func:`active_submissions`).
* ``--executor submitit-local`` sends the same submission through submitit's
  ``LocalExecutor``, as processes on this machine. The tests use it (there is no SLURM
  here), and a user can rehearse a cluster submission with it.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import os
import queue
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..settings.layout import Stage
from ..stages.artefacts import load_json
from ..stages.files import save_json
from .jobs import Job, Plan, failed_notebook, run_group, run_groups
from .notebooks import in_notebook_dir


EXECUTORS = ("local", "inline", "slurm", "submitit-local")
CPU_JOBS = 2                 # --jobs auto without a GPU: two single-threaded runs beat one on two cores


def available_gpus() -> int:
    """CUDA devices this process can see."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_devices(text: Optional[str]) -> list[str]:
    """``cuda:0,cuda:2`` (or ``0,2``, or ``all``) -> the CUDA indices ``['0', '2']``; None -> [].

    Raises ConfigError (one line) for a name that is not a CUDA device, an index this machine
    does not have, or a device named twice."""
    if text is None:
        return []
    count = available_gpus()
    if text.strip() == "all":
        if count == 0:
            raise ConfigError("--devices all: this machine has no CUDA device")
        return [str(i) for i in range(count)]
    out: list[str] = []
    for name in (t.strip() for t in text.split(",")):
        index = name[5:] if name.startswith("cuda:") else name
        if not index.isdigit():
            raise ConfigError(f"--devices: '{name}' is not a CUDA device; give cuda:0,cuda:1,... or all")
        if int(index) >= count:
            raise ConfigError(f"--devices: {name} does not exist (this machine has {count} CUDA "
                              f"device{'s' if count != 1 else ''})")
        if str(int(index)) in out:
            raise ConfigError(f"--devices: {name} is given twice")
        out.append(str(int(index)))
    return out


class DevicePool:
    """GPUs handed to concurrent runs, one run per GPU at a time.

    :meth:`lease` blocks until a GPU is free and yields the environment of the run's kernels
    (``CUDA_VISIBLE_DEVICES`` = that GPU). An empty pool yields no change.
    """

    def __init__(self, devices: Sequence[str]):
        self.devices = list(devices)
        self._free: "queue.Queue[str]" = queue.Queue()
        for d in self.devices:
            self._free.put(d)

    @contextlib.contextmanager
    def lease(self) -> Iterator[dict[str, str]]:
        if not self.devices:
            yield {}
            return
        device = self._free.get()
        try:
            yield {"CUDA_VISIBLE_DEVICES": device}
        finally:
            self._free.put(device)


def default_jobs(devices: Sequence[str]) -> int:
    """``--jobs auto``: one run per GPU, or :data:`CPU_JOBS` at a time without one."""
    return len(devices) if devices else max(1, min(CPU_JOBS, os.cpu_count() or 1))


def check_local(jobs: int, devices: Sequence[str], runs: Sequence[Any]) -> None:
    """--jobs against the GPUs (one run per GPU), and run settings that would not see their GPU."""
    if devices and jobs > len(devices):
        raise ConfigError(f"--jobs {jobs} is larger than the {len(devices)} GPU(s) the runs get (--devices, or every "
                          f"GPU of this machine): one run per GPU")
    if devices:
        pinned = sorted({r.device for r in runs if r.device.startswith("cuda:") and r.device != "cuda:0"})
        if pinned:
            raise ConfigError(f"with --devices every run sees its GPU as cuda:0; the profile pins "
                              f"device {pinned[0]}: set device to auto or cuda")


@contextlib.contextmanager
def threads_per_kernel(workers: int):
    """With several notebooks at once, give each kernel its share of the CPU cores.

    Kernels inherit this process's environment; torch reads OMP_NUM_THREADS at import. A
    value the user set is left alone. On 2 cores, 2 single-threaded kernels beat 1 kernel
    with 2 threads (small CNNs scale poorly across threads, and kernel start-up is serial).
    """
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    if workers <= 1 or any(k in os.environ for k in keys):
        yield
        return
    n = str(max(1, (os.cpu_count() or 1) // workers))
    os.environ.update({k: n for k in keys})
    try:
        yield
    finally:
        for k in keys:
            os.environ.pop(k, None)


def run_plan(p: Plan, force: bool = False, progress: bool = True, workers: int = 1,
             devices: Sequence[str] = (), inline: bool = False, wait: bool = True) -> list[Job]:
    """Execute the jobs; ``workers`` runs at once (each run's stages in order), then the
    figures. A failed stage blocks the later stages of its run only. ``devices``: CUDA
    indices; each concurrent run leases one and its kernels see only that GPU. ``inline``:
    the stage functions in this process, one run at a time (``workers`` and ``devices``
    unused). A run another invocation is working on is waited for (its lock, :mod:`.locks`),
    or skipped when ``wait`` is False."""
    if inline:
        workers, devices = 1, ()
    bar = tqdm(total=len(p.jobs), desc=f"study {p.profile.name}", unit="notebook", disable=not progress)
    pool = DevicePool(devices)

    def one(group: list[Job]) -> None:
        bar.set_postfix_str(group[0].label, refresh=False)
        with pool.lease() as env:
            if env:
                tqdm.write(f"{group[0].run_id}: GPU {env['CUDA_VISIBLE_DEVICES']}")
            run_group(group, p.profile, force, env, log=tqdm.write, on_job=lambda job: bar.update(1), inline=inline,
                      wait=wait)

    by_run = run_groups(p.jobs)
    runs = [g for g in by_run if g[0].stage != Stage.FIGURES]
    rest = [g for g in by_run if g[0].stage == Stage.FIGURES]
    workers = max(1, min(workers, len(runs)))
    with threads_per_kernel(workers), in_notebook_dir():
        if workers == 1:
            for group in runs:
                one(group)
        else:
            with concurrent.futures.ThreadPoolExecutor(workers) as pool_:
                list(pool_.map(one, runs))
        for group in rest:
            run_group(group, p.profile, force, log=tqdm.write, on_job=lambda job: bar.update(1), inline=inline,
                      wait=wait)
    bar.close()
    return p.jobs


# ----------------------------------------------------------------------------- SLURM

@dataclass
class SlurmOptions:
    """What each submitted run asks the scheduler for."""

    partition: Optional[str] = None
    gpus_per_run: int = 1
    time: str = "24:00:00"                 # sbatch --time
    cpus_per_run: Optional[int] = None
    extra: dict[str, str] = field(default_factory=dict)   # other sbatch options, passed through

    def __post_init__(self) -> None:
        slurm_minutes(self.time)             # a time SLURM would refuse is refused here, before any work


def parse_slurm_options(items: Sequence[str]) -> dict[str, str]:
    """``--slurm-option KEY=VALUE`` items -> sbatch options (``account=abc``, ``qos=high``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-option expects KEY=VALUE (an sbatch option), got '{item}'")
        out[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return out


def make_executor(kind: str, folder: Path, options: SlurmOptions, name: str = "xai"):
    """A submitit executor writing its logs under ``folder`` (``%j`` = the job id)."""
    import submitit   # reason: needed only to submit (SLURM, or submitit's local processes)
    if kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=str(folder / "%j"))
        ex.update_parameters(timeout_min=slurm_minutes(options.time))
        return ex
    if kind != "slurm":
        raise ConfigError(f"unknown executor '{kind}'; valid: {', '.join(EXECUTORS)}")
    ex = submitit.SlurmExecutor(folder=str(folder / "%j"))
    params: dict[str, Any] = {"time": options.time, "gpus_per_node": options.gpus_per_run,
                              "job_name": name, "additional_parameters": dict(options.extra)}
    if options.partition:
        params["partition"] = options.partition
    if options.cpus_per_run:
        params["cpus_per_task"] = options.cpus_per_run
    ex.update_parameters(**params)
    return ex


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


def run_remote(group: list[Job], force: bool, profile: Any = None) -> list[dict[str, Any]]:
    """The body of one submitted job: a run's stages in order (or the figures, which need the
    ``profile``), as :func:`~xai_utils.pipeline.jobs.run_group` runs them locally; returns what happened to
    each stage."""
    with in_notebook_dir():
        run_group(group, profile, force=force, log=lambda text: print(text, flush=True))
    return [{"label": j.label, "status": j.status, "seconds": j.seconds, "error": j.error} for j in group]


def submitted_path(group: list[Job]) -> Path:
    """Where a run records its last submission (the trained run's ``stages/`` folder)."""
    return group[0].marker.parent / "submitted.json"


# states of a job that still holds (or waits for) its allocation: `squeue` JOB STATE CODES
ACTIVE_STATES = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                           "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"})
QUERY_TIMEOUT_S = 60


def _ask_scheduler(command: list[str]) -> Optional[dict[str, str]]:
    """job id -> state from one ``squeue``/``sacct`` call (lines ``ID STATE`` or ``ID|STATE``);
    None when the command is not on PATH, times out or fails. squeue's "Invalid job id"
    (exit 1 when none of the ids is known any more) is an answer: nothing queued."""
    try:
        r = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        parts = line.replace("|", " ").split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1].rstrip("+")       # sacct: 'CANCELLED by 123', 'RUNNING+'
    return out


def active_submissions(groups: Sequence[list[Job]]) -> dict[str, tuple[str, str]]:
    """Runs whose last SLURM submission (``submitted.json``, executor ``slurm``) is still
    pending or running: run -> (job id, state), so that rerunning the command does not
    submit them twice (two jobs training into the same run folder).

    One ``squeue -h -r -j IDS`` call for all runs (``-r``: array tasks one per line); the ids
    it does not list go to one ``sacct -X`` call (finished, failed, cancelled: not active).
    Only ``slurm`` records are asked about: ``submitit-local`` jobs are this machine's
    processes, which the submitting command waited for. When neither command answers (not
    on PATH, an error, a timeout), the run is submitted again with one line saying so: this
    is what the command did before the guard existed, the scheduler is probably unreachable
    then anyway (sbatch would fail too), and refusing would block every resubmission from a
    machine where these commands fail, short of deleting the records by hand."""
    last: dict[str, str] = {}
    for g in groups:
        path = submitted_path(g)
        record = load_json(path) if path.is_file() else {}
        if record.get("executor") == "slurm" and record.get("job_id"):
            last[g[0].group] = str(record["job_id"])
    if not last:
        return {}
    ids = sorted(set(last.values()))
    queue_ = _ask_scheduler(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i %T"])
    states = dict(queue_ or {})
    rest = [i for i in ids if i not in states]
    if rest:
        acct = _ask_scheduler(["sacct", "-n", "-P", "-X", "-j", ",".join(rest), "-o", "JobID,State"])
        states.update(acct or {})
        if acct is None and queue_ is None:
            for run, job in last.items():
                print(f"{run}: the state of job {job} could not be asked (squeue and sacct did not answer); "
                      f"submitted again")
    return {run: (job, states[job]) for run, job in last.items() if states.get(job) in ACTIVE_STATES}


def submit(p: Plan, kind: str, options: SlurmOptions, force: bool = False, wait: bool = False
           ) -> list[Job]:
    """Submit every run with unfinished stages as one task of a job array; then the figures.

    A run whose last SLURM job is still pending or running (:func:`active_submissions`) is
    not submitted again, even with ``force``: its jobs get status ``queued`` and a note
    naming the job. ``wait`` (always with ``submitit-local``): wait for the tasks, report
    each failed one with its log, and make the figures here. Otherwise (SLURM) the figures
    are a job that starts after the array (and the queued jobs) have ended. With nothing to
    submit the figures are made here at once, unless runs are still queued.
    Returns the plan's jobs with their statuses where known."""
    wait = wait or kind == "submitit-local"
    by_run = run_groups(p.jobs)
    runs = [g for g in by_run if g[0].stage != Stage.FIGURES]
    figures = [j for g in by_run if g[0].stage == Stage.FIGURES for j in g]
    todo = [g for g in runs if force or not all(j.finished() for j in g)]
    active = active_submissions(todo) if kind == "slurm" else {}
    queued = [g for g in todo if g[0].group in active]
    todo = [g for g in todo if g[0].group not in active]
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
    if queued and figures and (wait or not todo):         # they would miss the queued runs' results
        figures[0].note = (f"figures: not made now, {len(queued)} run(s) still queued; "
                           f"rerun this command after their jobs end")
        figures = []
    study = Path(p.profile.results_root).resolve() / p.profile.name
    folder = study / "slurm"
    if not todo:
        print(f"nothing new to submit: {len(queued)} run(s) still queued" if queued else
              "nothing to submit: every stage of every run is finished")
        wait = True                                     # the figures (if due) are made here
    else:
        ex = make_executor(kind, folder, options, name=f"xai-{p.profile.name}")
        with ex.batch():
            handles = [ex.submit(run_remote, g, force) for g in todo]
        for g, h in zip(todo, handles):
            save_json(submitted_path(g), {"job_id": str(h.job_id), "executor": kind, "log": str(h.paths.stderr),
                                          "stages": [j.stage for j in g], "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(f"submitted {len(todo)} run(s) with {kind}: job(s) {', '.join(str(h.job_id) for h in handles)}; "
              f"logs in {folder}")
        if not wait:
            array = str(handles[0].job_id).split("_")[0]
            if figures:
                after = ":".join([array] + [active[g[0].group][0] for g in queued])
                ex.update_parameters(dependency=f"afterany:{after}", gpus_per_node=0)
                fig_job = ex.submit(run_remote, figures, force, p.profile)
                print(f"figures: job {fig_job.job_id}, after job(s) {after.replace(':', ', ')} end")
            for g in todo:
                for j in g:
                    j.status, j.note = "submitted", ""
            return p.jobs
        for g, h in zip(todo, handles):
            try:
                done = h.result()
            except Exception as e:                      # the job itself failed (killed, timeout, ...)
                for j in g:
                    if not j.finished():
                        j.status, j.error = "failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                print(f"FAILED job {h.job_id} ({g[0].run_id}); log: {h.paths.stderr}", file=sys.stderr)
                continue
            for j, d in zip(g, done):
                j.status, j.seconds, j.error = d["status"], d["seconds"], d["error"]
                if j.status == "failed":
                    j.note = f"log: {h.paths.stderr}; notebook: {failed_notebook(j)}"
    if figures and wait:
        with in_notebook_dir():
            run_group(figures, p.profile, force=force, log=print)
    return p.jobs
