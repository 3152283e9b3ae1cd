"""Figures of one run, from its folder (used by notebooks 01-03): training curves, the
embedding of test features, attribution maps, metric distributions; and the readers of a run's
saved files that every figure shares.

Every function returns a :class:`matplotlib.figure.Figure`; in Jupyter a returned figure
displays itself (``display(fig)`` or as the last expression of a cell).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..settings import layout as runs
from ..stages.artefacts import load_json, load_npz, load_run_config, read_jsonl
from ..stages.attribute import load_attributions
from ..study.data import SHAPE_CLASSES, load_dataset
from .names import (dataset_label, method_label, metric_label, objective_color, objective_label, ordered_methods,
                    ordered_metrics)
from .plotting import (EMBEDDING_CAPTION, OKABE_ITO, PathLike, boxes, draw_embedding, image_grid, new_figure, note,
                       overlay_rgb, style)

log = logging.getLogger(__name__)


def read_json(path: Path) -> dict:
    """A JSON file of a run, checked (:func:`~xai_utils.stages.artefacts.load_json`); {} without one."""
    return load_json(path) if path.is_file() else {}


def class_names_for_run(run_dir: PathLike, num_classes: Optional[int] = None, load_data: bool = False) -> list[str]:
    """Class names from ``train_summary.json`` (key ``class_names``), else ``config.json``,
    else a static table (shapes), else (``load_data``) the evaluation dataset itself,
    else ``"0", "1", ...``."""
    run_dir = Path(run_dir)
    for name in (runs.TRAIN_SUMMARY, runs.CONFIG):
        names = read_json(run_dir / name).get("class_names")
        if names:
            return [str(n) for n in names]
    dataset = read_json(run_dir / runs.CONFIG).get("dataset")
    table = {"shapes": SHAPE_CLASSES}            # a static table: no data is loaded
    if dataset in table:
        return [str(n) for n in table[dataset]]
    if load_data:
        ds = load_eval_dataset(run_dir)
        if ds is not None and getattr(ds, "class_names", None):
            return [str(n) for n in ds.class_names]
    n = num_classes if num_classes is not None else 0
    return [str(i) for i in range(n)]


def load_eval_dataset(run_dir: PathLike):
    """The evaluation split of a run (``xai_utils.study.data.load_dataset``), or None (logged) if
    it is unavailable (not downloaded, no config.json, ...)."""
    try:
        cfg = load_run_config(run_dir)
        return load_dataset(cfg.dataset, cfg.eval_split, cfg.data_root)
    except Exception as e:  # noqa: BLE001 - figures go on without the images
        log.warning("evaluation images of %s unavailable (%s: %s); showing maps alone",
                    run_dir, type(e).__name__, e)
        return None


def eval_images(run_dir: PathLike, indices: np.ndarray) -> Optional[np.ndarray]:
    """uint8 [n,C,H,W] evaluation images of a run, or None (logged) if the data is unavailable."""
    ds = load_eval_dataset(run_dir)
    if ds is None:
        return None
    return ds.images[np.asarray(indices, dtype=np.int64)].cpu().numpy()


def read_train_log(run_dir: PathLike) -> tuple[pd.DataFrame, list[dict]]:
    """Split ``train_log.jsonl`` into epoch rows (a DataFrame, last entry per epoch wins, so
    a resumed run has no duplicates) and the other records (``event`` / ``stage`` lines)."""
    records = read_jsonl(Path(run_dir) / runs.TRAIN_LOG)
    epochs, other = [], []
    for r in records:
        if "event" in r or "stage" in r or "epoch" not in r or "loss" not in r:
            other.append(r)
        else:
            epochs.append(r)
    df = pd.DataFrame(epochs)
    if not df.empty:
        df = df.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    return df, other


def load_embedding(run_dir: PathLike) -> tuple[np.ndarray, np.ndarray]:
    p = Path(run_dir) / runs.EMBEDDINGS
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: training writes it at the end of a run (notebook 01_train)")
    z = load_npz(p)
    if "coords2d" not in z or "labels" not in z:
        raise KeyError(f"{p} lacks 'coords2d' or 'labels' (has {', '.join(z)})")
    return z["coords2d"], z["labels"]


def load_attribution_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Arrays of an ``attributions/<method>.npz`` file (maps, indices, targets, preds, labels)."""
    return load_npz(path)


def attribution_options(path: PathLike) -> dict:
    """The ``options`` record of an ``attributions/<method>.npz`` file (method options, target kind, ...)."""
    return load_attributions(path)["options"]


