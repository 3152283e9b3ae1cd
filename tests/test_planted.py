"""The planted datasets: Fashion-MNIST (Debian's files) and CIFAR-10 (stand-in files in its real
format) with a class-linked cue drawn in, checked pixel by pixel against a literal loop."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from xai_utils.analysis.ground_truth import table_ground_truth
from xai_utils.analysis.saved import study_results
from xai_utils.study.data import DATASETS, load_dataset, split_sizes
from xai_utils.study.data.generated import write_cifar10
from xai_utils.study.data.planted import CUE_SIZE, PLANTED_RATES, cue_colours, cue_layout, cue_patterns, planted_name


def _literal(base: torch.Tensor, labels: torch.Tensor, split: str, cue_rate: float, first: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``first`` planted images and masks of a split, drawn one image and one pixel at a time."""
    lay = cue_layout(split, labels, cue_rate, 10, base.shape[-1])
    pat, colours = cue_patterns(10).numpy(), cue_colours(10).numpy()
    images, masks = base[:first].numpy().copy(), np.zeros((first, 1, *base.shape[-2:]), dtype=bool)
    for i in range(first):
        t, l = int(lay.top[i]), int(lay.left[i])
        for r in range(CUE_SIZE):
            for c in range(CUE_SIZE):
                if lay.drawn[i]:
                    k = int(lay.cue_class[i])
                    images[i, :, t + r, l + c] = colours[k] if pat[k, r, c] else 0
                if lay.drawn[i] or split == "test_absent":
                    masks[i, 0, t + r, l + c] = True
    return images, masks


