"""Tests of xai_utils.analysis.report: every table and figure from a fake results tree."""
from __future__ import annotations

import json
import traceback
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from xai_utils.settings import RunConfig

METRICS_FAKE = ("pixel_flipping", "continuity", "complexity", "contrastivity", "sparseness",
                "pointing_game", "attribution_localisation")
OFFSET = {"ce": 0.0, "scl": -0.08, "tl": 0.04}


def write_fake_run(run_dir: Path, dataset: str = "shapes", objective: str = "ce", seed: int = 0,
                   n: int = 12, methods=("gradcam", "eigencam"), metrics=METRICS_FAKE, steps: int = 16,
                   size: int = 32, curves: bool = True, embeddings: bool = True) -> Path:
    """Write every file of a finished run (seeded random values) into ``run_dir``.

    Sample ``i`` is image ``i`` of the dataset's eval split, so with ``dataset='shapes'`` the
    figures get real images."""
    rng = np.random.default_rng(zlib.crc32(f"{dataset}/{objective}/{seed}".encode()))
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(dataset=dataset, objective=objective, seed=seed, epochs=3, eval_samples=n,
                    methods=list(methods), metrics=list(metrics))
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict()))
    lines = [{"epoch": e, "loss": 2.0 / e, "lr": 0.1, "seconds": 1.0} for e in (1, 2, 3)]
    if objective == "ce":
        for e, line in enumerate(lines):
            line["train_acc"] = 30.0 + 20.0 * e                   # percent, as train.py logs it
    lines.insert(2, {"event": "resumed", "from_epoch": 2})
    if objective != "ce":
        lines.append({"stage": "probe", "epochs": 100, "loss": 0.5, "train_acc": 80.0, "seconds": 0.1})
    (run_dir / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    acc = 90.0 + 2 * rng.standard_normal()
    (run_dir / "train_summary.json").write_text(json.dumps({"test_accuracy": acc, "wall_time_s": 5.0}))
    indices = np.arange(n, dtype=np.int64)
    if dataset == "shapes":                                    # the real labels of those images
        from xai_utils.study.data import load_dataset
        labels = load_dataset("shapes", "test").labels[:n].numpy().astype(np.int64)
    else:
        labels = rng.integers(0, 10, n)
    preds = labels.copy()
    wrong = rng.random(n) < 0.2
    preds[wrong] = (labels[wrong] + 1) % 10
    feats = rng.standard_normal((n, 8)).astype(np.float32)
    if embeddings:
        np.savez(run_dir / "embeddings.npz", features=feats, labels=labels, indices=indices,
                 coords2d=feats[:, :2] + labels[:, None])
    (run_dir / "attributions").mkdir(exist_ok=True)
    if curves:
        (run_dir / "curves").mkdir(exist_ok=True)
    for m in methods:
        maps = rng.random((n, 1, size, size)).astype(np.float32)
        np.savez(run_dir / "attributions" / f"{m}.npz", maps=maps, targets=labels, preds=preds,
                 labels=labels, indices=indices, options=json.dumps({}))
        if curves:
            c = np.sort(rng.random((n, steps)).astype(np.float32), axis=1)[:, ::-1]
            np.savez(run_dir / "curves" / f"{m}.npz", curves=c, indices=indices)
    rows = []
    for m in methods:
        for metric in metrics:
            vals = 0.5 + OFFSET[objective] + 0.1 * rng.standard_normal(n)
            for i in range(n):
                rows.append(dict(run_id=cfg.run_id, dataset=dataset, objective=objective, seed=seed,
                                 sample_index=int(indices[i]), true=int(labels[i]), pred=int(preds[i]),
                                 correct=bool(labels[i] == preds[i]), method=m, metric=metric,
                                 value=float(vals[i])))
    pd.DataFrame(rows).to_csv(run_dir / "results.csv", index=False)
    return run_dir


def write_fake_study(root: Path, profile: str = "smoke", datasets=("shapes",), objectives=("ce", "scl", "tl"),
                     seeds=(0, 1), **kw) -> Path:
    for d in datasets:
        for o in objectives:
            for s in seeds:
                write_fake_run(root / profile / d / o / f"seed{s}", d, o, s, **kw)
    return root


# ----------------------------------------------------------------------------- tests

import re  # noqa: E402

import pytest  # noqa: E402
from scipy import stats as sps  # noqa: E402

from xai_utils.analysis import report, study_figures, tables  # noqa: E402

TABLES = ("table_accuracy", "table_attribution_metrics", "table_significance", "paper_vs_reproduced")
FIGURES = ("fig_saliency_grid", "fig_metric_distributions", "fig_pixel_flipping_curves", "fig_embeddings")
LOWER = {"pixel_flipping", "complexity", "contrastivity"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    write_fake_study(root, "smoke", n=16)
    out = root.parent / "figures_out"
    written = report.build_all("smoke", results_root=root, output_dir=out)
    return root, out, written


def _raw(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(p) for p in sorted(root.glob("smoke/*/*/seed*/results.csv"))], ignore_index=True)


def test_every_output_exists(study):
    root, out, written = study
    for t in TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / f"{t}.{ext}").is_file() and (out / f"{t}.{ext}").stat().st_size > 100, f"{t}.{ext}"
    for f in FIGURES:
        for ext in ("pdf", "png"):
            assert (out / f"{f}.{ext}").is_file() and (out / f"{f}.{ext}").stat().st_size > 2000, f"{f}.{ext}"
    assert set(written) >= {out / f"{t}.md" for t in TABLES}
    assert "Nothing was skipped" in (out / "report_notes.md").read_text()


