"""Layer 6 — orchestration: a whole study with Papermill, the four notebooks for every run of
a profile, here, on several GPUs or on a SLURM cluster.

    python -m xai_utils.pipeline --profile quick --jobs 2

:mod:`.jobs` (a profile as notebook jobs, their markers, validation, execution of one run),
:mod:`.notebooks` (the notebooks and their kernel), :mod:`.executors` (several runs at once,
one GPU each; SLURM and submitit) and :mod:`.cli` (the command line).
"""
from .cli import main
from .executors import run_plan
from .jobs import STAGES, Job, Plan, evaluated_runs, figures_output, parse_set, plan, validate
