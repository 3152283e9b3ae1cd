"""Tests of xai_utils.analysis.plotting: each figure has the expected axes, lines and labels on a fake run."""
from __future__ import annotations

import json

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from test_report import write_fake_run
from xai_utils.ops import metrics as M
from xai_utils.analysis import names, plotting, run_figures, saved, stats, study_figures
from xai_utils.study.data import SHAPE_CLASSES, load_dataset


@pytest.fixture(scope="module")
def runs_(tmp_path_factory):
    root = tmp_path_factory.mktemp("plots")
    return {o: write_fake_run(root / o, "shapes", o, 0, n=10) for o in ("ce", "scl", "tl")}


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]


def test_training_curves_ce(runs_):
    fig = run_figures.plot_training_curves(runs_["ce"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax_loss, ax_acc = fig.axes
    loss = [l for l in ax_loss.lines if l.get_label() == "train loss"][0]
    assert list(loss.get_xdata()) == [1, 2, 3]
    assert list(loss.get_ydata()) == pytest.approx([2.0, 1.0, 2.0 / 3])
    acc = [l for l in ax_acc.lines if l.get_label() == "train accuracy"][0]
    assert list(acc.get_ydata()) == pytest.approx([30.0, 50.0, 70.0])
    test_acc = json.loads((runs_["ce"] / "train_summary.json").read_text())["test_accuracy"]
    assert any(l.get_label().startswith("test") and l.get_ydata()[0] == pytest.approx(test_acc) for l in ax_acc.lines)
    # the resumed event is a vertical line at epoch 2 in both panels
    for ax in (ax_loss, ax_acc):
        assert any(np.allclose(l.get_xdata(), 2.0) and len(set(l.get_xdata())) == 1 for l in ax.lines)
    assert ax_loss.get_xlabel() == "epoch" and ax_acc.get_ylabel() == "accuracy (%)"


def test_training_curves_probe_and_duplicates(runs_, tmp_path):
    fig = run_figures.plot_training_curves(runs_["scl"])
    ax_acc = fig.axes[1]
    probe = [l for l in ax_acc.lines if l.get_label().startswith("linear probe")]
    assert len(probe) == 1 and probe[0].get_ydata()[0] == pytest.approx(80.0)
    assert not [l for l in ax_acc.lines if l.get_label() == "train accuracy"]
    # a log with an epoch written twice (before and after a resume): the last entry wins
    rd = tmp_path / "dup"
    rd.mkdir()
    lines = [{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 9.0}, {"event": "resumed", "from_epoch": 1},
             {"epoch": 2, "loss": 2.0}, {"stage": "probe", "loss": 0.1}]
    (rd / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    df, other = run_figures.read_train_log(rd)
    assert list(df["loss"]) == [3.0, 2.0] and len(other) == 2
    with pytest.raises(FileNotFoundError, match="train the run first"):
        run_figures.plot_training_curves(tmp_path / "nothing")


def test_embedding(runs_):
    fig = run_figures.plot_embedding(runs_["tl"])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    with np.load(runs_["tl"] / "embeddings.npz") as z:
        labels, coords = z["labels"], z["coords2d"]
    classes = np.unique(labels)
    assert len(ax.collections) == len(classes)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [SHAPE_CLASSES[c] for c in classes]
    first = ax.collections[0].get_offsets()
    assert np.allclose(np.sort(first[:, 0]), np.sort(coords[labels == classes[0], 0]))


def test_attribution_grid(runs_):
    n = 4
    fig = run_figures.plot_attribution_grid(runs_["ce"], n=n)
    assert len(fig.axes) == 2                       # the mosaic and its colour bar
    img = [a for a in fig.axes[0].get_children() if isinstance(a, AxesImage)][0].get_array()
    gap = 2                                         # 32 px cells, gap = 32 // 16
    assert img.shape == (n * 32 + (n - 1) * gap, 3 * 32 + 2 * gap, 3)
    texts = _texts(fig)
    assert {"input", "Grad-CAM", "Eigen-CAM"} <= set(texts)
    ds = load_dataset("shapes", "test")
    assert sum(t.startswith("#") for t in texts) == n
    assert any(SHAPE_CLASSES[int(ds.labels[0])] in t for t in texts)
    # the input cell of row 1 is the dataset's image 1
    x0 = ds.images[1].permute(1, 2, 0).numpy() / 255.0
    assert np.allclose(img[32 + gap:64 + gap, :32], x0, atol=1e-6)
    # the Grad-CAM cell is the map alone in the colour bar's colour map: every pixel is the
    # inferno colour of its min-max scaled value, so the colour bar reads the cell exactly
    with np.load(runs_["ce"] / "attributions" / "gradcam.npz") as z:
        m = z["maps"][1, 0]
    scaled = (m - m.min()) / (m.max() - m.min())
    expected = mpl.colormaps["inferno"](scaled)[..., :3]
    assert np.allclose(img[32 + gap:64 + gap, 32 + gap:64 + gap], expected, atol=1e-6)
    cbar = fig.axes[1]
    assert cbar.get_ylim() == (0.0, 1.0) and "min-max" in cbar.get_ylabel()


def test_metric_summary(runs_):
    df = pd.read_csv(runs_["scl"] / "results.csv")
    fig = run_figures.plot_metric_summary(df)
    metrics = df["metric"].unique()
    assert len(fig.axes) == len(metrics)
    assert [ax.get_title() for ax in fig.axes][0] == "Pixel-flipping AUC ↓"
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Grad-CAM", "Eigen-CAM"]
    assert len(ax.patches) == 2
    # the median line of the Grad-CAM box is the median over correct samples only
    sel = df[(df["metric"] == "pixel_flipping") & (df["method"] == "gradcam") & df["correct"]]
    horizontal = [l.get_ydata()[0] for l in ax.lines if len(l.get_ydata()) == 2
                  and l.get_ydata()[0] == l.get_ydata()[1] and max(l.get_xdata()) < 0.5]   # Grad-CAM box at x=0
    assert any(y == pytest.approx(np.median(sel["value"])) for y in horizontal)
    all_gc = df[(df["metric"] == "pixel_flipping") & (df["method"] == "gradcam")]["value"]
    assert not any(y == pytest.approx(np.median(all_gc)) for y in horizontal)
    assert not (df["correct"]).all()                # the fake run does have wrong samples


def test_a_rehearsal_run_without_a_correct_image_is_summarised_over_every_image(runs_, tmp_path):
    """A near-chance rehearsal model may classify none of its few images correctly: with
    kept_images 'all' the evaluate notebook's summary keeps every image (and says so)."""
    df = pd.read_csv(runs_["scl"] / "results.csv").assign(correct=False, pred=lambda d: (d["true"] + 1) % 10)
    with pytest.raises(ValueError, match="kept_images: all"):
        run_figures.plot_metric_summary(df)
    (tmp_path / "config.json").write_text(json.dumps({"kept_images": "all"}))
    kept = saved.kept_images(df, tmp_path)
    assert kept["correct"].all() and saved.kept_images(df, runs_["scl"]).equals(df)   # the default keeps the correct
    fig = run_figures.plot_metric_summary(kept)
    assert f"{df['sample_index'].nunique()} samples, misclassified ones included" in fig._suptitle.get_text()
    assert len(stats.run_summary(kept)) == df.groupby(["method", "metric"]).ngroups


def test_metric_distributions_with_significance(runs_):
    df = pd.concat([pd.read_csv(rd / "results.csv") for rd in runs_.values()])
    sig = stats.compare_objectives(df)
    fig = study_figures.metric_distributions(df, sig)
    assert len(fig.axes) == df["metric"].nunique()
    for ax in fig.axes:
        metric = next(m for m in df["metric"].unique() if ax.get_title().startswith(names.metric_label(m)))
        if metric == "pointing_game":                # binary: hit rates with intervals, no boxes
            assert len(ax.patches) == 0 and "hit rate" in ax.get_title()
        else:
            assert len(ax.patches) == 2 * 3          # 2 methods x 3 objectives
        # the value axis never runs past what the metric can take (e.g. SSIM <= 1)
        lo, hi = M.METRICS[metric].bounds
        ticks = ax.get_yticks()
        assert (hi is None or ticks.max() <= hi + 1e-9) and (lo is None or ticks.min() >= lo - 1e-9)
        assert ax.spines["left"].get_bounds()[1] <= (hi if hi is not None else np.inf) + 1e-9
        # brackets are drawn inside the axes
        for t in ax.texts:
            assert ax.get_ylim()[0] <= t.get_position()[1] <= ax.get_ylim()[1]
    marks = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(marks) == len(sig) and set(marks) <= {"ns", "*", "**", "***"}
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CE", "SCL", "TL"]


def test_hit_rates_and_wilson_interval(runs_):
    """A binary metric is drawn as the share of hits of each objective with its 95 % Wilson
    interval, computed here from the textbook formula."""
    df = pd.concat([pd.read_csv(rd / "results.csv") for rd in runs_.values()])
    df = df[df["metric"] == "pointing_game"]
    fig = study_figures.metric_distributions(df)
    ax = fig.axes[0]
    d = df[df["correct"] & df["value"].notna()]
    for o in ("ce", "scl", "tl"):
        v = d[(d["objective"] == o) & (d["method"] == "gradcam")]["value"].to_numpy()
        k, n = v.sum(), len(v)
        z = 1.959964
        p = k / n
        centre = (p + z ** 2 / (2 * n)) / (1 + z ** 2 / n)
        half = z / (1 + z ** 2 / n) * np.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
        assert plotting.wilson_interval(k, n) == pytest.approx((max(0, centre - half), min(1, centre + half)))
        dots = [l for l in ax.lines if l.get_color() == names.objective_color(o) and len(l.get_ydata()) == 1]
        assert any(l.get_ydata()[0] == pytest.approx(p) for l in dots)


def test_pixel_flipping_curves():
    rng = np.random.default_rng(0)
    curves = {("shapes", m, o): rng.random((2, 8)) for m in ("gradcam", "eigencam") for o in ("tl", "ce", "scl")}
    fig = study_figures.pixel_flipping_curves(curves)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_title() == "Grad-CAM"
    assert [l.get_label() for l in ax.lines] == ["CE", "SCL", "TL"]        # fixed order
    assert np.allclose(ax.lines[0].get_ydata(), curves[("shapes", "gradcam", "ce")].mean(0))
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 3
    one = study_figures.pixel_flipping_curves({k: v[:1] for k, v in curves.items()})
    assert sum(isinstance(c, PolyCollection) for c in one.axes[0].collections) == 0   # one seed: no band


def test_embedding_grid_and_saliency_grid():
    rng = np.random.default_rng(0)
    items = {("shapes", o): (rng.random((20, 2)), np.arange(20) % 4, ["a", "b", "c", "d"]) for o in ("ce", "scl", "tl")}
    fig = study_figures.embedding_grid(items)
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == ["CE", "SCL", "TL"]
    assert all(len(ax.collections) == 4 for ax in fig.axes)
    images = [rng.integers(0, 255, (3, 32, 32), dtype=np.uint8), None]
    cols = [("ce", "gradcam", [rng.random((32, 32)), None]), ("scl", "gradcam", [rng.random((32, 32))] * 2)]
    fig = study_figures.saliency_grid(images, ["row a", "row b"], cols)
    texts = _texts(fig)
    assert {"input", "CE\nGrad-CAM", "SCL\nGrad-CAM", "row a", "row b"} <= set(texts)
    assert texts.count("n/a") == 2                  # missing image and missing map


def test_saved_figures_are_byte_identical_across_saves(tmp_path):
    """Same figure, same bytes: the committed figures/ diff only when results change."""
    import time
    fig, axes = plotting.new_figure(1, 1)
    axes[0, 0].plot([0, 1, 2], [1, 0, 2])
    first = plotting.save_figure(fig, tmp_path / "a" / "f")
    time.sleep(1.1)                                  # a creation date would now differ
    second = plotting.save_figure(fig, tmp_path / "b" / "f")
    assert [p.suffix for p in first] == [".pdf", ".png"]
    for p, q in zip(first, second):
        assert p.read_bytes() == q.read_bytes(), p.name
