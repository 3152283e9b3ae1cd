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
import sys
import time
from typing import Optional, Sequence

from ..errors import ConfigError, DatasetNotFoundError
from ..settings.profiles import load_profile
from . import executors
from .jobs import STAGES, parse_set, plan, results_digest, summary, validate


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xai_utils.pipeline",
                                 description="Run a whole study with Papermill: the four notebooks for every run of a profile.")
    ap.add_argument("--profile", default="quick", help="profile name in configs/ or a YAML path")
    ap.add_argument("--stage", choices=STAGES, action="append",
                    help="run only this stage (repeatable); default: all four")
    ap.add_argument("--only", help="dataset[/objective[/seed]] to run a subset, e.g. shapes/scl/0")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile or run setting, e.g. --set epochs=2 --set seeds=[0]")
    ap.add_argument("--dry-run", action="store_true", help="show what would run, write nothing")
    ap.add_argument("--force", action="store_true", help="rerun stages even if their results exist")
    ap.add_argument("--jobs", type=int, default=None, metavar="N",
                    help="runs executed at once, each kernel with its share of the CPU threads "
                         "(default 1; with --devices, one per device)")
    ap.add_argument("--devices", default=None, metavar="LIST",
                    help="GPUs for concurrent runs, e.g. cuda:0,cuda:1 or all: each run's kernels see only its GPU")
    ap.add_argument("--executor", default="local", metavar="NAME",
                    help="local (default) | slurm (one job per run through submitit) | submitit-local "
                         "(the same submission as local processes)")
    ap.add_argument("--slurm-partition", default=None)
    ap.add_argument("--slurm-gpus-per-run", type=int, default=1, metavar="N")
    ap.add_argument("--slurm-time", default="24:00:00", metavar="TIME", help="sbatch --time per run (default 24:00:00)")
    ap.add_argument("--slurm-cpus-per-run", type=int, default=None, metavar="N")
    ap.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. --slurm-option account=abc (repeatable)")
    ap.add_argument("--wait", action="store_true",
                    help="slurm: wait for the jobs, report failures, then make the figures here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        devices = _check_scale_out(args)
        profile = load_profile(args.profile, **parse_set(args.sets))
        p = plan(profile, args.stage or STAGES, args.only)
        executors.check_local(args.jobs, devices, [j.run for j in p.jobs if j.run is not None])
        slurm = executors.SlurmOptions(args.slurm_partition, args.slurm_gpus_per_run, args.slurm_time,
                                       args.slurm_cpus_per_run, executors.parse_slurm_options(args.slurm_option))
        validate(p, force=args.force)
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
    if args.executor != "local":
        jobs = executors.submit(p, args.executor, slurm, force=args.force, wait=args.wait)
    else:
        jobs = executors.run_plan(p, force=args.force, progress=not args.no_progress, workers=args.jobs, devices=devices)
    print(summary(jobs))
    print(results_digest(jobs))
    print(f"total {time.perf_counter() - start:.0f} s")
    return 1 if any(j.status in ("failed", "blocked") for j in jobs) else 0


def _check_scale_out(args: argparse.Namespace) -> list[str]:
    """The executor, --jobs and --devices before anything else (one-line errors); fills in
    --jobs (one per device with --devices, else 1) and returns the CUDA indices."""
    if args.executor not in executors.EXECUTORS:
        raise ConfigError(f"unknown executor '{args.executor}'; valid: {', '.join(executors.EXECUTORS)}")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}")
    slurm_flags = [f for f, v in (("--slurm-partition", args.slurm_partition), ("--slurm-option", args.slurm_option),
                                  ("--slurm-cpus-per-run", args.slurm_cpus_per_run), ("--wait", args.wait),
                                  ("--slurm-gpus-per-run", args.slurm_gpus_per_run != 1),
                                  ("--slurm-time", args.slurm_time != "24:00:00")) if v]
    if args.executor == "local" and slurm_flags:
        raise ConfigError(f"{slurm_flags[0]} needs --executor slurm")
    if args.executor != "local" and (args.devices or args.jobs):
        raise ConfigError(f"--{'devices' if args.devices else 'jobs'} is for local runs; with --executor "
                          f"{args.executor} each run is a job (GPUs per run: --slurm-gpus-per-run)")
    if args.slurm_gpus_per_run < 0:
        raise ConfigError(f"--slurm-gpus-per-run must be at least 0, got {args.slurm_gpus_per_run}")
    devices = executors.parse_devices(args.devices)
    if args.jobs is None:
        args.jobs = len(devices) or 1
    return devices


if __name__ == "__main__":
    sys.exit(main())