def available_methods(run_dir: PathLike, folder: str = runs.ATTRIBUTIONS) -> list[str]:
    return ordered_methods(p.stem for p in (Path(run_dir) / folder).glob("*.npz"))


def _accuracy_percent(v: float) -> float:
    """Accuracies may be logged as fractions or percent: show percent."""
    return float(v) * 100.0 if v is not None and float(v) <= 1.0 else float(v)


def plot_training_curves(run_dir: PathLike) -> Figure:
    """Loss (left) and training accuracy (right) against the epoch of one run.

    ``resumed`` events are dotted vertical lines; the final linear-probe accuracy (SCL / TL,
    a ``{"stage": "probe", ...}`` record with an accuracy-like key) and the test accuracy of
    ``train_summary.json`` are drawn as labelled markers / dashed lines on the accuracy axis.
    """
    run_dir = Path(run_dir)
    log_path = run_dir / runs.TRAIN_LOG
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path} not found: train the run first (notebook 01_train)")
    df, other = read_train_log(run_dir)
    cfg = read_json(run_dir / runs.CONFIG)
    summary = read_json(run_dir / runs.TRAIN_SUMMARY)
    title = f"{cfg.get('dataset', '?')}/{cfg.get('objective', '?')}/seed{cfg.get('seed', '?')}"
    with style():
        fig, axes = new_figure(1, 2, figsize=(7.0, 2.8), sharex=True)
        ax_loss, ax_acc = axes[0]
        ax_acc.tick_params(labelbottom=True)
        color = objective_color(str(cfg.get("objective", "ce")))
        if df.empty:
            note(ax_loss, "brought as a file: not trained here" if summary.get("checkpoint") else "no epoch logged yet")
        else:
            ax_loss.plot(df["epoch"], df["loss"], color=color, marker="o", ms=3, label="train loss")
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss")
        ax_loss.set_title("Training loss")

        has_acc = False
        if not df.empty and "train_acc" in df and df["train_acc"].notna().any():
            acc = df["train_acc"].astype(float)
            acc = acc * 100.0 if acc.max() <= 1.0 else acc
            ax_acc.plot(df["epoch"], acc, color=color, marker="o", ms=3, label="train accuracy")
            has_acc = True
        last_epoch = float(df["epoch"].max()) if not df.empty else 0.0
        probes = [r for r in other if r.get("stage") == "probe"]
        if probes:
            key = next((k for k in ("test_acc", "test_accuracy", "val_acc", "train_acc", "acc",
                                    "accuracy", "probe_acc") if k in probes[-1]), None)
            if key is not None and probes[-1][key] is not None:
                ax_acc.plot([last_epoch], [_accuracy_percent(probes[-1][key])], marker="D",
                            ls="none", color=OKABE_ITO[5],
                            label=f"linear probe ({key.replace('_acc', '').replace('_', ' ')} accuracy)")
                has_acc = True
        if summary.get("test_accuracy") is not None:
            ax_acc.axhline(_accuracy_percent(summary["test_accuracy"]), color="0.3", ls="--", lw=1,
                           label=f"test {float(summary['test_accuracy']):.1f}%")
            has_acc = True
        for r in other:
            if r.get("event") == "resumed":
                k = r.get("from_epoch", r.get("epoch"))
                if k is not None:
                    for ax in (ax_loss, ax_acc):
                        ax.axvline(float(k), color="0.5", ls=":", lw=1)
                    ax_loss.annotate("resumed", (float(k), 1.0), xycoords=("data", "axes fraction"),
                                     fontsize=7, color="0.4", ha="left", va="top", rotation=90)
        if has_acc:
            ax_acc.legend(loc="best")
        else:
            note(ax_acc, "no accuracy logged")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_acc.set_title("Accuracy")
        fig.suptitle(title)
    return fig


def plot_embedding(run_dir: PathLike) -> Figure:
    """2-D projection of the test features of one run (``embeddings.npz``), coloured by class."""
    coords, labels = load_embedding(run_dir)
    names = class_names_for_run(run_dir, int(np.max(labels)) + 1 if len(labels) else 0, load_data=True)
    cfg = read_json(Path(run_dir) / runs.CONFIG)
    with style():
        fig, axes = new_figure(1, 1, figsize=(4.6, 3.6))
        ax = axes[0, 0]
        draw_embedding(ax, coords, labels, names, s=4.0 if len(labels) > 400 else 12.0)
        ax.set_title(f"{dataset_label(cfg.get('dataset', '?'))}, "
                     f"{objective_label(cfg.get('objective', '?'))}, seed {cfg.get('seed', '?')}\n"
                     f"{EMBEDDING_CAPTION.format(n=len(labels))}", fontsize=8)
    return fig


