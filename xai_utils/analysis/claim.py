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
dataset x method x score x protocol, the order of the objectives and the SCL-CE difference
(both from one average: the mean over seeds of each model's mean over its correctly
classified images, as in ``table_attribution_metrics``), the paired test of SCL against CE
(as in ``table_significance``, with the protocol's NaN pairing) and whether "SCL better
than CE" holds there, at two levels:

* images as the unit (the paired test): do *these* models differ on *these* images?
* trained models as the unit (:mod:`.seed_level`: the per-seed effects, a two-level bootstrap
  interval, how many seeds favour SCL): does training with SCL make the difference? With
  fewer than three seeds the answer is "too few seeds", never a yes;

and beside each SCL-CE gap the floor: how far the method's maps are from the ``random``
control maps on the same score (``real_minus_random``). :func:`plot_claim` draws both levels
and the gap as a share of that distance.
"""
from __future__ import annotations

import textwrap
from typing import Iterable, Mapping, Optional

import numpy as np
import pandas as pd

from ..errors import MissingInputError
from ..settings.run_config import RunConfig
from . import stats
from .names import (dataset_label, facet, method_label, metric_direction, metric_label, metric_sort_key,
                    objective_color, objective_label, order_objectives, ordered_methods, ordered_metrics)
from .plotting import new_figure, style
from .seed_level import model_verdict
from .tables import Table, fmt_num, fmt_p, ordering
from .verdicts import Verdict, significance_verdict

CHALLENGER, REFERENCE = "scl", "ce"       # the claim: SCL explains better than CE


def claim_pair(objectives: Iterable[str], reference: Optional[str] = None) -> tuple[str, str]:
    """(challenger, reference) of a study's claim table: SCL against CE where both were run;
    otherwise (brought models, named by their labels) the first other model against the
    profile's ``reference``. MissingInputError where there is no such pair."""
    present = order_objectives(objectives)
    if CHALLENGER in present and REFERENCE in present:
        return CHALLENGER, REFERENCE
    others = [o for o in present if o != reference]
    if reference in present and others:
        return others[0], reference
    raise MissingInputError("no SCL and CE results to compare" + ("" if reference else
                            " (a study of other models names its reference: 'reference:' in the profile)"))


def nan_pairing_of(protocol: str, pairings: Optional[Mapping[str, str]] = None) -> str:
    """How the paired tests of an evaluation protocol treat NaNs: ``pairings[protocol]`` (the
    study's setting ``nan_pairing``, per protocol) or, without one, the protocol's own
    (its registry entry: ``per_model`` for the authors' protocol)."""
    return (pairings or {}).get(protocol) or RunConfig(protocol=protocol).nan_pairing


CONTROL = "random"                        # the attribution method that is the floor


def claim_table(results: pd.DataFrame, challenger: str = CHALLENGER, reference: str = REFERENCE,
                seeds: str = "image_mean", nan_pairing: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """One row per dataset x method x metric (score) x protocol: dataset, method, facet,
    metric, protocol, order (best to worst), mean_<challenger>, mean_<reference> (the mean over
    seeds of each model's mean over its correctly classified images), diff (their difference,
    challenger - reference: the order and the difference come from the same means), d_z,
    p_holm, n_pairs (the paired test on the images every model classifies correctly; its
    direction decides the verdict), holds (the image-level verdict in
    :meth:`Verdict.words`: "yes", "no (n.s.)" or "no (CE better)", naming the reference); the model-level inference with the seed as the unit
    (:mod:`.seed_level`): n_seeds, model_diff, model_ci_low, model_ci_high (95 %, oriented as
    challenger - reference), seeds_favouring (seeds whose own effect favours the challenger),
    model_holds (the same words, or "too few seeds"); and the floor: random
    (the mean score of the ``random`` control maps over the two objectives) and
    real_minus_random (the method's mean over the two objectives against it, signed so that
    > 0 means better than random; NaN without the control). ``results``:
    :func:`saved.study_results` with ``all_protocols=True``; ``nan_pairing``: the NaN pairing of
    each protocol's tests (:func:`nan_pairing_of`). The control itself has no row."""
    if results.empty:
        return pd.DataFrame()
    named = objective_label(reference)
    rows = []
    for protocol, res in results.groupby("protocol", sort=False):
        summary = stats.summarize(res)
        tests = stats.compare_objectives(res, seeds=seeds, nan_pairing=nan_pairing_of(protocol, nan_pairing))
        floor = {(d, m): dict(zip(g["objective"], g["mean"])) for (d, m), g in
                 summary[summary["method"] == CONTROL].groupby(["dataset", "metric"], sort=False)}
        for (ds, method, metric), g in summary.groupby(["dataset", "method", "metric"], sort=False):
            means = dict(zip(g["objective"], g["mean"]))
            if method == CONTROL or challenger not in means or reference not in means:
                continue
            direction = metric_direction(metric)
            t = tests[(tests["dataset"] == ds) & (tests["method"] == method) & (tests["metric"] == metric)
                      & tests["objective_a"].isin([challenger, reference])
                      & tests["objective_b"].isin([challenger, reference])]
            if t.empty:
                continue
            r = t.iloc[0]
            a_is_challenger = r["objective_a"] == challenger
            sign = 1.0 if a_is_challenger else -1.0     # orient as challenger - reference
            paired = sign * float(r["mean_diff"])       # the test's direction, on its images
            better = (paired < 0) if direction == "lower" else (paired > 0)
            holds = significance_verdict(bool(r["significant"]), better)
            low, high = sorted((sign * float(r["model_ci_low"]), sign * float(r["model_ci_high"])))
            model = model_verdict(low, high, int(r["n_seeds"]), direction or "")
            rows.append({"dataset": ds, "method": method, "facet": facet(metric), "metric": metric,
                         "protocol": protocol, "order": _order(means, direction),
                         f"mean_{challenger}": means[challenger], f"mean_{reference}": means[reference],
                         "diff": means[challenger] - means[reference], "d_z": sign * float(r["d_z"]),
                         "p_holm": float(r["p_holm"]),
                         "n_pairs": int(r["n_pairs"]), "holds": holds.words(named),
                         "n_seeds": int(r["n_seeds"]), "model_diff": sign * float(r["model_diff"]),
                         "model_ci_low": low, "model_ci_high": high,
                         "seeds_favouring": r["seeds_a_better"] if a_is_challenger else r["seeds_b_better"],
                         "model_holds": model.words(named),
                         **_floor(floor.get((ds, metric), {}), means, challenger, reference, direction)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    methods = {m: i for i, m in enumerate(ordered_methods(out["method"].unique()))}
    protocols = {p: i for i, p in enumerate(dict.fromkeys(results["protocol"]))}
    return out.assign(_m=out["method"].map(methods), _k=out["metric"].map(metric_sort_key),
                      _p=out["protocol"].map(protocols)) \
              .sort_values(["dataset", "_m", "_k", "_p"], kind="stable").drop(columns=["_m", "_k", "_p"]) \
              .reset_index(drop=True)


def _floor(control: dict[str, float], means: dict[str, float], challenger: str, reference: str,
           direction: Optional[str]) -> dict[str, float]:
    """The control's mean score over the two objectives, and the method's distance above it
    (signed: > 0 better than random)."""
    if challenger not in control or reference not in control:
        return {"random": np.nan, "real_minus_random": np.nan}
    random = (control[challenger] + control[reference]) / 2
    real = (means[challenger] + means[reference]) / 2
    gap = (random - real) if direction == "lower" else (real - random)
    return {"random": random, "real_minus_random": gap if direction else np.nan}


def _order(means: dict[str, float], direction: Optional[str]) -> str:
    return ordering(means, direction or "lower")


def plot_claim(table: pd.DataFrame, challenger: str = CHALLENGER, reference: str = REFERENCE):
    """A grid: one row per score, one column per dataset x method x protocol. Each cell's upper
    half is coloured by the image-level verdict of the challenger against the reference
    (better, no significant difference, worse), its lower half by the model-level verdict
    (seeds as the unit; white when there are too few seeds); the cell shows the signed d_z
    (> 0: the challenger better) and, where the random control was scored, the challenger's
    advantage as a share of the distance between the real maps and random ones."""
    from matplotlib.patches import Patch

    if table.empty:
        raise MissingInputError(f"no comparison of {objective_label(challenger)} and {objective_label(reference)} "
                                "to plot")
    rows = ordered_metrics(table["metric"].unique())
    cols = list(dict.fromkeys(zip(table["dataset"], table["method"], table["protocol"])))
    colors = {Verdict.YES: objective_color(challenger), Verdict.NOT_SIGNIFICANT: "#DDDDDD",
              Verdict.REFERENCE_BETTER: objective_color(reference), Verdict.TOO_FEW_SEEDS: "white"}
    cell = {(r.metric, (r.dataset, r.method, r.protocol)): r for r in table.itertuples()}
    floor = "real_minus_random" in table and table["real_minus_random"].notna().any()
    with style():
        width = 1.0 * len(cols) + 2.6
        fig, axes = new_figure(1, 1, figsize=(width, 0.42 * len(rows) + 2.1))
        ax = axes[0, 0]
        ax.grid(False)
        for i, metric in enumerate(rows):
            for j, col in enumerate(cols):
                r = cell.get((metric, col))
                if r is None:
                    ax.add_patch(_rect(j, i, "white", "0.85"))
                    continue
                holds, model_holds = Verdict.read(r.holds), Verdict.read(r.model_holds)
                ax.add_patch(_rect(j, i - 0.25, colors[holds], "white", height=0.5))
                ax.add_patch(_rect(j, i + 0.25, colors[model_holds], "0.85" if model_holds == Verdict.TOO_FEW_SEEDS
                                   else "white", height=0.5))
                better_sign = -1.0 if metric_direction(metric) == "lower" else 1.0
                d = better_sign * r.d_z
                text = "–" if not np.isfinite(d) else f"{d:+.2f}"
                ax.text(j, i - 0.25, text, ha="center", va="center", fontsize=6.3,
                        color="white" if holds != Verdict.NOT_SIGNIFICANT else "0.2")
                label = _floor_label(r, better_sign)
                if label:
                    ax.text(j, i + 0.25, label, ha="center", va="center", fontsize=6.0,
                            color="0.2" if model_holds in (Verdict.NOT_SIGNIFICANT, Verdict.TOO_FEW_SEEDS) else "white")
        ax.set_xlim(-0.5, len(cols) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([metric_label(m, arrow=True) for m in rows], fontsize=7)
        ax.set_xticks(range(len(cols)))
        ax.set_xticklabels([f"{textwrap.fill(dataset_label(d), 20)}\n{method_label(m)}\n{p}" for d, m, p in cols],
                           fontsize=6.5)
        ax.tick_params(length=0)
        for sp in ax.spines.values():
            sp.set_visible(False)
        a, b = objective_label(challenger), objective_label(reference)
        handles = [Patch(color=colors[v], label=v.label(a, b)) for v in Verdict if v.decided]
        handles.append(Patch(facecolor="white", edgecolor="0.6", label="too few seeds (models)"))
        n_seeds = int(table["n_seeds"].max()) if len(table) else 0
        parts = [f"Does '{a} gives better attributions than {b}' hold? Upper half of a cell: images as the unit "
                 f"(paired t-test, Holm; number: d_z, > 0 favours {a}); lower half: the {n_seeds} trained models "
                 f"as the unit (two-level bootstrap, 95 %)" + (";" if floor else "")]
        if floor:
            parts.append(f"its number: the {a}−{b} difference as a share of the real maps' distance to random maps "
                         "('real ≤ random': the method's maps score no better than random ones)")
        chars = max(70, int(width * 22))        # the title wrapped to the grid's width (7 pt)
        title = "\n".join(textwrap.fill(part, chars) for part in parts)
        fig.legend(handles=handles, loc="outside upper center", ncols=4 if width >= 7 else 2, fontsize=7,
                   title=title, title_fontsize=7)
    return fig


def _floor_label(r, better_sign: float) -> str:
    """The challenger's advantage (its mean minus the reference's, > 0 better) as a share of
    the real maps' distance above the random control; "real ≤ random" where the real maps are
    no better than random (there the ratio has no meaning: its sign would flip with the
    floor's); empty without the control."""
    gap = getattr(r, "real_minus_random", np.nan)
    if not np.isfinite(gap):
        return ""
    if gap <= 0:
        return "real ≤ random"
    share = better_sign * r.diff / gap
    return f"{share:+.0%}" if abs(share) < 10 else f"{share:+.0f}x"


def _rect(x: float, y: float, face: str, edge: str, height: float = 1.0):
    from matplotlib.patches import Rectangle
    return Rectangle((x - 0.5, y - height / 2), 1, height, facecolor=face, edgecolor=edge, lw=1.0)


def table_claim_robustness(results_all: pd.DataFrame, seeds: str = "image_mean",
                           reference: Optional[str] = None, nan_pairing: Optional[Mapping[str, str]] = None) -> Table:
    """:func:`claim_table` as a table (``results_all``: every protocol), for the study's
    :func:`claim_pair` (``reference``: the profile's)."""
    if results_all.empty:
        raise MissingInputError("no SCL and CE results to compare")
    challenger, reference = claim_pair(results_all["objective"].unique(), reference)
    t = claim_table(results_all, challenger, reference, seeds=seeds, nan_pairing=nan_pairing)
    if t.empty:
        raise MissingInputError(f"no {challenger} and {reference} results to compare")
    a, b = objective_label(challenger), objective_label(reference)
    disp = pd.DataFrame({
        "Dataset": t["dataset"].map(dataset_label), "Method": t["method"].map(method_label),
        "Facet": t["facet"], "Score": [metric_label(m, arrow=True) for m in t["metric"]],
        "Protocol": t["protocol"], "Order": t["order"],
        f"{a} − {b}": [fmt_num(x, 3) for x in t["diff"]], "d_z": [fmt_num(x, 2) for x in t["d_z"]],
        "p (Holm)": [fmt_p(x) for x in t["p_holm"]], "n": t["n_pairs"].astype(str),
        f"{a} better (images)?": t["holds"],
        f"Models: {a} − {b} [95 % CI]": [
            f"{fmt_num(m, 3)} [{fmt_num(lo, 3)}, {fmt_num(hi, 3)}]" if np.isfinite(lo) else fmt_num(m, 3)
            for m, lo, hi in zip(t["model_diff"], t["model_ci_low"], t["model_ci_high"])],
        f"Seeds for {a}": [f"{int(f)}/{n}" if np.isfinite(f) else "–" for f, n in zip(t["seeds_favouring"], t["n_seeds"])],
        f"{a} better (models)?": t["model_holds"],
        "Real − random": [fmt_num(x, 3) for x in t["real_minus_random"]]})
    bold = pd.DataFrame(False, index=disp.index, columns=disp.columns)
    bold[f"{a} better (images)?"] = (t["holds"] == Verdict.YES).to_numpy()
    bold[f"{a} better (models)?"] = (t["model_holds"] == Verdict.YES).to_numpy()
    return Table("table_claim_robustness", t, disp, bold,
                 caption=f"Does '{a} gives better attributions than {b}' hold under each score of a facet and each "
                         f"evaluation protocol? Order: objectives from best to worst by their means (mean over seeds "
                         f"of each model's mean over its correctly classified images); {a} − {b}: the difference of "
                         "those means; d_z and p: paired t-test with the images as the unit, on the images every model "
                         "classifies correctly, as in table_significance (Holm within dataset × method × score × "
                         "protocol; the official protocol drops NaNs per model as the authors' script); 'yes' needs a "
                         "significant difference in "
                         f"{a}'s favour. Models: the trained models (seeds) as the unit, the mean over seeds of each "
                         "seed's mean difference with a 95 % interval from a two-level bootstrap (seeds, then images "
                         "within seeds; 2,000 draws; Student's t with seeds − 1 degrees of freedom); 'yes' needs the "
                         f"interval on {a}'s side; fewer than 3 seeds: 'too few seeds'. Seeds for {a}: the seeds whose "
                         f"own difference favours {a}. Real − random: the method's mean score ({a} and {b}) against "
                         "the random control maps', > 0 better than random (– without the control).")
