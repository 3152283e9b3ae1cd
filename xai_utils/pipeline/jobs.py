"""A study as notebook jobs: a profile expanded into the stages of every run (:func:`plan`),
checked before any work (:func:`validate`), and executed one run at a time (:func:`run_group`).

A profile expands into runs (dataset x objective x seed). Each run executes
``01_train``, ``02_attribute`` and ``03_evaluate`` (for every evaluation protocol of the
study); ``04_figures`` runs once at the end. Before anything runs or any file is written,
every value of every run is checked (:mod:`xai_utils.settings.validation`: names against the
registries, ranges, which metric applies to which method and data, the data files of the
stages that will run) and every notebook parameter against the notebook's tagged
``parameters`` cell (``papermill.inspect_notebook``). Each executed notebook is kept beside its
results (``<run_dir>/notebooks/``; a failed execution as ``<name>.failed.ipynb``, leaving the
last successful one in place). A stage whose marker (``<run_dir>/stages/<stage>.json``) holds
the hash of the same resolved settings is skipped, so a rerun is cheap and an interrupted
study continues where it stopped; no marker is ever deleted (a marker of other settings
simply does not match). A run's stages execute while its process holds the run's lock
(:mod:`.locks`), so two invocations never work on one run at once. A failed run does not
stop the others. The figures cover the runs
that have results: into ``figures/<profile>/`` when every run of the study has them, into
``figures/<profile>-partial/`` otherwise, and nowhere when no run has results.
"""
from __future__ import annotations

import json
import os
import shlex
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import yaml

from ..errors import ArtefactError, ConfigError, Explained
from ..settings.hashing import STAGE_KEYS, stage_hash
from ..settings.profiles import CONFIG_DIR, Profile
from ..settings.run_config import RunConfig, merge_settings
from ..settings.validation import check_runs
from ..stages.attribute import attribute_run
from ..stages.evaluate import evaluate_run
from ..settings.layout import (CONFIG, RESULTS, RUN_STAGES, SEED_PREFIX, TRAIN_SUMMARY, Stage, notebook_path,
                               stage_marker, trained_run_dir)
from ..stages.artefacts import load_json
from ..stages.files import remove_partial_writes, save_json
from ..stages.train import train_run
from .locks import holding
from .notebooks import NOTEBOOK_DIR, NOTEBOOKS, RunKernel, notebook_parameters, param_type, type_ok

STAGES = tuple(Stage)


@dataclass
class Job:
    """One notebook execution: a stage of a run (or the study's figures)."""

    stage: Stage
    params: dict[str, Any]
    output: Path                 # executed notebook
    marker: Path                 # completion marker holding `digest`
    digest: str
    run_id: str = "figures"      # the run (and "@protocol" for another protocol's evaluation)
    run: Optional[RunConfig] = None
    group: str = "figures"       # jobs of one group run in order (one trained run, all protocols)
    lock_dir: Optional[Path] = None   # the folder whose lock the group holds: the run's, or the study's
    status: str = "pending"      # pending | skipped | done | failed | blocked
    seconds: float = 0.0
    error: str = ""
    note: str = ""

    @property
    def label(self) -> str:
        return f"{self.run_id}:{self.stage}"

    def finished(self) -> bool:
        """The marker holds this job's hash (an unreadable marker: not finished, the stage re-runs)."""
        try:
            return self.marker.is_file() and load_json(self.marker).get("hash") == self.digest
        except ArtefactError:
            return False


@dataclass
class Plan:
    profile: Profile
    jobs: list[Job] = field(default_factory=list)


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars/lists (``3``, ``0.1``, ``[1, 2]``).
    A dotted key sets one entry of a mapping: ``method_options.eigencam.sign=numpy``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        *path, last = key.strip().split(".")
        nested: dict[str, Any] = {last: parsed}
        for part in reversed(path):
            nested = {part: nested}
        out = merge_settings(out, nested)
    return out


def _matches(run: RunConfig, only: Optional[str]) -> bool:
    """``--only dataset[/objective[/seed]]``, each part may be ``*``; seed as ``3`` or ``seed3``."""
    if not only:
        return True
    parts = only.strip("/").split("/")
    values = (run.dataset, run.objective, str(run.seed))
    for pat, val in zip(parts, values):
        if pat not in ("*", val, f"{SEED_PREFIX}{val}"):
            return False
    return True