def test_latex_is_booktabs_with_bold_best(study):
    _, out, _ = study
    for t in TABLES:
        tex = (out / f"{t}.tex").read_text()
        assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule"), t
        assert r"\begin{tabular}" in tex and r"\end{table}" in tex and tex.count(r"\\") >= 2, t
    tex = (out / "table_attribution_metrics.tex").read_text()
    assert re.search(r"\\textbf\{\d+\.\d{3} \$\\pm\$ \d+\.\d{3}\}", tex)
    assert "±" not in tex and "–" not in tex                       # unicode translated for LaTeX


def test_metric_table_values_equal_direct_computation(study):
    """Per-seed means over correct samples, then mean / std (ddof 1) over the two seeds,
    computed here with a literal loop, equal the CSV and the Markdown cells; the bold cell
    is the best objective given the metric's direction."""
    root, out, _ = study
    raw = _raw(root)
    csv = pd.read_csv(out / "table_attribution_metrics.csv")
    md = (out / "table_attribution_metrics.md").read_text().splitlines()
    checked = 0
    for method, metric in (("gradcam", "pixel_flipping"), ("eigencam", "continuity"), ("gradcam", "pointing_game")):
        row = csv[(csv["method"] == method) & (csv["metric"] == metric) & (csv["dataset"] == "shapes")].iloc[0]
        means = {}
        for obj in ("ce", "scl", "tl"):
            per_seed = []
            for seed in (0, 1):
                vals = [r.value for r in raw.itertuples() if r.objective == obj and r.seed == seed
                        and r.method == method and r.metric == metric and bool(r.correct)]
                per_seed.append(sum(vals) / len(vals))
            m = (per_seed[0] + per_seed[1]) / 2
            sd = abs(per_seed[0] - per_seed[1]) / np.sqrt(2)
            assert row[f"{obj}_mean"] == pytest.approx(m, abs=1e-12)
            assert row[f"{obj}_std"] == pytest.approx(sd, abs=1e-12)
            means[obj] = m
        best = (min if metric in LOWER else max)(means, key=means.get)
        label = {"pixel_flipping": "Pixel-flipping AUC", "continuity": "Continuity (SSIM)",
                 "pointing_game": "Pointing game"}[metric]
        mlabel = {"gradcam": "Grad-CAM", "eigencam": "Eigen-CAM"}[method]
        line = next(l for l in md if l.startswith(f"| {mlabel} |") and f"| {label}" in l)
        cells = [c.strip() for c in line.strip("|").split("|")]
        for k, obj in enumerate(("ce", "scl", "tl")):
            cell = cells[4 + k]
            text = f"{row[f'{obj}_mean']:.3f} ± {row[f'{obj}_std']:.3f}"
            assert cell == (f"**{text}**" if obj == best else text)
        checked += 1
    assert checked == 3


