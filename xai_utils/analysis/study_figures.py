"""Figures of a study, each made by one function from the saved results of its runs:
attribution maps of the same images for every model, metric distributions with test marks,
pixel-flipping curves, embeddings. ``fig_*`` functions read the run folders; the drawing
functions after them take the gathered arrays.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..errors import MissingInputError
from ..ops.metrics import METRICS
from ..settings import layout as runs
from ..stages.artefacts import load_npz
from . import saved
from .run_figures import (attribution_options, available_methods, class_names_for_run, load_attribution_npz,
                          load_embedding, load_eval_dataset)
from .names import (dataset_label, method_label, metric_label, objective_color, objective_label, ordered_methods,
                    ordered_metrics, ordered_objectives)
from .plotting import (EMBEDDING_CAPTION, boxes, bracket_levels, draw_embedding, hit_rates, image_grid, new_figure, note,
                       overlay_rgb, stars, style, trim_value_axis)

log = logging.getLogger(__name__)


def reference_runs(run_dirs: Sequence[Path], need: Callable[[Path], bool]) -> dict[tuple[str, str], Path]:
    """Per (dataset, objective): the run of the lowest seed satisfying ``need`` (seed 0 normally)."""
    best: dict[tuple[str, str], tuple[int, Path]] = {}
    for rd in run_dirs:
        k = saved.run_key(rd)
        if not need(rd):
            continue
        key = (k.dataset, k.objective)
        if key not in best or k.seed < best[key][0]:
            best[key] = (k.seed, rd)
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
    return [(i, ordered_objectives(wrong.get(i, ()))) for i in ranked[:n]]


def fig_saliency_grid(run_dirs: Sequence[Path], n_images: Optional[int] = None):
    """The same ``n_images`` evaluation images (see :func:`select_images`: correctly
    classified by every objective's reference model, seed 0, first indices first) with every
    method's map of every objective."""
    refs = reference_runs(run_dirs, lambda rd: bool(available_methods(rd)))
    if not refs:
        raise MissingInputError("no attributions/<method>.npz in any run")
    datasets = sorted({d for d, _ in refs})
    n_images = n_images or (6 if len(datasets) == 1 else 4)
    objectives = ordered_objectives({o for _, o in refs})
    methods = ordered_methods({m for rd in refs.values() for m in available_methods(rd)})
    columns = [(o, m) for o in objectives for m in methods]
    images, labels, col_maps = [], [], {c: [] for c in columns}
    any_wrong = False
    for ds in datasets:
        loaded = {}
        for o in objectives:
            rd = refs.get((ds, o))
            for m in (available_methods(rd) if rd else []):
                loaded[(o, m)] = load_attribution_npz(runs.attribution_path(rd, m))
        chosen = select_images(loaded, n_images)
        if not chosen:
            log.warning("saliency grid: the attribution files of %s share no image; skipped", ds)
            continue
        idx = [i for i, _ in chosen]
        first_rd = refs[(ds, next(o for o in objectives if (ds, o) in refs))]
        data = load_eval_dataset(first_rd)
        imgs = data.images[np.asarray(idx, dtype=np.int64)].cpu().numpy() if data is not None else None
        z0 = next(iter(loaded.values()))
        pos0 = {int(j): k for k, j in enumerate(z0["indices"].tolist())}
        names = (list(data.class_names) if data is not None and getattr(data, "class_names", None)
                 else class_names_for_run(first_rd, int(z0["labels"].max()) + 1))
        for r, (i, wrong) in enumerate(chosen):
            images.append(imgs[r] if imgs is not None else None)
            lab = int(z0["labels"][pos0[i]])
            label = f"{dataset_label(ds)}\n#{i} {names[lab] if lab < len(names) else lab}"
            if wrong:
                any_wrong = True
                label += "\nwrong: " + ", ".join(objective_label(o) for o in wrong)
            labels.append(label)
            for c in columns:
                z = loaded.get(c)
                if z is None:
                    col_maps[c].append(None)
                    continue
                pos = np.flatnonzero(z["indices"] == i)
                col_maps[c].append(np.squeeze(z["maps"][pos[0]]) if pos.size else None)
    if not labels:
        raise MissingInputError("the reference models' attribution files share no image")
    seeds = sorted({saved.run_key(rd).seed for rd in refs.values()})
    note = ("images correctly classified by every model, so the predicted and the true class agree" if not any_wrong
            else "too few images right for every model; 'wrong:' names the models that misclassify it")
    return saliency_grid(images, labels, [(o, m, col_maps[(o, m)]) for o, m in columns],
                               title=f"Attribution maps of seed {', '.join(map(str, seeds))} of each objective. "
                                     f"Class-specific maps explain {_explained_classes(refs)}, named on the "
                                     f"left\n({note}); Eigen-CAM ignores the class")


def _explained_classes(refs: dict[tuple[str, str], Path]) -> str:
    """Which class the stored maps explain (their ``target`` option), per dataset, in words:
    "the predicted class (Fashion-MNIST), the true class (Shapes)"."""
    kinds: dict[str, set[str]] = {}
    for (ds, _), rd in refs.items():
        for m in available_methods(rd):
            target = attribution_options(runs.attribution_path(rd, m)).get("target")
            if target:
                kinds.setdefault(ds, set()).add(target)
    words = {"pred": "the predicted class", "true": "the true class"}
    parts = [f"{' or '.join(words.get(k, k) for k in sorted(v))} ({dataset_label(ds)})"
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
        k = saved.run_key(rd)
        rid = k.id
        for m in available_methods(rd, runs.CURVES):
            z = load_npz(runs.curves_path(rd, m))
            curves, idx = z["curves"].astype(float), z["indices"].astype(int)
            p0 = z["unperturbed"].astype(float) if "unperturbed" in z else np.full(len(idx), np.nan)
            p0 = np.where(np.isnan(curves).all(axis=1), np.nan, p0)      # same samples at every x
            curves = np.concatenate([p0[:, None], curves], axis=1)       # x = 0: the unperturbed image
            if rid in correct:
                sel = np.isin(idx, list(correct[rid]))
                curves = curves[sel]
            if curves.size == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)          # an all-NaN column (no p0 stored)
                per.setdefault((k.dataset, m, k.objective), []).append(np.nanmean(curves, axis=0))
    if not per:
        raise MissingInputError("no curves/<method>.npz in any run")
    stacked = {}
    for key, lst in per.items():
        s = min(len(c) for c in lst)
        stacked[key] = np.stack([c[:s] for c in lst])
    return pixel_flipping_curves(stacked)


def fig_embeddings(run_dirs: Sequence[Path]):
    refs = reference_runs(run_dirs, lambda rd: (rd / runs.EMBEDDINGS).is_file())
    if not refs:
        raise MissingInputError("no embeddings.npz in any run")
    items = {}
    for key, rd in refs.items():
        coords, labels = load_embedding(rd)
        items[key] = (coords, labels, class_names_for_run(rd, int(labels.max()) + 1 if len(labels) else 0,
                                                                   load_data=True))
    seeds = sorted({saved.run_key(rd).seed for rd in refs.values()})
    return embedding_grid(items, which=f"seed {', '.join(map(str, seeds))} of each objective")


def saliency_grid(images: Sequence[Optional[np.ndarray]], row_labels: Sequence[str],
                  columns: Sequence[tuple[str, str, Sequence[Optional[np.ndarray]]]], title: str = "") -> Figure:
    """Rows are images; column 0 the input, then one column per (objective, method) with the
    map alone (colour map ``inferno``, each map min-max scaled, as the colour bar shows: no
    blending with the image, so the colours read off the bar). ``images[r]`` is uint8 [C,H,W] or None (not available);
    ``columns`` = [(objective, method, maps), ...] with ``maps[r]`` [H,W] or None (not computed)."""
    cells = []
    for r in range(len(row_labels)):
        img = images[r] if images is not None else None
        row = [overlay_rgb(img, None) if img is not None else None]
        for _, _, maps in columns:
            amap = maps[r] if maps is not None else None
            row.append(overlay_rgb(None, amap) if amap is not None else None)    # the map alone
        cells.append(row)
    titles = ["input"] + [f"{objective_label(o)}\n{method_label(m)}" for o, m, _ in columns]
    colors = ["black"] + [objective_color(o) for o, _, _ in columns]
    return image_grid(cells, row_labels, titles, colors, title=title)


def metric_distributions(df: pd.DataFrame, significance: Optional[pd.DataFrame] = None,
                         p_column: str = "p_holm", ncols: int = 4) -> Figure:
    """One panel per dataset x metric (rows of at most ``ncols`` panels, each dataset starting
    a new row, named on the left); in each panel one group per attribution method and one
    mark per objective, over the correctly classified samples pooled over seeds: a box plot
    of the per-sample values, or for a binary metric (pointing game) the hit rate with its
    95 % Wilson interval. The value axis covers only the values shown, within the metric's
    possible range; brackets above a group mark the paired tests of ``significance``
    (``p_column``; stars as in :func:`stars`, ``ns`` = not significant)."""
    d = df[df["correct"].astype(bool)] if "correct" in df else df
    d = d.dropna(subset=["value"])
    datasets = sorted(d["dataset"].unique())
    panels = [(ds, m) for ds in datasets for m in ordered_metrics(d.loc[d["dataset"] == ds, "metric"].unique())]
    if not panels:
        raise MissingInputError("no metric value of a correctly classified sample to plot")
    ncols = min(ncols, max(sum(1 for p in panels if p[0] == ds) for ds in datasets))
    grid: list[list[tuple[str, str]]] = []
    for ds in datasets:
        mine = [p for p in panels if p[0] == ds]
        grid += [mine[i:i + ncols] for i in range(0, len(mine), ncols)]
    objectives = ordered_objectives(d["objective"].unique())
    width = 0.8 / max(len(objectives), 1)
    binary_any = False
    with style():
        fig, axes = new_figure(len(grid), ncols, figsize=(2.7 * ncols + 0.6, 2.6 * len(grid) + 0.8))
        for r, row in enumerate(grid):
            for c in range(ncols):
                ax = axes[r, c]
                if c >= len(row):
                    ax.remove()
                    continue
                ds, metric = row[c]
                binary_any |= _distribution_panel(ax, d[(d["dataset"] == ds) & (d["metric"] == metric)], ds, metric,
                                                  objectives, width, significance, p_column, first=c == 0)
        handles = [Patch(facecolor=objective_color(o), alpha=0.75, edgecolor="0.2", label=objective_label(o))
                   for o in objectives]
        title = "correctly classified samples, pooled over seeds"
        if binary_any:
            title += "; hit rates with 95 % Wilson intervals"
        if significance is not None and not significance.empty:
            title += (f"\nbrackets: paired t-test, {'Holm-adjusted ' if p_column == 'p_holm' else ''}"
                      "p: * <0.05, ** <0.01, *** <0.001, ns not significant")
        fig.legend(handles=handles, loc="outside upper center", ncols=len(objectives), title=title,
                   title_fontsize=7.5)
    return fig


def _distribution_panel(ax, sub: pd.DataFrame, ds: str, metric: str, objectives: list[str], width: float,
                        significance: Optional[pd.DataFrame], p_column: str, first: bool) -> bool:
    """One panel of :func:`metric_distributions`; whether its metric is binary."""
    spec = METRICS.get(metric)
    binary = bool(spec and spec.binary)
    ax.set_title(metric_label(metric, arrow=True) + (" (hit rate)" if binary else ""))
    if first:
        ax.set_ylabel(dataset_label(ds), fontweight="bold")
    methods = ordered_methods(sub["method"].unique())
    lo, hi = np.inf, -np.inf
    positions = {}
    for g, meth in enumerate(methods):
        pos = {o: g + (j - (len(objectives) - 1) / 2) * width for j, o in enumerate(objectives)}
        positions[meth] = pos
        groups = [sub.loc[(sub["method"] == meth) & (sub["objective"] == o), "value"].to_numpy(float)
                  for o in objectives]
        colors = [objective_color(o) for o in objectives]
        if binary:
            glo, ghi = hit_rates(ax, groups, [pos[o] for o in objectives], colors)
        else:
            boxes(ax, groups, [pos[o] for o in objectives], colors, width * 0.85)
            vals = np.concatenate([g for g in groups if len(g)]) if any(len(g) for g in groups) else []
            glo, ghi = (float(np.min(vals)), float(np.max(vals))) if len(vals) else (np.inf, -np.inf)
        lo, hi = min(lo, glo), max(hi, ghi)
    if not np.isfinite(lo):
        note(ax, "no values")
        return binary
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    top = hi
    for meth in methods if significance is not None and not significance.empty else []:
        top = max(top, _brackets(ax, significance, ds, meth, metric, positions[meth], hi, span, p_column))
    trim_value_axis(ax, lo, hi, spec.bounds if spec else (None, None), top)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([method_label(m) for m in methods])
    ax.set_xlim(-0.6, len(methods) - 0.4)
    return binary


def _brackets(ax, significance: pd.DataFrame, ds: str, meth: str, metric: str, pos: dict[str, float], hi: float,
              span: float, p_column: str) -> float:
    """The brackets of one method's significant paired tests above its group; the top they reach."""
    sig = significance[(significance["dataset"] == ds) & (significance["method"] == meth)
                       & (significance["metric"] == metric)
                       & significance["objective_a"].isin(pos) & significance["objective_b"].isin(pos)]
    marks, spans = [], []
    for _, row_ in sig.iterrows():
        p = row_[p_column] if p_column in row_ and pd.notna(row_[p_column]) else row_.get("p")
        if stars(p):
            marks.append(stars(p))
            spans.append(tuple(sorted((pos[row_["objective_a"]], pos[row_["objective_b"]]))))
    top = hi
    for mark, (x0, x1), lv in zip(marks, spans, bracket_levels(spans)):
        y = hi + span * (0.07 + 0.085 * lv)
        ax.plot([x0, x0, x1, x1], [y - span * 0.02, y, y, y - span * 0.02], color="0.25", lw=0.7)
        ax.text((x0 + x1) / 2, y, mark, ha="center", va="bottom", fontsize=6, color="0.15")
        top = max(top, y + span * 0.075)
    return top


def pixel_flipping_curves(curves: Mapping[tuple[str, str, str], np.ndarray]) -> Figure:
    """Rows = datasets, columns = methods; per objective the mean pixel-flipping curve (over
    seeds of the per-seed mean curve of correctly classified samples) and a band of +-1 std
    across seeds (no band with one seed). ``curves[(dataset, method, objective)]`` is
    ``[n_seeds, S + 1]`` of per-seed mean curves whose column 0 is the probability on the
    unperturbed image (x = 0; NaN where it was not stored) and column s the probability
    after step s (x = s / S)."""
    if not curves:
        raise MissingInputError("no pixel-flipping curve to plot")
    datasets = sorted({k[0] for k in curves})
    methods = ordered_methods({k[1] for k in curves})
    objectives = ordered_objectives({k[2] for k in curves})
    with style():
        fig, axes = new_figure(len(datasets), len(methods),
                               figsize=(3.0 * len(methods) + 0.4, 2.4 * len(datasets) + 0.5))
        one_seed = False
        for r, ds in enumerate(datasets):
            for c, meth in enumerate(methods):
                ax = axes[r, c]
                if r == 0:
                    ax.set_title(method_label(meth))
                if c == 0:
                    ax.set_ylabel(f"{dataset_label(ds)}\nsoftmax probability of true class")

                drawn = False
                for o in objectives:
                    arr = curves.get((ds, meth, o))
                    if arr is None or np.size(arr) == 0:
                        continue
                    arr = np.atleast_2d(np.asarray(arr, dtype=float))
                    x = np.arange(arr.shape[1]) / (arr.shape[1] - 1)
                    keep = ~np.all(np.isnan(arr), axis=0)       # no unperturbed point stored: start at step 1
                    arr, x = arr[:, keep], x[keep]
                    mean = np.nanmean(arr, axis=0)
                    ax.plot(x, mean, color=objective_color(o), label=objective_label(o))
                    if arr.shape[0] > 1:
                        sd = np.nanstd(arr, axis=0, ddof=1)
                        ax.fill_between(x, mean - sd, mean + sd, color=objective_color(o), alpha=0.2, lw=0)
                    else:
                        one_seed = True
                    drawn = True
                if not drawn:
                    note(ax, "no curves")
                ax.set_xlim(0, 1)
        fig.supxlabel("fraction of features set to the baseline (0: the unperturbed image)", fontsize=9)
        handles = [Line2D([], [], color=objective_color(o), label=objective_label(o)) for o in objectives]
        fig.legend(handles=handles, loc="outside upper center", ncols=len(objectives),
                   title="correctly classified samples; mean over seeds"
                         + (" (one seed: no band)" if one_seed else "; band: ±1 std across seeds"),
                   title_fontsize=7.5)
    return fig


def embedding_grid(items: Mapping[tuple[str, str], tuple[np.ndarray, np.ndarray, Sequence[str]]],
                   which: str = "") -> Figure:
    """Rows = datasets, columns = objectives: 2-D embeddings of test features coloured by
    class. ``items[(dataset, objective)] = (coords [N,2], labels [N], class_names)``."""
    if not items:
        raise MissingInputError("no embedding to plot")
    datasets = sorted({k[0] for k in items})
    objectives = ordered_objectives({k[1] for k in items})
    n = max(len(v[1]) for v in items.values())
    with style():
        fig, axes = new_figure(len(datasets), len(objectives),
                               figsize=(2.4 * len(objectives) + 1.6, 2.4 * len(datasets) + 0.7))
        fig.suptitle(EMBEDDING_CAPTION.format(n=n).replace("\n", " ") + (f"; {which}" if which else ""),
                     fontsize=8)
        for r, ds in enumerate(datasets):
            for c, o in enumerate(objectives):
                ax = axes[r, c]
                if (ds, o) not in items:
                    note(ax, "no embedding")
                else:
                    coords, labels, names = items[(ds, o)]
                    draw_embedding(ax, coords, labels, names, legend=(c == len(objectives) - 1),
                                   s=4.0 if len(labels) > 400 else 10.0)
                if r == 0:
                    ax.set_title(objective_label(o), color=objective_color(o), fontweight="bold")
                if c == 0:
                    ax.set_ylabel(dataset_label(ds), fontweight="bold")
    return fig
