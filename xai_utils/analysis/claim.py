"""Does the paper's claim hold? The order of the objectives and the SCL-vs-CE verdict under
every score of a facet and every evaluation protocol, from saved results only.

The paper's headline is that SCL gives better attributions than CE (more faithful, less
complex, more continuous). Each facet here is scored several ways:

* faithfulness: the paper's pixel-flipping AUC on the softmax probability, and the same
  curve normalised by the unperturbed probability, on temperature-calibrated
  probabilities, and on the (centred, normalised) true-class logit; a model's confidence
  enters the first score but not the other three;
* continuity: SSIM under pixel noise of the paper's sigma and of the larger sigmas of
  ``continuity_sigmas`` (rows ``continuity[sigma=s]``), and under the authors' noise (the
  official protocol);
* every other facet with its metric,

each under every protocol the study evaluated (``corrected``, this companion's defaults,
and ``official``, the authors' evaluation with its quirks). :func:`claim_table` gives, per
dataset x method x score x protocol, the order of the objectives (from the mean over seeds
of the per-seed means), the paired test of SCL against CE (as in ``table_significance``,
with the protocol's NaN pairing) and whether "SCL better than CE" holds there.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from ..settings.run_config import RunConfig
from . import stats
from .names import (dataset_label, facet, method_label, metric_direction, metric_label, metric_order, objective_color,
                    objective_label, ordered_methods, ordered_metrics)
from .plotting import new_figure, style
from .tables import Table, fmt_num, fmt_p, ordering

CHALLENGER, REFERENCE = "scl", "ce"       # the claim: SCL explains better than CE
VERDICTS = {"yes": "SCL better", "no (n.s.)": "no significant difference", "no (CE better)": "CE better"}


def _pairing(protocol: str) -> str:
    """The NaN pairing a protocol imposes (its registry entry)."""
    return RunConfig(protocol=protocol).nan_pairing


def claim_table(results: pd.DataFrame, challenger: str = CHALLENGER, reference: str = REFERENCE,
                seeds: str = "image_mean") -> pd.DataFrame:
    """One row per dataset x method x metric (score) x protocol: dataset, method, facet,
    metric, protocol, order (best to worst), mean_<challenger>, mean_<reference>, diff
    (challenger - reference), d_z, p_holm, n_pairs, holds ("yes", "no (n.s.)" or
    "no (CE better)"). ``results``: :func:`stats.load_results` with ``all_protocols=True``."""
    if results.empty:
        return pd.DataFrame()
    rows = []
    for protocol, res in results.groupby("protocol", sort=False):
        summary = stats.summarize(res)
        tests = stats.compare_objectives(res, seeds=seeds, nan_pairing=_pairing(protocol))
        for (ds, method, metric), g in summary.groupby(["dataset", "method", "metric"], sort=False):
            means = dict(zip(g["objective"], g["mean"]))
            if challenger not in means or reference not in means:
                continue
            direction = metric_direction(metric)
            t = tests[(tests["dataset"] == ds) & (tests["method"] == method) & (tests["metric"] == metric)
                      & tests["objective_a"].isin([challenger, reference])
                      & tests["objective_b"].isin([challenger, reference])]
            if t.empty:
                continue
            r = t.iloc[0]
            sign = 1.0 if r["objective_a"] == challenger else -1.0     # orient as challenger - reference
            diff = sign * float(r["mean_diff"])
            better = (diff < 0) if direction == "lower" else (diff > 0)
            holds = ("yes" if better else "no (CE better)") if bool(r["significant"]) else "no (n.s.)"
            rows.append({"dataset": ds, "method": method, "facet": facet(metric), "metric": metric,
                         "protocol": protocol, "order": _order(means, direction),
                         f"mean_{challenger}": means[challenger], f"mean_{reference}": means[reference],
                         "diff": diff, "d_z": sign * float(r["d_z"]), "p_holm": float(r["p_holm"]),
                         "n_pairs": int(r["n_pairs"]), "holds": holds})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    methods = {m: i for i, m in enumerate(ordered_methods(out["method"].unique()))}
    protocols = {p: i for i, p in enumerate(dict.fromkeys(results["protocol"]))}
    return out.assign(_m=out["method"].map(methods), _k=out["metric"].map(lambda m: (metric_order(m), m)),
                      _p=out["protocol"].map(protocols)) \
              .sort_values(["dataset", "_m", "_k", "_p"], kind="stable").drop(columns=["_m", "_k", "_p"]) \
              .reset_index(drop=True)


def _order(means: dict[str, float], direction: Optional[str]) -> str:
    return ordering(means, direction or "lower")


def claim_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x facet x protocol: how many of its scores (and methods) support the claim."""
    if table.empty:
        return table
    g = table.groupby(["dataset", "facet", "protocol"], sort=False)["holds"]
    return g.agg(scores="size", holds=lambda h: int((h == "yes").sum()),
                 reversed=lambda h: int((h == "no (CE better)").sum())).reset_index()