def plan(profile: Profile, stages: Sequence[Stage] = STAGES, only: Optional[str] = None) -> Plan:
    """Expand a profile into notebook jobs, in execution order."""
    out = Plan(profile)
    runs = [r for r in profile.runs() if _matches(r, only)]
    if only and not runs:
        raise ConfigError(f"--only '{only}' matches no run of profile '{profile.name}'; "
                          f"runs are {', '.join(r.run_id for r in profile.runs())}")
    for run in runs:
        run_dir = profile.run_dir(run).resolve()
        if Stage.TRAIN in stages:
            out.jobs.append(Job(stage=Stage.TRAIN, params=_run_params(profile, run, run_dir, Stage.TRAIN),
                                output=notebook_path(run_dir, NOTEBOOKS[Stage.TRAIN]),
                                marker=stage_marker(run_dir, Stage.TRAIN), digest=stage_hash(run, Stage.TRAIN),
                                run_id=run.run_id, run=run, group=run.run_id, lock_dir=run_dir))
        for cfg, eval_dir in profile.evaluations(run):      # each protocol, on the same trained model
            eval_dir = eval_dir.resolve()
            label = run.run_id + ("" if eval_dir == run_dir else f"@{cfg.protocol}")
            for stage in (Stage.ATTRIBUTE, Stage.EVALUATE):
                if stage in stages:
                    out.jobs.append(Job(stage=stage, params=_run_params(profile, cfg, eval_dir, stage),
                                        output=notebook_path(eval_dir, NOTEBOOKS[stage]),
                                        marker=stage_marker(eval_dir, stage), digest=stage_hash(cfg, stage),
                                        run_id=label, run=cfg, group=run.run_id, lock_dir=run_dir))
    if Stage.FIGURES in stages:
        study = (Path(profile.results_root) / profile.name).resolve()
        digest = figures_digest(profile)
        out.jobs.append(Job(stage=Stage.FIGURES,
                            params={"profile": profile.name, "results_root": str(Path(profile.results_root).resolve()),
                                    "output_dir": str(profile.figures_dir().resolve()),
                                    "runs": [r.run_id for r in profile.runs()], "missing": [],
                                    "reference": profile.reference or "", "nan_pairing": nan_pairings(profile)},
                            output=notebook_path(study, NOTEBOOKS[Stage.FIGURES]),
                            marker=stage_marker(study, Stage.FIGURES), digest=digest, lock_dir=study))
    return out


def nan_pairings(profile: Profile) -> dict[str, str]:
    """Each evaluation protocol of a study -> how its paired tests treat NaNs (the setting
    ``nan_pairing`` of its runs, which the authors' protocol sets to ``per_model``)."""
    return {str(cfg.protocol): cfg.nan_pairing for run in profile.runs() for cfg, _ in profile.evaluations(run)}


def figures_digest(profile: Profile) -> str:
    """What the figures depend on: the settings of every evaluation and when each was last
    evaluated (its marker's time), so that an evaluation re-run with ``--force`` (e.g. after a
    code change) re-makes the figures too."""
    parts = []
    for run in profile.runs():
        for cfg, eval_dir in profile.evaluations(run):
            marker, stamp = stage_marker(eval_dir.resolve(), Stage.EVALUATE), ""
            if marker.is_file():
                m = load_json(marker)
                stamp = str(m.get("finished", "")) if m.get("hash") == stage_hash(cfg, Stage.EVALUATE) else ""
            parts.append(stage_hash(cfg, Stage.FIGURES) + (f"@{stamp}" if stamp else ""))
    return "-".join(parts)


def evaluated_runs(profile: Profile) -> tuple[list[str], list[str]]:
    """(runs whose evaluation is finished for the current settings, runs without), over
    every run of the study."""
    done, missing = [], []
    for run in profile.runs():
        ok = True
        for cfg, eval_dir in profile.evaluations(run):       # every protocol of the run
            marker = stage_marker(eval_dir.resolve(), Stage.EVALUATE)
            ok &= (marker.is_file() and load_json(marker).get("hash") == stage_hash(cfg, Stage.EVALUATE)
                   and (eval_dir / RESULTS).is_file())
        (done if ok else missing).append(run.run_id)
    return done, missing


def figures_output(profile: Profile) -> Optional[Path]:
    """Where the figures of the study's current results go: ``figures/<profile>`` when every
    run is evaluated, ``figures/<profile>-partial`` when some are, None when none is."""
    done, missing = evaluated_runs(profile)
    if not done:
        return None
    out = profile.figures_dir().resolve()
    return out if not missing else out.with_name(out.name + "-partial")


