"""Figures of the companion: one colour-blind-safe style, one function per figure.

Two kinds of functions live here:

* **per-run** figures that read a run folder (used by notebooks 01-03):
  :func:`plot_training_curves`, :func:`plot_embedding`, :func:`plot_attribution_grid`,
  :func:`plot_metric_summary`;
* **study** figures that draw data already gathered by :mod:`xai_utils.report`
  (which reads every run of a profile): :func:`saliency_grid`,
  :func:`metric_distributions`, :func:`pixel_flipping_curves`, :func:`embedding_grid`.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot``, so
nothing piles up in pyplot's global state when many figures are made in a loop; in Jupyter a
returned figure displays itself (``display(fig)`` or as the last expression of a cell).
Colours are Okabe & Ito's (CE orange, SCL blue, TL green, always in the order CE, SCL, TL),
set in ``style.mplstyle`` beside this file.
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from . import runs

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

STYLE_PATH = Path(__file__).resolve().parent / "style.mplstyle"

# Okabe & Ito (2008) palette (objective colours live in the objective registry).
OKABE_ITO = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
# Ten classes, each its own colour *and* marker (tab10 colours), so no two classes look alike.
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
CLASS_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "*")
ATTRIBUTION_CMAP = "inferno"


# ----------------------------------------------------------------------------- names and order
# Every label, colour and order comes from the registry of its concept.

def objective_label(o: str) -> str:
    from .objectives import objective_label as label
    return label(o)


def objective_color(o: str) -> str:
    from .objectives import objective_color as color
    return color(o)


def method_label(m: str) -> str:
    from .attribution import method_label as label
    return label(m)


def metric_label(m: str, arrow: bool = False) -> str:
    """Readable metric name; with ``arrow`` a ↓ (lower is better) or ↑ (higher is better)."""
    from .metrics import metric_direction
    from .metrics import metric_label as label
    text = label(m)
    if arrow:
        text += {"lower": " ↓", "higher": " ↑"}.get(metric_direction(m) or "", "")
    return text


def dataset_label(d: str) -> str:
    from .data import dataset_label as label
    return label(d)


def _ordered(values: Any, order: Sequence[str]) -> list[str]:
    """Known names in ``order`` first, then any others alphabetically."""
    vals = list(dict.fromkeys(str(v) for v in values))
    return [v for v in order if v in vals] + sorted(v for v in vals if v not in order)


def ordered_objectives(values: Any) -> list[str]:
    from .objectives import OBJECTIVES
    return _ordered(values, list(OBJECTIVES))


def ordered_methods(values: Any) -> list[str]:
    from .attribution import METHODS
    from .pairs import PAIR_METHODS
    return _ordered(values, list(METHODS) + list(PAIR_METHODS))


def ordered_metrics(values: Any) -> list[str]:
    """Registry order; a variant (``continuity[sigma=0.05]``) right after its metric."""
    from .stats import metric_order
    vals = list(dict.fromkeys(str(v) for v in values))
    return sorted(vals, key=lambda m: (metric_order(m), m))


def class_style(c: int) -> tuple[str, str]:
    """(colour, marker) of class ``c``: ten distinct pairs, then both cycle."""
    return CLASS_COLORS[c % len(CLASS_COLORS)], CLASS_MARKERS[c % len(CLASS_MARKERS)]


@contextmanager
def style() -> Iterator[None]:
    """Apply the companion's style (``style.mplstyle``) to figures made inside the block."""
    with matplotlib.rc_context(fname=str(STYLE_PATH)):
        yield


