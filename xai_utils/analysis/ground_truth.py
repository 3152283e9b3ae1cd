"""The ground truth of a study on planted datasets (:mod:`xai_utils.study.data.planted`): what
each model uses, measured by intervention on the cue (``ground_truth.csv`` of each run), and how
much of it each explanation method shows (the ``cue_mass`` and ``cue_pointing`` scores of
``results.csv``) -> ``table_ground_truth`` and ``fig_ground_truth``.

Per run and method (every evaluation image, correctly classified or not: the question is what
the model uses, not whether it is right):

* ``reliance``: accuracy with the cue minus accuracy without it (the model level);
* ``swap_share``: share of the images with another class's cue predicted as that class;
* ``logit_drop``: mean drop of the explained class's logit when the cue is removed;
* ``mass_on_cue`` and ``pointing_on_cue``: mean share of the map on the cue's square, and
  how often its maximum lies there; ``cue_area``: the square's share of the image (what the
  random control's mass is, in expectation);
* ``reliance_correlation``: Spearman's rank correlation over the images between the map's
  mass on the cue and the logit's drop without it: does the map show the cue where the model
  uses it, and stay off it where it does not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import matplotlib.pyplot as plt
from scipy import stats as sps

from ..errors import MissingInputError
from ..settings import layout as runs
from ..stages.artefacts import load_ground_truth
from ..study.data import DATASETS, is_planted
from ..study.data.planted import CUE_SIZE
from .names import dataset_label, method_label, objective_label, order_objectives, ordered_methods
from .saved import run_key
from .tables import Table, fmt_num

GROUND_TRUTH_TABLE_COLUMNS = ("dataset", "objective", "method", "cue_rate", "seed", "reliance", "swap_share",
                              "logit_drop", "mass_on_cue", "pointing_on_cue", "cue_area", "reliance_correlation",
                              "n_images")


def has_planted_runs(run_dirs: Sequence[Path]) -> bool:
    """Whether any run of the study is on a planted dataset."""
    return any(is_planted(run_key(rd).dataset) for rd in run_dirs)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(sps.spearmanr(a[ok], b[ok])[0])


def ground_truth_rows(run_dirs: Sequence[Path], results: pd.DataFrame) -> pd.DataFrame:
    """One row per planted run and method, the columns :data:`GROUND_TRUTH_TABLE_COLUMNS`."""
    rows = []
    for rd in run_dirs:
        key = run_key(rd)
        if not is_planted(key.dataset) or not (rd / runs.GROUND_TRUTH).is_file():
            continue
        spec = DATASETS[key.dataset]
        gt = load_ground_truth(rd).set_index("image")
        model = {"reliance": float((gt["pred"] == gt["label"]).mean() - (gt["pred_absent"] == gt["label"]).mean()),
                 "swap_share": float((gt["pred_swapped"] == gt["cue_swapped"]).mean()),
                 "logit_drop": float(gt["reliance"].mean())}
        mine = results[(results["dataset"] == key.dataset) & (results["objective"] == key.objective)
                       & (results["seed"] == key.seed)]
        for method in ordered_methods(mine["method"].unique()):
            scores = mine[mine["method"] == method]
            mass = scores[scores["metric"] == "cue_mass"].set_index("sample_index")["value"]
            pointing = scores[scores["metric"] == "cue_pointing"]["value"]
            if mass.empty:
                continue
            rows.append({"dataset": key.dataset, "objective": key.objective, "method": method,
                         "cue_rate": spec.cue_rate, "seed": key.seed, **model,
                         "mass_on_cue": float(mass.mean()), "pointing_on_cue": float(pointing.mean()),
                         "cue_area": CUE_SIZE ** 2 / spec.image_size ** 2,
                         "reliance_correlation": _spearman(mass.reindex(gt.index).to_numpy(float),
                                                           gt["reliance"].to_numpy(float)),
                         "n_images": int(len(gt))})
    return pd.DataFrame(rows, columns=list(GROUND_TRUTH_TABLE_COLUMNS))


def table_ground_truth(run_dirs: Sequence[Path], results: pd.DataFrame) -> Table:
    """:func:`ground_truth_rows` (one row per run and method: the CSV) and, for reading, their
    mean +- std over seeds per cue rate, objective and method."""
    data = ground_truth_rows(run_dirs, results)
    if data.empty:
        raise MissingInputError("no planted dataset with ground_truth.csv and cue_mass scores")
    keys = ["dataset", "cue_rate", "objective", "method"]
    objectives = {o: i for i, o in enumerate(order_objectives(data["objective"].unique()))}
    methods = {m: i for i, m in enumerate(ordered_methods(data["method"].unique()))}
    data = data.sort_values(["dataset", "cue_rate", "objective", "method", "seed"],
                            key=lambda c: c.map(objectives) if c.name == "objective"
                            else c.map(methods) if c.name == "method" else c, kind="stable").reset_index(drop=True)
    cells = []
    for (ds, rate, obj, method), g in data.groupby(keys, sort=False):
        ms = lambda col, d=3: (f"{fmt_num(g[col].mean(), d)} ± {fmt_num(g[col].std(ddof=1), d)}"  # noqa: E731
                               if len(g) > 1 else fmt_num(g[col].mean(), d))
        cells.append({"Dataset": dataset_label(ds), "Cue rate": f"{rate:.0%}", "Objective": objective_label(obj),
                      "Method": method_label(method), "Seeds": str(len(g)), "Reliance (acc.)": ms("reliance"),
                      "Swapped → cue": ms("swap_share"), "Logit drop": ms("logit_drop", 2),
                      "Mass on cue": ms("mass_on_cue"), "Pointing on cue": ms("pointing_on_cue", 2),
                      "Cue area": fmt_num(g["cue_area"].iloc[0], 4),
                      "ρ(mass, drop)": ms("reliance_correlation", 2)})
    return Table("table_ground_truth", data, pd.DataFrame(cells),
                 caption="What the models use, by intervention on the planted cue, and how much of it their "
                         "explanations show: mean ± std over seeds of each run's numbers (every evaluation image).",
                 notes=["Reliance: accuracy with the cue minus without it. Swapped → cue: share of images carrying "
                        "another class's cue predicted as that class. Logit drop: mean drop of the explained "
                        "class's logit when the cue is removed. Mass on cue: share of the map on the cue's square "
                        "(the random control's is the cue area). ρ(mass, drop): Spearman correlation over the "
                        "images between the map's mass on the cue and the logit's drop without it."])


def fig_ground_truth(table: pd.DataFrame):
    """Per planted dataset family: mass on the cue against the models' reliance (one point per
    run and method, a marker per objective), and ρ(mass, drop) per cue rate; the cue area as
    the random floor."""
    if table.empty:
        raise MissingInputError("no ground-truth rows")
    methods = ordered_methods(table["method"].unique())
    objectives = order_objectives(table["objective"].unique())
    markers = dict(zip(objectives, "osD^v"))
    colours = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for (method, obj), g in table.groupby(["method", "objective"], sort=False):
        ax1.scatter(g["reliance"], g["mass_on_cue"], marker=markers[obj], color=colours[method], s=28,
                    edgecolor="0.2", linewidth=0.5, label=f"{method_label(method)}, {objective_label(obj)}")
    ax1.axhline(float(table["cue_area"].iloc[0]), color="0.4", linestyle=":", linewidth=1)
    ax1.text(0.99, float(table["cue_area"].iloc[0]), "cue area (random) ", transform=ax1.get_yaxis_transform(),
             ha="right", va="bottom", fontsize=7, color="0.3")
    ax1.set_xlabel("reliance on the cue (accuracy with − without)")
    ax1.set_ylabel("mass of the map on the cue")
    rates = sorted(table["cue_rate"].unique())
    width = 0.8 / max(1, len(methods) * len(objectives))
    for i, (method, obj) in enumerate((m, o) for m in methods for o in objectives):
        g = table[(table["method"] == method) & (table["objective"] == obj)].groupby("cue_rate")["reliance_correlation"]
        mean, std = g.mean().reindex(rates), g.std(ddof=1).reindex(rates)
        x = np.arange(len(rates)) - 0.4 + width * (i + 0.5)
        ax2.bar(x, mean.to_numpy(), width, yerr=std.fillna(0).to_numpy(), color=colours[method],
                hatch="" if obj == objectives[0] else "//", edgecolor="0.2", linewidth=0.5, capsize=2)
    ax2.axhline(0, color="0.3", linewidth=0.8)
    ax2.set_xticks(np.arange(len(rates)), [f"{r:.0%}" for r in rates])
    ax2.set_xlabel("cue rate in training")
    ax2.set_ylabel("ρ(mass on cue, logit drop)")
    ax1.legend(fontsize=6.5, frameon=False, loc="best")
    hatch = ", ".join(f"{objective_label(o)}: {'plain' if i == 0 else 'hatched'}" for i, o in enumerate(objectives))
    ax2.set_title(f"bars: mean ± std over seeds ({hatch})", fontsize=8)
    fig.suptitle(", ".join(dict.fromkeys(dataset_label(d).split(" (cue")[0] for d in table["dataset"])), fontsize=10)
    ax1.set_title("one point per run and method (every cue rate)", fontsize=8)
    fig.tight_layout()
    return fig
