"""Tables and figures of a study, from saved results only (no model is loaded).

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
``fig_claim_robustness``       the same verdicts as a grid (:mod:`xai_utils.claim`)
``table_pair_metrics``         pair analysis: pair method x metric x pair kind (:mod:`xai_utils.pairs`)
``table_pair_significance``    paired t-tests of the pair metrics, keyed by (seed, pair)
``fig_pair_grid``              example pairs and each objective's two maps per pair method
=============================  ==========================================================

Tables are written as CSV (numbers, for machines), Markdown and LaTeX (booktabs; mean +-
std, best value of a row in bold, judged at the displayed precision); figures as PDF and
PNG. Anything that cannot be made (no masks metrics, one seed, no curves...) is skipped with
a logged note (also listed in ``report_notes.md``); nothing here raises for missing parts.
Statistics: :mod:`xai_utils.stats`; figure style: :mod:`xai_utils.plots`.
"""
from __future__ import annotations

import itertools
import logging
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd

from . import plots, runs, stats

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

TABLES = ("table_accuracy", "table_attribution_metrics", "table_significance", "paper_vs_reproduced",
          "table_claim_robustness", "table_pair_metrics", "table_pair_significance")
FIGURES = ("fig_saliency_grid", "fig_metric_distributions", "fig_pixel_flipping_curves", "fig_embeddings",
           "fig_claim_robustness", "fig_pair_grid")
DASH = "–"
ARROW = {"lower": "↓", "higher": "↑"}

# reproduced dataset -> (paper dataset compared against, is a stand-in, note)
PAPER_DATASET: dict[str, tuple[str, bool, str]] = {
    "cifar10": ("cifar10", False, ""),
    "imagenet_s50": ("imagenet_s50", False, ""),
    "fashion_mnist": ("cifar10", True, "stand-in: Fashion-MNIST (32 px, grey) for CIFAR-10; "
                                       "compare orderings, not magnitudes"),
    "shapes": ("imagenet_s50", True, "stand-in: synthetic shapes with exact masks for ImageNet-S50 "
                                     "(meant for coherence); compare orderings, not magnitudes"),
}


# ----------------------------------------------------------------------------- formatting

def fmt_num(x: float, decimals: int = 3) -> str:
    return DASH if x is None or not np.isfinite(x) else f"{x:.{decimals}f}"


def fmt_mean_std(mean: float, std: float, decimals: int = 3) -> str:
    """'0.370 ± 0.010'; a missing std (one seed) is shown as '–'."""
    if mean is None or not np.isfinite(mean):
        return DASH
    return f"{mean:.{decimals}f} ± {fmt_num(std, decimals)}"


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return DASH
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def best_objectives(means: dict[str, float], direction: Optional[str], decimals: int = 3) -> set[str]:
    """Objectives with the best mean at the displayed precision (ties all win); none if the
    direction is unknown or fewer than two values exist."""
    vals = {o: round(float(v), decimals) for o, v in means.items() if v is not None and np.isfinite(v)}
    if direction not in ("lower", "higher") or len(vals) < 2:
        return set()
    target = min(vals.values()) if direction == "lower" else max(vals.values())
    return {o for o, v in vals.items() if v == target}


@dataclass
class Table:
    """A table in two forms: ``data`` (numbers, written as CSV) and ``display`` (strings,
    written as Markdown and LaTeX, with ``bold`` marking cells to emphasise)."""

    name: str
    data: pd.DataFrame
    display: pd.DataFrame
    bold: Optional[pd.DataFrame] = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def bold_mask(self) -> pd.DataFrame:
        if self.bold is None:
            return pd.DataFrame(False, index=self.display.index, columns=self.display.columns)
        return self.bold.reindex(index=self.display.index, columns=self.display.columns, fill_value=False)


def to_markdown(table: Table) -> str:
    """GitHub Markdown; bold cells as **x**; caption and notes as text under the table."""
    disp, bold = table.display, table.bold_mask()
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in disp.columns) + " |",
             "|" + "|".join("---:" if num else ":---" for num in _numeric_columns(disp)) + "|"]
    for i in range(len(disp)):
        cells = [f"**{esc(v)}**" if bold.iat[i, j] and str(v) != DASH else esc(v)
                 for j, v in enumerate(disp.iloc[i])]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if table.caption:
        text = f"**{table.name}.** {table.caption}\n\n" + text
    for n in table.notes:
        text += f"\n{n}\n"
    return text


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", DASH: "--", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "Δ": r"$\Delta$",
                  "≈": r"$\approx$", "<": r"$<$", ">": r"$>$", "×": r"$\times$", "−": r"$-$"}


def latex_escape(s: object) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(s))
    for k, v in _LATEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def _numeric_columns(disp: pd.DataFrame) -> list[bool]:
    """Columns whose every non-empty cell starts like a number (right-aligned); others left."""
    out = []
    for c in disp.columns:
        vals = [str(v) for v in disp[c] if str(v) not in (DASH, "")]
        out.append(bool(vals) and all(re.match(r"^[\s\-+<]*\d", v) for v in vals))
    return out