def test_accuracy_table_equals_summaries(study):
    root, out, _ = study
    csv = pd.read_csv(out / "table_accuracy.csv").iloc[0]
    for obj in ("ce", "scl", "tl"):
        accs = [json.loads((root / "smoke" / "shapes" / obj / f"seed{s}" / "train_summary.json").read_text())
                ["test_accuracy"] for s in (0, 1)]
        assert csv[f"{obj}_mean"] == pytest.approx(np.mean(accs))
        assert csv[f"{obj}_std"] == pytest.approx(np.std(accs, ddof=1))
    md = (out / "table_accuracy.md").read_text()
    assert f"{csv['ce_mean']:.2f} ± {csv['ce_std']:.2f}" in md


def test_significance_table_matches_scipy(study):
    """One comparison recomputed by hand: pairs (seed, image) restricted to images correct for
    all three models of that seed, each image averaged over its valid seeds, then ttest_rel."""
    root, out, _ = study
    raw = _raw(root)
    sig = pd.read_csv(out / "table_significance.csv")
    r = sig[(sig["method"] == "gradcam") & (sig["metric"] == "complexity") & (sig["objective_a"] == "ce")
            & (sig["objective_b"] == "scl")].iloc[0]
    sub = raw[(raw["method"] == "gradcam") & (raw["metric"] == "complexity")]
    a_by, b_by = {}, {}
    for seed in (0, 1):
        s = sub[sub["seed"] == seed]
        ok = s.groupby("sample_index")["correct"].all()
        for i in ok[ok].index:
            a = s[(s["objective"] == "ce") & (s["sample_index"] == i)]["value"].item()
            b = s[(s["objective"] == "scl") & (s["sample_index"] == i)]["value"].item()
            a_by.setdefault(i, []).append(a)
            b_by.setdefault(i, []).append(b)
    keys = sorted(a_by)
    x = np.array([np.mean(a_by[k]) for k in keys])
    y = np.array([np.mean(b_by[k]) for k in keys])
    ref = sps.ttest_rel(x, y)
    assert r["n_pairs"] == len(keys)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert r["d_z"] == pytest.approx((x - y).mean() / (x - y).std(ddof=1), rel=1e-9)
    assert r["d_pooled"] == pytest.approx((x.mean() - y.mean()) / np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2),
                                          rel=1e-9)
    md = (out / "table_significance.md").read_text()
    assert f"| {ref.statistic:.2f} |" in md


def _summary(ds, metric, ce, scl, tl, method="gradcam"):
    return pd.DataFrame({"dataset": ds, "method": method, "metric": metric, "objective": ["ce", "scl", "tl"],
                         "mean": [ce, scl, tl], "std": np.nan, "n_seeds": 1})


