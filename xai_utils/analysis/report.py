"""Every table and figure of a study, from saved results only (no model is loaded).

:func:`build_all` reads every run of a profile (``results/<profile>/...``) and writes into
``figures/<profile>/``:

=============================  ==========================================================
``table_accuracy``             test accuracy (%), dataset x objective, mean +- std over seeds
``table_attribution_metrics``  method x facet/metric x dataset x objective, mean +- std
``table_significance``         paired t-tests between objectives: t, p, Holm p, d_z, pooled d
``paper_vs_reproduced``        the paper's numbers beside ours, differences, ordering agreement
``fig_saliency_grid``          images x (input, objective x method)
``fig_metric_distributions``   per-sample metric values by objective, with test marks
``fig_pixel_flipping_curves``  mean pixel-flipping curve and band per objective
``fig_embeddings``             2-D embedding of test features per objective
``table_claim_robustness``     order of the objectives and SCL vs CE under every score and protocol
``fig_claim_robustness``       the same verdicts as a grid (:mod:`.claim`)
``table_pair_metrics``         pair analysis: pair method x metric x pair kind (:mod:`.pair_figures`)
``table_pair_significance``    paired t-tests of the pair metrics, keyed by (seed, pair)
``fig_pair_grid``              example pairs and each objective's two maps per pair method
``table_ground_truth``         planted datasets: what each model uses and how much its maps show
``fig_ground_truth``           the same: mass on the cue against reliance, and their correlation
``coverage.json``              the runs covered and missing, and the machines that made them
                               (:func:`run_fingerprints`)
=============================  ==========================================================

Tables are written as CSV (numbers, for machines), Markdown and LaTeX (:mod:`.tables`);
figures as PDF and PNG (:mod:`.study_figures`, :mod:`.plotting`). Each is declared once
(:data:`TABLE_PARTS`, :data:`FIGURE_PARTS`: its name, what it needs, the function that makes
it). One whose input was not produced (no curves, no masks metrics, one objective...) is
skipped with its reason, logged and listed in ``report_notes.md``: the functions say so by
raising :class:`~xai_utils.errors.MissingInputError`. Any other exception is a bug and fails
the report, with the part and the study named on its traceback. Statistics: :mod:`.stats`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import pandas as pd

from ..errors import MissingInputError
from ..settings import layout as runs
from ..stages import files
from ..stages.fingerprint import fingerprint_id, read_fingerprints
from . import saved
from .claim import claim_pair, nan_pairing_of, plot_claim, table_claim_robustness
from .ground_truth import fig_ground_truth, has_planted_runs, table_ground_truth
from .names import dataset_label, objective_label, order_objectives
from .pair_figures import fig_pair_grid, is_pair_row, table_pair_metrics
from .plotting import add_footer, save_figure
from .study_figures import fig_embeddings, fig_pixel_flipping_curves, fig_saliency_grid, metric_distributions
from .tables import (Table, study_summary, table_accuracy, table_attribution_metrics, table_paper_vs_reproduced,
                     table_significance, write_table)

log = logging.getLogger(__name__)
PathLike = Union[str, Path]


@dataclass
class StudyInputs:
    """What a study's tables and figures are made from: its saved results, read once."""
    run_dirs: list[Path]
    results: pd.DataFrame            # single-image rows of each run's own protocol
    pair_results: pd.DataFrame       # the pair analysis's rows
    results_all: pd.DataFrame        # single-image rows of every protocol
    summaries: pd.DataFrame          # train_summary.json of every run
    profile: str = ""
    n_images: Optional[int] = None
    seeds: str = "image_mean"
    reference: Optional[str] = None
    nan_pairing: dict[str, str] = field(default_factory=dict)     # protocol -> NaN pairing of its tests
    made: dict[str, pd.DataFrame] = field(default_factory=dict)   # the data of the tables made so far

    def pairing(self, results: pd.DataFrame) -> str:
        """The NaN pairing of the tests on ``results`` (rows of one protocol, the runs' own)."""
        protocols = results["protocol"].unique() if "protocol" in results else []
        return nan_pairing_of(str(protocols[0]) if len(protocols) else "corrected", self.nan_pairing)

    def require(self, *names: str) -> None:
        """MissingInputError naming the first of ``names`` that is empty."""
        for name in names:
            if getattr(self, name).empty:
                raise MissingInputError(MISSING[name])

    def table(self, name: str) -> pd.DataFrame:
        """The data of a table made before (MissingInputError when it was skipped)."""
        if name not in self.made or self.made[name].empty:
            raise MissingInputError(f"no {name} (skipped above)")
        return self.made[name]


