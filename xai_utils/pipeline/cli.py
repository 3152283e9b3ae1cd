"""The command line of the pipeline: ``python -m xai_utils.pipeline`` (see ``--help``).

    python -m xai_utils.pipeline --profile quick --jobs 2
    python -m xai_utils.pipeline --profile smoke --stage train --only shapes/ce/0 --set epochs=2

``--jobs N`` runs N runs at once; ``--devices cuda:0,cuda:1`` gives each its own GPU;
``--executor slurm`` submits each run as a SLURM job (:mod:`.executors`). A rejected
invocation prints one line and exits with status 2; a failed run does not stop the others,
the exit status is then 1 and the summary says what failed and where its notebook is.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from ..errors import CommandLine, ConfigError, DatasetNotFoundError
from ..settings.layout import Stage
from ..settings.profiles import load_profile
from ..settings.rehearsal import what_shrank
from ..study.data import write_stand_in_data
from . import executors, slurm
from .jobs import STAGES, parse_set, plan, results_digest, summary, validate


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = CommandLine(prog="python -m xai_utils.pipeline",
                                 description="Run a whole study with Papermill: the four notebooks for every run of a profile.")
    ap.add_argument("--profile", default="quick", help="profile name in configs/ or a YAML path")
    ap.add_argument("--stage", type=Stage, choices=STAGES, action="append",
                    help="run only this stage (repeatable); default: all four")
    ap.add_argument("--only", help="dataset[/objective[/seed]] to run a subset, e.g. shapes/scl/0")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile or run setting, e.g. --set epochs=2 --set seeds=[0]")
    ap.add_argument("--dry-run", action="store_true", help="show what would run, write nothing")
    ap.add_argument("--force", action="store_true", help="rerun stages even if their results exist")
    ap.add_argument("--no-wait", action="store_true",
                    help="skip a run (or the figures) that another invocation is working on, instead of waiting "
                         "for it (each run folder has a lock: xai_utils.pipeline.locks)")
    ap.add_argument("--jobs", default="auto", metavar="N",
                    help="runs executed at once, each kernel with its share of the CPU threads "
                         "(default auto: one run per GPU, or 2 at a time without a GPU)")
    ap.add_argument("--devices", default=None, metavar="LIST",
                    help="GPUs for concurrent runs, e.g. cuda:0,cuda:1 or all (the default when CUDA is present): "
                         "each run's kernels see only its GPU")
    ap.add_argument("--executor", default="local", metavar="NAME",
                    help="local (default) | inline (the stages in this process, no notebooks) | slurm (one job "
                         "per run through submitit) | submitit-local (the same submission as local processes)")
    ap.add_argument("--rehearse", action="store_true",
                    help="the study shrunk to minutes, into <results_root>/<profile>-rehearsal/ (stand-in data "
                         "where the real files are absent); see xai_utils.settings.rehearsal")
    ap.add_argument("--slurm-partition", default=None)
    ap.add_argument("--slurm-gpus-per-run", type=int, default=None, metavar="N",
                    help="GPUs each run's job asks for (default: none where the runs' device is cpu, or auto on a "
                         "partition without GPUs; one otherwise)")
    ap.add_argument("--slurm-time", default="24:00:00", metavar="TIME", help="sbatch --time per run (default 24:00:00)")
    ap.add_argument("--slurm-cpus-per-run", type=int, default=None, metavar="N")
    ap.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. --slurm-option account=abc (repeatable)")
    ap.add_argument("--wait", action="store_true",
                    help="slurm: wait for the jobs, report failures, then make the figures here")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress bar (a log file, a batch job); the lines of finished notebooks stay")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = ap.parse_args(argv)
    try:
        devices = _check_scale_out(args)
        profile = load_profile(args.profile, **parse_set(args.sets))
        if args.rehearse:
            full, profile = profile, profile.rehearsal()
            _announce_rehearsal(full, profile, write=not args.dry_run)
        p = plan(profile, args.stage or STAGES, args.only)
        executors.check_local(args.jobs, devices, [j.run for j in p.jobs if j.run is not None])
        options = slurm.SlurmOptions(args.slurm_partition, args.slurm_gpus_per_run, args.slurm_time,
                                     args.slurm_cpus_per_run, slurm.parse_slurm_options(args.slurm_option))
        validate(p, force=args.force, notebooks=args.executor != "inline")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DatasetNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for job in p.jobs:
            state = "done, would skip" if (job.finished() and not args.force) else "would run"
            print(f"{job.label:40s} {state:18s} -> {job.output}")
        return 0
    start = time.perf_counter()
    if args.executor in ("local", "inline"):
        jobs = executors.run_plan(p, force=args.force, progress=not args.no_progress, workers=args.jobs,
                                  devices=devices, inline=args.executor == "inline", wait=not args.no_wait)
    else:
        try:
            jobs = slurm.submit(p, args.executor, options, force=args.force, wait=args.wait,
                                 rerun=shlex.join(["python", "-m", "xai_utils.pipeline", *argv]))
        except slurm.SubmissionRefused as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(summary(jobs))
    print(results_digest(jobs))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 1 if any(j.status in ("failed", "blocked") for j in jobs) else 0


def _check_scale_out(args: argparse.Namespace) -> list[str]:
    """The executor, --jobs and --devices before anything else (one-line errors); fills in
    --jobs (auto: one per GPU, or two without a GPU) and returns the CUDA indices of the runs'
    GPUs (those of --devices; every GPU of the machine when it is not given)."""
    if args.executor not in executors.EXECUTORS:
        raise ConfigError(f"unknown executor '{args.executor}'; valid: {', '.join(executors.EXECUTORS)}")
    explicit_jobs = args.jobs != "auto"
    if explicit_jobs:
        if not str(args.jobs).isdigit() or int(args.jobs) < 1:
            raise ConfigError(f"--jobs must be at least 1 (or auto), got {args.jobs}")
        args.jobs = int(args.jobs)
    slurm_flags = [f for f, v in (("--slurm-partition", args.slurm_partition), ("--slurm-option", args.slurm_option),
                                  ("--slurm-cpus-per-run", args.slurm_cpus_per_run), ("--wait", args.wait),
                                  ("--slurm-gpus-per-run", args.slurm_gpus_per_run is not None),
                                  ("--slurm-time", args.slurm_time != "24:00:00")) if v]
    if args.executor == "local" and slurm_flags:
        raise ConfigError(f"{slurm_flags[0]} needs --executor slurm")
    if args.executor in ("slurm", "submitit-local") and (args.devices or explicit_jobs):
        raise ConfigError(f"--{'devices' if args.devices else 'jobs'} is for local runs; with --executor "
                          f"{args.executor} each run is a job (GPUs per run: --slurm-gpus-per-run)")
    if args.executor == "inline" and (args.devices or (explicit_jobs and args.jobs > 1)):
        raise ConfigError(f"--{'devices' if args.devices else 'jobs'}: --executor inline runs one run at a time "
                          f"in this process, on the device each run names")
    if args.no_wait and args.executor not in ("local", "inline"):
        raise ConfigError(f"--no-wait is for local runs; with --executor {args.executor} each job waits for the "
                          f"lock of its run")
    if args.slurm_gpus_per_run is not None and args.slurm_gpus_per_run < 0:
        raise ConfigError(f"--slurm-gpus-per-run must be at least 0, got {args.slurm_gpus_per_run}")
    local = args.executor == "local"
    devices = executors.parse_devices(args.devices if args.devices or not local or not executors.available_gpus()
                                      else "all")
    if not explicit_jobs:
        args.jobs = executors.default_jobs(devices) if local else 1
    return devices


def _announce_rehearsal(full, rehearsal, write: bool) -> None:
    """Print what a rehearsal shrank and where it writes; write the stand-in data it needs."""
    lines = what_shrank((full.run_config(r.dataset, r.objective, r.seed), r) for r in rehearsal.runs())
    print(f"rehearsal of '{full.name}' ({len(rehearsal.seeds)} seed(s) of {len(full.seeds)}) into "
          f"{Path(rehearsal.results_root) / rehearsal.name}; shrunk:")
    for line in lines:
        print(f"  {line}")
    for line in (write_stand_in_data(rehearsal.stand_ins) if write else []):
        print(f"  {line}")


if __name__ == "__main__":
    sys.exit(main())