def plot_claim(table: pd.DataFrame, challenger: str = CHALLENGER, reference: str = REFERENCE):
    """A grid: one row per score, one column per dataset x method x protocol; each cell
    coloured by the verdict of the challenger against the reference (better, no
    significant difference, worse) and labelled with the signed d_z (positive = the
    challenger better)."""
    from matplotlib.patches import Patch

    if table.empty:
        raise ValueError("no comparison of SCL and CE to plot")
    rows = ordered_metrics(table["metric"].unique())
    cols = list(dict.fromkeys(zip(table["dataset"], table["method"], table["protocol"])))
    colors = {"yes": objective_color(challenger), "no (n.s.)": "#DDDDDD",
              "no (CE better)": objective_color(reference)}
    cell = {(r.metric, (r.dataset, r.method, r.protocol)): r for r in table.itertuples()}
    with style():
        fig, axes = new_figure(1, 1, figsize=(1.0 * len(cols) + 2.6, 0.34 * len(rows) + 1.9))
        ax = axes[0, 0]
        ax.grid(False)
        for i, metric in enumerate(rows):
            for j, col in enumerate(cols):
                r = cell.get((metric, col))
                if r is None:
                    ax.add_patch(_rect(j, i, "white", "0.85"))
                    continue
                ax.add_patch(_rect(j, i, colors[r.holds], "white"))
                better_sign = -1.0 if metric_direction(metric) == "lower" else 1.0
                d = better_sign * r.d_z
                ax.text(j, i, "–" if not np.isfinite(d) else f"{d:+.2f}", ha="center", va="center",
                        fontsize=6.5, color="white" if r.holds != "no (n.s.)" else "0.2")
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([metric_label(m, arrow=True) for m in rows], fontsize=7)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{dataset_label(d)}\n{method_label(m)}\n{p}" for d, m, p in cols],
                           fontsize=6.5)
        ax.tick_params(length=0)
        for sp in ax.spines.values():
            sp.set_visible(False)
        a, b = objective_label(challenger), objective_label(reference)
        handles = [Patch(color=colors["yes"], label=f"{a} better than {b}"),
                   Patch(color=colors["no (n.s.)"], label="no significant difference"),
                   Patch(color=colors["no (CE better)"], label=f"{b} better than {a}")]
        fig.legend(handles=handles, loc="outside upper center", ncols=3, fontsize=7,
                   title=f"Does '{a} gives better attributions than {b}' hold? Paired t-test (Holm), "
                         f"cells: d_z signed so that > 0 favours {a}", title_fontsize=7.5)
    return fig


def _rect(x: float, y: float, face: str, edge: str):
    from matplotlib.patches import Rectangle
    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=face, edgecolor=edge, lw=1.0)


def table_claim_robustness(results_all: pd.DataFrame, seeds: str = "image_mean") -> Table:
    """:func:`claim_table` as a table (``results_all``: every protocol)."""
    t = claim_table(results_all, seeds=seeds)
    if t.empty:
        raise ValueError("no SCL and CE results to compare")
    disp = pd.DataFrame({
        "Dataset": t["dataset"].map(dataset_label), "Method": t["method"].map(method_label),
        "Facet": t["facet"], "Score": [metric_label(m, arrow=True) for m in t["metric"]],
        "Protocol": t["protocol"], "Order": t["order"],
        "SCL − CE": [fmt_num(x, 3) for x in t["diff"]], "d_z": [fmt_num(x, 2) for x in t["d_z"]],
        "p (Holm)": [fmt_p(x) for x in t["p_holm"]], "n": t["n_pairs"].astype(str),
        "SCL better than CE?": t["holds"]})
    bold = pd.DataFrame(False, index=disp.index, columns=disp.columns)
    bold["SCL better than CE?"] = (t["holds"] == "yes").to_numpy()
    return Table("table_claim_robustness", t, disp, bold,
                 caption="Does 'SCL gives better attributions than CE' hold under each score of a facet and each "
                         "evaluation protocol? Order: objectives from best to worst (mean over seeds); SCL − CE: "
                         "difference of the means; d_z and p: paired t-test as in table_significance (Holm within "
                         "dataset × method × score × protocol; the official protocol drops NaNs per model as the "
                         "authors' script). 'yes' needs a significant difference in SCL's favour.")