MISSING = {"results": "no results.csv (run the evaluation stage)",
           "summaries": "no train_summary.json (run the training stage)"}


@dataclass(frozen=True)
class Part:
    """A table or figure of a study: its name, the inputs that must not be empty, the function
    that makes it, and whether it belongs to the pair analysis or to planted datasets (then a
    study without them does not make it, and says nothing)."""
    name: str
    make: Callable[[StudyInputs], Any]
    needs: tuple[str, ...] = ()
    pairs: bool = False
    planted: bool = False


def _paper_vs_reproduced(s: StudyInputs) -> Table:
    if s.results.empty and s.summaries.empty:
        raise MissingInputError("neither results.csv nor train_summary.json")
    return table_paper_vs_reproduced(study_summary(s.results, s.summaries), s.profile)


def _pair_significance(s: StudyInputs) -> Table:
    table = table_significance(s.pair_results, seeds=s.seeds, reference=s.reference,
                               nan_pairing=s.pairing(s.pair_results))
    table.name = "table_pair_significance"
    table.notes.append("Pair analysis: the unit is a pair of images, keyed by (seed, pair id); it is kept when "
                       "every compared model classifies both of its images correctly; the pair's kind is in the "
                       "metric's name.")
    return table


TABLE_PARTS: tuple[Part, ...] = (
    Part("table_accuracy", lambda s: table_accuracy(s.summaries), needs=("summaries",)),
    Part("table_attribution_metrics", lambda s: table_attribution_metrics(s.results), needs=("results",)),
    Part("table_significance", lambda s: table_significance(s.results, seeds=s.seeds, reference=s.reference,
                                                            nan_pairing=s.pairing(s.results)), needs=("results",)),
    Part("paper_vs_reproduced", _paper_vs_reproduced),
    Part("table_claim_robustness", lambda s: table_claim_robustness(s.results_all, seeds=s.seeds,
                                                                    reference=s.reference, nan_pairing=s.nan_pairing)),
    Part("table_pair_metrics", lambda s: table_pair_metrics(s.pair_results, s.run_dirs), pairs=True),
    Part("table_pair_significance", _pair_significance, pairs=True),
    Part("table_ground_truth", lambda s: table_ground_truth(s.run_dirs, s.results), needs=("results",), planted=True),
)
FIGURE_PARTS: tuple[Part, ...] = (
    Part("fig_saliency_grid", lambda s: fig_saliency_grid(s.run_dirs, s.n_images)),
    Part("fig_metric_distributions", lambda s: metric_distributions(s.results, s.made.get("table_significance")),
         needs=("results",)),
    Part("fig_pixel_flipping_curves", lambda s: fig_pixel_flipping_curves(s.run_dirs, s.results)),
    Part("fig_embeddings", lambda s: fig_embeddings(s.run_dirs)),
    Part("fig_claim_robustness", lambda s: plot_claim(s.table("table_claim_robustness"),
                                                      *claim_pair(s.results_all["objective"].unique(), s.reference))),
    Part("fig_pair_grid", lambda s: fig_pair_grid(s.run_dirs), pairs=True),
    Part("fig_ground_truth", lambda s: fig_ground_truth(s.table("table_ground_truth")), planted=True),
)
TABLES = tuple(p.name for p in TABLE_PARTS)
FIGURES = tuple(p.name for p in FIGURE_PARTS)