def to_latex(table: Table) -> str:
    """A booktabs table (``\\toprule``, ``\\midrule``, ``\\bottomrule``), bold as \\textbf."""
    disp, bold = table.display, table.bold_mask()
    spec = "".join("r" if num else "l" for num in _numeric_columns(disp))
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if table.caption:
        lines.append(r"\caption{" + latex_escape(table.caption) + "}")
    lines += [r"\label{tab:" + table.name.replace("_", "-") + "}", r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in disp.columns) + r" \\", r"\midrule"]
    for i in range(len(disp)):
        cells = []
        for j, v in enumerate(disp.iloc[i]):
            s = latex_escape(v)
            cells.append(r"\textbf{" + s + "}" if bold.iat[i, j] and str(v) != DASH else s)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    for n in table.notes:
        lines.append(r"\par\smallskip\footnotesize " + latex_escape(n))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, output_dir: PathLike) -> list[Path]:
    """``<name>.csv`` (numbers), ``<name>.md`` and ``<name>.tex``."""
    out = Path(output_dir)
    paths = [runs.save_text(out / f"{table.name}.csv", table.data.to_csv(index=False)),
             runs.save_text(out / f"{table.name}.md", to_markdown(table)),
             runs.save_text(out / f"{table.name}.tex", to_latex(table))]
    return paths


# ----------------------------------------------------------------------------- tables

def _wide(summary: pd.DataFrame, keys: list[str], objectives: list[str]) -> pd.DataFrame:
    """mean/std/n_seeds per objective side by side: <obj>_mean, <obj>_std, <obj>_n_seeds.

    One row per measured combination of ``keys`` (``dropna=False`` would span every
    combination, e.g. pixel flipping on a dataset where only coherence was computed); a
    column that is NaN throughout (std with one seed) is dropped by the pivot and restored here.
    """
    w = summary.pivot_table(index=keys, columns="objective", values=["mean", "std", "n_seeds"],
                            aggfunc="first", dropna=True)
    cols = {}
    for o in objectives:
        for v in ("mean", "std", "n_seeds"):
            cols[f"{o}_{v}"] = w[(v, o)] if (v, o) in w.columns else np.nan
    return pd.DataFrame(cols, index=w.index).reset_index()


def _objective_cells(data: pd.DataFrame, disp: pd.DataFrame, bold: pd.DataFrame, objs: list[str],
                     direction, decimals: int) -> None:
    """Fill one "mean ± std" column per objective, bold the best of each row (``direction(row)``
    is "higher" or "lower") and record the winners in ``data["best"]``."""
    best = []
    for i, r in data.iterrows():
        b = best_objectives({o: r[f"{o}_mean"] for o in objs}, direction(r), decimals)
        best.append(",".join(sorted(b)))
        for o in objs:
            bold.loc[i, plots.objective_label(o)] = o in b
    for o in objs:
        disp[plots.objective_label(o)] = [fmt_mean_std(m, s, decimals) for m, s in zip(data[f"{o}_mean"], data[f"{o}_std"])]
    data["best"] = best


# quantities of table_accuracy: summary column, label, which is better, scale, decimals
ACCURACY_ROWS = (("test_accuracy", "Test accuracy (%)", "higher", 1.0, 2),
                 ("temperature", "Temperature T", None, 1.0, 3),
                 ("ece_before", "ECE before scaling (%)", "lower", 100.0, 2),
                 ("ece_after", "ECE after scaling (%)", "lower", 100.0, 2))


def table_accuracy(summaries: pd.DataFrame, decimals: int = 2) -> Table:
    """The paper's accuracy table: rows datasets, columns CE / SCL / TL (mean ± std, %). Runs
    with a temperature (``calibration.json``) add rows for it and the expected calibration
    error on the test split before and after scaling."""
    acc = stats.accuracy_summary(summaries)
    if acc.empty:
        raise ValueError("no train_summary.json with a test_accuracy")
    objs = stats.order_objectives(acc["objective"].unique())
    rows = [r for r in ACCURACY_ROWS if r[0] in summaries and summaries[r[0]].notna().any()]
    parts = []
    for col, label, direction, scale, dec in rows:
        sub = summaries.assign(test_accuracy=summaries[col] * scale)
        part = _wide(stats.accuracy_summary(sub), ["dataset"], objs)
        part.insert(1, "quantity", col)
        parts.append(part.assign(_dir=direction, _dec=dec, _label=label))
    data = pd.concat(parts, ignore_index=True)
    order = {c: i for i, (c, *_) in enumerate(ACCURACY_ROWS)}
    data = data.assign(_q=data["quantity"].map(order)).sort_values(["dataset", "_q"], kind="stable") \
               .drop(columns="_q").reset_index(drop=True)
    disp = pd.DataFrame({"Dataset": data["dataset"].map(plots.dataset_label)})
    if len(rows) > 1:
        disp["Quantity"] = data["_label"]
    bold = pd.DataFrame(False, index=data.index, columns=list(disp.columns) + [plots.objective_label(o) for o in objs])
    for dec in sorted(set(data["_dec"])):
        sel = data["_dec"] == dec
        sub_disp, sub_bold = disp[sel].copy(), bold[sel].copy()
        sub = data[sel].copy()
        _objective_cells(sub, sub_disp, sub_bold, objs, lambda r: r["_dir"], dec)
        for o in objs:
            disp.loc[sel, plots.objective_label(o)] = sub_disp[plots.objective_label(o)]
            bold.loc[sel, plots.objective_label(o)] = sub_bold[plots.objective_label(o)]
        data.loc[sel, "best"] = sub["best"]
    data = data.drop(columns=["_dir", "_dec", "_label"])
    n = int(acc["n_seeds"].max())
    caption = (f"Test accuracy (%), mean ± std over seeds (n = {n} seed{'s' if n != 1 else ''}; "
               f"std '{DASH}' with one seed). Best per row in bold.")
    if len(rows) > 1:
        caption += (" Temperature: fitted by NLL on held-out training images; ECE (15 bins) of the "
                    "explained model on the test split before and after dividing its logits by it.")
    return Table("table_accuracy", data, disp, bold, caption=caption)


