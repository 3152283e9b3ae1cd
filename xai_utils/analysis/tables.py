"""Tables of a study: :class:`Table` (numbers for CSV, strings for Markdown and LaTeX, with
bold cells), and the tables of accuracy, attribution metrics, paired tests and the paper's
values beside ours. Each is made by one function from saved results (:mod:`.stats`).

Markdown: GitHub's; LaTeX: booktabs; mean ± std; the best value of a row in bold, judged at
the displayed precision.
"""
from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from ..errors import MissingInputError
from ..settings import layout as runs
from ..stages import files
from . import stats
from .names import (dataset_label, facet, method_label, metric_direction, metric_label, metric_sort_key,
                    objective_label, order_objectives, ordered_methods)

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

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
    paths = [files.save_text(out / f"{table.name}.csv", table.data.to_csv(index=False)),
             files.save_text(out / f"{table.name}.md", to_markdown(table)),
             files.save_text(out / f"{table.name}.tex", to_latex(table))]
    return paths


def wide(summary: pd.DataFrame, keys: list[str], objectives: list[str]) -> pd.DataFrame:
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


def objective_cells(data: pd.DataFrame, disp: pd.DataFrame, bold: pd.DataFrame, objs: list[str],
                     direction, decimals: int) -> None:
    """Fill one "mean ± std" column per objective, bold the best of each row (``direction(row)``
    is "higher" or "lower") and record the winners in ``data["best"]``."""
    best = []
    for i, r in data.iterrows():
        b = best_objectives({o: r[f"{o}_mean"] for o in objs}, direction(r), decimals)
        best.append(",".join(sorted(b)))
        for o in objs:
            bold.loc[i, objective_label(o)] = o in b
    for o in objs:
        disp[objective_label(o)] = [fmt_mean_std(m, s, decimals) for m, s in zip(data[f"{o}_mean"], data[f"{o}_std"])]
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
        raise MissingInputError("no train_summary.json with a test_accuracy")
    objs = order_objectives(acc["objective"].unique())
    rows = [r for r in ACCURACY_ROWS if r[0] in summaries and summaries[r[0]].notna().any()]
    parts = []
    for col, label, direction, scale, dec in rows:
        sub = summaries.assign(test_accuracy=summaries[col] * scale)
        part = wide(stats.accuracy_summary(sub), ["dataset"], objs)
        part.insert(1, "quantity", col)
        parts.append(part.assign(_dir=direction, _dec=dec, _label=label))
    data = pd.concat(parts, ignore_index=True)
    order = {c: i for i, (c, *_) in enumerate(ACCURACY_ROWS)}
    data = data.assign(_q=data["quantity"].map(order)).sort_values(["dataset", "_q"], kind="stable") \
               .drop(columns="_q").reset_index(drop=True)
    disp = pd.DataFrame({"Dataset": data["dataset"].map(dataset_label)})
    if len(rows) > 1:
        disp["Quantity"] = data["_label"]
    bold = pd.DataFrame(False, index=data.index, columns=list(disp.columns) + [objective_label(o) for o in objs])
    for dec in sorted(set(data["_dec"])):
        sel = data["_dec"] == dec
        sub_disp, sub_bold = disp[sel].copy(), bold[sel].copy()
        sub = data[sel].copy()
        objective_cells(sub, sub_disp, sub_bold, objs, lambda r: r["_dir"], dec)
        for o in objs:
            disp.loc[sel, objective_label(o)] = sub_disp[objective_label(o)]
            bold.loc[sel, objective_label(o)] = sub_bold[objective_label(o)]
        data.loc[sel, "best"] = sub["best"]
    data = data.drop(columns=["_dir", "_dec", "_label"])
    n = int(acc["n_seeds"].max())
    caption = (f"Test accuracy (%), mean ± std over seeds (n = {n} seed{'s' if n != 1 else ''}; "
               f"std '{DASH}' with one seed). Best per row in bold.")
    if len(rows) > 1:
        methods = set(summaries.get("calibration", pd.Series(dtype=str)).dropna()) - {""}
        caption += (f" Temperature: {_fitted_on(methods)}; ECE (15 bins) of the explained model on the test "
                    "split before and after dividing its logits by it.")
    return Table("table_accuracy", data, disp, bold, caption=caption)


CALIBRATION_TEXT = {
    "heldout": "fitted by NLL on held-out training images",
    "crossfit": "fitted by NLL with two-fold cross-fitting on the evaluation images (each image scored with "
                "the temperature of the other half; the row shows the mean of the two folds)",
}


def _fitted_on(methods: set[str]) -> str:
    """Where the temperatures of a table's runs were fitted, in words (``calibration.json``)."""
    known = [CALIBRATION_TEXT[m] for m in sorted(methods) if m in CALIBRATION_TEXT]
    return "; ".join(known) if known else CALIBRATION_TEXT["heldout"]