def coverage(expected: Sequence[str], covered: Sequence[str]) -> str:
    """One line saying which runs a study's tables and figures cover, e.g. "12 of 12 runs
    (Fashion-MNIST, Shapes x CE, SCL, TL x seeds 0, 1)" or "...; missing: shapes/tl/seed1"."""
    covered = [r for r in expected if r in set(covered)] if expected else list(covered)
    expected = list(expected) or covered
    parts = [r.split("/") for r in covered]
    ds = ", ".join(dataset_label(d) for d in dict.fromkeys(p[0] for p in parts))
    objs = ", ".join(objective_label(o) for o in order_objectives(p[1] for p in parts))
    seeds = ", ".join(sorted({p[2].removeprefix("seed") for p in parts}, key=int))
    text = f"{len(covered)} of {len(expected)} runs ({ds} × {objs} × seed{'s' if ',' in seeds else ''} {seeds})"
    missing = [r for r in expected if r not in set(covered)]
    return text + (f"; missing: {', '.join(missing)}" if missing else "")


def build_all(profile: str, results_root: Optional[PathLike] = None, output_dir: Optional[PathLike] = None,
              n_images: Optional[int] = None, seeds: str = "image_mean",
              runs_expected: Optional[Sequence[str]] = None,
              runs_missing: Sequence[str] = (), reference: Optional[str] = None,
              nan_pairing: Optional[Mapping[str, str]] = None) -> list[Path]:
    """Write every table (CSV, Markdown, LaTeX) and figure (PDF, PNG) of a study.

    Reads ``<results_root>/<profile>/<dataset>/<objective>/seed<k>/`` (``results_root`` None:
    the repository's ``results/`` or ``$XAI_RESULTS``; a relative folder is the repository's),
    only the runs of ``runs_expected`` (ids like ``shapes/ce/seed0``) when given, and none of
    ``runs_missing`` (runs whose files, if any, hold results of other settings). Writes into
    ``output_dir`` (default: the repository's ``figures/<profile>``, or ``$XAI_FIGURES/<profile>``).
    ``reference``: test every objective against this one only, instead of every pair.
    ``nan_pairing``: protocol -> how its paired tests treat NaNs (the study's setting); a
    protocol without one keeps its own (:func:`~xai_utils.analysis.claim.nan_pairing_of`).
    Every figure and ``report_notes.md`` say which runs they cover and which expected runs are
    missing (:func:`coverage`). A part whose input is missing is skipped with its reason (log +
    ``report_notes.md``); any other error in a part propagates. Raises FileNotFoundError,
    writing nothing, when no run has a result. Returns the written paths.
    """
    out = runs.project_path(output_dir) if output_dir else runs.figures_home() / profile
    run_dirs = saved.find_run_dirs(results_root, profile)
    if runs_expected:
        wanted = set(runs_expected)
        run_dirs = [rd for rd in run_dirs if _run_id(rd) in wanted]
    run_dirs = [rd for rd in run_dirs if _run_id(rd) not in set(runs_missing)]
    with_results = [rd for rd in run_dirs if (rd / runs.RESULTS).is_file() or (rd / runs.TRAIN_SUMMARY).is_file()]
    if not with_results:
        raise FileNotFoundError(f"no run of study '{profile}' under {runs.study_dir(results_root, profile)} has results "
                                f"(train_summary.json or results.csv): nothing to report")
    covered = [_run_id(rd) for rd in run_dirs if (rd / runs.RESULTS).is_file()]
    cover = coverage(list(runs_expected or []), covered or [_run_id(rd) for rd in with_results])
    out.mkdir(parents=True, exist_ok=True)
    everything = saved.study_results(results_root, profile, run_dirs=run_dirs)
    results_all = saved.study_results(results_root, profile, run_dirs=run_dirs, all_protocols=True)
    inputs = StudyInputs(run_dirs, everything[~is_pair_row(everything)], everything[is_pair_row(everything)],
                         results_all[~is_pair_row(results_all)],
                         saved.load_summaries(results_root, profile, run_dirs=run_dirs), profile=profile,
                         n_images=n_images, seeds=seeds, reference=reference or None,
                         nan_pairing=dict(nan_pairing or {}))
    notes: list[str] = []
    written: list[Path] = []
    planted = has_planted_runs(run_dirs)               # reads each run's config.json: once
    for part in TABLE_PARTS + FIGURE_PARTS:
        if (part.pairs and inputs.pair_results.empty) or (part.planted and not planted):
            continue                                   # no pair analysis (planted data) in this study: nothing to say
        made = _make(part, inputs, profile, notes)
        if made is None:
            continue
        if isinstance(made, Table):
            made.notes.append(f"Covers {cover}.")
            inputs.made[part.name] = made.data
            written += write_table(made, out)
        else:
            add_footer(made, f"Covers {cover}.")
            written += save_figure(made, out / part.name)

    text = f"# Report notes ({profile})\n\nRuns covered: {cover}.\n"
    text += "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "\nNothing was skipped.\n")
    written.append(files.save_text(out / "report_notes.md", text))
    machines, made_on = run_fingerprints([rd for rd in run_dirs if _run_id(rd) in set(covered)])
    written.append(files.save_json(out / "coverage.json", {
        "profile": profile, "expected": list(runs_expected or []), "covered": covered,
        "missing": [r for r in (runs_expected or []) if r not in set(covered)],
        "fingerprints": machines, "made_on": made_on}))
    log.info("report of '%s' written to %s", profile, out)
    return written