def _metric_sort_key(metric: str) -> int:
    return stats.metric_order(metric)


def table_attribution_metrics(results: pd.DataFrame, decimals: int = 3) -> Table:
    """Rows: attribution method x facet/metric x dataset; columns CE / SCL / TL, mean ± std
    across seeds of the per-seed means over correctly classified samples."""
    summ = stats.summarize(results)
    if summ.empty:
        raise ValueError("no metric value of a correctly classified sample")
    objs = stats.order_objectives(summ["objective"].unique())
    data = _wide(summ, ["method", "metric", "dataset"], objs)
    data.insert(1, "facet", data["metric"].map(stats.facet))
    data.insert(3, "direction", data["metric"].map(lambda m: stats.metric_direction(m) or "unknown"))
    mo = {m: i for i, m in enumerate(plots.ordered_methods(data["method"].unique()))}
    data = data.assign(_a=data["method"].map(mo), _b=data["metric"].map(_metric_sort_key)) \
               .sort_values(["_a", "_b", "metric", "dataset"]).drop(columns=["_a", "_b"]).reset_index(drop=True)
    cols = ["Method", "Facet", "Metric", "Dataset"] + [plots.objective_label(o) for o in objs]
    disp = pd.DataFrame({"Method": data["method"].map(plots.method_label), "Facet": data["facet"],
                         "Metric": [f"{plots.metric_label(m)} {ARROW.get(d, '')}".strip()
                                    for m, d in zip(data["metric"], data["direction"])],
                         "Dataset": data["dataset"].map(plots.dataset_label)})
    bold = pd.DataFrame(False, index=data.index, columns=cols)
    _objective_cells(data, disp, bold, objs, lambda r: stats.metric_direction(r["metric"]), decimals)
    n = int(summ["n_seeds"].max())
    return Table("table_attribution_metrics", data, disp, bold,
                 caption=f"Attribution metrics: mean ± std over seeds (n = {n}) of the per-seed means over "
                         f"correctly classified samples. ↓ lower is better, ↑ higher is better; "
                         f"best per row in bold.")


def table_significance(results: pd.DataFrame, seeds: str = "image_mean", **kw) -> Table:
    """Paired t-tests between objectives (see :func:`stats.compare_objectives`)."""
    sig = stats.compare_objectives(results, seeds=seeds, **kw)
    if sig.empty:
        raise ValueError("no pair of objectives to compare")
    mo = {m: i for i, m in enumerate(plots.ordered_methods(sig["method"].unique()))}
    sig = sig.assign(_a=sig["method"].map(mo), _b=sig["metric"].map(_metric_sort_key)) \
             .sort_values(["dataset", "_a", "_b", "metric"], kind="stable").drop(columns=["_a", "_b"]) \
             .reset_index(drop=True)
    disp = pd.DataFrame({
        "Dataset": sig["dataset"].map(plots.dataset_label),
        "Method": sig["method"].map(plots.method_label),
        "Metric": [f"{plots.metric_label(m)} {ARROW.get(stats.metric_direction(m), '')}".strip() for m in sig["metric"]],
        "Comparison": [f"{plots.objective_label(a)} vs {plots.objective_label(b)}" + ("" if s == "all" else f" (seed {s})")
                       for a, b, s in zip(sig["objective_a"], sig["objective_b"], sig["seed"])],
        "n": sig["n_pairs"].astype(int).astype(str),
        "t": [fmt_num(x, 2) for x in sig["t"]],
        "p": [fmt_p(x) for x in sig["p"]],
        "p (Holm)": [fmt_p(x) for x in sig["p_holm"]],
        "d_z": [fmt_num(x, 2) for x in sig["d_z"]],
        "d (pooled)": [fmt_num(x, 2) for x in sig["d_pooled"]],
        "Result": [v if v not in ("no significant difference",) else f"n.s. ({d})" if d else "n.s."
                   for v, d in zip(sig["verdict"], sig["direction"])],
    })
    bold = pd.DataFrame(False, index=disp.index, columns=disp.columns)
    bold["p (Holm)"] = sig["significant"].to_numpy(bool)
    bold["Result"] = sig["significant"].to_numpy(bool)
    return Table("table_significance", sig, disp, bold,
                 caption="Paired t-tests (scipy ttest_rel) between objectives on the images every compared "
                         "model classifies correctly; pairs keyed by (seed, image), per-image differences "
                         f"averaged over seeds ({seeds}); d_z = mean(A−B)/sd(A−B), the effect size of the "
                         "paired test; d (pooled) = (mean A − mean B)/sqrt((sd²A + sd²B)/2), the per-model "
                         "Cohen's d on the same images (all ddof 1); Holm correction "
                         "within each dataset × method × metric; alpha 0.05. Bold: significant after Holm.")


