"""The companion's figure style and the primitives every figure is drawn with.

One colour-blind-safe style (Okabe & Ito's colours, set in ``style.mplstyle`` beside this
file); figures built without ``pyplot`` (:func:`new_figure`), so nothing piles up in pyplot's
global state when many figures are made in a loop, and saved as PDF and PNG without a
creation date (:func:`save_figure`), so the same results give byte-identical files. The
figures themselves are :mod:`.run_figures` (one run) and :mod:`.study_figures` (a study).
"""
from __future__ import annotations

import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PathLike = Union[str, Path]
STYLE_PATH = Path(__file__).resolve().parent / "style.mplstyle"
# Okabe & Ito (2008) palette (objective colours live in the objective registry).
OKABE_ITO = ("#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
# Ten classes, each its own colour *and* marker (tab10 colours), so no two classes look alike.
CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
CLASS_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "*")
ATTRIBUTION_CMAP = "inferno"


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


def unit_scale(m: np.ndarray) -> np.ndarray:
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
    m = unit_scale(np.squeeze(np.asarray(amap)))
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


def note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            fontsize=8, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


LEGEND_CLASSES = 20          # more classes than this (ImageNet-S50's 50): no legend, a note instead


def draw_embedding(ax, coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = (),
                   legend: bool = True, s: float = 6.0) -> None:
    """Scatter of 2-D ``coords``, each class its own colour and marker (:func:`class_style`);
    the legend names the classes when there are at most :data:`LEGEND_CLASSES`."""
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
    shown = len(np.unique(labels))
    if legend and shown > LEGEND_CLASSES:
        ax.text(1.04, 0.5, f"{shown} classes:\ncolour and marker\nby class (pairs\nrepeat; no legend)",
                transform=ax.transAxes, ha="left", va="center", fontsize=7, color="0.35")
    elif legend:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.8, handletextpad=0.2,
                  borderaxespad=0.2, fontsize=7)


EMBEDDING_CAPTION = ("first two principal components of the L2-normalised pooled backbone features\n"
                     "of {n} fixed test images (PCA per model; axes not comparable across panels)")


def boxes(ax, groups: list[np.ndarray], positions: Sequence[float], colors: Sequence[str],
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


def stars(p: float) -> str:
    """Significance mark: *** p<0.001, ** p<0.01, * p<0.05, 'ns' otherwise."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 5e-2 else "ns"


def bracket_levels(spans: list[tuple[float, float]]) -> list[int]:
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
    """Wilson score interval of a binomial proportion (95 % by default); (nan, nan) for n = 0.
    It holds the proportion itself, also where rounding would put a bound a hair inside it (all
    hits or none)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = hits / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def hit_rates(ax, groups: list[np.ndarray], positions: Sequence[float], colors: Sequence[str]) -> tuple[float, float]:
    """Per group: the share of ones as a dot with its 95 % Wilson interval; returns the y range drawn."""
    lo, hi = np.inf, -np.inf
    for g, x, c in zip(groups, positions, colors):
        if not len(g):
            continue
        rate = float(np.sum(g)) / len(g)
        low, high = wilson_interval(float(np.sum(g)), len(g))
        ax.errorbar([x], [rate], yerr=[[rate - low], [high - rate]], fmt="o", color=c, ms=5, capsize=3,
                    elinewidth=1.2, markeredgecolor="0.2")
        lo, hi = min(lo, low), max(hi, high)
    return lo, hi


def trim_value_axis(ax, lo: float, hi: float, bounds: tuple[Optional[float], Optional[float]],
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