def _run_params(profile: Profile, run: RunConfig, run_dir: Path, stage: Stage) -> dict[str, Any]:
    if stage == Stage.TRAIN:
        overrides = dict(profile.overrides)
        if profile.rehearse and run.data_root is not None:   # stand-in data: where this pipeline wrote them
            overrides["data_root"] = str(Path(run.data_root).resolve())
        return {"profile": profile.path or profile.name, "dataset": run.dataset, "objective": run.objective,
                "seed": run.seed, "run": str(run_dir), "overrides": overrides, "rehearse": profile.rehearse}
    common = {"run": str(run_dir), "methods": list(run.methods), "n_samples": run.eval_samples,
              "batch_size": run.batch_size_eval, "device": run.device}
    if stage == Stage.ATTRIBUTE:
        return {**common, "target": run.target}
    return {**common, "metrics": list(run.metrics)}


def validate(p: Plan, force: bool = False, notebooks: bool = True) -> None:
    """Check every value of every run, the data files of the stages that will run (not
    those already finished, unless ``force``) and (``notebooks``) every job's parameters
    against its notebook; raise ConfigError (or DatasetNotFoundError) on the first problem."""
    check_runs(p.profile.runs(), data=False)
    for stage in RUN_STAGES:
        pending = [j.run for j in p.jobs if j.stage == stage and (force or not j.finished())]
        check_runs(pending, stages=(stage,), data=True)
    cache: dict[str, dict] = {}
    for job in p.jobs if notebooks else ():
        spec = cache.setdefault(job.stage, notebook_parameters(job.stage))
        for name, value in job.params.items():
            if name not in spec:
                raise ConfigError(f"{NOTEBOOKS[job.stage]}: unknown parameter '{name}'; "
                                  f"its parameters are: {', '.join(spec)}")
            expected = param_type(spec[name])
            if not type_ok(value, expected):
                raise ConfigError(f"{NOTEBOOKS[job.stage]}: parameter '{name}' must be "
                                  f"{expected.__name__}, got {value!r}")


def failed_notebook(job: Job) -> Path:
    """Where the executed notebook of a failed job is kept (beside the last successful one)."""
    return job.output.with_name(job.output.stem + ".failed.ipynb")


def _make_figures(job: Job) -> Any:
    from ..analysis.report import build_all   # reason: scipy.stats and matplotlib (2 s) load only where figures are made in this process
    return build_all(job.params["profile"], results_root=job.params["results_root"],
                     output_dir=job.params["output_dir"], runs_expected=job.params["runs"],
                     runs_missing=job.params["missing"], reference=job.params["reference"] or None,
                     nan_pairing=job.params["nan_pairing"])


# What each notebook calls, for a job run in this process (``--executor inline``): the same
# stage functions with the same parameters, without a kernel or an executed notebook.
STAGE_CALLS: dict[str, Callable[[Job], Any]] = {
    Stage.TRAIN: lambda job: train_run(job.run, job.params["run"], progress=False),
    Stage.ATTRIBUTE: lambda job: attribute_run(
        job.params["run"], methods=job.params["methods"], n_samples=job.params["n_samples"],
        target=job.params["target"], batch_size=job.params["batch_size"], device=job.params["device"]),
    Stage.EVALUATE: lambda job: evaluate_run(
        job.params["run"], methods=job.params["methods"], metrics=job.params["metrics"],
        n_samples=job.params["n_samples"], batch_size=job.params["batch_size"], device=job.params["device"]),
    Stage.FIGURES: _make_figures,
}


def execute(job: Job, kernel: RunKernel, inline: bool = False) -> None:
    """Run one notebook with Papermill in the run's ``kernel`` (:class:`RunKernel`, shared with
    its other notebooks), or, ``inline``, the stage function it calls in this process; then
    write the stage's completion marker.

    The notebook executes into a temporary file renamed to ``job.output`` on success, or
    to :func:`failed_notebook` on failure: a failure never replaces a finished notebook.
    """
    job.output.parent.mkdir(parents=True, exist_ok=True)
    if job.run is not None and job.stage != Stage.TRAIN:
        _refresh_config(job.output.parent.parent, job.run)
    if inline:
        start = time.perf_counter()
        try:
            STAGE_CALLS[job.stage](job)
        finally:
            job.seconds = time.perf_counter() - start
        _mark_finished(job, notebook=None)
        return
    tmp = job.output.with_name(f".{job.output.stem}.running.ipynb")
    start = time.perf_counter()
    try:
        kernel.execute(NOTEBOOK_DIR / NOTEBOOKS[job.stage], tmp, job.params)
    except BaseException:
        if tmp.is_file():
            os.replace(tmp, failed_notebook(job))
        raise
    finally:
        job.seconds = time.perf_counter() - start
    os.replace(tmp, job.output)
    failed_notebook(job).unlink(missing_ok=True)
    _mark_finished(job, notebook=str(job.output))