def run_fingerprints(run_dirs: Sequence[Path]) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """The machines that made the runs' numbers, for ``coverage.json``: ({fingerprint id:
    fingerprint}, {run id: {stage: fingerprint id}}), the stages of an evaluation under
    another protocol named ``<protocol>/<stage>``; a run made before fingerprints were
    recorded has no stages."""
    machines: dict[str, dict] = {}
    made_on: dict[str, dict[str, str]] = {}
    for rd in run_dirs:
        stages: dict[str, str] = {}
        for folder in saved.evaluation_dirs([rd]):
            prefix = "" if folder == rd else f"{folder.name}/"
            for stage, fp in read_fingerprints(folder).items():
                key = fingerprint_id(fp)
                machines[key] = fp
                stages[prefix + stage] = key
        made_on[_run_id(rd)] = stages
    return dict(sorted(machines.items())), made_on


def _make(part: Part, inputs: StudyInputs, profile: str, notes: list[str]) -> Any:
    """The part's table or figure, or None when an input it needs is missing (said in
    ``notes``). Any other error propagates, the part and the study named on it."""
    try:
        inputs.require(*part.needs)
        return part.make(inputs)
    except MissingInputError as e:
        msg = f"{part.name} skipped: {e}"
        log.warning(msg)
        notes.append(msg)
        return None
    except Exception as e:
        if hasattr(e, "add_note"):                    # Python 3.11+: the traceback says where
            e.add_note(f"while making {part.name} of study '{profile}' (xai_utils.analysis.report)")
        raise


def _run_id(run_dir: Path) -> str:
    return saved.run_key(run_dir).id


def table_markdown(output_dir: PathLike, name: str) -> str:
    """The Markdown of a written table, or a one-line note saying it was skipped (for notebooks)."""
    p = Path(output_dir) / f"{name}.md"
    return p.read_text() if p.is_file() else f"*{name}: not made for this study (see report_notes.md).*"


def figure_png(output_dir: PathLike, name: str) -> Optional[Path]:
    """The PNG of a written figure, or None if it was skipped."""
    p = Path(output_dir) / f"{name}.png"
    return p if p.is_file() else None