def table_claim_robustness(results_all: pd.DataFrame, seeds: str = "image_mean") -> Table:
    """:func:`xai_utils.claim.claim_table` as a table (``results_all``: every protocol)."""
    from .claim import claim_table
    t = claim_table(results_all, seeds=seeds)
    if t.empty:
        raise ValueError("no SCL and CE results to compare")
    disp = pd.DataFrame({
        "Dataset": t["dataset"].map(plots.dataset_label), "Method": t["method"].map(plots.method_label),
        "Facet": t["facet"], "Score": [plots.metric_label(m, arrow=True) for m in t["metric"]],
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


# ----------------------------------------------------------------------------- paper comparison

def load_paper_values() -> pd.DataFrame:
    """The paper's reported numbers (``paper_values.csv`` inside the package): paper_dataset,
    method, metric, objective, mean, std (NaN when not reported), source."""
    with resources.files("xai_utils").joinpath("paper_values.csv").open("r") as f:
        df = pd.read_csv(f, keep_default_na=False, na_values=[""])
    df["mean"] = df["mean"].astype(float)
    df["std"] = pd.to_numeric(df["std"], errors="coerce")
    return df


def study_summary(results: Optional[pd.DataFrame], summaries: Optional[pd.DataFrame]) -> pd.DataFrame:
    """One long summary: metric rows (:func:`stats.summarize`) plus accuracy rows
    (method 'model', metric 'test_accuracy'); columns dataset, method, metric, objective,
    mean, std, n_seeds."""
    parts = []
    if results is not None and not results.empty:
        parts.append(stats.summarize(results))
    if summaries is not None and not summaries.empty:
        acc = stats.accuracy_summary(summaries)
        parts.append(acc.assign(method="model", metric="test_accuracy"))
    cols = ["dataset", "method", "metric", "objective", "mean", "std", "n_seeds"]
    return pd.concat([p[cols] for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=cols)


def ordering(values: dict[str, float], direction: Optional[str] = "lower") -> str:
    """Objectives from best to worst, e.g. 'SCL < TL < CE' (lower better) or 'SCL > TL = CE'."""
    vals = {o: float(v) for o, v in values.items() if v is not None and np.isfinite(v)}
    if not vals:
        return ""
    rev = direction == "higher"
    items = sorted(vals.items(), key=lambda kv: kv[1], reverse=rev)
    out = plots.objective_label(items[0][0])
    for (_, v0), (o, v) in zip(items, items[1:]):
        out += (" = " if np.isclose(v, v0, rtol=0, atol=1e-12) else (" > " if rev else " < ")) + plots.objective_label(o)
    return out


def ordering_agreement(paper: dict[str, float], ours: dict[str, float]) -> tuple[float, int, int]:
    """Do the pairwise orderings agree? Over the objective pairs with values on both sides
    and a strict ordering in the paper (pairs the paper reports as tied are not judged):
    returns (all agree as 1.0/0.0, or NaN if no pair can be judged; n agreeing; n judged).
    A tie in our values where the paper has a strict ordering counts as disagreement."""
    objs = [o for o in paper if o in ours and np.isfinite(paper[o]) and np.isfinite(ours[o])]
    agree = judged = 0
    for a, b in itertools.combinations(objs, 2):
        sp = np.sign(paper[a] - paper[b])
        if sp == 0:
            continue
        judged += 1
        agree += int(np.sign(ours[a] - ours[b]) == sp)
    return (float(agree == judged) if judged else np.nan), agree, judged


def paper_vs_reproduced(summary: pd.DataFrame, profile: str = "") -> pd.DataFrame:
    """The paper's values beside ours, per paper dataset x method x metric.

    ``summary``: :func:`study_summary` (accuracy rows have method 'model', metric
    'test_accuracy'). Each of our datasets is compared with a paper dataset
    (:data:`PAPER_DATASET`; stand-ins such as Fashion-MNIST for CIFAR-10 are flagged in
    ``stand_in`` and ``note``). Columns: profile, paper_dataset, reproduced_dataset, stand_in,
    method, metric, direction, paper_<obj>, reproduced_<obj>, diff_<obj> (ours - paper),
    paper_order, reproduced_order, ordering_agrees, pairs_agreeing, note.
    """
    paper = load_paper_values()
    objs = stats.order_objectives(paper["objective"].unique())      # the paper's objectives
    rows = []
    for (ds, method, metric), g in summary.groupby(["dataset", "method", "metric"], sort=False):
        if ds not in PAPER_DATASET:
            log.info("paper_vs_reproduced: no paper dataset for '%s'", ds)
            continue
        pds, stand_in, note = PAPER_DATASET[ds]
        pv = paper[(paper["paper_dataset"] == pds) & (paper["method"] == method) & (paper["metric"] == metric)]
        if pv.empty:
            continue
        p = dict(zip(pv["objective"], pv["mean"]))
        ours = dict(zip(g["objective"], g["mean"].astype(float)))
        direction = stats.metric_direction(metric)
        agrees, n_agree, n_judged = ordering_agreement(p, ours)
        row = {"profile": profile, "paper_dataset": pds, "reproduced_dataset": ds, "stand_in": stand_in,
               "method": method, "metric": metric, "direction": direction or "unknown"}
        for o in objs:
            row[f"paper_{o}"] = p.get(o, np.nan)
            row[f"reproduced_{o}"] = ours.get(o, np.nan)
            row[f"diff_{o}"] = ours.get(o, np.nan) - p.get(o, np.nan)
        row.update(paper_order=ordering(p, direction),
                   reproduced_order=ordering({o: v for o, v in ours.items() if o in p}, direction),
                   ordering_agrees=agrees, pairs_agreeing=f"{n_agree}/{n_judged}",
                   note=note + ("; " if note else "") + str(pv["source"].iloc[0]))
        rows.append(row)
    cols = (["profile", "paper_dataset", "reproduced_dataset", "stand_in", "method", "metric", "direction"]
            + [f"{k}_{o}" for o in objs for k in ("paper", "reproduced", "diff")]
            + ["paper_order", "reproduced_order", "ordering_agrees", "pairs_agreeing", "note"])
    out = pd.DataFrame(rows, columns=cols)
    key = out["metric"].map(lambda m: -1 if m == "test_accuracy" else _metric_sort_key(m))
    order = {m: i for i, m in enumerate(plots.ordered_methods(out["method"].unique()))}
    mkey = out["method"].map(order)
    return out.assign(_k=key, _m=mkey).sort_values(["_k", "paper_dataset", "_m", "method"], kind="stable") \
              .drop(columns=["_k", "_m"]).reset_index(drop=True)


def table_paper_vs_reproduced(summary: pd.DataFrame, profile: str = "") -> Table:
    cmp_ = paper_vs_reproduced(summary, profile)
    if cmp_.empty:
        raise ValueError("none of this study's datasets / metrics has a reported value in the paper")
    objs = [o for o in stats.order_objectives(load_paper_values()["objective"].unique())
            if cmp_[f"paper_{o}"].notna().any()]

    def cell(pv: float, rv: float, metric: str) -> str:
        dec = 2 if metric == "test_accuracy" else 3
        if not np.isfinite(pv):
            return DASH
        diff = rv - pv
        return f"{pv:g} / {fmt_num(rv, dec)}" + (f" ({diff:+.{dec}f})" if np.isfinite(diff) else "")

    disp = pd.DataFrame({
        "Paper dataset": cmp_["paper_dataset"].map(plots.dataset_label),
        "Ours": [plots.dataset_label(d) + (" (stand-in)" if s else "")
                 for d, s in zip(cmp_["reproduced_dataset"], cmp_["stand_in"])],
        "Method": [DASH if m == "model" else plots.method_label(m) for m in cmp_["method"]],
        "Metric": [("Test accuracy (%)" if m == "test_accuracy" else plots.metric_label(m))
                   + f" {ARROW.get(d, '')}".rstrip() for m, d in zip(cmp_["metric"], cmp_["direction"])],
    })
    for o in objs:
        disp[f"{plots.objective_label(o)} paper / ours (Δ)"] = [cell(p, r, m) for p, r, m in
                                                 zip(cmp_[f"paper_{o}"], cmp_[f"reproduced_{o}"], cmp_["metric"])]
    disp["Paper order"] = cmp_["paper_order"]
    disp["Our order"] = cmp_["reproduced_order"]
    disp["Agrees"] = [DASH if not np.isfinite(a) else ("yes" if a else "no") + f" ({n})"
                      for a, n in zip(cmp_["ordering_agrees"].astype(float), cmp_["pairs_agreeing"])]
    bold = pd.DataFrame(False, index=disp.index, columns=disp.columns)
    bold["Agrees"] = cmp_["ordering_agrees"].astype(float).eq(1.0).to_numpy()
    notes = sorted({n.split(";")[0] for n, s in zip(cmp_["note"], cmp_["stand_in"]) if s})
    return Table("paper_vs_reproduced", cmp_, disp, bold,
                 caption="The paper's values (mean over 5 seeds) beside ours (mean over this study's seeds); "
                         "Δ = ours − paper. Orders list objectives from best to worst; 'Agrees' counts the "
                         "objective pairs ordered the same way (pairs tied in the paper are not judged).",
                 notes=[f"Profile '{profile}'. " + n for n in notes])


# ----------------------------------------------------------------------------- figures

def _reference_runs(run_dirs: Sequence[Path], need: Callable[[Path], bool]) -> dict[tuple[str, str], Path]:
    """Per (dataset, objective): the run of the lowest seed satisfying ``need`` (seed 0 normally)."""
    best: dict[tuple[str, str], tuple[int, Path]] = {}
    for rd in run_dirs:
        k = stats.run_key(rd)
        if not need(rd):
            continue
        key = (k["dataset"], k["objective"])
        if key not in best or k["seed"] < best[key][0]:
            best[key] = (k["seed"], rd)
    return {k: v[1] for k, v in best.items()}


def select_images(loaded: dict[tuple[str, str], dict[str, np.ndarray]], n: int) -> list[tuple[int, list[str]]]:
    """Pick ``n`` evaluation images for the saliency grid: those classified correctly by
    every model first (smallest indices first); if fewer than ``n`` exist, the grid is
    filled with the images the fewest models get wrong. Returns [(index, objectives wrong)]."""
    present = None
    wrong: dict[int, set[str]] = {}
    for (obj, _), z in loaded.items():
        idx = z["indices"].astype(int)
        present = set(idx.tolist()) if present is None else present & set(idx.tolist())
        for i in idx[z["preds"] != z["labels"]].tolist():
            wrong.setdefault(int(i), set()).add(obj)
    ranked = sorted(present or [], key=lambda i: (len(wrong.get(i, ())), i))
    return [(i, plots.ordered_objectives(wrong.get(i, ()))) for i in ranked[:n]]


def fig_saliency_grid(run_dirs: Sequence[Path], n_images: Optional[int] = None):
    """The same ``n_images`` evaluation images (see :func:`select_images`: correctly
    classified by every objective's reference model, seed 0, first indices first) with every
    method's map of every objective."""
    refs = _reference_runs(run_dirs, lambda rd: bool(plots.available_methods(rd)))
    if not refs:
        raise FileNotFoundError("no attributions/<method>.npz in any run")
    datasets = sorted({d for d, _ in refs})
    n_images = n_images or (6 if len(datasets) == 1 else 4)
    objectives = plots.ordered_objectives({o for _, o in refs})
    methods = plots.ordered_methods({m for rd in refs.values() for m in plots.available_methods(rd)})
    columns = [(o, m) for o in objectives for m in methods]
    images, labels, col_maps = [], [], {c: [] for c in columns}
    any_wrong = False
    for ds in datasets:
        loaded = {}
        for o in objectives:
            rd = refs.get((ds, o))
            for m in (plots.available_methods(rd) if rd else []):
                loaded[(o, m)] = plots.load_attribution_npz(runs.attribution_path(rd, m))
        chosen = select_images(loaded, n_images)
        if not chosen:
            log.warning("saliency grid: the attribution files of %s share no image; skipped", ds)
            continue
        idx = [i for i, _ in chosen]
        first_rd = refs[(ds, next(o for o in objectives if (ds, o) in refs))]
        data = plots.load_eval_dataset(first_rd)
        imgs = data.images[np.asarray(idx, dtype=np.int64)].cpu().numpy() if data is not None else None
        z0 = next(iter(loaded.values()))
        pos0 = {int(j): k for k, j in enumerate(z0["indices"].tolist())}
        names = (list(data.class_names) if data is not None and getattr(data, "class_names", None)
                 else plots.class_names_for_run(first_rd, int(z0["labels"].max()) + 1))
        for r, (i, wrong) in enumerate(chosen):
            images.append(imgs[r] if imgs is not None else None)
            lab = int(z0["labels"][pos0[i]])
            label = f"{plots.dataset_label(ds)}\n#{i} {names[lab] if lab < len(names) else lab}"
            if wrong:
                any_wrong = True
                label += "\nwrong: " + ", ".join(plots.objective_label(o) for o in wrong)
            labels.append(label)
            for c in columns:
                z = loaded.get(c)
                if z is None:
                    col_maps[c].append(None)
                    continue
                pos = np.flatnonzero(z["indices"] == i)
                col_maps[c].append(np.squeeze(z["maps"][pos[0]]) if pos.size else None)
    if not labels:
        raise ValueError("the reference models' attribution files share no image")
    seeds = sorted({stats.run_key(rd)["seed"] for rd in refs.values()})
    note = ("images correctly classified by every model, so the predicted and the true class agree" if not any_wrong
            else "too few images right for every model; 'wrong:' names the models that misclassify it")
    return plots.saliency_grid(images, labels, [(o, m, col_maps[(o, m)]) for o, m in columns],
                               title=f"Attribution maps of seed {', '.join(map(str, seeds))} of each objective. "
                                     f"Class-specific maps explain {_explained_classes(refs)}, named on the "
                                     f"left\n({note}); Eigen-CAM ignores the class")


def _explained_classes(refs: dict[tuple[str, str], Path]) -> str:
    """Which class the stored maps explain (their ``target`` option), per dataset, in words:
    "the predicted class (Fashion-MNIST), the true class (Shapes)"."""
    kinds: dict[str, set[str]] = {}
    for (ds, _), rd in refs.items():
        for m in plots.available_methods(rd):
            target = plots.attribution_options(runs.attribution_path(rd, m)).get("target")
            if target:
                kinds.setdefault(ds, set()).add(target)
    words = {"pred": "the predicted class", "true": "the true class"}
    parts = [f"{' or '.join(words.get(k, k) for k in sorted(v))} ({plots.dataset_label(ds)})"
             for ds, v in sorted(kinds.items())]
    if len({frozenset(v) for v in kinds.values()}) == 1:          # the same everywhere: say it once
        parts = [" or ".join(words.get(k, k) for k in sorted(next(iter(kinds.values()))))]
    return ", ".join(parts) or "a class"


def fig_pixel_flipping_curves(run_dirs: Sequence[Path], results: pd.DataFrame):
    """Per-seed mean curves over correctly classified samples, stacked over seeds."""
    correct = {}
    if not results.empty:
        for rid, g in results.groupby("run_id"):
            correct[rid] = set(g.loc[g["correct"].astype(bool), "sample_index"].astype(int).tolist())
    per: dict[tuple[str, str, str], list[np.ndarray]] = {}
    for rd in run_dirs:
        k = stats.run_key(rd)
        rid = f"{k['dataset']}/{k['objective']}/seed{k['seed']}"
        for m in plots.available_methods(rd, "curves"):
            with np.load(runs.curves_path(rd, m)) as z:
                curves, idx = z["curves"].astype(float), z["indices"].astype(int)
                p0 = z["unperturbed"].astype(float) if "unperturbed" in z.files else np.full(len(idx), np.nan)
            p0 = np.where(np.isnan(curves).all(axis=1), np.nan, p0)      # same samples at every x
            curves = np.concatenate([p0[:, None], curves], axis=1)       # x = 0: the unperturbed image
            if rid in correct:
                sel = np.isin(idx, list(correct[rid]))
                curves = curves[sel]
            if curves.size == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)          # an all-NaN column (no p0 stored)
                per.setdefault((k["dataset"], m, k["objective"]), []).append(np.nanmean(curves, axis=0))
    if not per:
        raise FileNotFoundError("no curves/<method>.npz in any run")
    stacked = {}
    for key, lst in per.items():
        s = min(len(c) for c in lst)
        stacked[key] = np.stack([c[:s] for c in lst])
    return plots.pixel_flipping_curves(stacked)


def fig_embeddings(run_dirs: Sequence[Path]):
    refs = _reference_runs(run_dirs, lambda rd: (rd / runs.EMBEDDINGS).is_file())
    if not refs:
        raise FileNotFoundError("no embeddings.npz in any run")
    items = {}
    for key, rd in refs.items():
        coords, labels = plots.load_embedding(rd)
        items[key] = (coords, labels, plots.class_names_for_run(rd, int(labels.max()) + 1 if len(labels) else 0,
                                                                   load_data=True))
    seeds = sorted({stats.run_key(rd)["seed"] for rd in refs.values()})
    return plots.embedding_grid(items, which=f"seed {', '.join(map(str, seeds))} of each objective")


# ----------------------------------------------------------------------------- build

def coverage(expected: Sequence[str], covered: Sequence[str]) -> str:
    """One line saying which runs a study's tables and figures cover, e.g. "12 of 12 runs
    (Fashion-MNIST, Shapes x CE, SCL, TL x seeds 0, 1)" or "...; missing: shapes/tl/seed1"."""
    covered = [r for r in expected if r in set(covered)] if expected else list(covered)
    expected = list(expected) or covered
    parts = [r.split("/") for r in covered]
    ds = ", ".join(plots.dataset_label(d) for d in dict.fromkeys(p[0] for p in parts))
    objs = ", ".join(plots.objective_label(o) for o in stats.order_objectives(p[1] for p in parts))
    seeds = ", ".join(sorted({p[2].removeprefix("seed") for p in parts}, key=int))
    text = f"{len(covered)} of {len(expected)} runs ({ds} × {objs} × seed{'s' if ',' in seeds else ''} {seeds})"
    missing = [r for r in expected if r not in set(covered)]
    return text + (f"; missing: {', '.join(missing)}" if missing else "")


def build_all(profile: str, results_root: PathLike = "results", output_dir: Optional[PathLike] = None,
              n_images: Optional[int] = None, seeds: str = "image_mean",
              runs_expected: Optional[Sequence[str]] = None,
              runs_missing: Sequence[str] = (), reference: Optional[str] = None) -> list[Path]:
    """Write every table (CSV, Markdown, LaTeX) and figure (PDF, PNG) of a study.

    Reads ``<results_root>/<profile>/<dataset>/<objective>/seed<k>/`` (only the runs of
    ``runs_expected``, ids like ``shapes/ce/seed0``, when given, and none of ``runs_missing``:
    runs whose files, if any, hold results of other settings); writes into ``output_dir``
    (``reference``: test every objective against this one only, instead of every pair)
    (default ``figures/<profile>``). Every figure and ``report_notes.md`` say which runs
    they cover and which expected runs are missing (:func:`coverage`). Parts that cannot be
    made are skipped with a note (log + ``report_notes.md``). Raises FileNotFoundError,
    writing nothing, when no run has a result. Returns the written paths.
    """
    out = Path(output_dir) if output_dir else Path("figures") / profile
    run_dirs = stats.find_run_dirs(results_root, profile)
    if runs_expected:
        wanted = set(runs_expected)
        run_dirs = [rd for rd in run_dirs if _run_id(rd) in wanted]
    run_dirs = [rd for rd in run_dirs if _run_id(rd) not in set(runs_missing)]
    with_results = [rd for rd in run_dirs if (rd / runs.RESULTS).is_file() or (rd / runs.TRAIN_SUMMARY).is_file()]
    if not with_results:
        raise FileNotFoundError(f"no run of study '{profile}' under {Path(results_root) / profile} has results "
                                f"(train_summary.json or results.csv): nothing to report")
    covered = [_run_id(rd) for rd in run_dirs if (rd / runs.RESULTS).is_file()]
    cover = coverage(list(runs_expected or []), covered or [_run_id(rd) for rd in with_results])
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    written: list[Path] = []

    def skip(what: str, e: BaseException) -> None:
        msg = f"{what} skipped: {e}"
        log.warning(msg)
        notes.append(msg)

    from .pairs.figures import fig_pair_grid, is_pair_row, table_pair_metrics
    everything = stats.load_results(results_root, profile, run_dirs=run_dirs)
    results, pair_results = everything[~is_pair_row(everything)], everything[is_pair_row(everything)]
    results_all = stats.load_results(results_root, profile, run_dirs=run_dirs, all_protocols=True)
    results_all = results_all[~is_pair_row(results_all)]
    summaries = stats.load_summaries(results_root, profile, run_dirs=run_dirs)
    sig = None
    claims = None

    tables: dict[str, Callable[[], Table]] = {
        "table_accuracy": lambda: table_accuracy(summaries),
        "table_attribution_metrics": lambda: table_attribution_metrics(results),
        "table_significance": lambda: table_significance(results, seeds=seeds, reference=reference or None),
        "paper_vs_reproduced": lambda: table_paper_vs_reproduced(study_summary(results, summaries), profile),
        "table_claim_robustness": lambda: table_claim_robustness(results_all, seeds=seeds),
        "table_pair_metrics": lambda: table_pair_metrics(pair_results, run_dirs),
        "table_pair_significance": lambda: _renamed(
            table_significance(pair_results, seeds=seeds, reference=reference or None), "table_pair_significance",
            "Pair analysis: the unit is a pair of images, keyed by (seed, pair id); it is kept when every compared "
            "model classifies both of its images correctly; the pair's kind is in the metric's name."),
    }
    for name, make in tables.items():
        try:
            if name in ("table_attribution_metrics", "table_significance") and results.empty:
                raise ValueError("no results.csv (run the evaluation stage)")
            if name in ("table_pair_metrics", "table_pair_significance") and pair_results.empty:
                continue                       # no pair analysis in this study: nothing to say
            if name == "paper_vs_reproduced" and results.empty and summaries.empty:
                raise ValueError("neither results.csv nor train_summary.json")
            if name == "table_accuracy" and summaries.empty:
                raise ValueError("no train_summary.json (run the training stage)")
            t = make()
            t.notes.append(f"Covers {cover}.")
            if name == "table_significance":
                sig = t.data
            if name == "table_claim_robustness":
                claims = t.data
            written += write_table(t, out)
        except Exception as e:  # noqa: BLE001 - a missing part never stops the report
            skip(name, e)

    figures: dict[str, Callable] = {
        "fig_saliency_grid": lambda: fig_saliency_grid(run_dirs, n_images),
        "fig_metric_distributions": lambda: plots.metric_distributions(results, sig),
        "fig_pixel_flipping_curves": lambda: fig_pixel_flipping_curves(run_dirs, results),
        "fig_embeddings": lambda: fig_embeddings(run_dirs),
        "fig_claim_robustness": lambda: _claim_figure(claims),
        "fig_pair_grid": lambda: fig_pair_grid(run_dirs),
    }
    for name, make in figures.items():
        try:
            if name == "fig_metric_distributions" and results.empty:
                raise ValueError("no results.csv (run the evaluation stage)")
            if name == "fig_pair_grid" and pair_results.empty:
                continue
            fig = make()
            plots.add_footer(fig, f"Covers {cover}.")
            written += plots.save_figure(fig, out / name)
        except Exception as e:  # noqa: BLE001
            skip(name, e)

    text = f"# Report notes ({profile})\n\nRuns covered: {cover}.\n"
    text += "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "\nNothing was skipped.\n")
    written.append(runs.save_text(out / "report_notes.md", text))
    written.append(runs.save_json(out / "coverage.json", {
        "profile": profile, "expected": list(runs_expected or []), "covered": covered,
        "missing": [r for r in (runs_expected or []) if r not in set(covered)]}))
    log.info("report of '%s' written to %s", profile, out)
    return written


def _renamed(table: Table, name: str, note: str = "") -> Table:
    table.name = name
    if note:
        table.notes.append(note)
    return table


def _claim_figure(claims: Optional[pd.DataFrame]):
    from .claim import plot_claim
    if claims is None or claims.empty:
        raise ValueError("no table_claim_robustness")
    return plot_claim(claims)


def _run_id(run_dir: Path) -> str:
    k = stats.run_key(run_dir)
    return f"{k['dataset']}/{k['objective']}/seed{k['seed']}"


def load_table(output_dir: PathLike, name: str, kind: str = "md") -> Union[str, pd.DataFrame]:
    """Read back a written table: the Markdown / LaTeX text, or the CSV as a DataFrame."""
    p = Path(output_dir) / f"{name}.{kind}"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: run report.build_all first (or it was skipped: see report_notes.md)")
    return pd.read_csv(p) if kind == "csv" else p.read_text()


def table_markdown(output_dir: PathLike, name: str) -> str:
    """The Markdown of a written table, or a one-line note saying it was skipped (for notebooks)."""
    p = Path(output_dir) / f"{name}.md"
    return p.read_text() if p.is_file() else f"*{name}: not made for this study (see report_notes.md).*"


def figure_png(output_dir: PathLike, name: str) -> Optional[Path]:
    """The PNG of a written figure, or None if it was skipped."""
    p = Path(output_dir) / f"{name}.png"
    return p if p.is_file() else None