def plot_attribution_grid(run_dir: PathLike, methods: Optional[Sequence[str]] = None, n: int = 8) -> Figure:
    """Rows are evaluation images, columns the input and each method's map over the input.

    Images are the first ``n`` indices present in every method's file, in the order of the
    first method. Each map is min-max scaled for display (colour map ``inferno``).
    """
    run_dir = Path(run_dir)
    methods = list(methods) if methods else available_methods(run_dir)
    if not methods:
        raise FileNotFoundError(f"no attributions in {run_dir / 'attributions'}: run notebook 02_attribute first")
    data = {}
    for m in methods:
        p = runs.attribution_path(run_dir, m)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; available methods: {available_methods(run_dir)}")
        data[m] = load_attribution_npz(p)
    common = set(data[methods[0]]["indices"].tolist())
    for m in methods[1:]:
        common &= set(data[m]["indices"].tolist())
    idx = [i for i in data[methods[0]]["indices"].tolist() if i in common][:n]
    if not idx:
        raise ValueError(f"the attribution files of {methods} share no sample index")
    rows = {m: {int(j): k for k, j in enumerate(data[m]["indices"].tolist())} for m in methods}
    ds = load_eval_dataset(run_dir)
    images = ds.images[np.asarray(idx, dtype=np.int64)].cpu().numpy() if ds is not None else None
    first = data[methods[0]]
    names = (list(ds.class_names) if ds is not None and getattr(ds, "class_names", None)
             else class_names_for_run(run_dir, int(max(first["labels"].max(), first["preds"].max())) + 1))
    cfg = read_json(run_dir / runs.CONFIG)
    name = lambda c: names[c] if 0 <= c < len(names) else str(c)  # noqa: E731
    cells, labels = [], []
    for r, i in enumerate(idx):
        k0 = rows[methods[0]][i]
        img = images[r] if images is not None else None
        lab, pred = int(first["labels"][k0]), int(first["preds"][k0])
        labels.append(f"#{i} {name(lab)}" + ("" if lab == pred else f"\n(pred {name(pred)})"))
        cells.append([overlay_rgb(img, None) if img is not None else None]
                     + [overlay_rgb(None, data[m]["maps"][rows[m][i]]) for m in methods])
    return image_grid(cells, labels, ["input"] + [method_label(m) for m in methods],
                      title=f"{dataset_label(cfg.get('dataset', '?'))}, {objective_label(cfg.get('objective', '?'))}, "
                            f"seed {cfg.get('seed', '?')}")


def plot_metric_summary(df: pd.DataFrame) -> Figure:
    """One panel per metric, one box per attribution method, for one run's ``results.csv``
    (the rows the statistics keep, ``correct``: see :func:`xai_utils.analysis.saved.kept_images`)."""
    need = {"method", "metric", "value", "correct"}
    if missing := need - set(df.columns):
        raise KeyError(f"results table lacks columns {sorted(missing)}: expected the long format of results.csv")
    d = df[df["correct"].astype(bool)]
    if d.empty:
        raise ValueError("no correctly classified sample in the results table: nothing to summarise "
                         "(a near-chance run keeps every image with the setting kept_images: all)")
    metrics = ordered_metrics(d["metric"].unique())
    methods = ordered_methods(d["method"].unique())
    ncols = min(4, len(metrics))
    nrows = int(np.ceil(len(metrics) / ncols))
    with style():
        fig, axes = new_figure(nrows, ncols, figsize=(2.3 * ncols + 0.3, 2.4 * nrows + 0.3))
        for k, ax in enumerate(axes.ravel()):
            if k >= len(metrics):
                ax.remove()
                continue
            metric = metrics[k]
            sub = d[d["metric"] == metric]
            groups = [sub.loc[sub["method"] == m, "value"].dropna().to_numpy(float) for m in methods]
            boxes(ax, groups, range(len(methods)), [OKABE_ITO[3 + j % 5] for j in range(len(methods))], 0.6)
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels([method_label(m) for m in methods], rotation=20 if len(methods) > 2 else 0)
            ax.set_title(metric_label(metric, arrow=True))
        runs_ = df["run_id"].unique() if "run_id" in df else []
        n_corr = d["sample_index"].nunique() if "sample_index" in d else len(d)
        everyone = {"true", "pred"} <= set(d.columns) and bool((d["true"] != d["pred"]).any())
        fig.suptitle(f"{runs_[0] if len(runs_) == 1 else 'results'}: {n_corr} "
                     + ("samples, misclassified ones included (kept_images: all)" if everyone
                        else "correctly classified samples"))
    return fig