def table_attribution_metrics(results: pd.DataFrame, decimals: int = 3) -> Table:
    """Rows: attribution method x facet/metric x dataset; columns CE / SCL / TL, mean ± std
    across seeds of the per-seed means over correctly classified samples."""
    summ = stats.summarize(results)
    if summ.empty:
        raise MissingInputError("no metric value of a correctly classified sample")
    objs = order_objectives(summ["objective"].unique())
    data = wide(summ, ["method", "metric", "dataset"], objs)
    data.insert(1, "facet", data["metric"].map(facet))
    data.insert(3, "direction", data["metric"].map(lambda m: metric_direction(m) or "unknown"))
    mo = {m: i for i, m in enumerate(ordered_methods(data["method"].unique()))}
    data = data.assign(_a=data["method"].map(mo), _b=data["metric"].map(metric_sort_key)) \
               .sort_values(["_a", "_b", "dataset"]).drop(columns=["_a", "_b"]).reset_index(drop=True)
    cols = ["Method", "Facet", "Metric", "Dataset"] + [objective_label(o) for o in objs]
    disp = pd.DataFrame({"Method": data["method"].map(method_label), "Facet": data["facet"],
                         "Metric": [f"{metric_label(m)} {ARROW.get(d, '')}".strip()
                                    for m, d in zip(data["metric"], data["direction"])],
                         "Dataset": data["dataset"].map(dataset_label)})
    bold = pd.DataFrame(False, index=data.index, columns=cols)
    objective_cells(data, disp, bold, objs, lambda r: metric_direction(r["metric"]), decimals)
    n = int(summ["n_seeds"].max())
    return Table("table_attribution_metrics", data, disp, bold,
                 caption=f"Attribution metrics: mean ± std over seeds (n = {n}) of the per-seed means over "
                         f"correctly classified samples. ↓ lower is better, ↑ higher is better; "
                         f"best per row in bold.")


def table_significance(results: pd.DataFrame, seeds: str = "image_mean", **kw) -> Table:
    """Paired t-tests between objectives (see :func:`stats.compare_objectives`)."""
    sig = stats.compare_objectives(results, seeds=seeds, **kw)
    if sig.empty:
        raise MissingInputError("no pair of objectives to compare")
    mo = {m: i for i, m in enumerate(ordered_methods(sig["method"].unique()))}
    sig = sig.assign(_a=sig["method"].map(mo), _b=sig["metric"].map(metric_sort_key)) \
             .sort_values(["dataset", "_a", "_b"], kind="stable").drop(columns=["_a", "_b"]) \
             .reset_index(drop=True)
    disp = pd.DataFrame({
        "Dataset": sig["dataset"].map(dataset_label),
        "Method": sig["method"].map(method_label),
        "Metric": [f"{metric_label(m)} {ARROW.get(metric_direction(m), '')}".strip() for m in sig["metric"]],
        "Comparison": [f"{objective_label(a)} vs {objective_label(b)}" + ("" if s == "all" else f" (seed {s})")
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


def load_paper_values() -> pd.DataFrame:
    """The paper's reported numbers (``paper_values.csv`` inside the package): paper_dataset,
    method, metric, objective, mean, std (NaN when not reported), source."""
    with resources.files("xai_utils.analysis").joinpath("paper_values.csv").open("r") as f:
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
    out = objective_label(items[0][0])
    for (_, v0), (o, v) in zip(items, items[1:]):
        out += (" = " if np.isclose(v, v0, rtol=0, atol=1e-12) else (" > " if rev else " < ")) + objective_label(o)
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
    objs = order_objectives(paper["objective"].unique())      # the paper's objectives
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
        direction = metric_direction(metric)
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
    key = out["metric"].map(lambda m: (-1, -1, m) if m == "test_accuracy" else metric_sort_key(m))
    order = {m: i for i, m in enumerate(ordered_methods(out["method"].unique()))}
    mkey = out["method"].map(order)
    return out.assign(_k=key, _m=mkey).sort_values(["_k", "paper_dataset", "_m", "method"], kind="stable") \
              .drop(columns=["_k", "_m"]).reset_index(drop=True)


def table_paper_vs_reproduced(summary: pd.DataFrame, profile: str = "") -> Table:
    cmp_ = paper_vs_reproduced(summary, profile)
    if cmp_.empty:
        raise MissingInputError("none of this study's datasets / metrics has a reported value in the paper")
    objs = [o for o in order_objectives(load_paper_values()["objective"].unique())
            if cmp_[f"paper_{o}"].notna().any()]

    def cell(pv: float, rv: float, metric: str) -> str:
        dec = 2 if metric == "test_accuracy" else 3
        if not np.isfinite(pv):
            return DASH
        diff = rv - pv
        return f"{pv:g} / {fmt_num(rv, dec)}" + (f" ({diff:+.{dec}f})" if np.isfinite(diff) else "")

    disp = pd.DataFrame({
        "Paper dataset": cmp_["paper_dataset"].map(dataset_label),
        "Ours": [dataset_label(d) + (" (stand-in)" if s else "")
                 for d, s in zip(cmp_["reproduced_dataset"], cmp_["stand_in"])],
        "Method": [DASH if m == "model" else method_label(m) for m in cmp_["method"]],
        "Metric": [("Test accuracy (%)" if m == "test_accuracy" else metric_label(m))
                   + f" {ARROW.get(d, '')}".rstrip() for m, d in zip(cmp_["metric"], cmp_["direction"])],
    })
    for o in objs:
        disp[f"{objective_label(o)} paper / ours (Δ)"] = [cell(p, r, m) for p, r, m in
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