def _mark_finished(job: Job, notebook: Optional[str]) -> None:
    save_json(job.marker, {"hash": job.digest, "stage": job.stage, "run_id": job.run_id,
                           "seconds": round(job.seconds, 2), "notebook": notebook,
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _refresh_config(eval_dir: Path, run: RunConfig) -> None:
    """Bring the evaluation settings of a trained run's config.json up to date.

    Training writes config.json; later stages read their settings from it. When only
    evaluation settings changed (the train hash still matches), they are updated in place.
    An evaluation folder of another protocol (``<run>/protocols/<name>/``) gets its own
    config.json: the run's training settings with that protocol's evaluation settings.
    """
    path = eval_dir / CONFIG
    source = path if path.is_file() else trained_run_dir(eval_dir) / CONFIG
    if source.is_file():
        stored = load_json(source)
        keep = set(STAGE_KEYS[Stage.TRAIN])
        save_json(path, {k: (stored[k] if k in keep and k in stored else v) for k, v in run.to_dict().items()})


def run_groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs of each run, in stage order, one list per run (the figures job on its own)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    return list(groups.values())


def run_group(group: list[Job], profile: Optional[Profile] = None, force: bool = False,
              env: Optional[dict[str, str]] = None, log: Callable[[str], None] = print,
              on_job: Optional[Callable[[Job], None]] = None, inline: bool = False, wait: bool = True) -> None:
    """Execute one run's jobs in order (or the study's figures), holding the run's lock
    (:mod:`.locks`): another invocation working on it is waited for, and what it finished is
    skipped; ``wait=False`` skips the whole group instead. A failed stage blocks the later
    stages of its run only. Used by local runs and by every submitted job; ``inline``: the
    stage functions in this process instead of the notebooks."""
    first = group[0]
    lock_dir = first.lock_dir or first.marker.parent.parent
    label = first.run_id if first.stage != Stage.FIGURES else "figures"
    with holding(lock_dir, label, wait=wait, log=log, name="run" if first.stage != Stage.FIGURES else "figures") as held:
        if not held:
            for job in group:
                job.status = "skipped"
                if on_job is not None:
                    on_job(job)
            first.note = f"{label}: skipped, another invocation held it (--no-wait)"
            return
        if first.stage != Stage.FIGURES:
            remove_partial_writes(lock_dir)          # temporaries of writes a killed process left
        with RunKernel(env) as kernel:               # started by the first notebook that runs
            _run_locked(group, profile, force, kernel, log, on_job, inline)


def _run_locked(group: list[Job], profile: Optional[Profile], force: bool, kernel: RunKernel,
                log: Callable[[str], None], on_job: Optional[Callable[[Job], None]], inline: bool) -> None:
    failed = False
    for job in group:
        if failed:
            job.status = "blocked"
        elif job.stage == Stage.FIGURES and not _prepare_figures(profile, job):
            job.status = "skipped"
            log("figures: no run of the study has results yet; nothing written")
        elif not force and job.finished():
            job.status = "skipped"
        else:
            try:
                execute(job, kernel, inline=inline)
                job.status = "done"
                log(f"done {job.label} in {job.seconds:.0f} s")
                _report_repairs(job, log)
            except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
                job.status, job.error, failed = "failed", _one_line(_with_command(e, profile)), True
                explained = isinstance(e, Explained)
                where = ("" if explained and inline else
                         "\n" + "".join(traceback.format_exception(e)).rstrip() if inline
                         else f"\n  notebook: {failed_notebook(job)}")
                log(f"FAILED {job.label}: {job.error}{where}")
        if on_job is not None:
            on_job(job)


def _report_repairs(job: Job, log: Callable[[str], None]) -> None:
    """After training: each damaged file the stage found and repaired (the summary's
    ``recovered``), one line each, kept as the job's note."""
    if job.stage != Stage.TRAIN:
        return
    try:
        lines = load_json(Path(job.params["run"]) / TRAIN_SUMMARY).get("recovered") or []
    except (FileNotFoundError, ArtefactError):
        return
    for line in lines:
        log(f"{job.label}: {line}")
    job.note = "\n".join(f"{job.label}: {line}" for line in lines)


def _with_command(error: Exception, profile: Optional[Profile]) -> Exception:
    """An :class:`ArtefactError` saying the whole command that remakes its file: the study's
    profile, the stage, and the run that owns the file; any other error as it is."""
    if profile is None or not isinstance(error, ArtefactError):
        return error
    path = Path(error.path).resolve()
    owner = next((r for r in profile.runs() if profile.run_dir(r).resolve() in (path, *path.parents)), None)
    return error.remade_by(f"{profile_command(profile)} --stage {error.stage} --force"
                           + (f" --only {owner.dataset}/{owner.objective}/{owner.seed}" if owner else ""))


def profile_command(profile: Profile) -> str:
    """The pipeline command that names this study: its profile (by name when it is one of
    ``configs/``), ``--rehearse`` and every ``--set`` it was given."""
    path = Path(profile.path) if profile.path else None
    name = path.stem if path is None or path.parent.resolve() == CONFIG_DIR.resolve() else str(path)
    sets = " ".join(f"--set {shlex.quote(f'{k}={v if isinstance(v, str) else json.dumps(v)}')}"
                    for k, v in profile.given.items())
    return " ".join(filter(None, ("python -m xai_utils.pipeline --profile", shlex.quote(name or profile.name),
                                  "--rehearse" if profile.rehearse else "", sets)))


def _prepare_figures(profile: Profile, job: Job) -> bool:
    """Point the figures job at :func:`figures_output` (False: no run has results)."""
    out = figures_output(profile)
    if out is None:
        return False
    done, missing = evaluated_runs(profile)
    job.digest = figures_digest(profile)         # the evaluations of this invocation included
    job.params["output_dir"] = str(out)
    job.params["runs"] = [r.run_id for r in profile.runs()]
    job.params["missing"] = missing              # their results (if any) are of other settings
    job.output = job.output.with_name(f"04_figures{'_partial' if missing else ''}.ipynb")
    if missing:
        job.marker = job.marker.with_name("figures_partial.json")
        job.digest += "-partial-" + ",".join(done)
    job.note = (f"figures of {len(done)} of {len(done) + len(missing)} runs in {out}"
                + (f"; missing: {', '.join(missing)}" if missing else ""))
    return True


def _one_line(e: Exception) -> str:
    """``<class>: <first line>``; an explained error whole (its command is at its end), any
    other cut at 600 characters."""
    ename, evalue = getattr(e, "ename", type(e).__name__), getattr(e, "evalue", str(e))
    line = f"{ename}: {evalue}".splitlines()[0]
    return line if isinstance(e, Explained) else line[:600]


def summary(jobs: Sequence[Job]) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "skipped", "submitted", "queued", "failed", "blocked")}
    lines = [", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do"]
    per_stage: dict[str, float] = {}
    for j in jobs:
        per_stage[j.stage] = per_stage.get(j.stage, 0.0) + j.seconds
    lines.append("notebook time per stage (summed over runs): " + ", ".join(f"{s} {t:.0f} s" for s, t in per_stage.items()))
    for j in jobs:
        if j.status == "failed":
            lines.append(f"FAILED {j.label}: {j.error}\n  executed notebook: {failed_notebook(j)}")
        elif j.status == "blocked":
            lines.append(f"not run {j.label} (an earlier stage of this run failed)")
        if j.note:
            lines.append(j.note)
    return "\n".join(lines)


def results_digest(jobs: Sequence[Job]) -> str:
    """The study's accuracy table and where every table and figure is, for the log."""
    fig = next((j for j in jobs if j.stage == Stage.FIGURES
                and (j.status == "done" or (j.status == "skipped" and j.finished()))), None)
    if fig is None:
        return "no figures made in this invocation"
    out = Path(fig.params["output_dir"])
    acc = out / "table_accuracy.md"
    text = acc.read_text().split("\n\n", 1)[-1].strip() if acc.is_file() else "(no accuracy table)"
    return f"\nTest accuracy (%):\n{text}\n\nevery table (CSV, Markdown, LaTeX) and figure (PDF, PNG) in {out}"