def test_paper_vs_reproduced_ordering_logic():
    # paper CIFAR-10 Grad-CAM pixel flipping: CE 0.37, SCL 0.27, TL 0.32 (SCL < TL < CE)
    same = tables.paper_vs_reproduced(_summary("fashion_mnist", "pixel_flipping", 0.5, 0.1, 0.3), "quick").iloc[0]
    assert same["paper_dataset"] == "cifar10" and bool(same["stand_in"]) and "stand-in" in same["note"]
    assert same["paper_order"] == "SCL < TL < CE" and same["reproduced_order"] == "SCL < TL < CE"
    assert same["ordering_agrees"] == 1.0 and same["pairs_agreeing"] == "3/3"
    assert same["diff_ce"] == pytest.approx(0.5 - 0.37) and same["paper_scl"] == pytest.approx(0.27)
    swapped = tables.paper_vs_reproduced(_summary("fashion_mnist", "pixel_flipping", 0.5, 0.3, 0.1), "quick").iloc[0]
    assert swapped["ordering_agrees"] == 0.0 and swapped["pairs_agreeing"] == "2/3"   # SCL/TL swapped
    # paper continuity CIFAR-10: SCL = TL (0.57) > CE: the tied pair is not judged
    tie = tables.paper_vs_reproduced(_summary("cifar10", "continuity", 0.1, 0.3, 0.2), "cifar10").iloc[0]
    assert not bool(tie["stand_in"]) and tie["paper_order"] == "SCL = TL > CE"
    assert tie["ordering_agrees"] == 1.0 and tie["pairs_agreeing"] == "2/2"
    # shapes stands in for ImageNet-S50 coherence; a dataset with no paper counterpart is left out
    coh = tables.paper_vs_reproduced(pd.concat([_summary("shapes", "pointing_game", 0.8, 0.9, 0.5),
                                                _summary("shapes", "made_up_metric", 1, 2, 3)]), "quick")
    assert list(coh["metric"]) == ["pointing_game"] and coh["paper_dataset"].item() == "imagenet_s50"
    assert coh["ordering_agrees"].item() == 1.0


def test_paper_values_file():
    pv = tables.load_paper_values()
    assert len(pv) == 39 and set(pv["objective"]) == {"ce", "scl", "tl"}
    acc = pv[(pv["metric"] == "test_accuracy") & (pv["paper_dataset"] == "imagenet_s50")].set_index("objective")
    assert acc.loc["tl", "mean"] == pytest.approx(82.55) and acc.loc["tl", "std"] == pytest.approx(0.64)
    eig = pv[(pv["method"] == "eigencam")]
    assert eig["std"].isna().all() and set(eig["metric"]) == {"continuity"}