def test_patterns_and_colours_differ_by_class():
    p = cue_patterns(10)
    assert p.shape == (10, CUE_SIZE, CUE_SIZE) and p.dtype == torch.bool
    assert (p.flatten(1).sum(1) == CUE_SIZE * CUE_SIZE // 2).all()
    assert len({tuple(x.flatten().tolist()) for x in p}) == 10
    c = cue_colours(10)
    assert c.shape == (10, 3) and len({tuple(x.tolist()) for x in c}) == 10
    assert (c.max(1).values == 255).all() and (c.min(1).values == 0).all()      # saturated: never grey
    assert c[0].tolist() == [255, 0, 0] and c[5].tolist() == [0, 255, 255]      # red, and its opposite cyan


@pytest.mark.parametrize("split", ["test", "test_absent", "test_swapped"])
def test_the_test_splits_are_the_base_images_with_their_cue(split):
    name = planted_name("fashion_mnist", 1.0)
    base = load_dataset("fashion_mnist", "test")
    ds = load_dataset(name, split)
    assert ds.name == name and len(ds) == 10_000 and torch.equal(ds.labels, base.labels)
    images, masks = _literal(base.images, base.labels, split, 1.0, 300)
    np.testing.assert_array_equal(ds.images[:300].numpy(), images)
    np.testing.assert_array_equal(ds.masks[:300].numpy(), masks)
    assert (ds.masks.flatten(1).sum(1) == CUE_SIZE ** 2).all()          # every image: one square
    lay = cue_layout(split, ds.labels, 1.0, 10, 32)
    if split == "test":
        assert torch.equal(lay.cue_class, ds.labels)
    if split == "test_swapped":
        assert (lay.cue_class != ds.labels).all() and set(lay.cue_class.tolist()) == set(range(10))
    if split == "test_absent":
        assert torch.equal(ds.images, base.images)
    same = cue_layout("test", ds.labels, 1.0, 10, 32)                  # one place for all three
    assert torch.equal(lay.top, same.top) and torch.equal(lay.left, same.left)


def test_training_images_carry_their_cue_at_the_rate_and_higher_rates_add_to_lower():
    base = load_dataset("fashion_mnist", "train")
    cued = {}
    for rate in PLANTED_RATES:
        ds = load_dataset(planted_name("fashion_mnist", rate), "train")
        has = ds.masks.flatten(1).any(1)
        assert abs(float(has.float().mean()) - rate) < 0.01, rate       # 60,000 draws: sd 0.002
        assert torch.equal(ds.images[~has], base.images[~has])
        assert (ds.masks[has].flatten(1).sum(1) == CUE_SIZE ** 2).all()
        cued[rate] = set(torch.nonzero(has).flatten().tolist())
    rates = sorted(cued)
    assert all(cued[a] <= cued[b] for a, b in zip(rates, rates[1:]))
    images, masks = _literal(base.images, base.labels, "train", 0.5, 200)
    ds = load_dataset(planted_name("fashion_mnist", 0.5), "train")
    np.testing.assert_array_equal(ds.images[:200].numpy(), images)
    np.testing.assert_array_equal(ds.masks[:200].numpy(), masks)


def test_planted_cifar10_reads_the_cifar10_files(tmp_path):
    root = write_cifar10(tmp_path)
    name = planted_name("cifar10", 0.75)
    assert DATASETS[name].label == "Planted CIFAR-10 (cue 75%)"
    sizes = split_sizes(name, root)
    assert sizes == {"train": sizes["train"], "test": sizes["test"], "test_absent": sizes["test"],
                     "test_swapped": sizes["test"]}
    base = load_dataset("cifar10", "test", root)
    ds = load_dataset(name, "test_swapped", root)
    images, masks = _literal(base.images, base.labels, "test_swapped", 0.75, len(base))
    np.testing.assert_array_equal(ds.images.numpy(), images)
    np.testing.assert_array_equal(ds.masks.numpy(), masks)


def test_a_planted_run_writes_its_ground_truth_and_the_random_maps_mass_is_the_cue_area(tmp_path):
    """A CE run trained with the cue on every image: ground_truth.csv equals the logits of the
    model on the three test splits taken one image at a time; the random control's share of
    attribution mass on the cue is the cue's share of the image."""
    from xai_utils import pipeline
    from xai_utils.stages.attribute import load_attributions
    from xai_utils.stages.model_io import load_model
    from xai_utils.settings import layout
    name = planted_name("fashion_mnist", 1.0)
    prof = tmp_path / "planted.yaml"
    prof.write_text(f"""
datasets: [{name}]
objectives: [ce]
seeds: [0]
protocols: [corrected]
results_root: {tmp_path / 'results'}
figures_root: {tmp_path / 'figures'}
settings:
  default: {{arch: resnet18, widths: [8, 8, 16, 16], epochs: 2, train_subset: 3000, batch_size: 64, optimizer: adamw,
             lr: 2.0e-3, eval_samples: 64, methods: [gradcam, random],
             metrics: [cue_mass, cue_pointing, attribution_localisation, pointing_game],
             pair_methods: [], pair_metrics: []}}
""")
    assert pipeline.main(["--profile", str(prof), "--executor", "inline", "--no-progress",
                          "--stage", "train", "--stage", "attribute", "--stage", "evaluate"]) == 0
    run = tmp_path / "results" / "planted" / name / "ce" / "seed0"
    gt = pd.read_csv(run / layout.GROUND_TRUTH)
    stored = load_attributions(layout.attribution_path(run, "gradcam"))
    assert list(gt["image"]) == list(stored["indices"]) and list(gt["target"]) == list(stored["targets"])
    model, _ = load_model(run, "cpu")
    model.eval()
    splits = {s: load_dataset(name, s) for s in ("test", "test_absent", "test_swapped")}
    swapped = cue_layout("test_swapped", splits["test"].labels, 1.0, 10, 32).cue_class
    for row in gt.head(8).itertuples():
        with torch.no_grad():
            out = {s: model(d.batch([row.image])[0])[0].double() for s, d in splits.items()}
        assert row.label == int(splits["test"].labels[row.image]) and row.cue_swapped == int(swapped[row.image])
        assert (row.pred, row.pred_absent, row.pred_swapped) == tuple(int(out[s].argmax()) for s in splits)
        assert row.logit == pytest.approx(float(out["test"][row.target]), abs=1e-4)
        assert row.reliance == pytest.approx(float(out["test"][row.target] - out["test_absent"][row.target]), abs=1e-4)
    res = pd.read_csv(run / layout.RESULTS)
    value = lambda method, metric: res[(res["method"] == method) & (res["metric"] == metric)]["value"].to_numpy()  # noqa: E731
    for method in ("gradcam", "random"):          # the ground-truth scores are the localisation scores on the cue
        np.testing.assert_array_equal(value(method, "cue_mass"), value(method, "attribution_localisation"))
        np.testing.assert_array_equal(value(method, "cue_pointing"), value(method, "pointing_game"))
    mass = value("random", "cue_mass")
    assert len(mass) == 64 and abs(mass.mean() - CUE_SIZE ** 2 / 32 ** 2) < 0.003     # the cue's area: 0.0156

    # the study's table: each run's numbers, recomputed here from the two files
    table = table_ground_truth([run], study_results(run_dirs=[run])).data.set_index("method")
    for method in ("gradcam", "random"):
        row = table.loc[method]
        rows = res[(res["method"] == method) & (res["metric"] == "cue_mass")].set_index("sample_index")["value"]
        with_cue = sum(int(r.pred == r.label) for r in gt.itertuples()) / len(gt)
        without = sum(int(r.pred_absent == r.label) for r in gt.itertuples()) / len(gt)
        assert row["reliance"] == pytest.approx(with_cue - without)
        assert row["swap_share"] == pytest.approx(sum(int(r.pred_swapped == r.cue_swapped) for r in gt.itertuples())
                                                  / len(gt))
        assert row["mass_on_cue"] == pytest.approx(rows.mean()) and row["cue_area"] == 16 / 1024
        pairs = [(rows[r.image], r.reliance) for r in gt.itertuples() if np.isfinite(rows[r.image])]
        assert row["reliance_correlation"] == pytest.approx(spearmanr(*zip(*pairs))[0])
        assert (row["dataset"], row["objective"], row["cue_rate"], row["seed"]) == (name, "ce", 1.0, 0)


def test_ground_truth_scores_are_refused_where_no_cue_is_planted():
    from xai_utils.settings import ConfigError, RunConfig
    from xai_utils.settings.validation import check_evaluation
    check_evaluation(RunConfig(dataset=planted_name("fashion_mnist", 0.5), metrics=["cue_mass"], methods=["gradcam"]),
                     data_masks=False)
    with pytest.raises(ConfigError, match="'cue_pointing' scores maps against a planted cue, which fashion_mnist "
                                          "does not draw"):
        check_evaluation(RunConfig(dataset="fashion_mnist", metrics=["cue_pointing"], methods=["gradcam"]),
                         data_masks=False)


def test_the_cifar10_planted_profile_rehearses_to_its_ground_truth_table(tmp_path, capsys):
    """The GPU profile on planted CIFAR-10, shrunk (stand-in CIFAR-10 files in their real format,
    one cue rate, one seed): every stage, the ground-truth table and figure, and the claim
    table's ground-truth rows; nothing skipped but the comparison with the paper."""
    from xai_utils import pipeline
    name = planted_name("cifar10", 1.0)
    assert pipeline.main(["--profile", "cifar10_planted", "--rehearse", "--executor", "inline", "--no-progress",
                          "--set", f"results_root={tmp_path}", "--set", "seeds=[0]", "--set", f"datasets=[{name}]",
                          "--set", "eval_samples=4"]) == 0
    figures = tmp_path / "cifar10_planted-rehearsal" / "figures"
    table = pd.read_csv(figures / "table_ground_truth.csv")
    assert set(zip(table["objective"], table["method"])) == {(o, m) for o in ("ce", "scl")
                                                             for m in ("gradcam", "eigencam", "random")}
    assert set(table["dataset"]) == {name} and (table["cue_area"] == 16 / 1024).all()
    claim = pd.read_csv(figures / "table_claim_robustness.csv")
    assert set(claim.loc[claim["facet"] == "ground truth", "metric"]) == {"cue_mass", "cue_pointing"}
    assert (figures / "fig_ground_truth.png").is_file()
    notes = (figures / "report_notes.md").read_text()
    assert [line for line in notes.splitlines() if line.startswith("- ")] == [
        "- paper_vs_reproduced skipped: none of this study's datasets / metrics has a reported value in the paper"]