def new_figure(nrows: int = 1, ncols: int = 1, figsize: Optional[tuple[float, float]] = None,
               layout: Optional[str] = "constrained", **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A pyplot-free Figure and a 2-D array of axes (must be called inside :func:`style`)."""
    figsize = figsize or (3.2 * ncols, 2.6 * nrows)
    fig = Figure(figsize=figsize, layout=layout)
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def add_footer(fig: Figure, text: str, width: int = 150) -> None:
    """A small grey note under the figure (e.g. which runs it covers), wrapped to ``width`` chars.
    Saved with ``bbox_inches="tight"``, so it never overlaps the figure's content."""
    import textwrap
    fig.text(0.0, 0.0, "\n".join(textwrap.wrap(text, width)), ha="left", va="top", fontsize=6.5,
             color="0.35", transform=fig.transFigure)


def save_figure(fig: Figure, path_stem: PathLike, formats: Sequence[str] = ("pdf", "png"),
                dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.<fmt>`` for each format; returns the written paths.
    Without a creation date, so the same results give byte-identical files."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with style():
        for fmt in formats:
            p = stem.with_suffix(f".{fmt}")
            meta = {"CreationDate": None} if fmt == "pdf" else None
            fig.savefig(p, format=fmt, dpi=dpi, metadata=meta, bbox_inches="tight", pad_inches=0.08)
            out.append(p)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def class_names_for_run(run_dir: PathLike, num_classes: Optional[int] = None, load_data: bool = False) -> list[str]:
    """Class names from ``train_summary.json`` (key ``class_names``), else ``config.json``,
    else the data module's static tables, else (``load_data``) the evaluation dataset itself,
    else ``"0", "1", ...``."""
    run_dir = Path(run_dir)
    for name in (runs.TRAIN_SUMMARY, runs.CONFIG):
        names = _read_json(run_dir / name).get("class_names")
        if names:
            return [str(n) for n in names]
    dataset = _read_json(run_dir / runs.CONFIG).get("dataset")
    try:  # optional: a static table in xai_utils.data (no data is loaded)
        from . import data  # noqa: WPS433
        table = dict(getattr(data, "CLASS_NAMES", {}) or {})
        if hasattr(data, "SHAPE_CLASSES"):
            table.setdefault("shapes", data.SHAPE_CLASSES)
        if dataset in table:
            return [str(n) for n in table[dataset]]
    except Exception:  # pragma: no cover - data module absent or broken
        pass
    if load_data:
        ds = load_eval_dataset(run_dir)
        if ds is not None and getattr(ds, "class_names", None):
            return [str(n) for n in ds.class_names]
    n = num_classes if num_classes is not None else 0
    return [str(i) for i in range(n)]


def load_eval_dataset(run_dir: PathLike):
    """The evaluation split of a run (``xai_utils.data.load_dataset``), or None (logged) if
    it is unavailable (not downloaded, no config.json, ...)."""
    try:
        from .config import load_run_config
        from .data import load_dataset
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


def _unit_scale(m: np.ndarray) -> np.ndarray:
    """Min-max scale one map to [0, 1] for display (constant maps become 0)."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float32))
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 or float [C,H,W] (C = 1 or 3) or [H,W] -> float [H,W,3] in [0, 1]."""
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.clip(img.astype(np.float32), 0, 1)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = np.transpose(img, (1, 2, 0))
    if img.ndim == 2:
        img = img[..., None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """Square resize of [H,W] or [H,W,3] (nearest for integer upscaling, else bilinear)."""
    h, w = a.shape[:2]
    if (h, w) == (size, size):
        return a
    if size % h == 0 and size % w == 0:
        return np.repeat(np.repeat(a, size // h, axis=0), size // w, axis=1)
    from skimage.transform import resize
    return resize(a, (size, size) + a.shape[2:], order=1, preserve_range=True, anti_aliasing=False).astype(a.dtype)


def overlay_rgb(image: Optional[np.ndarray], amap: Optional[np.ndarray], alpha: float = 0.55) -> np.ndarray:
    """Float [H,W,3]: the image blended with the attribution map (min-max scaled, colour map
    ``inferno``); the map alone if there is no image; the image alone if there is no map."""
    import matplotlib as mpl
    base = _to_rgb(image) if image is not None else None
    if amap is None:
        if base is None:
            raise ValueError("overlay_rgb needs an image or a map")
        return base
    m = _unit_scale(np.squeeze(np.asarray(amap)))
    if base is not None and m.shape != base.shape[:2]:
        m = _resize(m, base.shape[0]) if base.shape[0] == base.shape[1] else m
    heat = mpl.colormaps[ATTRIBUTION_CMAP](m)[..., :3].astype(np.float32)
    return heat if base is None else (1 - alpha) * base + alpha * heat


def image_grid(cells: Sequence[Sequence[Optional[np.ndarray]]], row_labels: Sequence[str],
               col_titles: Sequence[str], col_colors: Optional[Sequence[str]] = None, title: str = "",
               colorbar: bool = True, cell_inches: float = 1.0) -> Figure:
    """A grid of RGB cells drawn as ONE image in one axes (fast for large grids), with row
    labels on the left, column titles on top and a colour bar for the attribution scale.
    ``cells[r][c]`` is float [H,W,3] in [0,1] or None (drawn grey with 'n/a')."""
    import matplotlib as mpl
    rows, cols = len(cells), max(len(r) for r in cells)
    size = max((c.shape[0] for r in cells for c in r if c is not None), default=32)
    gap = max(1, size // 16)
    H, W = rows * size + (rows - 1) * gap, cols * size + (cols - 1) * gap
    mosaic = np.ones((H, W, 3), dtype=np.float32)
    missing = []
    for r, row in enumerate(cells):
        for c in range(cols):
            y, x = r * (size + gap), c * (size + gap)
            cell = row[c] if c < len(row) else None
            if cell is None:
                mosaic[y:y + size, x:x + size] = 0.92
                missing.append((x + size / 2, y + size / 2))
            else:
                mosaic[y:y + size, x:x + size] = _resize(np.clip(cell, 0, 1), size)
    px = cell_inches / size                                   # inches per mosaic pixel
    left, right = 1.0, (0.75 if colorbar else 0.1)
    top, bottom = 0.45 + (0.1 + 0.18 * (title.count("\n") + 1) if title else 0.0), 0.08
    fw, fh = W * px + left + right, H * px + top + bottom
    with style():
        fig = Figure(figsize=(fw, fh))
        ax = fig.add_axes((left / fw, bottom / fh, W * px / fw, H * px / fh))
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_axis_off()
        for x, y in missing:
            ax.text(x, y, "n/a", ha="center", va="center", fontsize=7, color="0.4")
        for r, lab in enumerate(row_labels):
            ax.text(-2 * gap, r * (size + gap) + size / 2, lab, ha="right", va="center", fontsize=7)
        for c, t in enumerate(col_titles):
            ax.text(c * (size + gap) + size / 2, -2 * gap, t, ha="center", va="bottom", fontsize=8,
                    color=(col_colors[c] if col_colors else "black"),
                    fontweight="bold" if col_colors and col_colors[c] != "black" else "normal")
        if colorbar:
            ch = min(H * px, 2.5)
            cax = fig.add_axes(((left + W * px + 0.12) / fw, (bottom + (H * px - ch) / 2) / fh, 0.12 / fw, ch / fh))
            sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=ATTRIBUTION_CMAP)
            cb = fig.colorbar(sm, cax=cax)
            cb.set_label("attribution (each map min-max scaled)", fontsize=7)
            cb.ax.tick_params(labelsize=7)
        if title:
            fig.suptitle(title, y=1 - 0.08 / fh, va="top")
    return fig


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize=8, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- per-run figures

def read_train_log(run_dir: PathLike) -> tuple[pd.DataFrame, list[dict]]:
    """Split ``train_log.jsonl`` into epoch rows (a DataFrame, last entry per epoch wins, so
    a resumed run has no duplicates) and the other records (``event`` / ``stage`` lines)."""
    records = runs.read_jsonl(Path(run_dir) / runs.TRAIN_LOG)
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
    cfg = _read_json(run_dir / runs.CONFIG)
    summary = _read_json(run_dir / runs.TRAIN_SUMMARY)
    title = f"{cfg.get('dataset', '?')}/{cfg.get('objective', '?')}/seed{cfg.get('seed', '?')}"
    with style():
        fig, axes = new_figure(1, 2, figsize=(7.0, 2.8), sharex=True)
        ax_loss, ax_acc = axes[0]
        ax_acc.tick_params(labelbottom=True)
        color = objective_color(str(cfg.get("objective", "ce")))
        if df.empty:
            _note(ax_loss, "no epoch logged yet")
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
            _note(ax_acc, "no accuracy logged")
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy (%)")
        for ax in (ax_loss, ax_acc):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_acc.set_title("Accuracy")
        fig.suptitle(title)
    return fig


def draw_embedding(ax, coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = (),
                   legend: bool = True, s: float = 6.0) -> None:
    """Scatter of 2-D ``coords``, each class its own colour and marker (:func:`class_style`)."""
    coords = np.asarray(coords, dtype=float)
    labels = np.asarray(labels).astype(int)
    for c in np.unique(labels):
        sel = labels == c
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        color, marker = class_style(int(c))
        ax.scatter(coords[sel, 0], coords[sel, 1], s=s, color=color, marker=marker, label=name,
                   alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for sp in ax.spines.values():
        sp.set_visible(True)
        sp.set_color("0.75")
    if legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.8, handletextpad=0.2,
                  borderaxespad=0.2, fontsize=7)


EMBEDDING_CAPTION = ("first two principal components of the L2-normalised pooled backbone features\n"
                     "of {n} fixed test images (PCA per model; axes not comparable across panels)")


def load_embedding(run_dir: PathLike) -> tuple[np.ndarray, np.ndarray]:
    p = Path(run_dir) / runs.EMBEDDINGS
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: training writes it at the end of a run (notebook 01_train)")
    with np.load(p) as z:
        if "coords2d" not in z or "labels" not in z:
            raise KeyError(f"{p} lacks 'coords2d' or 'labels' (has {', '.join(z.files)})")
        return z["coords2d"], z["labels"]


def plot_embedding(run_dir: PathLike) -> Figure:
    """2-D projection of the test features of one run (``embeddings.npz``), coloured by class."""
    coords, labels = load_embedding(run_dir)
    names = class_names_for_run(run_dir, int(np.max(labels)) + 1 if len(labels) else 0, load_data=True)
    cfg = _read_json(Path(run_dir) / runs.CONFIG)
    with style():
        fig, axes = new_figure(1, 1, figsize=(4.6, 3.6))
        ax = axes[0, 0]
        draw_embedding(ax, coords, labels, names, s=4.0 if len(labels) > 400 else 12.0)
        ax.set_title(f"{dataset_label(cfg.get('dataset', '?'))}, "
                     f"{objective_label(cfg.get('objective', '?'))}, seed {cfg.get('seed', '?')}\n"
                     f"{EMBEDDING_CAPTION.format(n=len(labels))}", fontsize=8)
    return fig


def load_attribution_npz(path: PathLike) -> dict[str, np.ndarray]:
    """Arrays of an ``attributions/<method>.npz`` file (maps, indices, targets, preds, labels)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def attribution_options(path: PathLike) -> dict:
    """The ``options`` record of an ``attributions/<method>.npz`` file (method options, target kind, ...)."""
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["options"])) if "options" in z.files else {}


def available_methods(run_dir: PathLike, folder: str = "attributions") -> list[str]:
    return ordered_methods(p.stem for p in (Path(run_dir) / folder).glob("*.npz"))


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
    cfg = _read_json(run_dir / runs.CONFIG)
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


def _boxes(ax, groups: list[np.ndarray], positions: Sequence[float], colors: Sequence[str],
           width: float) -> None:
    """Box plots without fliers clutter: median line black, box filled in the group's colour."""
    keep = [(g, p, c) for g, p, c in zip(groups, positions, colors) if len(g)]
    if not keep:
        return
    bp = ax.boxplot([g for g, _, _ in keep], positions=[p for _, p, _ in keep], widths=width,
                    patch_artist=True, showfliers=True, manage_ticks=False,
                    flierprops=dict(marker=".", markersize=2, alpha=0.4),
                    medianprops=dict(color="black", lw=1))
    for patch, (_, _, c) in zip(bp["boxes"], keep):
        patch.set_facecolor(c)
        patch.set_alpha(0.75)
        patch.set_edgecolor("0.2")


def plot_metric_summary(df: pd.DataFrame) -> Figure:
    """One panel per metric, one box per attribution method, for one run's ``results.csv``
    (correctly classified samples only)."""
    need = {"method", "metric", "value", "correct"}
    if missing := need - set(df.columns):
        raise KeyError(f"results table lacks columns {sorted(missing)}: expected the long format of results.csv")
    d = df[df["correct"].astype(bool)]
    if d.empty:
        raise ValueError("no correctly classified sample in the results table: nothing to summarise")
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
            _boxes(ax, groups, range(len(methods)), [OKABE_ITO[3 + j % 5] for j in range(len(methods))], 0.6)
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels([method_label(m) for m in methods], rotation=20 if len(methods) > 2 else 0)
            ax.set_title(metric_label(metric, arrow=True))
        runs_ = df["run_id"].unique() if "run_id" in df else []
        n_corr = d["sample_index"].nunique() if "sample_index" in d else len(d)
        fig.suptitle(f"{runs_[0] if len(runs_) == 1 else 'results'}: {n_corr} correctly classified samples")
    return fig


# ----------------------------------------------------------------------------- study figures

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


def stars(p: float) -> str:
    """Significance mark: *** p<0.001, ** p<0.01, * p<0.05, 'ns' otherwise."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 5e-2 else "ns"


def _bracket_levels(spans: list[tuple[float, float]]) -> list[int]:
    """Stack brackets: shortest first, each on the lowest level where it overlaps no other."""
    order = sorted(range(len(spans)), key=lambda k: (spans[k][1] - spans[k][0], spans[k][0]))
    levels: list[list[tuple[float, float]]] = []
    out = [0] * len(spans)
    for k in order:
        x0, x1 = spans[k]
        for lv, taken in enumerate(levels):
            if all(x1 < a - 1e-9 or x0 > b + 1e-9 for a, b in taken):
                taken.append((x0, x1))
                out[k] = lv
                break
        else:
            levels.append([(x0, x1)])
            out[k] = len(levels) - 1
    return out


def wilson_interval(hits: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (nan, nan) for n = 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _hit_rates(ax, groups: list[np.ndarray], positions: Sequence[float], colors: Sequence[str]) -> tuple[float, float]:
    """Per group: the share of ones as a dot with its 95 % Wilson interval; returns the y range drawn."""
    lo, hi = np.inf, -np.inf
    for g, x, c in zip(groups, positions, colors):
        if not len(g):
            continue
        rate = float(np.mean(g))
        low, high = wilson_interval(float(np.sum(g)), len(g))
        ax.errorbar([x], [rate], yerr=[[rate - low], [high - rate]], fmt="o", color=c, ms=5, capsize=3,
                    elinewidth=1.2, markeredgecolor="0.2")
        lo, hi = min(lo, low), max(hi, high)
    return lo, hi


def _trim_value_axis(ax, lo: float, hi: float, bounds: tuple[Optional[float], Optional[float]],
                     top: float) -> None:
    """Y axis of a metric panel: ticks and spine only over the values shown (never past the
    metric's possible range); the axes extend to ``top`` to leave room for brackets above."""
    b_lo = -np.inf if bounds[0] is None else bounds[0]
    b_hi = np.inf if bounds[1] is None else bounds[1]
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    lo_v, hi_v = max(lo - 0.04 * span, b_lo), min(hi + 0.04 * span, b_hi)
    ticks = [t for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo_v, hi_v) if lo_v - 1e-9 <= t <= hi_v + 1e-9]
    ax.set_yticks(ticks)
    ax.spines["left"].set_bounds(lo_v, hi_v)
    ax.set_ylim(lo_v - 0.02 * span, max(top, hi_v + 0.02 * span))


def metric_distributions(df: pd.DataFrame, significance: Optional[pd.DataFrame] = None,
                         p_column: str = "p_holm", ncols: int = 4) -> Figure:
    """One panel per dataset x metric (rows of at most ``ncols`` panels, each dataset starting
    a new row, named on the left); in each panel one group per attribution method and one
    mark per objective, over the correctly classified samples pooled over seeds: a box plot
    of the per-sample values, or for a binary metric (pointing game) the hit rate with its
    95 % Wilson interval. The value axis covers only the values shown, within the metric's
    possible range; brackets above a group mark the paired tests of ``significance``
    (``p_column``; stars as in :func:`stars`, ``ns`` = not significant)."""
    from .metrics import METRICS
    d = df[df["correct"].astype(bool)] if "correct" in df else df
    d = d.dropna(subset=["value"])
    datasets = sorted(d["dataset"].unique())
    panels = [(ds, m) for ds in datasets for m in ordered_metrics(d.loc[d["dataset"] == ds, "metric"].unique())]
    if not panels:
        raise ValueError("no metric value of a correctly classified sample to plot")
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
                spec = METRICS.get(metric)
                binary = bool(spec and spec.binary)
                binary_any |= binary
                sub = d[(d["dataset"] == ds) & (d["metric"] == metric)]
                ax.set_title(metric_label(metric, arrow=True) + (" (hit rate)" if binary else ""))
                if c == 0:
                    ax.set_ylabel(dataset_label(ds), fontweight="bold")
                methods = ordered_methods(sub["method"].unique())
                lo, hi = np.inf, -np.inf
                positions = {}
                for g, meth in enumerate(methods):
                    pos = {o: g + (j - (len(objectives) - 1) / 2) * width for j, o in enumerate(objectives)}
                    positions[meth] = pos
                    groups = [sub.loc[(sub["method"] == meth) & (sub["objective"] == o), "value"]
                              .to_numpy(float) for o in objectives]
                    colors = [objective_color(o) for o in objectives]
                    if binary:
                        glo, ghi = _hit_rates(ax, groups, [pos[o] for o in objectives], colors)
                    else:
                        _boxes(ax, groups, [pos[o] for o in objectives], colors, width * 0.85)
                        vals = np.concatenate([g for g in groups if len(g)]) if any(len(g) for g in groups) else []
                        glo, ghi = (float(np.min(vals)), float(np.max(vals))) if len(vals) else (np.inf, -np.inf)
                    lo, hi = min(lo, glo), max(hi, ghi)
                if not np.isfinite(lo):
                    _note(ax, "no values")
                    continue
                span = (hi - lo) or max(abs(hi), 1.0) * 0.1
                top = hi
                for meth in methods if significance is not None and not significance.empty else []:
                    pos = positions[meth]
                    sig = significance[(significance["dataset"] == ds) & (significance["method"] == meth)
                                       & (significance["metric"] == metric)
                                       & significance["objective_a"].isin(pos) & significance["objective_b"].isin(pos)]
                    marks, spans = [], []
                    for _, row_ in sig.iterrows():
                        p = row_[p_column] if p_column in row_ and pd.notna(row_[p_column]) else row_.get("p")
                        if stars(p):
                            marks.append(stars(p))
                            spans.append(tuple(sorted((pos[row_["objective_a"]], pos[row_["objective_b"]]))))
                    for mark, (x0, x1), lv in zip(marks, spans, _bracket_levels(spans)):
                        y = hi + span * (0.07 + 0.085 * lv)
                        ax.plot([x0, x0, x1, x1], [y - span * 0.02, y, y, y - span * 0.02], color="0.25", lw=0.7)
                        ax.text((x0 + x1) / 2, y, mark, ha="center", va="bottom", fontsize=6, color="0.15")
                        top = max(top, y + span * 0.075)
                _trim_value_axis(ax, lo, hi, spec.bounds if spec else (None, None), top)
                ax.set_xticks(range(len(methods)))
                ax.set_xticklabels([method_label(m) for m in methods])
                ax.set_xlim(-0.6, len(methods) - 0.4)
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


def pixel_flipping_curves(curves: Mapping[tuple[str, str, str], np.ndarray]) -> Figure:
    """Rows = datasets, columns = methods; per objective the mean pixel-flipping curve (over
    seeds of the per-seed mean curve of correctly classified samples) and a band of +-1 std
    across seeds (no band with one seed). ``curves[(dataset, method, objective)]`` is
    ``[n_seeds, S + 1]`` of per-seed mean curves whose column 0 is the probability on the
    unperturbed image (x = 0; NaN where it was not stored) and column s the probability
    after step s (x = s / S)."""
    if not curves:
        raise ValueError("no pixel-flipping curve to plot")
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
                    _note(ax, "no curves")
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
        raise ValueError("no embedding to plot")
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
                    _note(ax, "no embedding")
                else:
                    coords, labels, names = items[(ds, o)]
                    draw_embedding(ax, coords, labels, names, legend=(c == len(objectives) - 1),
                                   s=4.0 if len(labels) > 400 else 10.0)
                if r == 0:
                    ax.set_title(objective_label(o), color=objective_color(o), fontweight="bold")
                if c == 0:
                    ax.set_ylabel(dataset_label(ds), fontweight="bold")
    return fig