def test_missing_parts_are_skipped_not_fatal(tmp_path):
    """One seed, one method, no coherence metrics, no curves and no embeddings."""
    root = tmp_path / "results"
    write_fake_study(root, "tiny", seeds=(0,), methods=("gradcam",), curves=False, embeddings=False,
                     metrics=("pixel_flipping", "complexity"), n=10)
    out = tmp_path / "figs"
    report.build_all("tiny", results_root=root, output_dir=out)
    for t in TABLES:
        assert (out / f"{t}.md").is_file()
    for f in ("fig_saliency_grid", "fig_metric_distributions"):
        assert (out / f"{f}.png").is_file()
    for f in ("fig_pixel_flipping_curves", "fig_embeddings"):
        assert not (out / f"{f}.png").exists()
    notes = (out / "report_notes.md").read_text()
    assert "- fig_pixel_flipping_curves skipped: no curves/<method>.npz in any run" in notes
    assert "- fig_embeddings skipped: no embeddings.npz in any run" in notes
    md = (out / "table_attribution_metrics.md").read_text()
    assert "± –" in md                                              # one seed: no std
    assert "Runs covered: 3 of 3 runs (Shapes × CE, SCL, TL × seed 0)." in notes
    # nothing at all: a clear error, and no folder written
    with pytest.raises(FileNotFoundError, match="nothing to report"):
        report.build_all("nothing", results_root=root, output_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_bug_in_a_table_fails_the_report_with_its_traceback(tmp_path, monkeypatch):
    """Only a missing input is skipped: any other error in a table or figure fails the report
    (and with it the figures stage), named on its traceback, and nothing says 'skipped'."""
    root = tmp_path / "results"
    write_fake_study(root, "bug", seeds=(0,), methods=("gradcam",), curves=False, embeddings=False,
                     metrics=("complexity",), n=6)

    def broken(inputs):
        return inputs.summaries["test_accuracy"] + "%"        # a TypeError, as a bug in table code would be

    parts = tuple(report.Part(p.name, broken) if p.name == "table_accuracy" else p for p in report.TABLE_PARTS)
    monkeypatch.setattr(report, "TABLE_PARTS", parts)
    with pytest.raises(TypeError) as e:
        report.build_all("bug", results_root=root, output_dir=tmp_path / "figs")
    text = "".join(traceback.format_exception(e.value))
    assert "in broken" in text and "while making table_accuracy of study 'bug'" in text
    assert not (tmp_path / "figs" / "report_notes.md").exists()


def test_metric_table_lists_only_measured_combinations(tmp_path):
    """Each dataset with its own metrics (as in the quick profile): no all-empty rows."""
    root = tmp_path / "results"
    for d, metrics in (("fashion_mnist", ("pixel_flipping",)), ("shapes", ("pointing_game", "complexity"))):
        for o in ("ce", "scl"):
            write_fake_run(root / "mix" / d / o / "seed0", d, o, 0, methods=("gradcam",),
                           metrics=metrics, n=8, curves=False, embeddings=False)
    results = pd.concat([pd.read_csv(p) for p in sorted(root.glob("mix/*/*/seed0/results.csv"))])
    t = tables.table_attribution_metrics(results)
    got = sorted(zip(t.data["dataset"], t.data["metric"]))
    assert got == [("fashion_mnist", "pixel_flipping"), ("shapes", "complexity"), ("shapes", "pointing_game")]


def test_formatting_helpers():
    assert tables.fmt_mean_std(0.12345, np.nan) == "0.123 ± –"
    assert tables.best_objectives({"ce": 0.1004, "scl": 0.1001, "tl": 0.2}, "lower") == {"ce", "scl"}  # tie at 3 dp
    assert tables.best_objectives({"ce": 0.1, "scl": 0.2}, None) == set()
    assert tables.latex_escape("a_b & 50% ± –") == r"a\_b \& 50\% $\pm$ --"


def test_select_images_prefers_images_correct_for_all():
    def z(idx, wrong):
        idx = np.asarray(idx)
        labels = np.zeros(len(idx), int)
        preds = np.array([1 if i in wrong else 0 for i in idx])
        return {"indices": idx, "labels": labels, "preds": preds}
    loaded = {("ce", "gradcam"): z([0, 1, 2, 3, 4], {0, 2}), ("scl", "gradcam"): z([4, 3, 2, 1, 0], {0}),
              ("tl", "gradcam"): z([0, 1, 2, 3], {1})}                      # TL lacks image 4
    assert study_figures.select_images(loaded, 1) == [(3, [])]                     # the only one right for all
    assert study_figures.select_images(loaded, 3) == [(3, []), (1, ["tl"]), (2, ["ce"])]
    assert [i for i, _ in study_figures.select_images(loaded, 10)] == [3, 1, 2, 0]


def test_a_partial_study_says_what_it_covers(tmp_path):
    """Expected runs without results are named in the notes, coverage.json, every table and
    every figure; runs outside the expected list are left out of the report."""
    root = tmp_path / "results"
    write_fake_study(root, "cov", seeds=(0, 1), methods=("gradcam",), curves=False, embeddings=False,
                     metrics=("complexity",), n=6)
    expected = [f"shapes/{o}/seed{s}" for o in ("ce", "scl", "tl") for s in (0, 2)]   # seed 2 missing, 1 extra
    out = tmp_path / "figs"
    report.build_all("cov", results_root=root, output_dir=out, runs_expected=expected)
    cov = json.loads((out / "coverage.json").read_text())
    assert cov["covered"] == ["shapes/ce/seed0", "shapes/scl/seed0", "shapes/tl/seed0"]
    assert cov["missing"] == ["shapes/ce/seed2", "shapes/scl/seed2", "shapes/tl/seed2"]
    line = "3 of 6 runs (Shapes × CE, SCL, TL × seed 0); missing: shapes/ce/seed2, shapes/scl/seed2, shapes/tl/seed2"
    assert line in (out / "report_notes.md").read_text()
    assert line in (out / "table_attribution_metrics.md").read_text()
    acc = pd.read_csv(out / "table_accuracy.csv")
    assert int(acc["ce_n_seeds"].iloc[0]) == 1                   # seed 1 is not part of this study


def test_runs_of_other_settings_are_left_out(tmp_path):
    """A run the pipeline reports as not evaluated with the current settings is left out even
    though its folder holds (older) results."""
    root = tmp_path / "results"
    write_fake_study(root, "old", seeds=(0, 1), methods=("gradcam",), curves=False, embeddings=False,
                     metrics=("complexity",), n=6)
    expected = [f"shapes/{o}/seed{s}" for o in ("ce", "scl", "tl") for s in (0, 1)]
    out = tmp_path / "figs"
    report.build_all("old", results_root=root, output_dir=out, runs_expected=expected,
                     runs_missing=["shapes/tl/seed1"])
    cov = json.loads((out / "coverage.json").read_text())
    assert cov["missing"] == ["shapes/tl/seed1"] and "shapes/tl/seed1" not in cov["covered"]
    t = pd.read_csv(out / "table_attribution_metrics.csv")
    assert (t["tl_n_seeds"] == 1).all() and (t["ce_n_seeds"] == 2).all()


@pytest.mark.parametrize("method, words", [("heldout", "held-out training images"),
                                           ("crossfit", "two-fold cross-fitting on the evaluation images")])
def test_the_accuracy_table_says_where_the_temperature_was_fitted(method, words):
    summaries = pd.DataFrame({"run_id": ["d/ce/seed0", "d/scl/seed0"], "dataset": "shapes", "objective": ["ce", "scl"],
                              "seed": 0, "test_accuracy": [90.0, 80.0], "temperature": [1.5, 0.8],
                              "ece_before": [0.1, 0.2], "ece_after": [0.05, 0.04], "calibration": method})
    caption = tables.table_accuracy(summaries).caption
    assert words in caption
    other = "two-fold" if method == "heldout" else "held-out"
    assert other not in caption


def test_the_studys_nan_pairing_reaches_the_paired_tests(tmp_path):
    """``nan_pairing`` (protocol -> pairing) reaches the significance table: a NaN of one CE image
    is dropped as a pair by default, and per model (the authors' way, which misaligns the rest)
    when the study says so; without a setting each protocol keeps its own."""
    root = tmp_path / "results"
    write_fake_study(root, "tiny", objectives=("ce", "scl"), seeds=(0,), methods=("gradcam",),
                     metrics=("complexity",), curves=False, embeddings=False, n=12)
    path = root / "tiny" / "shapes" / "ce" / "seed0" / "results.csv"
    df, other = pd.read_csv(path), pd.read_csv(root / "tiny" / "shapes" / "scl" / "seed0" / "results.csv")
    both = sorted(set(df.loc[df["correct"], "sample_index"]) & set(other.loc[other["correct"], "sample_index"]))
    df.loc[df["sample_index"] == both[0], "value"] = np.nan       # an image both models classify correctly
    df.to_csv(path, index=False)
    made = {}
    for name, pairing in (("own", None), ("pairs", {"corrected": "pairs"}), ("per_model", {"corrected": "per_model"})):
        report.build_all("tiny", results_root=root, output_dir=tmp_path / name, nan_pairing=pairing)
        made[name] = pd.read_csv(tmp_path / name / "table_significance.csv")
    pd.testing.assert_frame_equal(made["own"], made["pairs"])
    assert made["pairs"]["mean_diff"].iloc[0] != pytest.approx(made["per_model"]["mean_diff"].iloc[0])
